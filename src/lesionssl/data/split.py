"""Limited-label splits: per-class cap (the seed), per-class count or fraction, group-aware.

A manifest is a CSV with columns ``image,label,split,path,group,pretrain``; ``split`` is one of
``train``, ``val``, ``test``, ``external``, ``unlabelled`` (no label, or a label left unused) and
``excluded``, and ``pretrain`` marks the unlabelled pool that self-supervised pretraining may
see. The pool is *inductive* by default (every image that is not a test or external image);
*transductive* adds the test images, without labels, as the seed study did. ``external`` images
(a held-out site or archive) are never in the pool. The choice is stored in the manifest's
sidecar ``<manifest>.json`` and travels into every downstream result.

Two designs:

* the seed's: training labels are drawn first (``per_class_cap``, ``per_class`` or
  ``fraction``), then ``val``, and every other labelled image is test;
* pretraining studies (``test_fraction``): a fixed share of the labelled groups, stratified by
  class, is test; training labels and ``val`` are drawn from the rest, and every image that is
  not test or external, labelled or not, is in the pool (the shape of semi- and self-supervised
  benchmarks). Label budgets draw nested subsets of the training labels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Literal

import numpy as np
import pandas as pd

from lesionssl.config import SplitConfig
from lesionssl.data.classes import resolve_class_order
from lesionssl.data.duplicates import clusters, find_near_duplicates
from lesionssl.data.sources import GROUP_COLUMNS, USER_SPLIT
from lesionssl.data.store import check_readable
from lesionssl.errors import LesionSSLError
from lesionssl.io import write_csv
from lesionssl.layout import MANIFEST
from lesionssl.progress import console
from lesionssl.records import ManifestRecord

SPLITS = ("train", "val", "test", "external", "unlabelled", "site-pool", "excluded")
#: The held-out site's images sent to the pretraining pool (``--hold-out-pool``), labels removed.
SITE_POOL = "site-pool"

#: The seed study's ISIC 2019 design (its notebooks): the 2,074 ``_downsampled`` images are
#: dropped; per class, these many training images (the first 5,000 files capped at 500 per class)
#: and these many validation images (built, never used, not in the pretraining pool); the rest,
#: 19,423 images, is the test set. File order is not recoverable, so images are drawn at random.
SEED_ISIC2019_TRAIN = {"NV": 500, "MEL": 500, "BCC": 500, "BKL": 467, "AK": 306, "SCC": 171, "VASC": 55, "DF": 55}
SEED_ISIC2019_UNUSED = {"NV": 458, "MEL": 309, "BCC": 274, "BKL": 110, "AK": 63, "SCC": 43, "VASC": 12, "DF": 11}
PoolMode = Literal["inductive", "transductive"]


def _train_targets(counts: pd.Series, spec: SplitConfig) -> dict[str, int]:
    """Training images per class; ``counts`` are the labelled images training may draw from."""
    if spec.per_class_cap is not None:
        return {c: min(spec.per_class_cap, n) for c, n in counts.items()}
    if spec.per_class is not None:
        # The seed's design needs test images left over; a test_fraction split has them already.
        short = {
            c: int(n)
            for c, n in counts.items()
            if (n < spec.per_class + spec.val if spec.test_fraction else n <= spec.per_class)
        }
        if short:
            where = "outside the test split" if spec.test_fraction else "and still leave test images"
            raise LesionSSLError(
                f"--per-class {spec.per_class}{f' + --val {spec.val}' if spec.val and spec.test_fraction else ''} needs more labelled images {where} for {short}; "
                "lower it or use --per-class-cap"
            )
        return {c: spec.per_class for c in counts.index}
    return {c: max(1, round(spec.fraction * n)) for c, n in counts.items()}


def seed_isic2019_split(table: pd.DataFrame, spec: SplitConfig) -> pd.DataFrame:
    """The seed study's split of the ISIC 2019 training set: 2,554 train / 19,423 test."""
    table = table.copy()
    downsampled = table["path"].map(lambda p: Path(p).stem.endswith("_downsampled"))
    table["split"] = "excluded"
    rng = np.random.default_rng(spec.seed)
    for label, n_train in SEED_ISIC2019_TRAIN.items():
        rows = table.index[(table["label"] == label) & ~downsampled].to_numpy()
        needed = n_train + SEED_ISIC2019_UNUSED[label]
        if len(rows) <= needed:
            raise LesionSSLError(
                f"the seed split needs the ISIC 2019 training set: class {label} has {len(rows)} usable images, more than {needed} needed"
            )
        rows = rows[rng.permutation(len(rows))]
        table.loc[rows[:n_train], "split"] = "train"
        table.loc[rows[needed:], "split"] = "test"
    table.loc[table["label"] == "", "split"] = "unlabelled"
    table["group"] = "image:" + table["image"]
    pool = ["train", "unlabelled", "test"] if spec.transductive else ["train", "unlabelled"]
    table["pretrain"] = table["split"].isin(pool).astype(int)
    return table[["image", "label", "split", "path", "group", "pretrain"]]


