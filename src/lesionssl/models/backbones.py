"""ResNet backbones and every way to initialise them: random, torchvision ImageNet, or a file.

Checkpoint loading is strict and never executes pickled code: ``.safetensors`` files are read
with safetensors, everything else with ``torch.load(weights_only=True)``. Keys may carry the
``module.`` (DDP), ``backbone.`` / ``encoder.`` (SSL libraries) prefixes, removed by exact
prefix; only the classifier (``fc.*``) may be missing or extra.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import load_file as load_safetensors
from torch import nn

from lesionssl.errors import LesionSSLError
from lesionssl.models.registry import REGISTRY, fetch

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
#: ``imagenet`` means torchvision's default (best) weights; V1/V2 can be named explicitly.
IMAGENET_WEIGHTS = {
    "resnet18": {"imagenet": "IMAGENET1K_V1", "imagenet-v1": "IMAGENET1K_V1"},
    "resnet34": {"imagenet": "IMAGENET1K_V1", "imagenet-v1": "IMAGENET1K_V1"},
    "resnet50": {"imagenet": "IMAGENET1K_V2", "imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"},
    "resnet101": {"imagenet": "IMAGENET1K_V2", "imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"},
}
CLASSIFIER_KEYS = {"fc.weight", "fc.bias"}
WRAPPER_PREFIXES = ("module.", "model.")
BACKBONE_PREFIXES = ("backbone.", "encoder.")


def create_resnet(name: str) -> nn.Module:
    """A torchvision ResNet with random weights (its ``fc`` is replaced later)."""
    if name not in BACKBONES:
        raise LesionSSLError(f"unknown backbone {name!r}; choose from {list(BACKBONES)}")
    return getattr(torchvision.models, name)(weights=None)


def feature_dim(backbone: nn.Module) -> int:
    """Width of the pooled features of a ResNet backbone."""
    return backbone.fc.in_features if isinstance(backbone.fc, nn.Linear) else backbone.inplanes


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from a checkpoint without executing pickled code.

    Accepts safetensors files, plain state dicts, Lightning checkpoints (``state_dict``) and the
    official Barlow Twins ``checkpoint.pth`` (``model``).
    """
    if not path.is_file():
        raise LesionSSLError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(str(path))
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        raise LesionSSLError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise LesionSSLError(f"{path} does not contain a state dict of tensors")
    return data


def split_prefixed(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a state dict into (backbone keys with prefixes removed, everything else).

    ``module.`` / ``model.`` wrappers are removed from every key. If some keys start with
    ``backbone.`` or ``encoder.``, only those form the backbone; the rest (projector, loss
    buffers) is returned as the second dict, with its wrapper prefix removed.
    """
    unwrapped = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        unwrapped[key] = value
    for prefix in BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in unwrapped):
            backbone = {k.removeprefix(prefix): v for k, v in unwrapped.items() if k.startswith(prefix)}
            rest = {k: v for k, v in unwrapped.items() if not k.startswith(prefix)}
            return backbone, rest
    return unwrapped, {}


def load_backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly: only the classifier may be missing or extra.

    Raises:
        LesionSSLError: Listing missing and unexpected keys, or mismatched shapes.
    """
    state = {k: v for k, v in state.items() if k not in CLASSIFIER_KEYS}
    expected = {k for k in backbone.state_dict() if k not in CLASSIFIER_KEYS}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise LesionSSLError(
            f"{source} does not match the backbone: missing {len(missing)} keys {missing[:5]}, "
            f"unexpected {len(unexpected)} keys {unexpected[:5]}"
        )
    reference = backbone.state_dict()
    wrong = [k for k, v in state.items() if v.shape != reference[k].shape]
    if wrong:
        raise LesionSSLError(f"{source}: shape mismatch for {wrong[:5]} (is it another architecture?)")
    backbone.load_state_dict(state, strict=False)


def imagenet_state(name: str, variant: str) -> dict[str, torch.Tensor]:
    """Fetch torchvision's supervised ImageNet weights through its weights API (cached in TORCH_HOME)."""
    tag = IMAGENET_WEIGHTS.get(name, {}).get(variant)
    if tag is None:
        raise LesionSSLError(f"no {variant} weights for {name}; available: {sorted(IMAGENET_WEIGHTS.get(name, {}))}")
    weights = torchvision.models.get_weight(f"{_enum_name(name)}.{tag}")
    try:
        # What WeightsEnum.get_state_dict does: cached in $TORCH_HOME, sha256 prefix checked.
        return torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LesionSSLError(
            f"could not fetch ImageNet weights for {name} from {weights.url} ({reason}); "
            f"download that file elsewhere and pass it with --init /path/to/{Path(weights.url).name}"
        ) from None


def _enum_name(name: str) -> str:
    return {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}[name]


def read_metadata(path: Path) -> dict[str, Any]:
    """Metadata written next to a lesionssl backbone (``<file>.json``), or ``{}`` for foreign files."""
    sidecar = path.with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def resolve_checkpoint(init: str, architecture: str) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file for ``init`` (a registered name or a path) and its provenance."""
    if init in REGISTRY:
        path, entry, verified = fetch(init)
        if entry.architecture != architecture:
            raise LesionSSLError(f"{init} holds {entry.architecture} weights, but the backbone is {architecture}")
        return path, {"registry": init, "url": entry.url, "method": entry.method, "verified": verified, "preprocessing": entry.preprocessing}
    path = Path(init).expanduser()
    return path, {"pretraining": read_metadata(path)}


def read_projector_state(init: str, architecture: str) -> dict[str, torch.Tensor]:
    """The ``projector.*`` tensors of a full Barlow Twins checkpoint (official or lesionssl), prefix removed."""
    if init == "random" or init.startswith("imagenet"):
        return {}
    path, _ = resolve_checkpoint(init, architecture)
    _, rest = split_prefixed(read_state_dict(path))
    return {k.removeprefix("projector."): v for k, v in rest.items() if k.startswith("projector.")}


def build_backbone(name: str, init: str) -> tuple[nn.Module, dict[str, Any]]:
    """Create a backbone and initialise it.

    Args:
        name: torchvision ResNet name.
        init: ``random``, ``imagenet`` / ``imagenet-v1`` / ``imagenet-v2``, a registered weights
            name (see :mod:`lesionssl.models.registry`), or a checkpoint path.

    Returns:
        The backbone with ``fc`` replaced by identity, and provenance metadata (``init``,
        ``source`` and, for lesionssl checkpoints, the pretraining details such as the pool).
    """
    backbone = create_resnet(name)
    info: dict[str, Any] = {"init": init}
    if init == "random":
        pass
    elif init.startswith("imagenet"):
        load_backbone_state(backbone, imagenet_state(name, init), f"ImageNet weights ({init})")
        info["source"] = "torchvision"
    else:
        path, provenance = resolve_checkpoint(init, name)
        state, _ = split_prefixed(read_state_dict(path))
        load_backbone_state(backbone, state, str(path))
        info.update(source=str(path.resolve()), **provenance)
    backbone.fc = nn.Identity()
    return backbone, info
