"""``lesionssl shift``: how far is each test split or site from the training pool?

The pool (the manifest's pretraining images from the source archives) is the reference; every
evaluated set is the internal ``test`` split, the held-out site's unlabelled pool share when the
split sent one (``site-pool``: how far the clinic's own photographs are, before any is labelled),
and the ``external`` split, one set per value of the held-out column (the site).
On the backbone's frozen features, per set:

* colour statistics of the stored images (mean and standard deviation per channel);
* a domain classifier's cross-validated AUROC, set against pool: the classifier two-sample test
  (Lopez-Paz & Oquab, ICLR 2017), logistic regression on standardised features, stratified 5-fold,
  equal samples of both; 0.5 means the set cannot be told from the pool;
* a linear probe fitted on the train split (C chosen on val) applied to the set: the class prior
  its predictions imply (EM, Saerens et al. 2002) against the training prior, and the recall of
  every class there, against the internal test's (the confusion the shift causes);
* a t-SNE map (scikit-learn; UMAP would add a dependency for a picture) of a sample of the pool
  and every set, coloured by set and by label, and each set's most typical and most atypical
  images (nearest to and farthest from the pool in feature space), in ``index.html``.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from lesionssl.config import ShiftConfig
from lesionssl.data.loaders import label_indices
from lesionssl.data.split import SITE_POOL, pool_rows, read_manifest
from lesionssl.data.store import build_store, stored_size
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.domain import domain_auroc
from lesionssl.evaluate.metrics import compute_metrics
from lesionssl.evaluate.prior import class_prior, em_prior
from lesionssl.evaluate.probe import cached_features, linear_probe
from lesionssl.figures import plot_embedding_map
from lesionssl.io import write_csv, write_json, write_text
from lesionssl.layout import FEATURES
from lesionssl.models.backbones import build_backbone, resolve_preprocessing
from lesionssl.progress import console
from lesionssl.selection.page import thumbnail

POOL = "pool"
#: Images per set on the map (all of a smaller set).
MAX_PER_SET = 500
#: Typical and atypical images shown per set.
EXAMPLES = 4


@dataclass(frozen=True)
class SetShift:
    """One evaluated set against the pool (a row of ``shift.csv``)."""

    name: str
    images: int
    labelled: int
    domain_auroc: float | None
    balanced_accuracy: float | None
    mean_r: float
    mean_g: float
    mean_b: float
    std_r: float
    std_g: float
    std_b: float


def colour_statistics(images: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation of each channel over every pixel of ``(N, H, W, 3)`` uint8 images, in [0, 1]."""
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    return {f"mean_{c}": float(m) for c, m in zip("rgb", mean)} | {f"std_{c}": float(s) for c, s in zip("rgb", std)}


def evaluated_sets(table: pd.DataFrame, site_column: str | None) -> dict[str, np.ndarray]:
    """Rows of the internal test split, of the held-out site's unlabelled pool share (``split
    --hold-out-pool``), and of each external site (or the whole external split)."""
    sets = {
        "test": np.flatnonzero(table["split"].to_numpy() == "test"),
        SITE_POOL: np.flatnonzero(table["split"].to_numpy() == SITE_POOL),
    }
    external = table["split"].to_numpy() == "external"
    if site_column and site_column in table and external.any():
        for site in sorted(table.loc[external, site_column].astype(str).unique()):
            sets[f"external:{site}"] = np.flatnonzero(external & (table[site_column].astype(str).to_numpy() == site))
    elif external.any():
        sets["external"] = np.flatnonzero(external)
    return {name: rows for name, rows in sets.items() if len(rows)}


