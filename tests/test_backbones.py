import hashlib
import http.server
import threading
from dataclasses import asdict
from functools import partial
from types import SimpleNamespace

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file

from lesionssl.augment.views import IMAGENET
from lesionssl.errors import LesionSSLError
from lesionssl.models import backbones
from lesionssl.models.backbones import build_backbone, read_state_dict, split_prefixed
from lesionssl.pretraining.methods import get_method
from lesionssl.pretraining.module import SelfSupervisedModule
from lesionssl.pretraining.run import export_backbone
from lesionssl.records import BackboneRecord


def _reference_state(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


@pytest.mark.parametrize("prefix", ["", "module.", "backbone.", "encoder.", "module.backbone."])
def test_prefixed_checkpoints_load_to_identical_weights(tmp_path, prefix):
    state = _reference_state()
    extra = (
        {f"{prefix.replace('backbone.', 'projector.').replace('encoder.', 'projector.')}0.weight": torch.ones(2, 2)}
        if prefix.endswith(("backbone.", "encoder."))
        else {}
    )
    torch.save({f"{prefix}{k}": v for k, v in state.items()} | extra, tmp_path / "w.pth")
    model, info = build_backbone("resnet18", str(tmp_path / "w.pth"))
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"])
    assert info["source"].endswith("w.pth")


def test_prefix_is_removed_exactly_not_as_a_character_set():
    backbone, rest = split_prefixed({"backbone.bn1.weight": torch.ones(1), "projector.0.weight": torch.ones(1)})
    assert list(backbone) == ["bn1.weight"] and list(rest) == ["projector.0.weight"]


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = _reference_state()
    del state["layer4.1.bn2.weight"]
    state["extra.thing"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(
        LesionSSLError, match=r"missing 1 keys \['layer4.1.bn2.weight'\].*unexpected 1 keys \['extra.thing'\]"
    ):
        build_backbone("resnet18", str(tmp_path / "w.pth"))


def test_wrong_architecture_is_reported(tmp_path):
    torch.save(_reference_state(), tmp_path / "w.pth")
    with pytest.raises(LesionSSLError, match="does not match"):
        build_backbone("resnet50", str(tmp_path / "w.pth"))


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"conv1.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(LesionSSLError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "evil.pth")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(LesionSSLError, match="cannot read checkpoint"):
        build_backbone("resnet18", str(tmp_path / "bad.safetensors"))


def test_exported_backbone_loads_in_torchvision_and_timm_with_only_fc_missing(tmp_path):
    backbone, _ = build_backbone("resnet18", "random")
    module = SelfSupervisedModule(backbone, get_method("barlow_twins", {"projector": [16], "lambd": 0.1}))
    record = BackboneRecord(
        architecture="resnet18",
        image_size=32,
        normalize="auto",
        preprocessing={"mean": list(IMAGENET.mean), "std": list(IMAGENET.std), "interpolation": IMAGENET.interpolation},
        pool="inductive",
        pool_images=10,
        init={"init": "random"},
        epochs=1,
        recipe="small-data",
        method="barlow_twins",
        method_kwargs={"projector": [16], "lambd": 0.1},
    )
    path = export_backbone(module, tmp_path, record)
    for state in (load_file(str(path)), torch.load(tmp_path / "backbone.pth", weights_only=True)):
        result = torchvision.models.resnet18().load_state_dict(state, strict=False)
        assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
        result = timm.create_model("resnet18", pretrained=False).load_state_dict(state, strict=False)
        assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
    reloaded, info = build_backbone("resnet18", str(path))
    torch.testing.assert_close(reloaded.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight)
    assert info["pretraining"] == asdict(record) and BackboneRecord.read(path.with_suffix(".json")) == record


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def weight_server(tmp_path, monkeypatch):
    """A torchvision-style weights file served on 127.0.0.1, with its hash prefix in the name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    served = tmp_path / "served"
    served.mkdir()
    state = _reference_state(seed=3)
    torch.save(state, served / "tmp.pth")
    digest = hashlib.sha256((served / "tmp.pth").read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    (served / "tmp.pth").rename(served / name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{name}", state
    server.shutdown()


def test_imagenet_weights_download_through_torchvision_api(weight_server, monkeypatch):
    url, state = weight_server
    monkeypatch.setattr(backbones.torchvision.models, "get_weight", lambda name: SimpleNamespace(url=url))
    model, info = build_backbone("resnet18", "imagenet")
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"])
    assert info["source"] == "torchvision"


def test_imagenet_weights_offline_give_one_line_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with socket_closed() as port:
        url = f"http://127.0.0.1:{port}/resnet18-f37072fd.pth"
        monkeypatch.setattr(backbones.torchvision.models, "get_weight", lambda name: SimpleNamespace(url=url))
        with pytest.raises(
            LesionSSLError,
            match=r"could not fetch ImageNet weights for resnet18 .*--init /path/to/resnet18-f37072fd.pth",
        ) as error:
            build_backbone("resnet18", "imagenet")
    assert "\n" not in str(error.value)


def test_local_torchvision_weights_file_works(tmp_path):
    state = _reference_state(seed=4)  # includes fc.*, which is dropped
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    model, _ = build_backbone("resnet18", str(tmp_path / "resnet18.safetensors"))
    torch.testing.assert_close(model.bn1.running_var, state["bn1.running_var"])


class socket_closed:
    """A localhost port with nothing listening."""

    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


@pytest.mark.parametrize(
    "name, size, width",
    [("timm:resnet18", 32, 512), ("timm:convnext_nano", 32, 640), ("timm:vit_tiny_patch16_224", 48, 192)],
)
def test_any_timm_backbone_without_classifier_at_the_training_size(name, size, width):
    from lesionssl.models.backbones import build_backbone, feature_dim

    backbone, info = build_backbone(name, "random", size)
    assert feature_dim(backbone) == width and backbone(torch.randn(2, 3, size, size)).shape == (2, width)
    assert info["init"] == "random"


def test_timm_weights_file_loads_strictly_and_export_keeps_timm_keys(synthetic_manifest, tmp_path):
    import timm
    from safetensors.torch import load_file, save_file

    from lesionssl.config import PretrainConfig, validate
    from lesionssl.models.backbones import build_backbone
    from lesionssl.pretraining.run import pretrain

    source = timm.create_model("resnet18", num_classes=10)  # a timm checkpoint, classifier included
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "timm-resnet18.safetensors"))
    backbone, info = build_backbone("timm:resnet18", str(tmp_path / "timm-resnet18.safetensors"), 32)
    torch.testing.assert_close(backbone.state_dict()["layer4.1.bn2.weight"], source.state_dict()["layer4.1.bn2.weight"])
    with pytest.raises(LesionSSLError, match="does not match"):
        build_backbone("timm:convnext_nano", str(tmp_path / "timm-resnet18.safetensors"), 32)
    config = validate(
        PretrainConfig,
        {
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "bt"),
            "backbone": "timm:resnet18",
            "image_size": 32,
            "epochs": 1,
            "batch_size": 32,
            "projector": [32],
        },
    )
    exported = load_file(str(pretrain(config)))
    timm.create_model("resnet18", num_classes=0).load_state_dict(exported, strict=True)  # timm loads what we export


def test_timm_pretrained_tag_brings_its_own_preprocessing(monkeypatch):
    """The online path with the download itself replaced (no network here): the tag's pretrained
    configuration decides mean, std and interpolation."""
    import timm

    from lesionssl.models import backbones

    created = {}
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        created["pretrained"] = pretrained
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    backbone, info = backbones.build_backbone("timm:vit_tiny_patch16_224", "timm:vit_tiny_patch16_224.augreg_in21k", 32)
    assert created["pretrained"] is True and info["source"] == "timm"
    pre = backbones.resolve_preprocessing("auto", info)
    assert (
        pre.mean == pytest.approx((0.5, 0.5, 0.5))
        and pre.std == pytest.approx((0.5, 0.5, 0.5))
        and pre.interpolation == "bicubic"
    )
    assert backbones.resolve_preprocessing("imagenet", info).mean == pytest.approx(
        (0.485, 0.456, 0.406)
    )  # an explicit choice wins
    with pytest.raises(LesionSSLError, match="needs --backbone timm:vit_tiny_patch16_224"):
        backbones.build_backbone("resnet18", "timm:vit_tiny_patch16_224.augreg_in21k", 32)


def test_registry_and_lesionssl_backbones_apply_their_recorded_preprocessing():
    from lesionssl.models.backbones import resolve_preprocessing
    from lesionssl.models.registry import REGISTRY

    registered = resolve_preprocessing("auto", {"preprocessing": REGISTRY["tv-resnet50-v2"].preprocessing})
    assert registered.mean == pytest.approx((0.485, 0.456, 0.406))
    assert resolve_preprocessing("auto", {"pretraining": {"normalize": "none"}}).std == (1.0, 1.0, 1.0)
    assert resolve_preprocessing("auto", {"init": "random"}).mean == pytest.approx((0.485, 0.456, 0.406))
