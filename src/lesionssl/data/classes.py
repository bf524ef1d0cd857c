"""Class vocabularies: ISIC 2019 order and the aliases used by other official label files."""

from __future__ import annotations

from collections.abc import Iterable

from lesionssl.errors import LesionSSLError

#: Diagnostic classes in the order of the ISIC 2019 ground-truth columns (UNK has no training images).
ISIC2019_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")

#: Full names, as in the seed's classification report.
CLASS_NAMES: dict[str, str] = {
    "MEL": "Melanoma",
    "NV": "Melanocytic nevus",
    "BCC": "Basal cell carcinoma",
    "AK": "Actinic keratosis",
    "BKL": "Benign keratosis",
    "DF": "Dermatofibroma",
    "VASC": "Vascular lesion",
    "SCC": "Squamous cell carcinoma",
}

#: HAM10000 / ISIC 2018 `dx` codes -> ISIC 2019 codes (`akiec` covers AK and intraepithelial SCC).
HAM10000_DX: dict[str, str] = {
    "akiec": "AK",
    "bcc": "BCC",
    "bkl": "BKL",
    "df": "DF",
    "mel": "MEL",
    "nv": "NV",
    "vasc": "VASC",
}


def resolve_class_order(labels: Iterable[str], explicit: Iterable[str] | None = None) -> list[str]:
    """Return the class order used everywhere downstream.

    Args:
        labels: Labels present in the data (empty / None entries are ignored).
        explicit: A user-given order; every present label must be in it.

    Returns:
        ``explicit`` if given; otherwise the ISIC 2019 order restricted to the classes present
        when every label is an ISIC 2019 code, else the sorted label names.
    """
    present = {str(label) for label in labels if label not in (None, "") and label == label}
    if explicit is not None:
        order = list(explicit)
        unknown = sorted(present - set(order))
        if unknown:
            raise LesionSSLError(f"labels {unknown} are not in the configured classes {order}")
        return order
    if present <= set(ISIC2019_CLASSES):
        return [c for c in ISIC2019_CLASSES if c in present]
    return sorted(present)
