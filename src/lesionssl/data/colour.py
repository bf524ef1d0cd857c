"""Colour constancy: images of other cameras and lights brought to a common illuminant.

Shades of Gray (Finlayson & Trezzi, 2004): the illuminant of each channel is the Minkowski
p-norm mean of its values, ``e_c = (mean I_c^p)^(1/p)`` (p = 1 is Gray World, p -> inf is
max-RGB); the image is divided by ``e`` normalised to unit length and scaled by sqrt(3), so a
white illuminant leaves it unchanged. p = 6 is the value of Barata et al. (2015) and of the top
ISIC 2019 entries, which used it to make sources agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

#: The colour constancy methods a stage's ``colour_constancy`` key takes.
ColourMethod = Literal["none", "shades-of-gray"]
#: Minkowski norm of Shades of Gray when none is given (Barata et al. 2015).
DEFAULT_P = 6.0


@dataclass(frozen=True)
class ColourConstancy:
    """A colour constancy method and its parameter, applied once to each stored image."""

    method: ColourMethod = "none"
    p: float = DEFAULT_P

    @property
    def active(self) -> bool:
        return self.method != "none"

    def key(self) -> str:
        """What the image store's cache key adds (nothing for ``none``, so old stores stay valid)."""
        return f"shades-of-gray-p{self.p:g}" if self.active else ""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The corrected HWC uint8 image."""
        if not self.active:
            return image
        return shades_of_gray(image, self.p)


#: No colour constancy (the stores it keys are those made before colour constancy existed).
NO_COLOUR_CONSTANCY = ColourConstancy()


def mismatch(init_info: dict, colour: ColourConstancy) -> str | None:
    """A one-line warning when a backbone was pretrained with other colour constancy than a run
    that starts from it uses (its images would look unlike those it learnt on), else None."""
    recorded = (init_info.get("pretraining") or {}).get("colour_constancy", "none")
    if recorded == colour.method:
        return None
    return f"warning: the backbone was pretrained with colour constancy {recorded}, this run uses {colour.method}; --colour-constancy {recorded} matches it"


def shades_of_gray(image: np.ndarray, p: float = DEFAULT_P) -> np.ndarray:
    """Shades of Gray colour constancy of an HWC uint8 RGB image (values clipped to 0-255)."""
    pixels = image.astype(np.float64) / 255.0
    illuminant = np.power(np.power(pixels, p).reshape(-1, 3).mean(axis=0), 1.0 / p)
    norm = np.sqrt((illuminant**2).sum())
    if norm == 0:  # an all-black image has no illuminant to remove
        return image
    gains = 1.0 / (illuminant / norm * np.sqrt(3.0)).clip(min=1e-6)
    return np.clip(np.rint(pixels * gains * 255.0), 0, 255).astype(np.uint8)
