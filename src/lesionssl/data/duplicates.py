"""Near-duplicate detection: re-uploads, re-crops and re-exports of one image under two ids.

The ISIC archives hold many (Cassidy et al., MedIA 2022, removed 14,310 duplicates from the
ISIC challenge sets), and a duplicate on both sides of a split leaks the test set into training.
A pair is linked when both detectors agree:

* a perceptual hash (pHash, Zauner 2010: the signs of the 8 x 8 lowest DCT frequencies of a
  32 x 32 grayscale thumbnail against their median, DC excluded; 63 bits), made invariant to
  the 8 flips and quarter turns: Hamming distance <= ``hash_threshold``;
* the cosine similarity of image features >= ``cosine_threshold``: by default the mean-centred
  32 x 32 colour thumbnail (the largest over the 8 transforms), or backbone features.

Either alone is not enough on dermoscopy: most images are a dark blob centred on skin, so the
hash links thousands of different lesions at distance 4 and thumbnails of small blobs correlate
above 0.95 (measured on ../shared/data/skin-lesions, EVIDENCE.md). Linked images are merged
into clusters (connected components), which ``split --dedup`` treats as one group, so a whole
cluster lands in one split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.fft import dctn
from torch.nn import functional as F

from lesionssl.config import COSINE_THRESHOLD, HASH_THRESHOLD
from lesionssl.data.colour import NO_COLOUR_CONSTANCY, ColourConstancy

HASH_BITS = 63
_BLOCK = 2048
_THUMB = 32


@dataclass(frozen=True)
class NearDuplicate:
    """One linked pair of rows (``a < b``), with its hash distance and feature cosine."""

    a: int
    b: int
    hamming: int
    cosine: float


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips / quarter turns of ``(N, C, H, W)`` images (identity first)."""
    return [
        torch.rot90(x, k, (2, 3)).flip(3) if flip else torch.rot90(x, k, (2, 3))
        for k in range(4)
        for flip in (False, True)
    ]


def _thumbnails(images: np.ndarray) -> torch.Tensor:
    """``(N, 3, 32, 32)`` float colour thumbnails of ``(N, H, W, 3)`` uint8 images."""
    out = []
    for start in range(0, len(images), _BLOCK):
        x = torch.from_numpy(np.array(images[start : start + _BLOCK])).permute(0, 3, 1, 2).float() / 255
        out.append(F.interpolate(x, size=(_THUMB, _THUMB), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)


def dihedral_hashes(images: np.ndarray) -> np.ndarray:
    """``(8, N, 63)`` bool pHash bits of every image under the 8 flips / quarter turns."""
    gray = (_thumbnails(images) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    variants = []
    for view in _dihedral(gray):
        low = dctn(view[:, 0].double().numpy(), type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(view), 64)[
            :, 1:
        ]
        variants.append(low > np.median(low, axis=1, keepdims=True))
    return np.stack(variants)


def thumbnail_features(images: np.ndarray) -> torch.Tensor:
    """``(8, N, 3072)`` unit-length, mean-centred colour thumbnails under the 8 transforms:
    their cosine is the Pearson correlation of the two thumbnails."""
    views = [v.flatten(1) for v in _dihedral(_thumbnails(images))]
    return torch.stack([F.normalize(v - v.mean(dim=1, keepdim=True), dim=1) for v in views])


def _signs(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(bits, 1.0, -1.0).astype(np.float32))


def _hamming_min(hashes: np.ndarray, rows: slice) -> torch.Tensor:
    """Smallest Hamming distance, over the 8 transforms, between ``rows`` and every image."""
    reference = _signs(hashes[0])
    best = None
    for variant in hashes:
        distance = (HASH_BITS - _signs(variant[rows]) @ reference.T) / 2  # +-1 vectors: (n - dot) / 2
        best = distance if best is None else torch.minimum(best, distance)
    return best.round()


def near_duplicates(
    hashes: np.ndarray,
    features: torch.Tensor,
    hash_threshold: int = HASH_THRESHOLD,
    cosine_threshold: float = COSINE_THRESHOLD,
) -> list[NearDuplicate]:
    """Every pair ``a < b`` within ``hash_threshold`` whose features' cosine is >= ``cosine_threshold``.

    Args:
        hashes: Output of :func:`dihedral_hashes`.
        features: ``(V, N, D)`` unit-length features under ``V`` transforms (identity first;
            the largest cosine of any transform of ``a`` with ``b`` counts), or ``(N, D)``.
    """
    features = features if features.dim() == 3 else features.unsqueeze(0)
    n = hashes.shape[1]
    pairs: list[NearDuplicate] = []
    for start in range(0, n, _BLOCK):
        rows = slice(start, min(start + _BLOCK, n))
        hamming = _hamming_min(hashes, rows)
        candidates = hamming <= hash_threshold
        candidates &= torch.arange(rows.start, rows.stop).view(-1, 1) < torch.arange(n).view(1, -1)  # each pair once
        a, b = candidates.nonzero().unbind(dim=1)
        if not len(a):
            continue
        cosine = torch.stack([(view[a + rows.start] * features[0][b]).sum(dim=1) for view in features]).amax(dim=0)
        for i, j, d, c in zip((a + rows.start).tolist(), b.tolist(), hamming[a, b].tolist(), cosine.tolist()):
            if c >= cosine_threshold:
                pairs.append(NearDuplicate(i, j, int(d), float(c)))
    return pairs


def clusters(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Connected components of ``n`` items under ``pairs``: each item's smallest fellow member
    (union-find with path halving)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])


#: Stored side of the images the detectors read (the store of 64 px training).
AUDIT_STORE_SIZE = 73


def image_features(
    images: np.ndarray, features: str = "thumbnail", architecture: str = "resnet18", image_size: int = 64
) -> torch.Tensor:
    """Unit-length features for the cosine detector: ``thumbnail`` (mean-centred colour
    thumbnails under the 8 transforms), or the pooled features of a backbone initialised from
    ``features`` (any ``--init`` value: a checkpoint file, ``random``, ``imagenet``)."""
    if features == "thumbnail":
        return thumbnail_features(images)
    from lesionssl.augment.batch import EvalView
    from lesionssl.models.backbones import build_backbone, resolve_preprocessing

    model, info = build_backbone(architecture, features, image_size)
    model.eval()
    view = EvalView(image_size, resolve_preprocessing("auto", info))
    with torch.no_grad():
        out = [
            model(view(torch.from_numpy(np.array(images[i : i + 256])).permute(0, 3, 1, 2))).float()
            for i in range(0, len(images), 256)
        ]
    return F.normalize(torch.cat(out), dim=1)


def find_near_duplicates(
    paths: list[str],
    hash_threshold: int = HASH_THRESHOLD,
    cosine_threshold: float = COSINE_THRESHOLD,
    features: str = "thumbnail",
    architecture: str = "resnet18",
    colour: ColourConstancy = NO_COLOUR_CONSTANCY,
) -> list[NearDuplicate]:
    """Near-duplicate pairs among image files (indices into ``paths``), read through the store,
    after ``colour`` constancy: two photographs of one lesion under different lights then match."""
    from lesionssl.data.store import build_store

    images = build_store(paths, AUDIT_STORE_SIZE, "decoding images", colour)
    return near_duplicates(
        dihedral_hashes(images), image_features(images, features, architecture), hash_threshold, cosine_threshold
    )
