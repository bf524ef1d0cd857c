"""Shared fixtures: a tiny synthetic lesion set, an isolated image-store cache, the shared data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LESIONSSL_SHARED_DATA", REPO.parent / "shared" / "data"))
SKIN_LESIONS = SHARED_DATA / "skin-lesions"
LABEL_FORMATS = SHARED_DATA / "label-formats"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"needs the shared data at {SHARED_DATA}")
    for item in items:
        if "shared_data" in item.keywords and not (SKIN_LESIONS / "labels.csv").is_file():
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["LESIONSSL_CACHE"] = str(tmp_path_factory.mktemp("store-cache"))


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """120 labelled + 60 unlabelled synthetic lesions, 40x30 px (ImageFolder + plain folder)."""
    from lesionssl.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_labelled=120, n_unlabelled=60, size=(40, 30), seed=1)


@pytest.fixture(scope="session")
def synthetic_manifest(synthetic, tmp_path_factory) -> Path:
    """A per-class-8 split of the synthetic set."""
    from lesionssl.data.classes import resolve_class_order
    from lesionssl.data.sources import read_sources
    from lesionssl.data.split import SplitSpec, make_split, write_manifest

    sources = [str(synthetic / "labelled"), str(synthetic / "unlabelled")]
    spec = SplitSpec(per_class=8, seed=0)
    manifest = make_split(read_sources(sources), spec)
    path = tmp_path_factory.mktemp("manifest") / "split.csv"
    write_manifest(manifest, path, spec, resolve_class_order(manifest["label"]), sources)
    return path


#: A fine-tuning run small enough for the deploy tests (timm's 2-layer test ResNet at 16 px).
TINY_CLASSIFIER = ("--backbone", "timm:test_resnet", "--image-size", 16, "--batch-size", 16, "--epochs", 2, "--lr", "0.002", "--init", "random")


def lesionssl(*args, **kwargs) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "lesionssl", *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="session")
def fine_tuned(synthetic, tmp_path_factory) -> Path:
    """A folder with ``split.csv`` (8 per class, 6 validation) and ``ft/``, a finished fine-tuning
    run with its model, calibration and operating point."""
    folder = tmp_path_factory.mktemp("deploy")
    split = lesionssl("split", "--data", synthetic / "labelled", "--per-class", 8, "--val", 6, "--out", folder / "split.csv")
    assert split.returncode == 0, split.stderr
    result = lesionssl("finetune", "--manifest", folder / "split.csv", "--out", folder / "ft", *TINY_CLASSIFIER)
    assert result.returncode == 0, result.stderr
    (folder / "finetune.log").write_text(result.stderr)
    return folder