def shift(config: ShiftConfig) -> Path:
    """Measure every evaluated set against the pool; write ``shift.csv``, ``recall.csv``,
    ``priors.csv``, the maps and ``index.html`` into ``config.out``; return the page."""
    out = Path(config.out)
    manifest = read_manifest(config.manifest, data_root=config.data_root)
    table = manifest.table.assign(row=np.arange(len(manifest.table)))
    classes = manifest.classes
    site_column = config.site_column
    if (
        site_column is None
        and manifest.record is not None
        and manifest.record.spec is not None
        and manifest.record.spec.hold_out
    ):
        site_column = next(iter(manifest.record.spec.hold_out))
    reference = pool_rows(table, site_pool="exclude")  # the site's own pool images are a set measured against it
    sets = evaluated_sets(table, site_column)
    if not len(reference) or not sets:
        raise LesionSSLError(
            f"{config.manifest} needs a pretraining pool and a test or external split to measure a shift"
        )
    backbone, init_info = build_backbone(config.backbone, config.init, config.image_size)
    images = build_store(
        table["path"].tolist(), stored_size(config.image_size, config.store_margin), "decoding images", config.colour
    )
    preprocessing = resolve_preprocessing(config.normalize, init_info)
    wanted = np.unique(
        np.concatenate([reference, *sets.values(), np.flatnonzero(table["split"].isin(["train", "val"]).to_numpy())])
    )
    features = cached_features(
        Path(config.manifest).parent / FEATURES, backbone, images, wanted, config.image_size, preprocessing
    )

    def stack(rows) -> np.ndarray:
        return np.stack([features[r] for r in rows]) if len(rows) else np.zeros((0, 1))

    train = table[(table["split"] == "train") & (table["label"] != "")]
    val = table[(table["split"] == "val") & (table["label"] != "")]
    probe = None
    if len(train) and train["label"].nunique() > 1:
        probe = linear_probe(
            stack(train["row"]),
            label_indices(train, classes),
            stack(val["row"]) if len(val) else None,
            label_indices(val, classes) if len(val) else None,
            len(classes),
            seed=config.seed,
        )
    train_prior = (
        class_prior(label_indices(train, classes), len(classes))
        if len(train)
        else np.full(len(classes), 1 / len(classes))
    )

    pool_x = stack(reference)
    set_x = {name: stack(set_rows) for name, set_rows in sets.items()}
    rows, priors, recalls = [], [], []
    for name, set_rows in sets.items():
        part = table.iloc[set_rows]
        x = set_x[name]
        labelled = part["label"].to_numpy() != ""
        balanced = None
        if probe is not None:
            probs = probe.predict_proba(x)
            priors.append(
                {"set": name, **{f"prior_{c}": float(p) for c, p in zip(classes, em_prior(probs, train_prior))}}
            )
            if labelled.any():
                metrics = compute_metrics(label_indices(part[labelled], classes), probs[labelled], classes)
                balanced = metrics["balanced_accuracy"]
                recalls += [
                    {"set": name, "class": c, "recall": v["recall"] if v["support"] else None, "support": v["support"]}
                    for c, v in metrics["per_class"].items()
                ]
        rows.append(
            SetShift(
                name,
                len(set_rows),
                int(labelled.sum()),
                domain_auroc(pool_x, x, config.seed),
                balanced,
                **colour_statistics(images[np.sort(set_rows)]),
            )
        )
        console.print(
            f"{name}: {len(set_rows)} images, domain AUROC {_fmt(rows[-1].domain_auroc)}, balanced accuracy {_fmt(balanced)}",
            markup=False,
        )
    out.mkdir(parents=True, exist_ok=True)
    pool_row = {"set": POOL, "images": len(reference), **colour_statistics(images[reference])}
    frame = pd.DataFrame(
        [pool_row, *({"set": r.name, **{k: v for k, v in asdict(r).items() if k != "name"}} for r in rows)]
    )
    write_csv(out / "shift.csv", frame)
    if priors:
        write_csv(
            out / "priors.csv",
            pd.DataFrame([{"set": "train", **{f"prior_{c}": float(p) for c, p in zip(classes, train_prior)}}, *priors]),
        )
    if recalls:
        write_csv(out / "recall.csv", pd.DataFrame(recalls))
    examples = _examples(table, pool_x, {name: (set_rows, set_x[name]) for name, set_rows in sets.items()})
    _map(out, table, reference, sets, features, config.seed)
    write_json(
        out / "summary.json",
        {
            "manifest": str(config.manifest),
            "init": config.init,
            "backbone": config.backbone,
            "site_column": site_column,
            "colour_constancy": config.colour_constancy,
            "probe_C": probe.C if probe else None,
        },
    )
    page = out / "index.html"
    write_text(page, _page(config, frame, priors, recalls, examples))
    return page


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _examples(
    table: pd.DataFrame, pool_x: np.ndarray, sets: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict[str, list[str]]]:
    """Per set, the image paths nearest to the pool (typical) and farthest from it (atypical),
    by the distance to the nearest pool image in feature space."""
    nearest = NearestNeighbors(n_neighbors=1).fit(pool_x)
    chosen = {}
    for name, (rows, x) in sets.items():
        distance = nearest.kneighbors(x)[0][:, 0]
        order = np.argsort(distance)
        paths = table["path"].to_numpy()[rows]
        chosen[name] = {"typical": list(paths[order[:EXAMPLES]]), "atypical": list(paths[order[::-1][:EXAMPLES]])}
    return chosen


