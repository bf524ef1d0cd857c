"""A deterministic, synthetic, lesion-like image set for the demo and the tests.

Each image is a skin-toned background with a blurred lesion whose shape, border irregularity,
colour and texture depend on the class, plus hairs and noise, so the classes are learnable but
not trivially separable. Nothing is downloaded; the images are generated on the fly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lesionssl.progress import progress_bar

#: class -> (lesion RGB, border irregularity, texture strength, relative frequency)
SYNTHETIC_CLASSES: dict[str, tuple[tuple[int, int, int], float, float, float]] = {
    "MEL": ((60, 35, 30), 0.35, 0.6, 0.2),
    "NV": ((120, 80, 55), 0.08, 0.15, 0.45),
    "BCC": ((190, 120, 130), 0.2, 0.35, 0.15),
    "BKL": ((150, 115, 80), 0.25, 0.9, 0.2),
}


def _lesion(
    rng: np.random.Generator, size: tuple[int, int], colour, irregularity: float, texture: float
) -> Image.Image:
    width, height = size
    skin = np.array([225, 180, 150]) + rng.normal(0, 12, 3)
    base = np.clip(skin + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(base)
    mask = Image.new("L", size, 0)
    cx, cy = width / 2 + rng.normal(0, width * 0.05), height / 2 + rng.normal(0, height * 0.05)
    radius = min(width, height) * rng.uniform(0.22, 0.36)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = 1 + irregularity * np.convolve(rng.normal(0, 1, 48), np.ones(5) / 5, mode="same")
    stretch = rng.uniform(0.75, 1.25)
    points = [
        (cx + radius * w * stretch * np.cos(a), cy + radius * w / stretch * np.sin(a)) for a, w in zip(angles, wobble)
    ]
    ImageDraw.Draw(mask).polygon(points, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(radius=1.5))
    tone = np.clip(np.array(colour) + rng.normal(0, 10, 3), 0, 255)
    pattern = rng.normal(0, 1, (height // 4 + 1, width // 4 + 1))
    pattern = np.kron(pattern, np.ones((4, 4)))[:height, :width, None]
    lesion = np.clip(tone + texture * 40 * pattern + rng.normal(0, 5, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.composite(Image.fromarray(lesion), image, mask)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 4)):  # hairs
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + rng.normal(0, width / 2), y0 + rng.normal(0, height / 2)
        draw.line([(x0, y0), (x1, y1)], fill=(40, 30, 25), width=1)
    return image


def make_synthetic_dataset(
    root: Path, n_labelled: int = 480, n_unlabelled: int = 480, size: tuple[int, int] = (86, 64), seed: int = 0
) -> Path:
    """Write an ImageFolder tree ``root/labelled/<CLASS>/*.png`` and ``root/unlabelled/*.png``.

    Existing complete datasets are reused (generation is deterministic). Returns ``root``.
    """
    root = Path(root)
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == f"{n_labelled},{n_unlabelled},{size},{seed}":
        return root
    rng = np.random.default_rng(seed)
    names = list(SYNTHETIC_CLASSES)
    freq = np.array([SYNTHETIC_CLASSES[c][3] for c in names])
    labels = rng.choice(len(names), size=n_labelled + n_unlabelled, p=freq / freq.sum())
    with progress_bar("generating synthetic lesions", len(labels)) as advance:
        for i, label in enumerate(labels):
            colour, irregularity, texture, _ = SYNTHETIC_CLASSES[names[label]]
            image = _lesion(rng, size, colour, irregularity, texture)
            folder = root / "labelled" / names[label] if i < n_labelled else root / "unlabelled"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"synth_{i:05d}.png")
            advance()
    marker.write_text(f"{n_labelled},{n_unlabelled},{size},{seed}")
    return root
