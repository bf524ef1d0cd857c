"""The bad-input corpus: every kind goes through the command a user would run and gets one line
naming the file or key and what is wrong (exit code 2), or is accepted where that is the right
call - never a traceback, and never a partial output left behind. RELIABILITY.md lists the kinds."""

from __future__ import annotations

import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.models import resnet50

from conftest import lesionssl

PRETRAIN = (
    "--backbone",
    "timm:test_resnet",
    "--image-size",
    "16",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--lr",
    "0.001",
    "--projector",
    "8",
    "--tracking.mlflow",
    "false",
    "--tracking.tensorboard",
    "false",
)


def run(*args) -> tuple[int, str, str]:
    """(exit code, stderr, stdout) of the CLI run in this process as a user would."""
    result = lesionssl(*args)
    return result.returncode, result.stderr, result.stdout


def assert_refused(args, *fragments, out: Path | None = None) -> str:
    """Assert one ``error:`` line holding ``fragments``; return what went to stdout."""
    code, err, stdout = run(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and lines[-1].startswith("error:"), err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], err
    if out is not None:  # nothing half-made is left where the output would go
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], sorted(out.rglob("*"))
    return stdout


def _pool(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(folder / f"ok{i}.png")
    return folder


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def _truncated_jpeg(path: Path) -> None:
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:200])


