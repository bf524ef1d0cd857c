"""Shared fixtures: a tiny synthetic lesion set, an isolated image-store cache, the shared data."""

from __future__ import annotations

import os
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
