"""Which unlabelled images to label first: one function per strategy, behind :data:`STRATEGIES`.

Every strategy works on L2-normalised features of the *pool* (the images an expert could label,
plus those already labelled) and picks, one at a time, ``budget`` images among the candidates.
Groups (lesions) are respected: once an image of a group is picked or already labelled, no other
image of that group can be picked, so an expert never labels one lesion twice.

* ``typiclust`` - TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, TPC-RP): k-means with
  ``K = labelled + budget`` clusters (at most 500; mini-batch k-means above 50, as the authors'
  code); repeatedly the cluster with the fewest labelled
  images (of clusters with at least 5 images; the largest among equals) gives its most *typical*
  candidate, typicality being the inverse mean distance to its 20 nearest neighbours in the cluster.
* ``probcover`` - ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): the graph of pairs
  closer than ``delta``; repeatedly the candidate whose ball covers the most uncovered points, until
  everything is covered (then at random). ``delta`` is the largest radius at which 95% of the balls
  are *pure* (hold one k-means cluster, K = the number of classes), as the paper chooses it.
* ``kcenter`` - greedy k-center (Sener & Savarese, ICLR 2018, core-set): repeatedly the candidate
  farthest from every labelled image; its distance, the covering radius, never increases.
* ``random`` - candidates in a seeded random order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.neighbors import NearestNeighbors, radius_neighbors_graph

TYPICLUST_MAX_CLUSTERS = 500
TYPICLUST_MIN_CLUSTER = 5
TYPICLUST_NEIGHBOURS = 20
#: Above this many clusters TypiClust's k-means runs in mini-batches, as the authors' code does.
TYPICLUST_FULL_KMEANS = 50
PROBCOVER_PURITY = 0.95
PROBCOVER_DELTAS = tuple(round(d, 2) for d in np.arange(0.05, 1.41, 0.05))


@dataclass(frozen=True)
class Pool:
    """The images a strategy sees: features, which may be picked, which are labelled, their groups."""

    features: np.ndarray
    candidates: np.ndarray
    labelled: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        norms = np.linalg.norm(self.features, axis=1, keepdims=True)
        object.__setattr__(self, "features", (self.features / np.maximum(norms, 1e-12)).astype(np.float32))
        taken = np.isin(self.groups, self.groups[self.labelled])  # a labelled lesion is not labelled again
        object.__setattr__(self, "candidates", self.candidates & ~self.labelled & ~taken)


@dataclass
class Selection:
    """The picked pool indices in order, a score per pick (what the strategy maximised) and the
    strategy's settings (``delta``, ``clusters``)."""

    picked: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    settings: dict[str, float] = field(default_factory=dict)


