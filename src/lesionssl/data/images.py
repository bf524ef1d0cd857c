"""Decoding any image file a clinic may hand over into an RGB array, with one-line errors."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lesionssl.errors import LesionSSLError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")
#: The shorter side below which a file is refused: a thumbnail or placeholder, not a lesion photograph.
MIN_SIDE = 8


class ImageLoadError(LesionSSLError):
    """An image file that cannot be decoded; the message names the file."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping 16-bit or float data."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: PIL's convert("L") clips instead of scaling, so rescale by range.
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if hi <= lo else (array - lo) / (hi - lo) * 255.0
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Composite transparent pixels on black, the colour of a dermoscope's vignette.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Open an image, apply its EXIF orientation and return it as 8-bit RGB.

    Args:
        path: Image file (JPEG, PNG, TIFF, BMP, WebP, ...), of any PIL mode.
        min_side: The caller only needs the shorter side this large: JPEGs are then decoded
            at a reduced DCT scale (1/2 to 1/8) that still covers it, several times faster for
            full-size dermoscopy files.

    Raises:
        ImageLoadError: The file is missing, truncated, not an image, smaller than
            :data:`MIN_SIDE` or past Pillow's decompression-bomb limit. Formats are recognised
            by content, not suffix; animated files give their first frame.
    """
    try:
        with Image.open(path) as image:
            if min(image.size) < MIN_SIDE:
                raise ImageLoadError(
                    f"image {path} is too small ({image.size[0]}x{image.size[1]} px; the shorter side must be at least {MIN_SIDE})"
                )
            if min_side and image.format == "JPEG" and min(image.size) > min_side:
                scale = min_side / min(image.size)
                image.draft("RGB", (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except FileNotFoundError:
        raise ImageLoadError(f"image not found: {path}") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image {path} is refused as a possible decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error, EOFError) as exc:
        raise ImageLoadError(f"cannot read image {path}: {exc}") from None


def resize_shorter_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (antialiased), centre-crop a square, return HWC uint8."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
