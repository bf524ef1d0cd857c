from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lesionssl.data.classes import ISIC2019_CLASSES, resolve_class_order
from lesionssl.data.sources import read_sources
from lesionssl.errors import LesionSSLError

from conftest import LABEL_FORMATS, SKIN_LESIONS


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (100, 50, 25)).save(path)


def test_imagefolder_plus_unlabelled_folder(tmp_path):
    for name in ("NV/a.jpg", "NV/b.png", "MEL/c.jpg"):
        _image(tmp_path / "labelled" / name)
    _image(tmp_path / "pool" / "u1.jpg")
    (tmp_path / "pool" / "notes.txt").write_text("ignored")
    table = read_sources([tmp_path / "labelled", tmp_path / "pool"])
    assert sorted(table["label"]) == ["", "MEL", "NV", "NV"]
    assert all(Path(p).is_file() for p in table["path"])
    assert resolve_class_order(table["label"]) == ["MEL", "NV"]  # ISIC 2019 order, not alphabetical


def test_path_label_csv_relative_to_csv(tmp_path):
    _image(tmp_path / "imgs" / "x.png")
    _image(tmp_path / "imgs" / "y.png")
    (tmp_path / "labels.csv").write_text("path,label\nimgs/x.png,oral_scc\nimgs/y.png,\n")
    table = read_sources([tmp_path / "labels.csv"])
    assert list(table["label"]) == ["oral_scc", ""]
    assert resolve_class_order(table["label"]) == ["oral_scc"]
    (tmp_path / "listing.csv").write_text("path\nimgs/y.png\nimgs/x.png\n")  # a plain listing: unlabelled images
    listing = read_sources([tmp_path / "listing.csv"])
    assert list(listing["label"]) == ["", ""] and [Path(p).name for p in listing["path"]] == ["y.png", "x.png"]


def test_isic_one_hot_with_downsampled_suffix(tmp_path):
    _image(tmp_path / "ISIC_2019_Training_Input" / "ISIC_0000001.jpg")
    _image(tmp_path / "ISIC_2019_Training_Input" / "ISIC_0000002_downsampled.jpg")
    gt = tmp_path / "ISIC_2019_Training_GroundTruth.csv"
    gt.write_text(
        "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\r\nISIC_0000001,0.0,1.0,0,0,0,0,0,0,0\r\nISIC_0000002_downsampled,1,0,0,0,0,0,0,0,0\r\n"
    )
    table = read_sources([gt])
    assert dict(zip(table["image"], table["label"])) == {"ISIC_0000001": "NV", "ISIC_0000002": "MEL"}


def test_isic_missing_images_are_an_error_unless_skipped(tmp_path):
    _image(tmp_path / "images" / "ISIC_0000001.jpg")
    gt = tmp_path / "gt.csv"
    gt.write_text("image,MEL,NV\nISIC_0000001,0,1\nISIC_0000009,1,0\n")
    with pytest.raises(LesionSSLError, match="1 of 2 images.*ISIC_0000009"):
        read_sources([gt])
    assert len(read_sources([gt], skip_missing=True)) == 1


def test_not_one_hot_rows_are_rejected(tmp_path):
    _image(tmp_path / "images" / "ISIC_1.jpg")
    gt = tmp_path / "gt.csv"
    gt.write_text("image,MEL,NV\nISIC_1,1,1\n")
    with pytest.raises(LesionSSLError, match="not one-hot"):
        read_sources([gt])


def test_ham10000_metadata_maps_dx_and_keeps_lesion(tmp_path):
    _image(tmp_path / "HAM10000_images_part_1" / "ISIC_0027419.jpg")
    _image(tmp_path / "HAM10000_images_part_2" / "ISIC_0025030.jpg")
    meta = tmp_path / "HAM10000_metadata.csv"
    meta.write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_0027419,akiec,histo,80,male,scalp\nHAM_1,ISIC_0025030,bkl,histo,80,male,scalp\n"
    )
    table = read_sources([meta])
    assert list(table["label"]) == ["AK", "BKL"] and list(table["lesion_id"]) == ["HAM_1", "HAM_1"]


def test_unrecognised_label_file(tmp_path):
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(LesionSSLError, match="unrecognised label file"):
        read_sources([tmp_path / "x.csv"])


def test_missing_source(tmp_path):
    with pytest.raises(LesionSSLError, match="data not found"):
        read_sources([tmp_path / "nothing"])


@pytest.mark.shared_data
def test_shared_layout_reads_labels_and_groups():
    table = read_sources([SKIN_LESIONS])
    assert len(table) == 15787
    assert (table["label"] == "").sum() == 2625
    assert resolve_class_order(table["label"]) == list(ISIC2019_CLASSES)
    assert (table["lesion_id"] != "").sum() > 10000 and (table["patient_id"] != "").sum() > 2000


@pytest.mark.shared_data
def test_real_isic2019_ground_truth_against_shared_images():
    table = read_sources(
        [LABEL_FORMATS / "ISIC_2019_Training_GroundTruth.csv"], images=SKIN_LESIONS / "images", skip_missing=True
    )
    shared = pd.read_csv(SKIN_LESIONS / "labels.csv", keep_default_na=False)
    shared = (
        shared[shared["label"] != ""]
        .assign(image=lambda f: f["image"].str.removesuffix(".jpg"))
        .set_index("image")["label"]
    )
    common = table.set_index("image")["label"]
    assert len(common) > 10000
    agree = (shared.reindex(common.index) == common).mean()
    assert agree > 0.99  # the shared labels were verified against this ground truth


