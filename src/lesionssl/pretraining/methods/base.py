"""What a self-supervised method is to lesionssl: a projector, a loss over two views' embeddings,
its hyperparameters (validated) and the terms it logs. One file per method implements it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lesionssl.models.heads import ProjectionHead


class LossTerms(NamedTuple):
    """The loss to minimise and its named parts (logged per epoch; their scales differ)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


class MethodKwargs(BaseModel):
    """Hyperparameters every method has; each method adds its own. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    projector: list[int] = Field(min_length=1, description="output widths of the projector's linear layers")


class Method(ABC):
    """A joint-embedding method: ``loss(projector(backbone(view_a)), projector(backbone(view_b)))``."""

    #: Registry name (``method:`` in a config).
    name: ClassVar[str]
    #: One line for the README's table: what it optimises.
    summary: ClassVar[str]
    #: Where its defaults come from.
    source: ClassVar[str]
    Kwargs: ClassVar[type[MethodKwargs]]

    def __init__(self, **kwargs: Any) -> None:
        self.settings = self.Kwargs(**kwargs)

    def projector(self, in_dim: int) -> nn.Module:
        """A fresh projector for a backbone with ``in_dim`` features."""
        return ProjectionHead(in_dim, self.settings.projector)

    @abstractmethod
    def loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> LossTerms:
        """The loss of two views' embeddings (``[batch, dim]`` each, this process's share)."""

    def resolved(self) -> dict[str, Any]:
        """Every hyperparameter, defaults filled (written into config.yaml and backbone.json)."""
        return self.settings.model_dump()
