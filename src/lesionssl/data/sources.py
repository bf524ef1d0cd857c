"""Readers for every label layout lesionssl accepts, all returning one table.

The table has one row per image with columns ``image`` (identifier, unique), ``path``
(absolute file path), ``label`` (class code, ``""`` when unlabelled) and, when known, group
columns such as ``lesion_id`` and ``patient_id`` used for leakage-free splits. Other metadata
columns (e.g. ``dataset``, the archive an image comes from) follow, for ``split --hold-out``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lesionssl.data.classes import HAM10000_DX
from lesionssl.data.images import IMAGE_SUFFIXES
from lesionssl.errors import LesionSSLError
from lesionssl.progress import console
from lesionssl.records import ManifestRecord

COLUMNS = ["image", "path", "label"]
GROUP_COLUMNS = ("lesion_id", "patient_id")
ONE_HOT_ALIASES = {"AKIEC": "AK"}  # ISIC 2018 calls the AK class AKIEC
ISIC_SUFFIX = "_downsampled"
IMAGE_DIR_CANDIDATES = (
    "images",
    "ISIC_2019_Training_Input",
    "HAM10000_images",
    "HAM10000_images_part_1",
    "HAM10000_images_part_2",
    "ISIC2018_Task3_Test_Input",
)


#: Field separators of label files exported by spreadsheets in different locales.
SEPARATORS = (",", ";", "\t")


def _read_csv(path: Path) -> pd.DataFrame:
    """A label CSV as strings: UTF-8 with or without a BOM, any line ends, and the separator of
    its header line (``,``, ``;`` or tab)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = handle.readline()
        separator = max(SEPARATORS, key=header.count)
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, skipinitialspace=True, sep=separator, encoding="utf-8-sig"
        )
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise LesionSSLError(f"cannot read label file {path}: {str(exc).strip() or type(exc).__name__}") from None
    if table.empty:
        raise LesionSSLError(f"label file {path} has a header but no rows")
    return table


def _drop_duplicate_rows(table: pd.DataFrame, key: str, source: Path) -> pd.DataFrame:
    """Refuse rows that give one image two labels; merge exact repeats with a note."""
    repeated = table[table.duplicated(key, keep=False)]
    if repeated.empty:
        return table
    conflicting = repeated.groupby(key)["label"].nunique()
    if (conflicting > 1).any():
        image = conflicting.index[conflicting > 1][0]
        labels = sorted(set(repeated.loc[repeated[key] == image, "label"]))
        raise LesionSSLError(
            f"{source}: {image} is listed with different labels ({', '.join(labels)}; {int((conflicting > 1).sum())} such images) - keep one row per image"
        )
    console.print(
        f"{source}: {repeated[key].nunique()} images listed twice with the same label: kept once", markup=False
    )
    return table.drop_duplicates(key)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _index_images(folders: Sequence[Path]) -> dict[str, Path]:
    """Map image stems (also without ISIC's ``_downsampled`` suffix) to files under ``folders``."""
    index: dict[str, Path] = {}
    for folder in folders:
        for file in sorted(folder.rglob("*")):
            if _is_image(file):
                index.setdefault(file.stem, file.resolve())
                index.setdefault(file.stem.removesuffix(ISIC_SUFFIX), file.resolve())
    return index


def _image_folders(csv_path: Path, images: Path | None) -> list[Path]:
    if images is not None:
        if not images.is_dir():
            raise LesionSSLError(f"image folder not found: {images}")
        return [images]
    found = [csv_path.parent / name for name in IMAGE_DIR_CANDIDATES if (csv_path.parent / name).is_dir()]
    return found or [csv_path.parent]


def _attach_paths(table: pd.DataFrame, folders: list[Path], source: Path, skip_missing: bool) -> pd.DataFrame:
    table = _drop_duplicate_rows(table, "image", source)
    index = _index_images(folders)
    ids = table["image"].str.removesuffix(ISIC_SUFFIX)
    paths = ids.map(lambda i: index.get(i) or index.get(Path(i).stem))
    missing = paths.isna()
    if missing.any() and not skip_missing:
        examples = ", ".join(table.loc[missing, "image"].head(3))
        raise LesionSSLError(
            f"{int(missing.sum())} of {len(table)} images listed in {source} were not found in "
            f"{', '.join(map(str, folders))} (e.g. {examples}); pass --images DIR or --skip-missing"
        )
    table = table.assign(image=ids, path=paths.astype(object))[~missing]
    table["path"] = table["path"].map(str)
    return table


