import hashlib
import http.server
import threading
from types import SimpleNamespace
from functools import partial

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file

from lesionssl.errors import LesionSSLError
from lesionssl.models import backbones
from lesionssl.models.backbones import build_backbone, read_state_dict, split_prefixed
from lesionssl.pretrain.methods import get_method
from lesionssl.pretrain.module import SelfSupervisedModule
from lesionssl.pretrain.run import export_backbone
from lesionssl.models.heads import ProjectionHead


def _reference_state(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


@pytest.mark.parametrize("prefix", ["", "module.", "backbone.", "encoder.", "module.backbone."])
def test_prefixed_checkpoints_load_to_identical_weights(tmp_path, prefix):
    state = _reference_state()
    extra = {f"{prefix.replace('backbone.', 'projector.').replace('encoder.', 'projector.')}0.weight": torch.ones(2, 2)} if prefix.endswith(("backbone.", "encoder.")) else {}
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
    with pytest.raises(LesionSSLError, match=r"missing 1 keys \['layer4.1.bn2.weight'\].*unexpected 1 keys \['extra.thing'\]"):
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
    module = SelfSupervisedModule(backbone, ProjectionHead(512, [16]), get_method("barlow_twins", {"projector": [16], "lambd": 0.1}))
    path = export_backbone(module, tmp_path, {"architecture": "resnet18"})
    for state in (load_file(str(path)), torch.load(tmp_path / "backbone.pth", weights_only=True)):
        result = torchvision.models.resnet18().load_state_dict(state, strict=False)
        assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
        result = timm.create_model("resnet18", pretrained=False).load_state_dict(state, strict=False)
        assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
    reloaded, info = build_backbone("resnet18", str(path))
    torch.testing.assert_close(reloaded.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight)
    assert info["pretraining"] == {"architecture": "resnet18"}


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
        with pytest.raises(LesionSSLError, match=r"could not fetch ImageNet weights for resnet18 .*--init /path/to/resnet18-f37072fd.pth") as error:
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
