"""The model kept by ``finetune`` (weights, calibration, operating point) and ``predict``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionssl.data.split import read_manifest
from lesionssl.evaluate.calibration import (
    apply_temperature,
    choose_threshold,
    fit_temperature,
    negative_log_likelihood,
    operating_point,
)

from conftest import TINY_CLASSIFIER, lesionssl


@pytest.fixture
def run(fine_tuned):
    return fine_tuned


def test_finetune_keeps_the_model_its_calibration_and_operating_point(run):
    ft = run / "ft"
    record = json.loads((ft / "model.json").read_text())
    assert (ft / "model.safetensors").is_file() and (ft / "reliability.png").is_file()
    assert record["classes"] == ["MEL", "NV", "BCC", "BKL"] and record["malignant_classes"] == ["MEL", "BCC"]
    metrics = json.loads((ft / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["temperature"] == pytest.approx(record["temperature"]) and calibration["fitted_on"].startswith(
        "val (24"
    )
    own = pd.read_csv(ft / "predictions.csv")  # the run's uncalibrated test probabilities
    labels = own["label"].map({c: i for i, c in enumerate(record["classes"])}).to_numpy()
    probs = own[[f"p_{c}" for c in record["classes"]]].to_numpy()
    assert calibration["test"]["nll_before"] == pytest.approx(negative_log_likelihood(labels, probs), rel=1e-4)
    assert calibration["test"]["nll_after"] == pytest.approx(
        negative_log_likelihood(labels, apply_temperature(probs, record["temperature"])), rel=1e-4
    )
    point = metrics["operating_point"]
    assert point["threshold"] == pytest.approx(record["threshold"])
    assert point["val"]["sensitivity"]["value"] >= 0.95  # chosen on val to reach the target
    test = point["test"]["sensitivity"]
    assert 0 <= test["ci_low"] <= test["value"] <= test["ci_high"] <= 1


def test_finetune_logs_a_line_per_epoch_when_not_on_a_terminal(run):
    log = (run / "finetune.log").read_text()  # its stderr was a pipe, as under SLURM or nohup
    lines = [line for line in log.splitlines() if line.startswith("epoch ")]
    assert any(line.startswith("epoch 1/2 ") for line in lines) and any(line.startswith("epoch 2/2 ") for line in lines)
    assert all("train_loss" in line and line.endswith(" s)") for line in lines)
    kept = (run / "ft" / "log.txt").read_text().splitlines()  # the run folder keeps its console output
    assert kept[0].startswith("--- ") and "finetune" in kept[0]
    assert [line for line in kept if line.startswith("epoch ")] == lines


def test_predict_reproduces_the_runs_test_probabilities_and_skips_bad_images(run, tmp_path):
    ft = run / "ft"
    test = read_manifest(run / "split.csv").rows("test")  # paths resolved below the data root
    listing = tmp_path / "new.csv"
    pd.DataFrame({"path": [*test["path"], str(tmp_path / "broken.jpg")], "label": [*test["label"], "MEL"]}).to_csv(
        listing, index=False
    )
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    result = lesionssl("predict", "--model", ft, "--data", listing, "--out", tmp_path / "p.csv")
    assert result.returncode == 3, result.stderr
    assert "1 unreadable images skipped" in result.stderr and "Traceback" not in result.stderr
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped["path"]) == [str(tmp_path / "broken.jpg")] and "cannot read image" in skipped["reason"][0]

    predicted = pd.read_csv(tmp_path / "p.csv")
    record = json.loads((ft / "model.json").read_text())
    classes = record["classes"]
    own = pd.read_csv(ft / "predictions.csv")  # the run's uncalibrated test probabilities
    expected = apply_temperature(own[[f"p_{c}" for c in classes]].to_numpy(), record["temperature"])
    np.testing.assert_allclose(predicted[[f"p_{c}" for c in classes]].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(predicted["p_malignant"], predicted["p_MEL"] + predicted["p_BCC"], atol=1e-6)
    assert (predicted["malignant"] == (predicted["p_malignant"] >= record["threshold"])).all()
    metrics = json.loads((tmp_path / "p.metrics.json").read_text())
    assert metrics["labelled_images"] == len(test)
    assert metrics["accuracy"] == pytest.approx(
        json.loads((ft / "metrics.json").read_text())["accuracy"]
    )  # temperature keeps the argmax


def test_predict_leaves_the_models_own_training_and_validation_images_out_of_its_metrics(run, synthetic, tmp_path):
    """Once ``predict --data`` on labelled images counted the model's own training images in its
    metrics, silently."""
    from lesionssl.evaluate.metrics import compute_metrics

    manifest = read_manifest(run / "split.csv").table
    counts = manifest["split"].value_counts()
    result = lesionssl("predict", "--model", run / "ft", "--data", synthetic / "labelled", "--out", tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr
    said = f"{counts['train']} of the labelled images were in the model's own training split and {counts['val']} in its validation split: the metrics leave them out"
    assert said in result.stdout + result.stderr
    predicted = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert predicted["model_split"].value_counts().to_dict() == {
        "": len(predicted) - counts["train"] - counts["val"],
        "train": counts["train"],
        "val": counts["val"],
    }
    unseen = predicted[predicted["model_split"] == ""]
    classes = json.loads((run / "ft" / "model.json").read_text())["classes"]
    expected = compute_metrics(
        unseen["label"].map(classes.index).to_numpy(), unseen[[f"p_{c}" for c in classes]].to_numpy(), classes
    )
    metrics = json.loads((tmp_path / "p.metrics.json").read_text())
    assert metrics["labelled_images"] == len(unseen) and metrics["balanced_accuracy"] == pytest.approx(
        expected["balanced_accuracy"]
    )
    assert metrics["left_out_model_images"] == {"train": counts["train"], "val": counts["val"]}


def test_predict_with_a_uniform_prior_changes_probabilities_not_rows(run, synthetic, tmp_path):
    stores = set(Path(os.environ["LESIONSSL_CACHE"]).glob("images-*.npy"))
    result = lesionssl(
        "predict",
        "--model",
        run / "ft",
        "--data",
        synthetic / "unlabelled",
        "--out",
        tmp_path / "u.csv",
        "--prior",
        "uniform",
    )
    assert result.returncode == 0, result.stderr
    assert (
        len(set(Path(os.environ["LESIONSSL_CACHE"]).glob("images-*.npy")) - stores) == 1
    )  # readable images go to the decode-once store
    predicted = pd.read_csv(tmp_path / "u.csv")
    assert len(predicted) == 60 and predicted["label"].isna().all()
    np.testing.assert_allclose(predicted.filter(like="p_").drop(columns="p_malignant").sum(axis=1), 1.0, atol=1e-6)
    assert not (tmp_path / "u.metrics.json").exists()


def test_a_prior_file_must_name_every_class(run, synthetic, tmp_path):
    """A prior that leaves classes out once gave them probability 0 for every image, silently."""
    classes = json.loads((run / "ft" / "model.json").read_text())["classes"]
    (tmp_path / "some.yaml").write_text("MEL: 0.3\nNV: 0.7\n")
    result = lesionssl(
        "predict",
        "--model",
        run / "ft",
        "--data",
        synthetic / "unlabelled",
        "--out",
        tmp_path / "u.csv",
        "--prior",
        tmp_path / "some.yaml",
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines[-1].startswith("error:") and "gives no probability for" in lines[-1], (
        result.stderr
    )
    assert all(c in lines[-1] for c in classes if c not in ("MEL", "NV")) and not (tmp_path / "u.csv").exists()
    (tmp_path / "all.yaml").write_text(
        "".join(f"{c}: {0.0 if c == 'BCC' else 1.0}\n" for c in classes)
    )  # 0 where meant
    result = lesionssl(
        "predict",
        "--model",
        run / "ft",
        "--data",
        synthetic / "unlabelled",
        "--out",
        tmp_path / "u.csv",
        "--prior",
        tmp_path / "all.yaml",
    )
    assert result.returncode == 0, result.stderr
    assert (pd.read_csv(tmp_path / "u.csv")["p_BCC"] == 0).all()


@pytest.mark.parametrize("command", ["predict", "explain"])
@pytest.mark.parametrize("kind", ["missing-model", "damaged-weights", "other-classes", "no-images"])
def test_predict_and_explain_bad_input_is_one_line(run, synthetic, tmp_path, kind, command):
    model, data = run / "ft", synthetic / "labelled"
    if kind == "missing-model":
        model = tmp_path / "nowhere"
    elif kind == "damaged-weights":
        model = tmp_path / "ft"
        model.mkdir()
        (model / "model.json").write_text((run / "ft" / "model.json").read_text())
        (model / "model.safetensors").write_bytes((run / "ft" / "model.safetensors").read_bytes()[:500])
    elif kind == "other-classes":
        data = tmp_path / "labels.csv"
        data.write_text(f"path,label\n{next((synthetic / 'labelled').rglob('*.png'))},SCC\n")
    else:
        data = tmp_path / "empty"
        data.mkdir()
        (data / "a.jpg").write_text("not an image")
    result = lesionssl(
        command,
        "--model",
        model,
        "--data",
        data,
        "--out",
        tmp_path / ("p.csv" if command == "predict" else "explained"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error:")
    assert {
        "missing-model": "holds no model",
        "damaged-weights": "cannot read",
        "other-classes": "SCC",
        "no-images": "could be read",
    }[kind] in result.stderr


def test_temperature_and_threshold_on_known_numbers():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 4000)
    features = rng.normal(size=(4000, 3)) + 3.0 * np.eye(3)[labels]
    # With unit Gaussian noise around 3 * one-hot, the true posterior is softmax(3 * features).
    calibrated = np.exp(3 * features) / np.exp(3 * features).sum(axis=1, keepdims=True)
    overconfident = apply_temperature(calibrated, 0.5)  # the same model, twice too sharp
    assert fit_temperature(labels, overconfident) == pytest.approx(2.0, rel=0.1)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    malignant = np.array([1, 1, 0, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    assert choose_threshold(scores, malignant, 0.75) == 0.6  # 3 of 4 malignant at >= 0.6
    point = operating_point(scores, malignant, 0.6)
    assert point["sensitivity"]["value"] == 0.75 and point["specificity"]["value"] == 5 / 6


def test_model_card_has_data_metrics_calibration_and_limitations(run):
    card_file = run / "ft" / "MODEL_CARD.md"
    card = card_file.read_text()
    for text in (
        "## Data",
        "licence and provenance",
        "95% bootstrap interval",
        "| MEL |",
        "## Calibration",
        "Test ECE",
        "## Operating point",
        "| test |",
        "Not a medical device",
        "Command: `lesionssl finetune --manifest",
        "](examples.png)",
        "lesionssl explain --model",
    ):
        assert text in card, text
    assert "unfreeze, a fixed LR of 0.002 (no LR finder), 1cycle" in card  # the run's procedure, not the default's
    card_file.unlink()
    result = lesionssl("card", run / "ft")
    assert result.returncode == 0 and card_file.read_text() == card
    card_file.unlink()
    result = lesionssl("card", "--model", run / "ft")  # as predict, explain, serve and export take a model
    assert result.returncode == 0 and card_file.read_text() == card
    refused = lesionssl("card")
    assert refused.returncode == 2 and "--model" in refused.stderr.splitlines()[-1]


def test_bootstrap_draws_use_the_definitions_of_the_metrics():
    from lesionssl.evaluate.metrics import compute_metrics
    from lesionssl.report.statistics import headline_scores, macro_auroc

    rng = np.random.default_rng(1)
    labels, probs = rng.integers(0, 3, 300), rng.random((300, 4))  # class D absent from the labels
    metrics = compute_metrics(labels, probs, ["A", "B", "C", "D"])
    assert headline_scores(labels, probs.argmax(axis=1), 4) == pytest.approx(
        (metrics["accuracy"], metrics["balanced_accuracy"], metrics["macro_f1"])
    )
    assert macro_auroc(labels, probs) == pytest.approx(metrics["macro_auroc"])


def test_study_interval_resamples_seeds_and_images_and_stays_in_range():
    """The report's intervals: inside [0, 1] even for near-perfect runs (a t-interval over three
    seeds ran to 1.118 there), around the mean, wider when the runs disagree more, and a point when
    every run and image agrees."""
    from lesionssl.report.statistics import study_interval

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)

    def run(accuracy: float) -> tuple[np.ndarray, np.ndarray]:
        right = rng.random(200) < accuracy
        predicted = np.where(right, labels, (labels + 1) % 3)
        return labels, np.eye(3)[predicted] * 0.8 + 0.1

    near_perfect = [run(0.99), run(1.0), run(0.97)]
    low, high = study_interval(near_perfect, "accuracy")
    mean = np.mean([(p.argmax(1) == y).mean() for y, p in near_perfect])
    assert 0.0 <= low <= mean <= high <= 1.0
    low_auc, high_auc = study_interval(near_perfect, "macro_auroc")
    assert 0.0 <= low_auc <= high_auc <= 1.0
    spread = [run(0.5), run(0.95), run(0.7)]
    assert np.subtract(*study_interval(spread, "balanced_accuracy")[::-1]) > np.subtract(
        *study_interval(near_perfect, "balanced_accuracy")[::-1]
    )
    assert study_interval([run(1.0), run(1.0)], "macro_f1") == (1.0, 1.0)


def test_exports_give_the_probabilities_of_predict(run, tmp_path):
    """ONNX (onnxruntime) and TorchScript reproduce predict's calibrated probabilities to 1e-4;
    the safetensors export loads into timm's own model with strict keys."""
    import onnxruntime
    import timm
    import torch
    from safetensors.torch import load_file

    from lesionssl.data.store import decode_for_store, stored_size
    from lesionssl.deploy.model import load_model

    ft = run / "ft"
    test = read_manifest(run / "split.csv").rows("test").head(6)
    listing = tmp_path / "six.csv"
    test[["path", "label"]].to_csv(listing, index=False)
    assert lesionssl("predict", "--model", ft, "--data", listing, "--out", tmp_path / "p.csv").returncode == 0
    module, record = load_model(ft)
    expected = pd.read_csv(tmp_path / "p.csv")[[f"p_{c}" for c in record.classes]].to_numpy()
    stored = np.stack(
        [decode_for_store(path, stored_size(record.image_size, record.store_margin)) for path in test["path"]]
    )
    images = module.eval_view(torch.from_numpy(stored).permute(0, 3, 1, 2)).numpy()  # the sidecar's preprocessing
    for format in ("onnx", "torchscript", "safetensors"):
        result = lesionssl("export", "--model", ft, "--format", format, "--out", tmp_path / format)
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / format / "model.json").read_text())["temperature"] == record.temperature
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    np.testing.assert_allclose(session.run(None, {"image": images})[0], expected, atol=1e-4)
    np.testing.assert_allclose(session.run(None, {"image": images[:1]})[0], expected[:1], atol=1e-4)  # dynamic batch
    scripted = torch.jit.load(str(tmp_path / "torchscript" / "model.torchscript.pt"))
    np.testing.assert_allclose(scripted(torch.from_numpy(images)).detach().numpy(), expected, atol=1e-4)
    plain = timm.create_model("test_resnet", num_classes=len(record.classes))
    plain.load_state_dict(load_file(str(tmp_path / "safetensors" / "model.safetensors")))  # strict: every key matches
    logits = plain.eval()(torch.from_numpy(images)).detach()
    np.testing.assert_allclose(torch.softmax(logits / record.temperature, dim=1).numpy(), expected, atol=1e-4)