def read_one_hot_csv(path: Path, images: Path | None = None, skip_missing: bool = False) -> pd.DataFrame:
    """Read an official ISIC ground-truth file (``image`` + one one-hot column per class)."""
    table = _read_csv(path)
    class_columns = [c for c in table.columns if c != "image"]
    try:
        onehot = table[class_columns].astype(float)
    except ValueError as exc:
        raise LesionSSLError(f"{path}: one-hot columns must be numbers ({exc})") from None
    bad = (onehot.sum(axis=1) != 1.0) | ~onehot.isin([0.0, 1.0]).all(axis=1)
    if bad.any():
        raise LesionSSLError(
            f"{path}: {int(bad.sum())} rows are not one-hot, e.g. image {table.loc[bad, 'image'].iloc[0]}"
        )
    labels = onehot.idxmax(axis=1).map(lambda c: ONE_HOT_ALIASES.get(c, c))
    out = pd.DataFrame({"image": table["image"], "label": labels})
    return _attach_paths(out, _image_folders(path, images), path, skip_missing)


def read_ham10000(path: Path, images: Path | None = None, skip_missing: bool = False) -> pd.DataFrame:
    """Read HAM10000 metadata (``lesion_id,image_id,dx``); ``dx`` codes map to ISIC 2019 codes."""
    table = _read_csv(path)
    unknown = sorted(set(table["dx"]) - set(HAM10000_DX))
    if unknown:
        raise LesionSSLError(f"{path}: unknown dx codes {unknown}; expected {sorted(HAM10000_DX)}")
    out = pd.DataFrame(
        {"image": table["image_id"], "label": table["dx"].map(HAM10000_DX), "lesion_id": table["lesion_id"]}
    )
    return _attach_paths(out, _image_folders(path, images), path, skip_missing)


def read_path_label_csv(path: Path, skip_missing: bool = False) -> pd.DataFrame:
    """Read a ``path,label`` CSV (other columns kept as metadata, e.g. ``site``), or a ``path``
    listing of unlabelled images; relative paths are relative to the CSV's folder, or for a
    lesionssl manifest to the data root its sidecar records."""
    table = _read_csv(path)
    table = _drop_duplicate_rows(table, "path", path) if "label" in table else table.assign(label="")
    record = (
        ManifestRecord.read(path) if "split" in table else None
    )  # a lesionssl manifest: its sidecar says where the images are
    root = record.data_root if record else None
    base = Path(root) if root else path.parent
    files = table["path"].map(lambda p: (base / p).resolve())
    exists = files.map(Path.is_file)
    if not exists.all() and not skip_missing:
        raise LesionSSLError(f"{path}: {int((~exists).sum())} listed files do not exist, e.g. {files[~exists].iloc[0]}")
    return table.assign(path=files.map(str), image=table["path"])[exists]  # extra columns are metadata