class _Picker:
    """Picks one image at a time and closes its group."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.open = pool.candidates.copy()
        self.selection = Selection()

    def take(self, index: int, score: float) -> None:
        self.selection.picked.append(int(index))
        self.selection.scores.append(float(score))
        self.open &= self.pool.groups != self.pool.groups[index]

    def done(self, budget: int) -> bool:
        return len(self.selection.picked) >= budget or not self.open.any()


def random_order(pool: Pool, budget: int, seed: int) -> Selection:
    """Candidates in a seeded random order, one per group."""
    picker = _Picker(pool)
    for index in np.random.default_rng(seed).permutation(len(pool.features)):
        if picker.done(budget):
            break
        if picker.open[index]:
            picker.take(index, 0.0)
    return picker.selection


def typicality(features: np.ndarray, neighbours: int = TYPICLUST_NEIGHBOURS) -> np.ndarray:
    """Inverse mean Euclidean distance to the ``neighbours`` nearest other points (Hacohen et al. eq. 1)."""
    k = min(neighbours, len(features) - 1)
    if k < 1:
        return np.ones(len(features))
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-8)


def typiclust(pool: Pool, budget: int, seed: int, max_clusters: int = TYPICLUST_MAX_CLUSTERS) -> Selection:
    """TypiClust (TPC-RP): the most typical candidate of the least-labelled large cluster, repeatedly."""
    picker = _Picker(pool)
    k = max(1, min(int(pool.labelled.sum()) + budget, max_clusters, len(pool.features)))
    kmeans = (
        KMeans(n_clusters=k, n_init=1, random_state=seed)
        if k <= TYPICLUST_FULL_KMEANS
        else MiniBatchKMeans(n_clusters=k, batch_size=5000, n_init=3, random_state=seed)
    )
    clusters = kmeans.fit_predict(pool.features)
    sizes = np.bincount(clusters, minlength=k)
    labelled = np.bincount(clusters[pool.labelled], minlength=k)
    typical: dict[int, np.ndarray] = {}
    picker.selection.settings = {"clusters": k}
    while not picker.done(budget):
        open_clusters = np.unique(clusters[picker.open])
        large = open_clusters[sizes[open_clusters] >= TYPICLUST_MIN_CLUSTER]
        eligible = large if len(large) else open_clusters
        # fewest labelled first, then the largest; np.lexsort sorts by its last key first
        cluster = int(eligible[np.lexsort((-sizes[eligible], labelled[eligible]))[0]])
        members = np.flatnonzero(clusters == cluster)
        if cluster not in typical:
            typical[cluster] = typicality(pool.features[members])
        scores = np.where(picker.open[members], typical[cluster], -np.inf)
        best = int(np.argmax(scores))
        picker.take(members[best], scores[best])
        labelled[cluster] += 1
    return picker.selection


def purity_delta(
    features: np.ndarray,
    clusters: int,
    seed: int,
    purity: float = PROBCOVER_PURITY,
    deltas: tuple[float, ...] = PROBCOVER_DELTAS,
) -> float:
    """ProbCover's ball radius: the largest ``delta`` at which at least ``purity`` of the balls hold
    points of one k-means cluster only. A ball around x is pure while ``delta`` does not exceed the
    distance from x to the nearest point of another cluster."""
    labels = KMeans(n_clusters=max(2, min(clusters, len(features))), n_init=1, random_state=seed).fit_predict(features)
    nearest_other = np.full(len(features), np.inf)
    for start in range(0, len(features), 2048):
        chunk = features[start : start + 2048]
        distances = np.sqrt(np.maximum(2.0 - 2.0 * chunk @ features.T, 0.0))  # unit vectors
        distances[labels[start : start + 2048, None] == labels[None, :]] = np.inf
        nearest_other[start : start + 2048] = distances.min(axis=1)
    fits = [d for d in deltas if np.mean(nearest_other >= d) >= purity]
    return float(max(fits)) if fits else float(min(deltas))


def probcover(pool: Pool, budget: int, seed: int, delta: float | None = None, clusters: int = 8) -> Selection:
    """ProbCover: the candidate whose ``delta``-ball covers the most uncovered pool points, repeatedly;
    labelled images cover their balls from the start; at full coverage, candidates at random."""
    picker = _Picker(pool)
    delta = purity_delta(pool.features, clusters, seed) if delta is None else delta
    graph = (
        radius_neighbors_graph(pool.features, delta, mode="connectivity", include_self=True).astype(np.int32).tocsr()
    )
    covered = (
        np.asarray(graph[np.flatnonzero(pool.labelled)].sum(axis=0)).ravel() > 0
        if pool.labelled.any()
        else np.zeros(len(pool.features), bool)
    )
    degree = np.asarray(graph[:, ~covered].sum(axis=1)).ravel().astype(float)
    tie_break = np.random.default_rng(seed).random(len(degree)) * 1e-3  # below one neighbour: only ties
    picker.selection.settings = {"delta": delta}
    while not picker.done(budget):
        if degree[picker.open].max() < 1:  # everything covered: the paper continues at random
            rest = random_order(
                Pool(pool.features, picker.open, np.zeros_like(picker.open), pool.groups),
                budget - len(picker.selection.picked),
                seed,
            )
            for index in rest.picked:
                picker.take(index, 0.0)
            break
        index = int(np.argmax(np.where(picker.open, degree + tie_break, -np.inf)))
        picker.take(index, degree[index])
        newly = graph[index].indices[~covered[graph[index].indices]]
        covered[newly] = True
        degree -= np.asarray(graph[:, newly].sum(axis=1)).ravel()
    picker.selection.settings["coverage"] = float(covered.mean())
    return picker.selection


def kcenter(pool: Pool, budget: int, seed: int) -> Selection:
    """Greedy k-center: the candidate farthest from every labelled (and picked) image; its
    distance, the candidates' covering radius, is the score and never increases."""
    picker = _Picker(pool)
    distance = np.full(len(pool.features), np.inf)

    def cover(index: int | np.ndarray) -> None:
        np.minimum(
            distance,
            np.sqrt(np.maximum(2.0 - 2.0 * pool.features @ np.atleast_2d(pool.features[index]).T, 0.0)).min(axis=1),
            out=distance,
        )

    for start in range(0, int(pool.labelled.sum()), 1024):
        cover(np.flatnonzero(pool.labelled)[start : start + 1024])
    if not pool.labelled.any() and picker.open.any():  # nothing labelled yet: a seeded first centre
        first = int(np.random.default_rng(seed).choice(np.flatnonzero(picker.open)))
        picker.take(first, np.inf)
        cover(first)
    while not picker.done(budget):
        index = int(np.argmax(np.where(picker.open, distance, -np.inf)))
        picker.take(index, distance[index])
        cover(index)
    return picker.selection


Strategy = Callable[..., Selection]
STRATEGIES: dict[str, Strategy] = {
    "typiclust": typiclust,
    "probcover": probcover,
    "kcenter": kcenter,
    "random": random_order,
}