def test_explain_maps_every_readable_image_and_writes_a_gallery(run, tmp_path):
    ft = run / "ft"
    test = read_manifest(run / "split.csv").rows("test").head(10)
    listing = tmp_path / "some.csv"
    (tmp_path / "broken.jpg").write_bytes(b"GIF89a nothing")
    pd.DataFrame({"path": [*test["path"], str(tmp_path / "broken.jpg")], "label": [*test["label"], "NV"]}).to_csv(
        listing, index=False
    )
    result = lesionssl("explain", "--model", ft, "--data", listing, "--out", tmp_path / "ex")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert list(pd.read_csv(tmp_path / "ex" / "skipped.csv")["path"]) == [str(tmp_path / "broken.jpg")]
    explained = pd.read_csv(tmp_path / "ex" / "explanations.csv")
    assert (
        list(explained["image"]) == list(test["path"])
        and (explained["explained_class"] == explained["prediction"]).all()
    )
    own = (
        pd.read_csv(ft / "predictions.csv").set_index("image").loc[test["image"]]
    )  # the run has no TTA: the same predictions
    assert list(explained["prediction"]) == list(own["prediction"])
    for name in explained["map"]:
        with Image.open(tmp_path / "ex" / name) as picture:
            assert picture.size == (448, 224)
    page = (tmp_path / "ex" / "index.html").read_text()
    assert page.count("<figure>") == len(test) and all(f"src='{m}'" in page for m in explained["map"])
    chosen = lesionssl("explain", "--model", ft, "--data", listing, "--out", tmp_path / "nv", "--target", "NV")
    assert chosen.returncode == 3, chosen.stderr
    assert (pd.read_csv(tmp_path / "nv" / "explanations.csv")["explained_class"] == "NV").all()
    wrong = lesionssl("explain", "--model", ft, "--data", listing, "--out", tmp_path / "x", "--target", "SCC")
    assert wrong.returncode == 2 and wrong.stderr.strip().startswith("error:") and "--target" in wrong.stderr