BAD_IMAGES = {
    "truncated-jpeg": (_truncated_jpeg, "cannot read image"),
    "zero-bytes": (lambda p: p.write_bytes(b""), "cannot read image"),
    "text-named-jpg": (lambda p: p.write_text("patient notes, not an image\n"), "cannot read image"),
    "one-pixel": (lambda p: Image.new("RGB", (1, 1)).save(p, format="PNG"), "too small"),
    "decompression-bomb": (lambda p: _png_header_only(p, 20_000, 20_000), "decompression bomb"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_is_named_in_one_line(tmp_path, kind):
    make, message = BAD_IMAGES[kind]
    folder = _pool(tmp_path / "pool")
    make(folder / "bad.jpg" if kind != "one-pixel" else folder / "bad.png")
    bad = next(folder.glob("bad.*"))
    assert_refused(
        ["pretrain", "--data", folder, "--out", tmp_path / "bt", *PRETRAIN], bad.name, message, out=tmp_path / "bt"
    )


def test_split_names_every_unreadable_image_at_once(tmp_path):
    folder = _pool(tmp_path / "data" / "NV")
    _truncated_jpeg(folder / "cut.jpg")
    (folder / "notes.jpg").write_text("not an image")
    _pool(tmp_path / "data" / "MEL")
    code, err, _ = run("split", "--data", tmp_path / "data", "--per-class", 2, "--out", tmp_path / "out" / "split.csv")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines[-1].startswith("error: 2 of 14 images cannot be read"), err
    named = [line for line in lines if line.startswith("unreadable:")]
    assert len(named) == 2 and any("cut.jpg" in line for line in named) and any("notes.jpg" in line for line in named)
    assert not (tmp_path / "out").exists()


def test_group_by_a_column_most_images_lack_is_refused(tmp_path):
    _pool(tmp_path / "data" / "NV")
    _pool(tmp_path / "data" / "MEL")
    assert_refused(
        [
            "split",
            "--data",
            tmp_path / "data",
            "--per-class",
            2,
            "--group-by",
            "lesion_id",
            "--out",
            tmp_path / "out" / "split.csv",
        ],
        "only 0 of 12 images have a lesion_id",
        "--group-by none",
        out=tmp_path / "out",
    )


def test_odd_but_valid_images_are_decoded(tmp_path):
    """A PNG named .jpg, a 16-bit PNG, an animated GIF, a CMYK JPEG and file names with spaces
    and non-ASCII characters are images: decoded (by content, rescaled, first frame, to RGB)."""
    folder = _pool(tmp_path / "pool dermatologie")
    Image.new("RGB", (30, 30), (200, 10, 10)).save(folder / "png inside.jpg", format="PNG")
    Image.fromarray(np.linspace(0, 65535, 30 * 30).reshape(30, 30).astype(np.uint16)).save(folder / "sixteen-bit.png")
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("RGB", (30, 30), (10, 10, 200)).save(folder / "läsion ñ 1.png")
    code, err, _ = run("pretrain", "--data", folder, "--out", tmp_path / "bt", *PRETRAIN)
    assert code == 0, err
    assert (tmp_path / "bt" / "backbone.safetensors").is_file()
    from lesionssl.data.store import decode_for_store

    assert decode_for_store(str(folder / "png inside.jpg"), 16)[8, 8].tolist() == [200, 10, 10]
    assert decode_for_store(str(folder / "cmyk.jpg"), 16)[8, 8, 0] > 200  # cyan-free magenta+yellow = red
    wide = decode_for_store(str(folder / "sixteen-bit.png"), 16)
    assert wide.min() < 30 and wide.max() > 220  # 16-bit range rescaled, not clipped to white


# Label files -------------------------------------------------------------------------------------


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (24, 24), (i * 20 % 255, 80, 120)).save(folder / name)


def _path_label(tmp_path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    _images(tmp_path / "img", [f"{c}{i}.png" for c in "ab" for i in range(4)])
    csv = tmp_path / "labels.csv"
    csv.write_bytes(text.replace("\n", newline).encode(encoding))
    return csv


def _rows(separator: str = ",") -> str:
    return (
        "path"
        + separator
        + "label\n"
        + "".join(f"img/{c}{i}.png{separator}{c.upper()}X\n" for c in "ab" for i in range(4))
    )


@pytest.mark.parametrize(
    ("kind", "encoding", "newline", "separator"),
    [
        ("bom", "utf-8-sig", "\n", ","),
        ("crlf", "utf-8", "\r\n", ","),
        ("semicolons", "utf-8", "\n", ";"),
        ("tabs", "utf-8", "\n", "\t"),
    ],
)
def test_label_file_dialects_are_read(tmp_path, kind, encoding, newline, separator):
    csv = _path_label(tmp_path, _rows(separator), encoding, newline)
    code, err, _ = run("split", "--data", csv, "--per-class", 2, "--out", tmp_path / "m.csv")
    assert code == 0, err
    import pandas as pd

    manifest = pd.read_csv(tmp_path / "m.csv")
    assert sorted(set(manifest["label"])) == ["AX", "BX"] and len(manifest) == 8


LABEL_FILES = {
    "missing-column": ("path,diagnosis\nimg/a0.png,AX\n", "unrecognised label file"),
    "path-not-found": ("path,label\nimg/a0.png,AX\nimg/nowhere.png,AX\n", "nowhere.png"),
    "conflicting-duplicates": ("path,label\nimg/a0.png,AX\nimg/a0.png,BX\nimg/b0.png,BX\n", "different labels"),
    "empty-file": ("", "cannot read label file"),
    "header-only": ("path,label\n", "no rows"),
}


@pytest.mark.parametrize("kind", list(LABEL_FILES))
def test_bad_label_file_is_one_line(tmp_path, kind):
    text, message = LABEL_FILES[kind]
    csv = _path_label(tmp_path, text)
    assert_refused(
        ["split", "--data", csv, "--per-class", 1, "--out", tmp_path / "out" / "m.csv"], message, out=tmp_path / "out"
    )


def test_identical_duplicate_rows_are_merged_with_a_note(tmp_path):
    csv = _path_label(tmp_path, _rows() + "img/a0.png,AX\n")
    code, err, _ = run("split", "--data", csv, "--per-class", 2, "--out", tmp_path / "m.csv")
    assert code == 0, err
    assert "listed twice" in err
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 9


def test_unknown_ham10000_class_is_named(tmp_path):
    _images(tmp_path / "images", ["ISIC_1.jpg", "ISIC_2.jpg"])
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nL1,ISIC_1,mel\nL2,ISIC_2,tumour\n")
    assert_refused(
        ["split", "--data", tmp_path / "HAM10000_metadata.csv", "--per-class", 1, "--out", tmp_path / "o" / "m.csv"],
        "tumour",
        out=tmp_path / "o",
    )


@pytest.mark.parametrize(("kind", "row"), [("two-ones", "ISIC_2,1.0,1.0,0.0"), ("no-one", "ISIC_2,0.0,0.0,0.0")])
def test_isic_one_hot_row_that_is_not_one_hot(tmp_path, kind, row):
    _images(tmp_path / "images", ["ISIC_1.jpg", "ISIC_2.jpg"])
    (tmp_path / "gt.csv").write_text(f"image,MEL,NV,BCC\nISIC_1,1.0,0.0,0.0\n{row}\n")
    assert_refused(
        ["split", "--data", tmp_path / "gt.csv", "--per-class", 1, "--out", tmp_path / "o" / "m.csv"],
        "not one-hot",
        "ISIC_2",
        out=tmp_path / "o",
    )


def test_class_without_images_is_left_out_with_a_note(tmp_path):
    root = tmp_path / "tree"
    _images(root / "MEL", [f"m{i}.png" for i in range(3)])
    _images(root / "NV", [f"n{i}.png" for i in range(3)])
    (root / "SCC").mkdir()
    code, err, _ = run("split", "--data", root, "--per-class", 1, "--out", tmp_path / "m.csv")
    assert code == 0, err
    assert "SCC" in err and "no images" in err


def test_manifest_edited_to_leak_a_lesion_is_refused(tmp_path, synthetic_manifest):
    import pandas as pd

    table = pd.read_csv(synthetic_manifest)
    table["group"] = table["image"]
    train, test = table.index[table["split"] == "train"][0], table.index[table["split"] == "test"][0]
    table.loc[test, "group"] = table.loc[train, "group"]
    edited = tmp_path / "edited.csv"
    table.to_csv(edited, index=False)
    shutil.copy(synthetic_manifest.with_suffix(".json"), edited.with_suffix(".json"))
    assert_refused(
        ["finetune", "--manifest", edited, "--out", tmp_path / "ft", "--init", "random"],
        "leaks",
        str(table.loc[train, "group"]),
        out=tmp_path / "ft",
    )


# Configs -----------------------------------------------------------------------------------------

CONFIGS = {
    "unknown-key": ("epochz: 3\n", "epochz"),
    "wrong-type": ("epochs: many\n", "epochs"),
    "negative-epochs": ("epochs: -2\n", "epochs"),
    "image-size-below-crop": ("image_size: 8\n", "image_size"),
    "not-a-mapping": ("- a list\n- not a mapping\n", "mapping"),
    "broken-yaml": ("epochs: [1, 2\n", "YAML"),
}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_bad_config_names_the_key(tmp_path, kind, synthetic_manifest):
    text, key = CONFIGS[kind]
    (tmp_path / "run.yaml").write_text(text)
    assert_refused(
        ["pretrain", "--config", tmp_path / "run.yaml", "--manifest", synthetic_manifest, "--out", tmp_path / "bt"],
        key,
        out=tmp_path / "bt",
    )


def test_batch_larger_than_the_pool_is_refused(tmp_path):
    folder = _pool(tmp_path / "pool", n=6)
    assert_refused(
        [
            "pretrain",
            "--data",
            folder,
            "--out",
            tmp_path / "bt",
            "--image-size",
            "16",
            "--batch-size",
            "64",
            "--epochs",
            "1",
        ],
        "batch_size 64",
        "6 images",
        out=tmp_path / "bt",
    )


# Checkpoints -------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this would run a shell command: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):
        return (print, ("this pickle ran code",))


def _truncated_safetensors(path: Path) -> None:
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(path))
    path.write_bytes(path.read_bytes()[:100])


CHECKPOINTS = {
    "truncated-safetensors": ("w.safetensors", _truncated_safetensors, "cannot read checkpoint"),
    "other-architecture": ("w.pth", lambda p: torch.save(resnet50().state_dict(), p), "resnet18"),
    "pickle-that-runs-code": ("w.pth", lambda p: torch.save({"x": _RunsCode()}, p), "cannot read checkpoint"),
    "not-a-checkpoint": ("w.pth", lambda p: p.write_text("hello"), "cannot read checkpoint"),
}


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_wrong_init_path_fails_before_any_image_is_decoded(tmp_path, monkeypatch, synthetic_manifest, command):
    monkeypatch.setenv("LESIONSSL_CACHE", str(tmp_path / "cache"))  # a fresh store cache: nothing decoded yet
    assert_refused(
        [
            command,
            "--manifest",
            synthetic_manifest,
            "--init",
            tmp_path / "nowhere.safetensors",
            "--out",
            tmp_path / "run",
            "--image-size",
            16,
            "--epochs",
            1,
            "--batch-size",
            16,
        ],
        "nowhere.safetensors",
        out=tmp_path / "run",
    )
    assert not list((tmp_path / "cache").glob("*.npy"))


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_bad_checkpoint_is_refused(tmp_path, kind, synthetic_manifest):
    name, make, message = CHECKPOINTS[kind]
    make(tmp_path / name)
    stdout = assert_refused(
        [
            "finetune",
            "--manifest",
            synthetic_manifest,
            "--init",
            tmp_path / name,
            "--out",
            tmp_path / "ft",
            "--backbone",
            "resnet18",
            "--image-size",
            16,
            "--epochs",
            1,
        ],
        name,
        message,
        out=tmp_path / "ft",
    )
    assert "this pickle ran code" not in stdout


def test_checkpoint_with_a_head_for_other_classes_gets_a_new_head(tmp_path, synthetic_manifest):
    """A 5-class classifier as the init of a fine-tuning on 4 classes: its backbone is
    loaded, its head is not (a new one is made for the data's classes)."""
    from torchvision.models import resnet18

    torch.save(resnet18(num_classes=5).state_dict(), tmp_path / "classifier.pth")
    code, err, _ = run(
        "finetune",
        "--manifest",
        synthetic_manifest,
        "--init",
        tmp_path / "classifier.pth",
        "--out",
        tmp_path / "ft",
        "--backbone",
        "resnet18",
        "--image-size",
        16,
        "--epochs",
        1,
        "--lr",
        "0.001",
        "--tracking.mlflow",
        "false",
        "--tracking.tensorboard",
        "false",
    )
    assert code == 0, err
    import json

    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert len(metrics["classes"]) == 4 and len(metrics["confusion_matrix"]) == 4  # the data's classes, not 5


# Cache and output --------------------------------------------------------------------------------


def test_half_written_store_is_ignored_and_rebuilt(tmp_path, monkeypatch):
    from lesionssl.data.store import build_store, cache_root

    monkeypatch.setenv("LESIONSSL_CACHE", str(tmp_path / "cache"))
    paths = sorted(str(p) for p in _pool(tmp_path / "pool").glob("*.png"))
    whole = np.array(build_store(paths, 16))
    (target,) = cache_root().glob("*.npy")
    target.with_suffix(".4242.partial").write_bytes(b"killed mid-build")
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])  # a store cut short
    again = build_store(paths, 16)
    np.testing.assert_array_equal(again, whole)
    assert not list(cache_root().glob("*.partial"))


