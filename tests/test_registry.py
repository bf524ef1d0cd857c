"""Registered weights: download (resumable, verified) from a local HTTP server; projector loading."""

import hashlib
import http.server
import json
import threading
from functools import partial

import pandas as pd
import pytest
import torch
import torchvision

from lesionssl.config import PretrainConfig, validate
from lesionssl.errors import LesionSSLError
from lesionssl.models import registry
from lesionssl.models.backbones import build_backbone, read_projector_state
from lesionssl.models.heads import ProjectionHead
from lesionssl.models.registry import REGISTRY, WeightsEntry, fetch, weights_dir
from lesionssl.pretraining.run import load_projector, pretrain


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (206 Partial Content), like real CDNs."""

    requests_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        data = open(path, "rb").read()
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
        else:
            self.send_response(200)
        RangeHandler.requests_seen.append(self.headers.get("Range"))
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


def _official_full_checkpoint(seed=0):
    """The layout of the official checkpoint.pth: a DDP state dict under "model"."""
    torch.manual_seed(seed)
    backbone = torchvision.models.resnet18()
    backbone.fc = torch.nn.Identity()
    projector = ProjectionHead(512, [64, 64, 32])
    model = {f"module.backbone.{k}": v for k, v in backbone.state_dict().items()}
    model |= {f"module.projector.{k}": v for k, v in projector.state_dict().items()}
    model |= {"module.bn.running_mean": torch.zeros(32), "module.bn.running_var": torch.ones(32)}
    return {"epoch": 1000, "model": model, "optimizer": {"state": {}, "param_groups": []}}, backbone, projector


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONSSL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "www"
    root.mkdir()
    checkpoint, backbone, projector = _official_full_checkpoint()
    torch.save(checkpoint, root / "checkpoint.pth")
    digest = hashlib.sha256((root / "checkpoint.pth").read_bytes()).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/checkpoint.pth"
    RangeHandler.requests_seen = []
    yield {"url": url, "digest": digest, "root": root, "backbone": backbone, "projector": projector}
    server.shutdown()


def _register(monkeypatch, **fields):
    entry = WeightsEntry(name="test-full", architecture="resnet18", method="barlow-twins", has_projector=True, **fields)
    monkeypatch.setitem(REGISTRY, "test-full", entry)
    return entry


def test_every_entry_has_url_architecture_and_preprocessing():
    for entry in REGISTRY.values():
        assert entry.url.startswith("https://") and entry.architecture in ("resnet18", "resnet50")
        assert set(entry.preprocessing) >= {"mean", "std", "interpolation"}
        if entry.url.startswith("https://download.pytorch.org"):
            assert entry.sha256_prefix and entry.sha256_prefix in entry.url  # torchvision's convention
    assert REGISTRY["bt-resnet50-hub"].url != REGISTRY["bt-resnet50-ljng"].url


def test_download_verify_and_load_registered_full_checkpoint(served, monkeypatch):
    _register(monkeypatch, url=served["url"], sha256=served["digest"])
    model, info = build_backbone("resnet18", "test-full")
    torch.testing.assert_close(model.conv1.weight, served["backbone"].conv1.weight)
    assert info["verified"] == "sha256" and info["registry"] == "test-full"
    state = read_projector_state("test-full", "resnet18")
    projector = ProjectionHead(512, [64, 64, 32])
    load_projector(projector, state, "test-full")
    torch.testing.assert_close(projector[6].weight, served["projector"][6].weight)
    with pytest.raises(LesionSSLError, match="widths"):
        load_projector(ProjectionHead(512, [128, 32]), state, "test-full")


def test_interrupted_download_resumes_with_a_range_request(served, monkeypatch):
    entry = _register(monkeypatch, url=served["url"], sha256=served["digest"])
    data = (served["root"] / "checkpoint.pth").read_bytes()
    target = weights_dir() / entry.name / "checkpoint.pth"
    target.parent.mkdir(parents=True)
    target.with_suffix(".pth.part").write_bytes(data[: len(data) // 2])
    path, _, how = fetch("test-full")
    assert path.read_bytes() == data and how == "sha256"
    assert RangeHandler.requests_seen == [f"bytes={len(data) // 2}-"]


def test_checksum_mismatch_removes_the_file(served, monkeypatch):
    _register(monkeypatch, url=served["url"], sha256="0" * 64)
    with pytest.raises(LesionSSLError, match="checksum mismatch"):
        fetch("test-full")
    assert not (weights_dir() / "test-full" / "checkpoint.pth").exists()


def test_unpinned_weights_are_pinned_at_first_use(served, monkeypatch):
    _register(monkeypatch, url=served["url"])
    assert fetch("test-full")[2] == "first-use"
    assert json.loads((weights_dir() / "lock.json").read_text()) == {served["url"]: served["digest"]}
    (weights_dir() / "test-full" / "checkpoint.pth").write_bytes(b"tampered")
    with pytest.raises(LesionSSLError, match="checksum mismatch"):
        fetch("test-full")


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONSSL_CACHE", str(tmp_path))
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        _register(monkeypatch, url=f"http://127.0.0.1:{closed.getsockname()[1]}/x.pth")
        with pytest.raises(LesionSSLError, match="could not download .*--init PATH"):
            fetch("test-full")


def test_unknown_name_lists_registered():
    with pytest.raises(LesionSSLError, match="registered"):
        registry.fetch("nope")


def test_pre_pretraining_from_an_official_layout_checkpoint_loads_its_projector(synthetic_manifest, tmp_path):
    checkpoint, backbone, projector = _official_full_checkpoint(seed=1)
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    config = validate(
        PretrainConfig,
        {
            "manifest": str(synthetic_manifest),
            "out": str(tmp_path / "bt"),
            "init": str(tmp_path / "checkpoint.pth"),
            "projector_init": "checkpoint",
            "projector": [64, 64, 32],
            "image_size": 32,
            "epochs": 1,
            "batch_size": 32,
            "lr": 1e-6,
        },
    )
    pretrain(config)
    history = pd.read_csv(tmp_path / "bt" / "history.csv")
    assert list(history["stage"]) == ["pretrain"]  # loaded projector: no warm-up epoch
    saved = torch.load(tmp_path / "bt" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # a tiny LR barely moves the weights: the loaded projector, not a fresh one, was trained
    torch.testing.assert_close(saved["method.projector.0.weight"], projector[0].weight, atol=1e-4, rtol=0)
