"""Projection head of Barlow Twins."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class BarlowTwinsProjector(nn.Sequential):
    """MLP projector of Zbontar et al. (2021), Sec. 2 / official ``main.py``.

    "The projector network has three linear layers, each with 8192 output units. The first two
    layers of the projector are followed by a batch normalization layer and rectified linear
    units." As in the official code, the linear layers have no bias.

    Args:
        in_dim: Backbone feature width (512 for ResNet-18, 2048 for ResNet-50).
        dims: Output widths of the linear layers, e.g. ``(8192, 8192, 8192)``.
    """

    def __init__(self, in_dim: int, dims: Sequence[int]) -> None:
        if not dims:
            raise ValueError("the projector needs at least one layer")
        layers: list[nn.Module] = []
        widths = [in_dim, *dims]
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(d_in, d_out, bias=False))
            if i < len(dims) - 1:
                layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        super().__init__(*layers)