def test_grad_cam_follows_the_papers_formula():
    """Against a hand-written Grad-CAM: channel weights are the spatial mean of the class score's
    gradient, the map the ReLU of their weighted sum, bilinearly upsampled and scaled to max 1."""
    import torch
    import torchvision
    from torch.nn import functional as F

    from lesionssl.augment.batch import EvalView
    from lesionssl.deploy.gradcam import grad_cam
    from lesionssl.finetuning.module import ClassifierModule

    torch.manual_seed(0)
    backbone = torchvision.models.resnet18()
    backbone.fc = torch.nn.Identity()
    module = ClassifierModule(backbone, 512, 4, eval_view=EvalView(64, "imagenet")).eval()
    images = np.random.default_rng(0).integers(0, 256, (3, 72, 72, 3), dtype=np.uint8)
    targets = np.array([2, 0, 3])
    heat = grad_cam(module, images, temperature=2.0, targets=targets)
    x = module.eval_view(torch.from_numpy(images).permute(0, 3, 1, 2))
    store = {}

    def keep(_module, _inputs, out):
        store["a"] = out
        out.register_hook(lambda grad: store.update(g=grad))

    handle = backbone.layer4.register_forward_hook(keep)
    logits = module(x)
    logits[torch.arange(3), torch.as_tensor(targets)].sum().backward()
    handle.remove()
    for n in range(3):
        weights = store["g"][n].mean(dim=(1, 2))
        cam = torch.relu((weights[:, None, None] * store["a"][n]).sum(dim=0))
        cam = F.interpolate(cam[None, None], size=(72, 72), mode="bilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(heat.maps[n], (cam / cam.max()).detach().numpy(), atol=1e-5)
    probs = torch.softmax(logits.detach() / 2.0, dim=1).numpy()
    np.testing.assert_allclose(heat.probabilities, probs, atol=1e-5)
    assert list(heat.targets) == list(targets)


def test_finetune_shows_its_most_confident_right_and_wrong_test_images(run):
    ft = run / "ft"
    examples = pd.read_csv(ft / "examples.csv")
    own = pd.read_csv(ft / "predictions.csv")
    confidence = own.filter(like="p_").max(axis=1)
    assert (ft / "examples.png").is_file() and not examples.empty
    for row in examples.itertuples():
        predicted_as = own["prediction"] == row._1
        candidates = own[predicted_as & ((own["label"] == row._1) == (row.kind == "correct"))]
        assert row.image == candidates.loc[confidence[candidates.index].idxmax(), "image"]
        assert row.probability == pytest.approx(confidence[candidates.index].max(), abs=1e-6)
    assert set(examples["kind"]) <= {"correct", "wrong"} and not examples.duplicated(["class", "kind"]).any()


def test_malignant_classes_default_to_isics_only_for_isic_classes_and_otherwise_must_be_named():
    from lesionssl.errors import LesionSSLError
    from lesionssl.evaluate.calibration import resolve_malignant

    assert resolve_malignant(["MEL", "NV", "BCC", "DF"], None) == ["MEL", "BCC"]
    assert resolve_malignant(["benign", "malignant"], None) == []  # another cancer names its own
    assert resolve_malignant(["normal", "OSCC", "leukoplakia"], ["leukoplakia", "OSCC"]) == ["OSCC", "leukoplakia"]
    with pytest.raises(LesionSSLError, match=r"\['SCC'\] are not classes of this data \(benign, malignant\)"):
        resolve_malignant(["benign", "malignant"], ["SCC"])


@pytest.fixture(scope="module")
def oral_like(synthetic, tmp_path_factory):
    """A two-class ImageFolder with non-ISIC names (the synthetic MEL and NV images renamed) and its split."""
    import shutil

    folder = tmp_path_factory.mktemp("oral")
    for source, name in (("MEL", "OSCC"), ("NV", "normal")):
        shutil.copytree(synthetic / "labelled" / source, folder / "images" / name)
    assert (
        lesionssl(
            "split", "--data", folder / "images", "--per-class", 8, "--val", 6, "--out", folder / "split.csv"
        ).returncode
        == 0
    )
    return folder


@pytest.mark.parametrize("named", [True, False])
def test_any_cancer_names_its_malignant_classes_and_the_card_claims_no_dermoscopy(oral_like, tmp_path, named):
    """Once "malignant" was hard-coded to MEL/BCC/SCC/AK: an oral-cancer model had no operating
    point, and its card said "the sum over none" and "Dermoscopic images only"."""
    flags = ("--malignant-classes", "OSCC") if named else ()
    result = lesionssl(
        "finetune", "--manifest", oral_like / "split.csv", "--out", tmp_path / "ft", *TINY_CLASSIFIER, *flags
    )
    assert result.returncode == 0, result.stderr
    notes = [
        line for line in (result.stdout + result.stderr).splitlines() if "--malignant-classes CLASS sets them" in line
    ]
    assert len(notes) == (0 if named else 1)
    record = json.loads((tmp_path / "ft" / "model.json").read_text())
    card = (tmp_path / "ft" / "MODEL_CARD.md").read_text()
    assert "Dermoscopic" not in card and "dermoscopic" not in card and "Images like its training data only" in card
    if named:
        assert record["malignant_classes"] == ["OSCC"] and record["threshold"] is not None
        assert "P(malignant) = the sum over OSCC" in card and "## Operating point" in card
        new = pd.DataFrame({"path": read_manifest(oral_like / "split.csv").rows("test")["path"]})
        new.to_csv(tmp_path / "new.csv", index=False)
        assert (
            lesionssl(
                "predict", "--model", tmp_path / "ft", "--data", tmp_path / "new.csv", "--out", tmp_path / "p.csv"
            ).returncode
            == 0
        )
        predicted = pd.read_csv(tmp_path / "p.csv")
        np.testing.assert_allclose(predicted["p_malignant"], predicted["p_OSCC"])
        assert (predicted["malignant"] == (predicted["p_malignant"] >= record["threshold"])).all()
    else:
        assert record["malignant_classes"] == [] and record["threshold"] is None
        assert "no malignant classes were set (finetune --malignant-classes)" in card
