"""Backbones and every way to initialise them: random, torchvision ImageNet, timm, or a file.

Backbones are torchvision ResNets (``resnet18`` ... ``resnet101``) or any timm model
(``timm:NAME``, e.g. ``timm:convnext_nano`` or ``timm:vit_small_patch16_224`` at any image size
it accepts), created without a classifier (timm's ``num_classes=0``; the feature width is its
``num_features``). ``--init timm:NAME.TAG`` loads timm's pretrained weights (online) and its
pretrained configuration's mean, std and interpolation.

Checkpoint loading is strict and never executes pickled code: ``.safetensors`` files are read
with safetensors, everything else with ``torch.load(weights_only=True)``. Keys may carry the
``module.`` (DDP), ``backbone.`` / ``encoder.`` (SSL libraries) prefixes, removed by exact
prefix; only the classifier may be missing or extra.
"""

from __future__ import annotations

import json
import urllib.error
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import load_file as load_safetensors
from torch import nn

from lesionssl.augment.views import IMAGENET, NAMED_PREPROCESSING, Normalization, Preprocessing, as_preprocessing
from lesionssl.errors import LesionSSLError
from lesionssl.models import IMAGENET_WEIGHTS, RESNETS, TIMM_PREFIX
from lesionssl.models.lite import LITE, LITE_PREPROCESSING, create_lite, lite_imagenet_state
from lesionssl.models.registry import REGISTRY, fetch
from lesionssl.records import BackboneRecord

BACKBONES = RESNETS
CLASSIFIER_KEYS = {"fc.weight", "fc.bias"}
WRAPPER_PREFIXES = ("module.", "model.")
BACKBONE_PREFIXES = ("backbone.", "encoder.")


def create_resnet(name: str) -> nn.Module:
    """A torchvision ResNet with random weights (its ``fc`` is replaced later)."""
    if name not in BACKBONES:
        raise LesionSSLError(f"unknown backbone {name!r}; choose from {list(BACKBONES)} or timm:NAME")
    return getattr(torchvision.models, name)(weights=None)


def create_timm(name: str, image_size: int | None = None, pretrained: bool = False) -> nn.Module:
    """A timm model without classifier (pooled features), built for ``image_size`` when the
    architecture takes one (vision transformers), with timm's pretrained weights on request."""
    import timm

    model_name = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(model_name.split(".")[0]):
        raise LesionSSLError(f"timm has no model {model_name!r} (list them with timm.list_models())")
    try:
        try:
            return (
                timm.create_model(model_name, pretrained=pretrained, num_classes=0, img_size=image_size)
                if image_size
                else timm.create_model(model_name, pretrained=pretrained, num_classes=0)
            )
        except TypeError:  # architectures without an image size (CNNs)
            return timm.create_model(model_name, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError) as exc:
        raise LesionSSLError(
            f"could not create {name}{' with pretrained weights' if pretrained else ''}: {str(exc).splitlines()[0]}"
        ) from None


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def feature_dim(backbone: nn.Module) -> int:
    """Width of the pooled features (timm's ``num_features``; a ResNet's last block width)."""
    if hasattr(backbone, "num_features"):
        return int(backbone.num_features)
    return backbone.fc.in_features if isinstance(backbone.fc, nn.Linear) else backbone.inplanes


def _classifier_keys(backbone: nn.Module) -> set[str]:
    """State-dict keys of a classifier that a checkpoint may have and the backbone lacks."""
    keys = set(CLASSIFIER_KEYS)
    head = getattr(backbone, "default_cfg", {}).get("classifier") if hasattr(backbone, "default_cfg") else None
    for name in [head] if isinstance(head, str) else head or []:
        keys |= {f"{name}.weight", f"{name}.bias"}
    return keys


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


def _architecture(backbone: nn.Module) -> str:
    """A backbone's name for messages: timm's model name, or the torchvision ResNet's depth."""
    if hasattr(backbone, "default_cfg"):
        return f"timm:{backbone.default_cfg.get('architecture', type(backbone).__name__)}"
    if not hasattr(backbone, "layer3"):
        return type(backbone).__name__
    depths = {
        ("BasicBlock", 2): "resnet18",
        ("BasicBlock", 6): "resnet34",
        ("Bottleneck", 6): "resnet50",
        ("Bottleneck", 23): "resnet101",
    }
    return depths.get((type(backbone.layer3[0]).__name__, len(backbone.layer3)), type(backbone).__name__)


