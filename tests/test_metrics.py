import numpy as np
import pytest

from lesionssl.evaluate.metrics import (
    compute_metrics,
    expected_calibration_error,
    metrics_from_predictions,
    predictions_frame,
)

CLASSES = ["MEL", "NV", "DF"]


def _probs(predicted, confidence=0.8):
    probs = np.full((len(predicted), 3), (1 - confidence) / 2)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_hand_computed_metrics():
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 1, 0, 2, 1])
    m = compute_metrics(labels, _probs(predicted), CLASSES)
    assert m["accuracy"] == pytest.approx(5 / 8)
    # recalls: MEL 1/2, NV 3/4, DF 1/2
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    # MEL: P 1/2 R 1/2 F1 1/2; NV: P 3/5 R 3/4 F1 2/3; DF: P 1 R 1/2 F1 2/3
    # specificity: of the images not of a class, the share not predicted as it (MEL 5/6, NV 2/4, DF 6/6)
    assert m["per_class"]["NV"] == pytest.approx(
        {
            "precision": 0.6,
            "recall": 0.75,
            "specificity": 0.5,
            "f1": 2 / 3,
            "support": 4,
            "auroc": m["per_class"]["NV"]["auroc"],
            "average_precision": m["per_class"]["NV"]["average_precision"],
        }
    )
    assert (m["per_class"]["MEL"]["specificity"], m["per_class"]["DF"]["specificity"]) == pytest.approx((5 / 6, 1.0))
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 4 * 2 / 3 + 2 * 2 / 3) / 8)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 3, 0], [0, 1, 1]]
    assert m["confusion_matrix_normalized"][1] == pytest.approx([0.25, 0.75, 0.0])


def test_ece_is_guo_et_al_s_binned_gap():
    """torchmetrics' ECE equals the definition written out: bins of top-1 confidence, weighted
    |accuracy - confidence| gaps."""
    rng = np.random.default_rng(0)
    probs, labels = rng.dirichlet(np.ones(4) * 0.5, 500), rng.integers(0, 4, 500)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    expected = sum(
        (which == b).mean() * abs(correct[which == b].mean() - confidence[which == b].mean())
        for b in range(15)
        if (which == b).any()
    )
    assert expected_calibration_error(labels, probs) == pytest.approx(
        expected, abs=1e-6
    )  # torchmetrics bins in float32


def test_ece_of_perfectly_calibrated_and_overconfident():
    labels = np.array([0, 0, 0, 0])
    assert expected_calibration_error(labels, _probs(np.array([0, 0, 0, 1]), confidence=0.75)) == pytest.approx(0.0)
    assert expected_calibration_error(labels, _probs(np.array([0, 0, 1, 1]), confidence=1.0)) == pytest.approx(0.5)


def test_class_absent_from_test_set_has_no_auroc():
    m = compute_metrics(np.array([0, 1, 0, 1]), _probs(np.array([0, 1, 1, 1])), CLASSES)
    assert m["per_class"]["DF"]["auroc"] is None and m["per_class"]["DF"]["support"] == 0
    assert m["macro_auroc"] is not None
    # macro F1 over the classes present (MEL, NV), not counting the absent DF as 0
    assert m["macro_f1"] == pytest.approx((m["per_class"]["MEL"]["f1"] + m["per_class"]["NV"]["f1"]) / 2)


def test_predictions_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    probs = rng.dirichlet(np.ones(3), 50)
    frame = predictions_frame([f"img{i}" for i in range(50)], labels, probs, CLASSES)
    assert list(frame.columns) == ["image", "label", "prediction", "p_MEL", "p_NV", "p_DF"]
    frame.to_csv(tmp_path / "p.csv", index=False)
    again = metrics_from_predictions(tmp_path / "p.csv", CLASSES)
    direct = compute_metrics(labels, probs, CLASSES)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auroc", "ece"):
        assert again[key] == pytest.approx(direct[key], abs=1e-12)
