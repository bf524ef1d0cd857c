"""``lesionssl export``: a fine-tuned model in a form other tools load.

* ``onnx``: opset 18, dynamic batch. Input ``image``: float32 NCHW, already resized and
  normalised as ``model.json`` says; output ``probabilities``: ``softmax(logits / T)``, the
  calibrated probabilities ``predict`` gives (without test-time augmentation).
* ``torchscript``: the same function, traced.
* ``safetensors``: torchvision / timm key names (the head as the model's own classifier,
  ``fc`` for ResNets), loadable with ``load_state_dict`` into ``resnet18(num_classes=K)`` or
  ``timm.create_model(name, num_classes=K)``; no temperature (apply it from ``model.json``).

Each format is written with ``model.json`` beside it (mean, std, size, classes, temperature,
threshold, and ``colour_constancy``: the exported graphs start after it, so a caller applies it,
as :func:`lesionssl.data.colour.shades_of_gray`, before resizing and normalising; export says so).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from lesionssl.deploy.model import load_model
from lesionssl.errors import LesionSSLError
from lesionssl.finetuning.module import ClassifierModule
from lesionssl.io import atomic_write
from lesionssl.layout import MODEL_RECORD, MODEL_WEIGHTS
from lesionssl.progress import console

FORMATS = ("onnx", "torchscript", "safetensors")
ONNX_OPSET = 18


class CalibratedClassifier(nn.Module):
    """Normalised images -> calibrated class probabilities."""

    def __init__(self, module: ClassifierModule, temperature: float | None) -> None:
        super().__init__()
        self.backbone, self.head = module.backbone, module.head
        self.temperature = float(temperature or 1.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.backbone(image)) / self.temperature, dim=1)


def _classifier_name(module: ClassifierModule) -> str:
    """The classifier's key prefix in the architecture's own library (timm's ``default_cfg``)."""
    cfg = getattr(module.backbone, "default_cfg", None)
    head = cfg.get("classifier", "fc") if cfg else "fc"
    return head if isinstance(head, str) else head[0]


def export_model(run: Path, format: str, out: Path) -> Path:
    """Write the model of ``run`` as ``format`` into ``out``; return the file."""
    if format not in FORMATS:
        raise LesionSSLError(f"--format must be one of {list(FORMATS)}, got {format!r}")
    module, record = load_model(run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = CalibratedClassifier(module, record.temperature).eval()
    example = torch.zeros(2, 3, record.image_size, record.image_size)
    if format == "onnx":
        if importlib.util.find_spec("onnxscript") is None:
            raise LesionSSLError("ONNX export needs onnx and onnxscript: pip install 'lesionssl[export]'")
        target = out / "model.onnx"

        def write(tmp: Path) -> None:
            batch = torch.export.Dim("batch", min=1, max=65536)
            with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
                program = torch.onnx.export(
                    model,
                    (example,),
                    input_names=["image"],
                    output_names=["probabilities"],
                    opset_version=ONNX_OPSET,
                    dynamo=True,
                    dynamic_shapes=({0: batch},),
                )
            program.save(str(tmp))

        atomic_write(target, write)
    elif format == "torchscript":
        target = out / "model.torchscript.pt"
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        atomic_write(target, lambda tmp: traced.save(str(tmp)))
    else:
        target = out / MODEL_WEIGHTS
        head = _classifier_name(module)
        state = {k: v.contiguous() for k, v in module.backbone.state_dict().items() if not k.startswith(f"{head}.")}
        state |= {
            f"{head}.weight": module.head.weight.detach().contiguous(),
            f"{head}.bias": module.head.bias.detach().contiguous(),
        }
        atomic_write(target, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    shutil.copyfile(Path(run) / MODEL_RECORD, out / MODEL_RECORD)
    if record.colour.active:
        console.print(
            f"the model was trained on images with {record.colour_constancy} colour constancy (p = {record.colour_constancy_p:g}): apply it to every image before the exported model, as {MODEL_RECORD} records",
            markup=False,
        )
    return target