def _unshare_available() -> bool:
    import subprocess

    return (
        shutil.which("unshare") is not None
        and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    )


needs_mounts = pytest.mark.skipif(
    not _unshare_available(), reason="needs `unshare -rm` to mount a small or read-only tmpfs"
)


@pytest.mark.slow  # a real process in its own mount namespace
@needs_mounts
def test_read_only_output_folder_is_one_line(tmp_path, synthetic):
    import subprocess

    (tmp_path / "ro").mkdir()
    script = f"mount -t tmpfs -o ro,size=1m tmpfs {tmp_path / 'ro'} && exec {sys.executable} -m lesionssl split --data {synthetic / 'labelled'} --per-class 2 --out {tmp_path / 'ro' / 'm.csv'}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert (
        "Traceback" not in result.stderr
        and "Read-only file system" in result.stderr
        and str(tmp_path / "ro") in result.stderr
    )


@pytest.mark.slow  # real processes in their own mount namespace
@needs_mounts
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, synthetic_manifest):
    """Pretraining on a tmpfs that holds the first epoch's checkpoint but not a second copy
    during the next write: the run stops with one line saying so, and the last checkpoint (of
    epoch 0) is whole - Lightning's own writer would have truncated it."""
    import subprocess

    config = tmp_path / "c.yaml"  # a wide projector: the checkpoint dominates what is on disk
    config.write_text(
        "backbone: timm:test_resnet\nimage_size: 16\nepochs: 2\nbatch_size: 16\nprojector: [1024, 1024]\nlr: 0.001\ntracking: {mlflow: false, tensorboard: false}\n"
    )

    def run(out: Path) -> str:
        return f"{sys.executable} -m lesionssl pretrain --config {config} --manifest {synthetic_manifest} --out {out}"

    subprocess.run(run(tmp_path / "ref").split(), check=True, capture_output=True, timeout=600)
    used = sum(p.stat().st_size for p in (tmp_path / "ref").rglob("*") if p.is_file())
    checkpoint = (tmp_path / "ref" / "checkpoints" / "last.ckpt").stat().st_size
    disk = tmp_path / "disk"
    disk.mkdir()
    show_epoch = f"{sys.executable} -c \"import torch; print('epoch', torch.load('{disk / 'bt' / 'checkpoints' / 'last.ckpt'}', weights_only=False)['epoch'])\""
    script = f"mount -t tmpfs -o size={used + checkpoint // 2} tmpfs {disk} && {{ {run(disk / 'bt')}; echo rc=$?; {show_epoch}; }}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    assert "rc=2" in result.stdout, result.stdout + result.stderr
    assert (
        "Traceback" not in result.stderr
        and "no space left" in result.stderr
        and "previous version is kept" in result.stderr
    ), result.stderr
    assert "epoch 0" in result.stdout, result.stdout + result.stderr


def test_label_file_paths_with_spaces_and_non_ascii_characters_are_read(tmp_path):
    _images(tmp_path / "Läsionen 2024", ["naevus à bord.png", "mélanome 1.png", "mélanome 2.png", "naevus 2.png"])
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label\nLäsionen 2024/naevus à bord.png,NV\nLäsionen 2024/mélanome 1.png,MEL\nLäsionen 2024/mélanome 2.png,MEL\nLäsionen 2024/naevus 2.png,NV\n",
        encoding="utf-8",
    )
    code, err, _ = run("split", "--data", csv, "--per-class", 1, "--out", tmp_path / "m.csv")
    assert code == 0, err
    import pandas as pd

    assert pd.read_csv(tmp_path / "m.csv")["path"].str.contains("mélanome 1.png").any()