#: ``--group-by none``: split by image, on purpose.
NO_GROUPING = "none"
#: ``--group-by COLUMN`` needs a value for at least this share of the images.
MIN_GROUP_COVERAGE = 0.5


def check_grouping(table: pd.DataFrame, group_by: str | None) -> None:
    """Refuse a grouping in name only (a column empty for most images), and say so when the data
    has lesion or patient ids but no grouping was asked for: both let repeat photographs of one
    lesion reach train and test."""
    if group_by == NO_GROUPING:
        console.print(
            "splitting by image on purpose (--group-by none): images of one lesion or patient may be in different splits",
            markup=False,
        )
        return
    if group_by is None:
        for column in GROUP_COLUMNS:
            have = int((table[column].astype(str) != "").sum()) if column in table else 0
            if have:
                console.print(
                    f"note: {have} of {len(table)} images have a {column}, but no --group-by was given: repeat photographs of one lesion may land in train and test. Set --group-by {column}, or --group-by none to split by image on purpose.",
                    markup=False,
                )
                return
        return
    if group_by not in table.columns:
        raise LesionSSLError(f"--group-by {group_by}: no such column; available: {sorted(table.columns)}")
    have = int((table[group_by].astype(str) != "").sum())
    if have < MIN_GROUP_COVERAGE * len(table):
        raise LesionSSLError(
            f"--group-by {group_by}: only {have} of {len(table)} images have a {group_by}, so the grouping would hold for few of them; "
            f"give a source with that column (HAM10000 metadata, a label CSV with a {group_by} column), or --group-by none to split by image on purpose"
        )
    if have < len(table):
        console.print(
            f"--group-by {group_by}: {len(table) - have} of {len(table)} images have no {group_by}; each of them is a group of its own",
            markup=False,
        )


def group_ids(table: pd.DataFrame, group_by: str | None, links: Sequence[tuple[str, str]] = ()) -> pd.Series:
    """Each image's group: its ``group_by`` value (images without one are groups of their own),
    with the groups of every linked pair of image ids (near-duplicates) merged into one."""
    if group_by and group_by != NO_GROUPING:
        if group_by not in table.columns:
            raise LesionSSLError(f"--group-by {group_by}: no such column; available: {sorted(table.columns)}")
        group = table[group_by].where(table[group_by] != "", "image:" + table["image"])
    else:
        group = "image:" + table["image"]
    if not links:
        return group
    names = sorted(set(group))
    index = {name: i for i, name in enumerate(names)}
    of_image = dict(zip(table["image"], group))
    pairs = [(index[of_image[a]], index[of_image[b]]) for a, b in links if a in of_image and b in of_image]
    root = clusters(len(names), pairs)
    return group.map(lambda g: names[root[index[g]]])


def _held_out(table: pd.DataFrame, hold_out: dict[str, list[str]]) -> pd.Series:
    """Rows whose metadata column takes one of the held-out values (the ``external`` split)."""
    mask = pd.Series(False, index=table.index)
    for column, values in hold_out.items():
        if column not in table.columns:
            raise LesionSSLError(f"--hold-out {column}=...: no such column; available: {sorted(table.columns)}")
        unknown = sorted(set(values) - set(table[column]))
        if unknown:
            present = sorted(v for v in set(table[column]) if v)
            raise LesionSSLError(f"--hold-out {column}: no image has the value(s) {unknown}; values present: {present}")
        mask |= table[column].isin(values)
    return mask


def _majority_labels(table: pd.DataFrame) -> pd.DataFrame:
    """Per group: its image count per class (a row per group, sorted by name)."""
    return table.groupby("group", sort=True)["label"].value_counts().unstack(fill_value=0)


