"""``reproduce isic2019``: download (offline, from 127.0.0.1), extraction, the seed split, the config."""

import http.server
import json
import threading
import zipfile
from functools import partial

import pandas as pd
import pytest
from PIL import Image
from test_registry import RangeHandler

from lesionssl.config import SplitConfig
from lesionssl.data.sources import read_sources
from lesionssl.data.split import make_split
from lesionssl.experiment.reproduce import GROUND_TRUTH, IMAGES, Source, prepare_isic2019, reproduce_config
from lesionssl.pretraining.methods import build_method
from lesionssl.report.compare import published_table

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


@pytest.fixture
def isic_server(tmp_path):
    """A tiny ISIC 2019 look-alike: 60 images of 3 classes zipped as the official archive."""
    www = tmp_path / "www"
    www.mkdir()
    rows = []
    with zipfile.ZipFile(www / f"{IMAGES}.zip", "w") as archive:
        for i in range(60):
            label = ["NV", "MEL", "DF"][i % 3] if i < 57 else "NV"
            name = f"ISIC_{i:07d}" + ("_downsampled" if i % 10 == 0 else "")
            image = tmp_path / "x.jpg"
            Image.new("RGB", (30, 20), (i * 4, 80, 120)).save(image)
            archive.write(image, f"{IMAGES}/{name}.jpg")
            rows.append({"image": name, **{c: float(c == label) for c in CLASSES}})
    pd.DataFrame(rows).to_csv(www / GROUND_TRUTH, index=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Source(base_url=f"http://127.0.0.1:{server.server_address[1]}"), www
    server.shutdown()


def test_download_extract_and_seed_split(isic_server, tmp_path):
    source, www = isic_server
    root = tmp_path / "isic2019"
    root.mkdir()
    archive = (www / f"{IMAGES}.zip").read_bytes()
    (root / f"{IMAGES}.zip.part").write_bytes(archive[:1000])  # an interrupted earlier download
    ground_truth = prepare_isic2019(root, source)
    assert (root / f"{IMAGES}.zip").read_bytes() == archive
    assert len(list((root / IMAGES).glob("*.jpg"))) == 60
    assert set(json.loads((root / "lock.json").read_text())) == {source.url(GROUND_TRUTH), source.url(f"{IMAGES}.zip")}
    assert prepare_isic2019(root, source) == ground_truth  # second call: nothing to do, checksums still match

    config = reproduce_config(root, quick=True)
    assert config.preset == "seed-faithful" and config.split.transductive and config.reference == "seed-isic2019"
    table = read_sources(config.data)
    manifest = make_split(table, SplitConfig(**{**config.split.model_dump(), "per_class_cap": 10}))
    assert manifest[manifest["split"] == "train"]["label"].value_counts().to_dict() == {"NV": 10, "MEL": 10, "DF": 10}
    assert manifest["pretrain"].all()  # transductive, as the seed


def test_full_config_is_the_seed_design(tmp_path):
    config = reproduce_config(tmp_path, quick=False)
    assert [i.name for i in config.initialisations] == [
        "supervised-imagenet",
        "barlow-twins-imagenet",
        "pre-pretrained",
    ]
    assert len(config.seeds) == 35 and config.split.seed_isic2019 and config.split.transductive
    assert build_method(config.pretrain).settings.projector == [8192, 8192, 8192] and build_method(
        config.pretrain
    ).lambd == pytest.approx(1 / 8192)
    assert (config.finetune.backbone, config.finetune.image_size, config.finetune.epochs, config.finetune.tta) == (
        "resnet50",
        256,
        40,
        3,
    )


def test_published_numbers_sit_next_to_ours():
    results = pd.DataFrame({"init": ["pre-pretrained"] * 2, "accuracy": [0.70, 0.72]})
    row = published_table(results, ["pre-pretrained"]).iloc[0]
    assert row["published accuracy"] == "0.7227" and row["published runs"] == 6 and row["our accuracy"] == "0.7100"