def read_mapped_csv(
    path: Path,
    image_column: str | None,
    label_column: str | None,
    images: Path | None = None,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """Read any label CSV through the user's column names (``--image-column``, ``--label-column``):
    the image column holds file names, ids without an extension, or relative paths, matched under
    ``images`` or the CSV's folder; the other columns are kept as metadata."""
    table = _read_csv(path)
    image_column, label_column = image_column or "image", label_column or "label"
    missing = [c for c in (image_column, label_column) if c not in table.columns]
    if missing:
        raise LesionSSLError(
            f"{path} has no column {' or '.join(map(repr, missing))}; its columns are {', '.join(map(str, table.columns))}"
        )
    out = table.drop(
        columns=[c for c in ("image", "label", "path") if c not in (image_column, label_column) and c in table]
    ).rename(columns={image_column: "image", label_column: "label"})
    out["image"], out["label"] = out["image"].astype(str), out["label"].fillna("").astype(str)
    return _attach_paths(out, _image_folders(path, images), path, skip_missing)


def read_shared_layout(root: Path, skip_missing: bool = False) -> pd.DataFrame:
    """Read the lesionssl shared layout: ``labels.csv`` (``image,label``), ``images/``, ``metadata_extra.csv``."""
    table = _read_csv(root / "labels.csv")
    if not {"image", "label"} <= set(table.columns):
        raise LesionSSLError(
            f"{root / 'labels.csv'} needs the columns image and label (an empty label: unlabelled); found {', '.join(map(str, table.columns))}"
        )
    out = pd.DataFrame({"image": table["image"], "label": table["label"]})
    extra_file = root / "metadata_extra.csv"
    if extra_file.is_file():
        # Every metadata column is kept (e.g. ``dataset`` for ``split --hold-out dataset=...``).
        extra = _read_csv(extra_file).drop(columns=["label"], errors="ignore")
        if "isic2020_patient_id" in extra:
            extra["patient_id"] = extra["isic2020_patient_id"]
        out = out.merge(extra, on="image", how="left").fillna("")
    files = out["image"].map(lambda name: (root / "images" / name).resolve())
    exists = files.map(Path.is_file)
    if not exists.all() and not skip_missing:
        raise LesionSSLError(
            f"{root}: {int((~exists).sum())} images in labels.csv are missing from images/, e.g. {out['image'][~exists].iloc[0]}"
        )
    return out.assign(path=files.map(str))[exists]


#: Folder names of a user's own split (Kaggle style ``train/<class>/``, ``test/<class>/``), and
#: the split each stands for.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
#: The metadata column that carries a user's own split into ``split``.
USER_SPLIT = "user_split"


def _split_folders(root: Path) -> dict[Path, str] | None:
    """The split folders of a ``train/`` / ``test/`` (/ ``val/``) tree of ImageFolders, or None."""
    folders = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    named = {d: SPLIT_FOLDERS.get(d.name.lower()) for d in folders}
    if not folders or None in named.values() or "train" not in named.values():
        return None
    if not all(any(c.is_dir() for c in d.iterdir()) for d in folders):  # split folders hold class folders
        return None
    return named


def read_folder(root: Path) -> pd.DataFrame:
    """Read an ImageFolder tree (one sub-folder per class), a ``train/`` / ``test/`` (/ ``val/``)
    tree of them (the user's own split, kept in ``user_split``), or a plain folder of unlabelled images."""
    splits = _split_folders(root)
    if splits:
        console.print(
            f"{root}: a {' / '.join(sorted({f'{d.name}/' for d in splits}))} tree: its folders are kept as your split (test/ is the test set)",
            markup=False,
        )
        parts = [
            read_folder(folder).assign(image=lambda t, f=folder: f.name + "/" + t["image"], **{USER_SPLIT: split})
            for folder, split in sorted(splits.items())
        ]
        return pd.concat(parts, ignore_index=True)
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    empty = [d.name for d in classes if not any(_is_image(f) for f in d.rglob("*"))]
    if empty:
        console.print(f"{root}: class folders with no images, left out: {', '.join(empty)}", markup=False)
    rows = [
        {"image": str(f.relative_to(root)), "path": str(f.resolve()), "label": cls.name}
        for cls in classes
        for f in sorted(cls.rglob("*"))
        if _is_image(f)
    ]
    rows += [{"image": f.name, "path": str(f.resolve()), "label": ""} for f in sorted(root.iterdir()) if _is_image(f)]
    if not rows:
        raise LesionSSLError(f"no images found in {root}")
    return pd.DataFrame(rows)


def detect_and_read(
    source: Path,
    images: Path | None = None,
    skip_missing: bool = False,
    columns: tuple[str | None, str | None] = (None, None),
) -> pd.DataFrame:
    """Read any supported source, recognising its layout from the file header or folder contents;
    ``columns`` (image, label) maps a CSV of any other layout."""
    source = Path(source)
    if not source.exists():
        raise LesionSSLError(f"data not found: {source}")
    if source.is_file() and any(columns):
        return read_mapped_csv(source, *columns, images, skip_missing)
    if source.is_dir():
        if (source / "labels.csv").is_file() and (source / "images").is_dir():
            return read_shared_layout(source, skip_missing)
        return read_folder(source)
    header = set(_read_csv(source).columns)
    if {"lesion_id", "image_id", "dx"} <= header:
        return read_ham10000(source, images, skip_missing)
    if "image" in header and "label" not in header and "path" not in header:
        return read_one_hot_csv(source, images, skip_missing)
    if {"path", "label"} <= header or header == {"path"}:  # path alone: a listing of unlabelled images
        return read_path_label_csv(source, skip_missing)
    raise LesionSSLError(
        f"{source}: unrecognised label file (columns {sorted(header)}); expected path,label (or a path column alone: unlabelled images); "
        "image + one-hot class columns (ISIC); or lesion_id,image_id,dx (HAM10000); or name yours with --image-column and --label-column"
    )


def read_sources(
    sources: Sequence[Path | str],
    images: Path | None = None,
    skip_missing: bool = False,
    columns: tuple[str | None, str | None] = (None, None),
) -> pd.DataFrame:
    """Read and concatenate several sources (e.g. a labelled tree plus a folder of unlabelled
    images); ``columns`` (image, label) maps label CSVs of any layout.

    Raises:
        LesionSSLError: When an image id appears twice with different files.
    """
    if not sources:
        raise LesionSSLError("no data given: pass --data PATH")
    tables = [detect_and_read(Path(s), images, skip_missing, columns) for s in sources]
    table = pd.concat(tables, ignore_index=True).fillna("")
    for column in GROUP_COLUMNS:
        if column not in table:
            table[column] = ""
    duplicated = table["image"].duplicated(keep=False)
    if duplicated.any():
        # Same id in two sources: disambiguate by path, so ImageFolder trees with equal file names coexist.
        table.loc[duplicated, "image"] = table.loc[duplicated, "path"]
        if table["image"].duplicated().any():
            raise LesionSSLError(f"image listed twice: {table.loc[table['image'].duplicated(), 'image'].iloc[0]}")
    metadata = sorted(set(table.columns) - set(COLUMNS) - set(GROUP_COLUMNS))
    return table[COLUMNS + list(GROUP_COLUMNS) + metadata].reset_index(drop=True)