def load_backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly: only the classifier may be missing or extra.

    Raises:
        LesionSSLError: Listing missing and unexpected keys, or mismatched shapes.
    """
    classifier = _classifier_keys(backbone)
    state = {k: v for k, v in state.items() if k not in classifier}
    expected = {k for k in backbone.state_dict() if k not in classifier}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise LesionSSLError(
            f"{source} does not match the backbone {_architecture(backbone)} (another architecture? set --backbone to the one it was trained with): "
            f"missing {len(missing)} keys {missing[:5]}, unexpected {len(unexpected)} keys {unexpected[:5]}"
        )
    reference = backbone.state_dict()
    wrong = [k for k, v in state.items() if v.shape != reference[k].shape]
    if wrong:
        raise LesionSSLError(
            f"{source} does not match the backbone {_architecture(backbone)}: shape mismatch for {wrong[:5]} (another architecture? set --backbone to the one it was trained with)"
        )
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
    return {
        "resnet18": "ResNet18_Weights",
        "resnet34": "ResNet34_Weights",
        "resnet50": "ResNet50_Weights",
        "resnet101": "ResNet101_Weights",
    }[name]


def read_metadata(path: Path) -> dict[str, Any]:
    """The :class:`~lesionssl.records.BackboneRecord` written next to a lesionssl backbone
    (``<file>.json``, read and checked by its class), as provenance; ``{}`` for foreign files."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # not ours: a foreign checkpoint's own notes
    if not (isinstance(data, dict) and str(data.get("format", "")).startswith("lesionssl-backbone")):
        return {}
    return asdict(BackboneRecord.read(sidecar))


def resolve_checkpoint(init: str, architecture: str) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file for ``init`` (a registered name or a path) and its provenance."""
    if init in REGISTRY:
        path, entry, verified = fetch(init)
        if entry.architecture != architecture.removeprefix(TIMM_PREFIX):
            raise LesionSSLError(f"{init} holds {entry.architecture} weights, but the backbone is {architecture}")
        return path, {
            "registry": init,
            "url": entry.url,
            "method": entry.method,
            "verified": verified,
            "preprocessing": entry.preprocessing,
        }
    path = Path(init).expanduser()
    return path, {"pretraining": read_metadata(path)}


def resolve_preprocessing(normalize: Normalization, info: dict[str, Any]) -> Preprocessing:
    """The input statistics to use: a named normalisation, or for ``auto`` what the
    initialisation records (timm's pretrained configuration, a registry entry, a lesionssl
    backbone's own), ImageNet's otherwise."""
    if normalize != "auto":
        return as_preprocessing(normalize)
    pretraining = info.get("pretraining") or {}
    recorded = info.get("preprocessing") or pretraining.get("preprocessing")
    if recorded:
        return Preprocessing.from_config(recorded)
    return NAMED_PREPROCESSING.get(pretraining.get("normalize"), IMAGENET)


def read_projector_state(init: str, architecture: str) -> dict[str, torch.Tensor]:
    """The projector tensors of a full Barlow Twins checkpoint (official ``projector.*``, or
    lesionssl's ``method.projector.*``, formerly ``projector.*``), prefix removed."""
    if init == "random" or init.startswith("imagenet"):
        return {}
    path, _ = resolve_checkpoint(init, architecture)
    _, rest = split_prefixed(read_state_dict(path))
    rest = {k.removeprefix("method."): v for k, v in rest.items()}
    return {k.removeprefix("projector."): v for k, v in rest.items() if k.startswith("projector.")}


def _timm_preprocessing(model: nn.Module) -> dict[str, Any]:
    import timm

    return asdict(Preprocessing.from_config(timm.data.resolve_model_data_config(model)))


def build_backbone(name: str, init: str, image_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Create a backbone and initialise it.

    Args:
        name: torchvision ResNet name, or ``timm:NAME``.
        init: ``random``, ``imagenet`` / ``imagenet-v1`` / ``imagenet-v2``, a registered weights
            name (see :mod:`lesionssl.models.registry`), ``timm:NAME.TAG`` (timm's pretrained
            weights), or a checkpoint path.
        image_size: The training size, for timm architectures that are built for one (ViTs).

    Returns:
        The backbone without classifier, and provenance metadata (``init``, ``source``, the
        ``preprocessing`` the weights expect when known, and for lesionssl checkpoints the
        pretraining details such as the pool).
    """
    info: dict[str, Any] = {"init": init}
    if is_timm(init):
        if (
            not is_timm(name)
            or init.removeprefix(TIMM_PREFIX).split(".")[0] != name.removeprefix(TIMM_PREFIX).split(".")[0]
        ):
            raise LesionSSLError(
                f"--init {init} needs --backbone timm:{init.removeprefix(TIMM_PREFIX).split('.')[0]}, got {name}"
            )
        backbone = create_timm(init, image_size, pretrained=True)
        return backbone, {**info, "source": "timm", "preprocessing": _timm_preprocessing(backbone)}
    if is_timm(name) or name in LITE:
        backbone = create_lite(name) if name in LITE else create_timm(name, image_size)
        if name in LITE and init == "imagenet":
            load_backbone_state(backbone, lite_imagenet_state(name), f"ImageNet weights of {name}")
            return backbone, {**info, "source": LITE[name].distribution, "preprocessing": asdict(LITE_PREPROCESSING)}
        if init != "random":
            if init.startswith("imagenet"):
                advice = (
                    "--init imagenet (its one set of ImageNet weights)"
                    if name in LITE
                    else f"--init {name}.TAG (timm's weights)"
                )
                raise LesionSSLError(f"--init {init} is not available for {name}: use {advice} or a file")
            path, provenance = resolve_checkpoint(init, name)
            state, _ = split_prefixed(read_state_dict(path))
            load_backbone_state(backbone, state, str(path))
            info.update(source=str(path.resolve()), **provenance)
        return backbone, info
    backbone = create_resnet(name)
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