@pytest.mark.shared_data
def test_real_ham10000_metadata_against_shared_images():
    table = read_sources([LABEL_FORMATS / "HAM10000_metadata.csv"], images=SKIN_LESIONS / "images", skip_missing=True)
    assert len(table) > 9000 and set(table["label"]) <= set(ISIC2019_CLASSES)
    assert table["lesion_id"].str.startswith("HAM_").all()


def test_a_labels_csv_without_a_label_column_is_one_line_naming_the_columns(tmp_path):
    """The shared layout's labels.csv once ended in ``KeyError: 'label'``."""
    from conftest import lesionssl

    (tmp_path / "data" / "images").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(tmp_path / "data" / "images" / "a.png")
    (tmp_path / "data" / "labels.csv").write_text("image,diagnosis\na.png,MEL\n")
    result = lesionssl("split", "--data", tmp_path / "data", "--per-class", 1, "--out", tmp_path / "m.csv")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "needs the columns image and label" in lines[0] and "image, diagnosis" in lines[0]
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("with_val", [False, True])
def test_a_train_test_tree_is_the_users_own_split_not_two_classes(tmp_path, with_val):
    """Once a Kaggle-style ``train/<class>/``, ``test/<class>/`` tree was read as two classes named
    train and test, silently."""
    from lesionssl.data.split import read_manifest

    from conftest import lesionssl

    files = {"train": 6, "test": 3, **({"valid": 2} if with_val else {})}
    for split, n in files.items():
        for label in ("benign", "malignant"):
            for i in range(n):
                path = tmp_path / "tree" / split / label / f"{label}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 12), (10 * i, 100 if label == "benign" else 200, len(split) * 20)).save(path)
    table = read_sources([tmp_path / "tree"])
    assert sorted(set(table["label"])) == ["benign", "malignant"]
    assert table["user_split"].value_counts().to_dict() == {"train": 12, "test": 6, **({"val": 4} if with_val else {})}
    result = lesionssl("split", "--data", tmp_path / "tree", "--fraction", "1.0", "--out", tmp_path / "split.csv")
    assert result.returncode == 0, result.stderr
    assert "kept as your split" in result.stdout + result.stderr
    manifest = read_manifest(tmp_path / "split.csv")
    assert manifest.classes == ["benign", "malignant"]
    where = dict(zip(manifest.table["image"], manifest.table["split"]))
    assert {image.split("/")[0] for image, split in where.items() if split == "test"} == {"test"}
    assert (
        sum(split == "test" for split in where.values()) == 6
        and sum(split == "train" for split in where.values()) == 12
    )
    assert sum(split == "val" for split in where.values()) == (4 if with_val else 0)
    assert all(image.startswith("valid/") for image, split in where.items() if split == "val")


def test_image_and_label_columns_map_any_label_csv(tmp_path):
    """Any CSV layout, e.g. Kaggle's ``filename,diagnosis``: ids without extension, images elsewhere."""
    from lesionssl.data.split import read_manifest

    from conftest import lesionssl

    rows = []
    for i in range(8):
        label = "OSCC" if i % 2 else "normal"
        (tmp_path / "imgs").mkdir(exist_ok=True)
        Image.new("RGB", (16, 12), (30 * i, 90, 10)).save(tmp_path / "imgs" / f"case{i}.jpg")
        rows.append({"filename": f"case{i}", "diagnosis": label, "patient": f"p{i // 2}"})
    pd.DataFrame(rows).to_csv(tmp_path / "diagnoses.csv", index=False)
    table = read_sources([tmp_path / "diagnoses.csv"], tmp_path / "imgs", columns=("filename", "diagnosis"))
    assert sorted(table["label"]) == ["OSCC"] * 4 + ["normal"] * 4 and "patient" in table
    assert all(Path(p).parent == (tmp_path / "imgs").resolve() for p in table["path"])
    result = lesionssl(
        "split",
        "--data",
        tmp_path / "diagnoses.csv",
        "--images",
        tmp_path / "imgs",
        "--image-column",
        "filename",
        "--label-column",
        "diagnosis",
        "--per-class",
        2,
        "--out",
        tmp_path / "s.csv",
    )
    assert result.returncode == 0, result.stderr
    assert read_manifest(tmp_path / "s.csv").classes == ["OSCC", "normal"]
    wrong = lesionssl(
        "split",
        "--data",
        tmp_path / "diagnoses.csv",
        "--image-column",
        "file",
        "--label-column",
        "diagnosis",
        "--per-class",
        2,
        "--out",
        tmp_path / "t.csv",
    )
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert (
        wrong.returncode == 2
        and len(lines) == 1
        and "has no column 'file'; its columns are filename, diagnosis, patient" in lines[0]
    )
    unmapped = lesionssl("split", "--data", tmp_path / "diagnoses.csv", "--per-class", 2, "--out", tmp_path / "u.csv")
    assert unmapped.returncode == 2 and "--image-column and --label-column" in unmapped.stderr