def _map(
    out: Path, table: pd.DataFrame, reference: np.ndarray, sets: dict[str, np.ndarray], features: dict, seed: int
) -> None:
    """``map.png``: t-SNE of a sample of the pool and every set, by set and by label."""
    rng = np.random.default_rng(seed)
    names, rows = [], []
    for name, set_rows in {POOL: reference, **sets}.items():
        sample = rng.choice(set_rows, min(len(set_rows), MAX_PER_SET), replace=False)
        names += [name] * len(sample)
        rows += list(sample)
    x = np.stack([features[r] for r in rows])
    points = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(
        StandardScaler().fit_transform(x)
    )
    labels = table["label"].to_numpy()[rows]
    plot_embedding_map(points, np.array(names), np.where(labels == "", "unlabelled", labels), out / "map.png")


def _page(config: ShiftConfig, frame: pd.DataFrame, priors: list[dict], recalls: list[dict], examples: dict) -> str:
    def table_html(data: pd.DataFrame) -> str:
        return data.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="n/a", border=0)

    parts = [
        f"<h1>Domain shift: {html.escape(str(config.manifest))}</h1>",
        f"<p>Features of {html.escape(config.backbone)} ({html.escape(config.init)}) at {config.image_size} px; colour constancy {html.escape(config.colour_constancy)}. "
        "Domain AUROC: a classifier telling the set from the pretraining pool of the source archives, cross-validated (0.5: indistinguishable, 1: fully separable); "
        "site-pool, when present, is the held-out site's unlabelled share of the pool, measured before any of its images is labelled. "
        "Balanced accuracy and recall: a linear probe fitted on the train split, applied to each set.</p>",
        table_html(frame),
    ]
    if priors:
        parts += [
            "<h2>Class prior implied by each set's predictions (EM, Saerens et al. 2002)</h2>",
            table_html(pd.DataFrame(priors)),
        ]
    if recalls:
        wide = pd.DataFrame(recalls).pivot(index="class", columns="set", values="recall").reset_index()
        parts += ["<h2>Recall per class, internal test against each site</h2>", table_html(wide)]
    parts += ['<h2>Map (t-SNE of the features)</h2><img src="map.png" style="max-width:100%">']
    for name, chosen in examples.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for kind, paths in chosen.items():
            images = "".join(
                f'<img src="{thumbnail(p)}" title="{html.escape(Path(p).name)}" style="margin:2px">' for p in paths
            )
            parts.append(f"<p>{kind} (nearest to / farthest from the pool)</p><div>{images}</div>")
    return (
        "<!doctype html><meta charset='utf-8'><title>lesionssl shift</title><body style='font-family:sans-serif'>"
        + "".join(parts)
        + "</body>"
    )
