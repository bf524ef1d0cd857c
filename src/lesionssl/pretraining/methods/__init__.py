"""Self-supervised methods, one file each, behind one registry (``method:`` in a config).

Adding a method is one file here (a :class:`~lesionssl.pretraining.methods.base.Method` subclass:
its heads and state, loss, hyperparameters and logged terms, and the hooks it needs) plus its
entry in :data:`METHODS`; the registry-parametrised tests then cover it, and it adds its own
against the paper. Nothing else in lesionssl names a method.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lesionssl.config import PretrainConfig
from lesionssl.errors import LesionSSLError
from lesionssl.pretraining.methods.barlow_twins import BarlowTwins
from lesionssl.pretraining.methods.base import LossTerms, Method
from lesionssl.pretraining.methods.byol import BYOL
from lesionssl.pretraining.methods.simclr import SimCLR
from lesionssl.pretraining.methods.vicreg import VICReg

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (BarlowTwins, VICReg, SimCLR, BYOL)}


def build_method(config: PretrainConfig) -> Method:
    """The method a pretraining configuration names: its defaults, changed by the recipe's for this
    method, changed by ``method_kwargs`` (a one-line error for a key the method does not have)."""
    return get_method(config.method, config.resolved_method_kwargs)


def get_method(name: str, kwargs: dict[str, Any] | None = None) -> Method:
    """The method ``name`` with its hyperparameters validated; one-line errors name what is allowed."""
    if name not in METHODS:
        raise LesionSSLError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    cls = METHODS[name]
    try:
        return cls(**(kwargs or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        )
        raise LesionSSLError(
            f"method_kwargs of {name}: {problems} (allowed: {', '.join(cls.Kwargs.model_fields)})"
        ) from None


__all__ = ["METHODS", "LossTerms", "Method", "build_method", "get_method"]