def _test_groups(groups: pd.DataFrame, fraction: float, rng: np.random.Generator) -> set[str]:
    """Whole groups, stratified by their majority class, until each class has ``fraction`` of
    its images in test (rounded; a group is added while the class is below its target)."""
    majority = groups.idxmax(axis=1)
    chosen: set[str] = set()
    for label in groups.columns:
        members = majority.index[majority == label].to_numpy()
        target = round(fraction * int(groups[label].sum()))
        taken = 0
        for name in members[rng.permutation(len(members))]:
            if taken >= target:
                break
            chosen.add(name)
            taken += int(groups.loc[name, label])
    return chosen


def make_split(
    table: pd.DataFrame, spec: SplitConfig, classes: list[str] | None = None, links: Sequence[tuple[str, str]] = ()
) -> pd.DataFrame:
    """Assign every image to a split, whole groups at a time.

    Groups are ``spec.group_by`` values merged along ``links`` (near-duplicate image id pairs,
    from :mod:`lesionssl.data.duplicates`); images without a group id form a group of their own.
    Held-out images (``spec.hold_out``) form ``external``; the other images of a group that
    touches them are ``excluded``. With ``spec.test_fraction``, test groups are drawn first.
    Then groups are visited in a seeded random order: a group joins ``train`` if all its images
    fit under their class targets, else ``val`` if they fit there, else ``test`` (the seed's
    design) or the pool with its labels unused (``unlabelled``, with ``test_fraction``).

    Args:
        table: Output of :func:`lesionssl.data.sources.read_sources`.
        spec: The split settings.
        classes: Class order (default: ISIC 2019 order of the classes present).
        links: Pairs of image ids that must share a split.

    Returns:
        The manifest (see module docstring).
    """
    if spec.seed_isic2019:
        return seed_isic2019_split(table, spec)
    table = table.copy()
    check_grouping(table, spec.group_by)
    table["group"] = group_ids(table, spec.group_by, links)
    external = _held_out(table, spec.hold_out)
    excluded = table["group"].isin(set(table.loc[external, "group"])) & ~external
    site_pool = pd.Series(False, index=table.index)
    if (
        spec.hold_out_pool is not None
    ):  # the target site's unlabelled images, inductively: whole groups, stratified by class
        # its own generator, so the rest of the split is the same with and without a site pool
        chosen = _test_groups(
            _majority_labels(table[external]), spec.hold_out_pool, np.random.default_rng([spec.seed, 1])
        )
        site_pool = external & table["group"].isin(chosen)
        external = external & ~site_pool
    labelled = (table["label"] != "") & ~external & ~excluded & ~site_pool
    if not labelled.any():
        raise LesionSSLError("the data has no labelled images outside the held-out ones; a split needs labels")
    classes = resolve_class_order(table.loc[labelled, "label"], classes)
    rng = np.random.default_rng(spec.seed)

    test: set[str] = set()
    user = table[USER_SPLIT] if USER_SPLIT in table else pd.Series("", index=table.index)
    user_test, user_val = (
        set(table.loc[labelled & (user == "test"), "group"]),
        set(table.loc[labelled & (user == "val"), "group"]),
    )
    if user_test:  # the user's own test/ folder is the test set (a group touching it goes with it)
        test = user_test
    elif spec.test_fraction is not None:
        test = _test_groups(_majority_labels(table[labelled]), spec.test_fraction, rng)
    user_val -= test
    drawable = labelled & ~table["group"].isin(test | user_val)
    counts = table.loc[drawable, "label"].value_counts().reindex(classes, fill_value=0)
    targets = {"train": _train_targets(counts, spec), "val": dict.fromkeys(classes, 0 if user_val else spec.val)}
    taken = {split: dict.fromkeys(classes, 0) for split in targets}
    leftover = "unlabelled" if spec.test_fraction is not None or user_test else "test"
    groups = _majority_labels(table[drawable])
    assignment = dict.fromkeys(test, "test") | dict.fromkeys(user_val, "val")
    for name in groups.index.to_numpy()[rng.permutation(len(groups))]:
        need = groups.loc[name]
        need = need[need > 0]
        assignment[name] = leftover
        for split in ("train", "val"):
            if all(taken[split][c] + n <= targets[split][c] for c, n in need.items()):
                for c, n in need.items():
                    taken[split][c] += int(n)
                assignment[name] = split
                break

    table["split"] = "unlabelled"
    table.loc[labelled, "split"] = table.loc[labelled, "group"].map(assignment)
    table.loc[external, "split"] = "external"
    table.loc[excluded, "split"] = "excluded"
    table.loc[site_pool, "split"] = SITE_POOL
    table.loc[site_pool, "label"] = ""  # the pool never carries the site's labels
    kept_out = ["external", "excluded"] if spec.transductive else ["test", "external", "excluded"]
    table["pretrain"] = (~table["split"].isin(kept_out)).astype(int)
    return table[["image", "label", "split", "path", "group", "pretrain"]]


