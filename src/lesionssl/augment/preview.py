"""``lesionssl augment-preview``: rows of original + the two views of a positive pair (the seed's figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lesionssl.augment.batch import two_views
from lesionssl.augment.views import PairAugmentation, PairPreset
from lesionssl.data.sources import read_sources
from lesionssl.data.store import decode_for_store, stored_size


def _to_pil(image: torch.Tensor) -> Image.Image:
    array = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def augment_preview(
    data: list[str],
    out: Path,
    preset: PairPreset | PairAugmentation = "small-data",
    image_size: int = 128,
    rows: int = 6,
    seed: int = 0,
    extras: tuple[str, ...] = (),
) -> Path:
    """Draw ``rows`` random images of ``data`` with two augmented views each; write a PNG grid."""
    table = read_sources(data)
    generator = np.random.default_rng(seed)
    chosen = generator.choice(len(table), size=min(rows, len(table)), replace=False)
    torch.manual_seed(seed)
    views = two_views(preset, image_size, "none", extras)
    stored = np.stack([decode_for_store(table["path"].iloc[i], stored_size(image_size)) for i in chosen])
    view_a, view_b = views(torch.from_numpy(stored).permute(0, 3, 1, 2))
    pad = 4
    grid = Image.new("RGB", (3 * image_size + 4 * pad, len(chosen) * (image_size + pad) + pad), "white")
    for r in range(len(chosen)):
        original = Image.fromarray(stored[r]).resize((image_size, image_size), Image.Resampling.BICUBIC)
        tiles = [original, _to_pil(view_a[r]), _to_pil(view_b[r])]
        for c, tile in enumerate(tiles):
            grid.paste(tile, (pad + c * (image_size + pad), pad + r * (image_size + pad)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
