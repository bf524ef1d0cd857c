"""Projection heads of the joint-embedding methods."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class ProjectionHead(nn.Sequential):
    """MLP projector: linear layers without bias, each but the last followed by BatchNorm + ReLU.

    Barlow Twins (Zbontar et al. 2021, Sec. 2 and the official ``main.py``): "three linear
    layers, each with 8192 output units. The first two layers of the projector are followed by a
    batch normalization layer and rectified linear units." VICReg's expander (Bardes et al. 2022)
    and SimCLR's projection head (Chen et al. 2020, 2048-128 here) have the same shape.

    Args:
        in_dim: Backbone feature width (512 for ResNet-18, 2048 for ResNet-50).
        dims: Output widths of the linear layers, e.g. ``(8192, 8192, 8192)``.
        last_bias: Give the last linear layer a bias (BYOL's MLPs have one; the layers before
            a BatchNorm never need one).
    """

    def __init__(self, in_dim: int, dims: Sequence[int], last_bias: bool = False) -> None:
        if not dims:
            raise ValueError("the projector needs at least one layer")
        layers: list[nn.Module] = []
        widths = [in_dim, *dims]
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(dims) - 1
            layers.append(nn.Linear(d_in, d_out, bias=last and last_bias))
            if not last:
                layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        super().__init__(*layers)

    @property
    def widths(self) -> list[int]:
        return [m.out_features for m in self if isinstance(m, nn.Linear)]