def build_split(
    table: pd.DataFrame, spec: SplitConfig, classes: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """:func:`make_split`, once every image has decoded, after the near-duplicate search when
    ``spec.dedup`` is set.

    Returns:
        The manifest, and the linked pairs (``image_a, image_b, hamming, cosine``) or None.

    Raises:
        LesionSSLError: Some images cannot be read (all of them are named).
    """
    check_readable(table["path"].tolist())
    if not spec.dedup:
        return make_split(table, spec, classes), None
    found = find_near_duplicates(table["path"].tolist(), spec.dedup_hash, spec.dedup_cosine, colour=spec.colour)
    images = table["image"].to_numpy()
    pairs = pd.DataFrame(
        {
            "image_a": [images[p.a] for p in found],
            "image_b": [images[p.b] for p in found],
            "hamming": [p.hamming for p in found],
            "cosine": [round(p.cosine, 4) for p in found],
        }
    )
    return make_split(table, spec, classes, list(zip(pairs["image_a"], pairs["image_b"]))), pairs


#: How ``split_table`` names the manifest's splits (labelled images left in the pool keep their
#: label in the manifest, unused).
TABLE_COLUMNS = {
    "train": "train",
    "val": "val",
    "test": "test",
    "external": "external",
    "unlabelled": "pool (label unused)",
    "excluded": "excluded",
}


def split_table(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per-class labelled image counts by split (every split present), with a total row."""
    labelled = manifest[manifest["label"] != ""]
    counts = pd.crosstab(labelled["label"], labelled["split"]).reindex(index=classes, fill_value=0)
    columns = [c for c in TABLE_COLUMNS if c in counts.columns or c in ("train", "test")]
    counts = (
        counts.reindex(columns=columns, fill_value=0)
        .rename(columns=TABLE_COLUMNS)
        .rename_axis(index="class", columns=None)
    )
    counts.loc["Total"] = counts.sum()
    return counts


#: Fewer test images than this make a class's test metrics unreliable (and none leaves them undefined).
MIN_TEST_IMAGES = 5


def thin_test_classes(counts: pd.DataFrame) -> dict[str, int]:
    """Classes of a :func:`split_table` with fewer than :data:`MIN_TEST_IMAGES` test images, and their counts."""
    test = counts.drop(index="Total")["test"]
    return {str(c): int(n) for c, n in test.items() if n < MIN_TEST_IMAGES}


def pool_rows(manifest: pd.DataFrame, site_pool: str = "include") -> np.ndarray:
    """Positions of the pretraining pool's rows; ``site_pool="exclude"`` leaves out the held-out
    site's images that ``--hold-out-pool`` sent there (the source archives alone, same split)."""
    rows = np.flatnonzero(manifest["pretrain"].to_numpy() == 1)
    if site_pool == "exclude":
        rows = rows[manifest["split"].to_numpy()[rows] != SITE_POOL]
    return rows


def pool_summary(manifest: pd.DataFrame, pool: PoolMode) -> str:
    """One line: the pretraining pool's size, what it holds, and its mode."""
    in_pool = manifest[manifest["pretrain"] == 1]
    unlabelled = int((in_pool["label"] == "").sum())
    site = int((in_pool["split"] == SITE_POOL).sum())
    of_site = (
        f", {site} of them from the held-out site (labels removed; the rest of the site is external)" if site else ""
    )
    return f"pretraining pool: {len(in_pool)} images ({pool}; {unlabelled} without labels, {len(in_pool) - unlabelled} labelled{of_site})"


def duplicates_file(manifest: Path) -> Path:
    """Where ``split --dedup`` lists the near-duplicate pairs it merged."""
    return manifest.with_name(manifest.stem + "-duplicates.csv")


def write_manifest(
    manifest: pd.DataFrame,
    path: Path,
    spec: SplitConfig,
    classes: list[str],
    sources: list[str],
    duplicates: pd.DataFrame | None = None,
) -> None:
    """Write the manifest CSV and its sidecar JSON (split settings, pool mode, classes, and
    what the near-duplicate search found), plus the merged near-duplicate pairs."""
    if duplicates is not None:
        write_csv(duplicates_file(path), duplicates)
    root, relative = relative_paths(manifest["path"].tolist())
    ManifestRecord(
        classes=classes,
        pool=spec.pool,
        spec=spec,
        sources=list(sources),
        data_root=root,
        counts={s: int((manifest["split"] == s).sum()) for s in SPLITS},
        pretrain_images=int(manifest["pretrain"].sum()),
        site_pool={
            "images": int((manifest["split"] == SITE_POOL).sum()),
            "groups": int(manifest.loc[manifest["split"] == SITE_POOL, "group"].nunique()),
            "fraction": spec.hold_out_pool,
        }
        if spec.hold_out_pool
        else None,
        near_duplicates={"pairs": len(duplicates), "file": duplicates_file(path).name}
        if duplicates is not None
        else None,
    ).write(path)
    write_csv(path, manifest.assign(path=relative))  # last: the CSV marks a whole manifest


def relative_paths(paths: list[str], flavour: type[PurePath] = Path) -> tuple[str | None, list[str]]:
    """The deepest folder holding every image, and each image's path below it with ``/`` separators,
    so a manifest still works when the data moves (``--data-root``) or crosses operating systems.
    Images on different drives (Windows) keep absolute paths and no root."""
    if not paths:
        return None, []
    absolute = [flavour(p) if flavour(p).is_absolute() else flavour(os.path.abspath(p)) for p in paths]
    parents = [p.parent for p in absolute]
    root = parents[0]
    for parent in parents[1:]:
        while root != parent and root not in parent.parents:
            if root.parent == root:  # no shared ancestor (another drive)
                return None, [str(p) for p in absolute]
            root = root.parent
    return str(root), [p.relative_to(root).as_posix() for p in absolute]


def locate(path: str, root: str | None, flavour: type[PurePath] = Path) -> str:
    """An image's path on this machine: a relative manifest path below ``root`` (``/`` separators,
    whatever system wrote it); an absolute one (an older manifest) as it is."""
    if root is None or PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute():
        return path
    return str(flavour(root).joinpath(*PurePosixPath(path).parts))


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest with its class order and unlabelled-pool mode."""

    table: pd.DataFrame
    classes: list[str]
    pool: PoolMode
    path: Path
    record: ManifestRecord | None = None  # its sidecar (None: a hand-made manifest)

    def rows(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split].reset_index(drop=True)

    def pretrain_rows(self) -> pd.DataFrame:
        return self.table[self.table["pretrain"] == 1].reset_index(drop=True)


#: Splits no group (lesion, patient, near-duplicate cluster) may span two of.
EVALUATED_SPLITS = ("train", "val", "test", "external")


def _check_no_leak(table: pd.DataFrame, path: Path) -> None:
    """Refuse a manifest (edited by hand, say) with one group in two of train / val / test /
    external, or a test or external image in the pretraining pool of an inductive split."""
    if "group" in table:
        used = table[table["split"].isin(EVALUATED_SPLITS)]
        spans = used.groupby("group")["split"].nunique()
        if (spans > 1).any():
            group = spans.index[spans > 1][0]
            where = sorted(set(used.loc[used["group"] == group, "split"]))
            raise LesionSSLError(
                f"{path}: group {group} is in {' and '.join(where)} ({int((spans > 1).sum())} such groups); a lesion in two splits leaks - make the split again with `lesionssl split`"
            )
    if (table.loc[table["split"] == "external", "pretrain"] == 1).any():
        raise LesionSSLError(f"{path}: external images are marked for pretraining; a held-out set must stay unseen")


def read_manifest(path: Path, check_leaks: bool = True, data_root: Path | None = None) -> Manifest:
    """Load a manifest written by :func:`write_manifest`, validating its columns and (unless an
    audit reads it) refusing one whose groups leak across splits. Image paths are resolved below
    ``data_root`` when given (the data moved), else below the root the manifest recorded."""
    path = Path(path)
    if not path.is_file():
        raise LesionSSLError(f"split manifest not found: {path} (create one with `lesionssl split`)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"image", "label", "split", "path"} - set(table.columns)
    if missing:
        raise LesionSSLError(f"{path}: not a lesionssl manifest, missing columns {sorted(missing)}")
    bad = set(table["split"]) - set(SPLITS)
    if bad:
        raise LesionSSLError(f"{path}: unknown split values {sorted(bad)}; allowed {list(SPLITS)}")
    record = ManifestRecord.read(path)
    if "pretrain" not in table:
        table["pretrain"] = (table["split"] != "test").astype(int).astype(str)
    table["pretrain"] = table["pretrain"].astype(int)
    if check_leaks:
        _check_no_leak(table, path)
    root = str(data_root) if data_root is not None else (record.data_root if record else None)
    relative = not all(PurePosixPath(p).is_absolute() or PureWindowsPath(p).is_absolute() for p in table["path"])
    if relative and root is not None and not Path(root).is_dir():  # absolute paths (older manifests) need no root
        raise LesionSSLError(
            f"{path}: its images were under {root}, which is not a folder here; if the data moved, pass --data-root FOLDER (the folder that now holds them)"
        )
    table["path"] = [locate(p, root) for p in table["path"]]
    classes = resolve_class_order(table["label"], record.classes if record else None)
    pool = (record.pool if record else None) or (
        "transductive" if table.loc[table["split"] == "test", "pretrain"].eq(1).any() else "inductive"
    )
    return Manifest(table=table, classes=classes, pool=pool, path=path, record=record)


def recorded_spec(manifest: Manifest) -> SplitConfig:
    """The split settings a manifest's sidecar records (an older manifest without them: a
    placeholder spec with its pool mode), for manifests derived from it."""
    if manifest.record is not None and manifest.record.spec is not None:
        return manifest.record.spec
    return SplitConfig(per_class_cap=1, transductive=manifest.pool == "transductive")


def nested_budgets(
    manifest: pd.DataFrame, budgets: Sequence[int], seed: int | Sequence[int] = 0
) -> dict[int, pd.DataFrame]:
    """One manifest per label budget (training images per class), each budget's training set a
    superset of every smaller one's (whole groups, visited in a seeded order; each budget first
    keeps the smaller budget's groups, then adds groups that fit).

    Budgets draw from every labelled image that may train: the ``train`` split and, in a
    ``test_fraction`` split, the labelled images of the pool. Those a budget leaves out are
    ``unlabelled`` (their labels unused); val, test, external and the pretraining pool are
    unchanged, so every budget shares one test set and one pool.

    Raises:
        LesionSSLError: When a class has fewer training images than the largest budget.
    """
    candidates = manifest["split"].isin(["train", "unlabelled"]) & (manifest["label"] != "")
    train = manifest[candidates]
    counts = train["label"].value_counts()
    short = {c: int(n) for c, n in counts.items() if n < max(budgets)}
    if short:
        raise LesionSSLError(f"budget {max(budgets)} per class exceeds the training images of {short}")
    groups = _majority_labels(train)
    order = groups.index.to_numpy()[np.random.default_rng(seed).permutation(len(groups))]
    taken = dict.fromkeys(counts.index, 0)
    keep: set[str] = set()
    out = {}
    for budget in sorted(set(budgets)):
        for name in order:
            need = groups.loc[name][groups.loc[name] > 0]
            if name not in keep and all(taken[c] + n <= budget for c, n in need.items()):
                keep.add(name)
                for c, n in need.items():
                    taken[c] += int(n)
        table = manifest.copy()
        table.loc[candidates, "split"] = np.where(table.loc[candidates, "group"].isin(keep), "train", "unlabelled")
        out[budget] = table
    return out


def subsample_train(manifest: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """The training set of one budget (see :func:`nested_budgets`)."""
    return nested_budgets(manifest, [per_class], seed)[per_class]


def prepare_manifest(manifest: Path | None, data: list[str], split: SplitConfig | None, folder: Path) -> Path:
    """A stage's manifest: the given one, or ``data`` split with ``split`` into ``folder/manifest.csv``
    (made once: a later run with the same settings reuses it; concurrent runs wait on a lock)."""
    from lesionssl.data.sources import read_sources
    from lesionssl.io import file_lock

    if manifest is not None:
        return Path(manifest)
    target = folder / MANIFEST
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".manifest.lock"):
        recorded = ManifestRecord.read(target) if target.is_file() else None
        if recorded is not None and recorded.spec == split:
            return target
        spec = split
        table, duplicates = build_split(read_sources(data), spec)
        classes = resolve_class_order(table["label"])
        write_manifest(table, target, spec, classes, list(data), duplicates)
        console.print(split_table(table, classes).to_string(), markup=False)
        console.print(pool_summary(table, spec.pool), markup=False)
    return target
