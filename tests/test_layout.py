"""The one place file and folder names live: the runners write where the report, the card, the
API and the CLI read."""

import json

from lesionssl.layout import ExperimentFolder
from lesionssl.records import RunRecord


def test_finished_runs_are_planned_runs_with_metrics_and_never_their_external_evaluations(tmp_path):
    experiment = ExperimentFolder(tmp_path)
    done, unfinished = experiment.run("runs/imagenet/seed0"), experiment.run("runs/imagenet/seed1")
    for run in (done, unfinished):
        RunRecord(name="imagenet", protocol="linear", seed=0, init="imagenet").write(run.path)
    done.metrics.write_text(json.dumps({"seed": 0, "classes": ["a"]}))
    external = done.external("ISIC2017")
    external.path.mkdir(parents=True)
    external.metrics.write_text("{}")  # an external set's metrics: not a run of the experiment
    assert experiment.finished_runs() == [done]
    assert done.finished and not unfinished.finished and external.finished
    assert external.path == done.path / "external" / "ISIC2017"
    assert experiment.pretraining() != experiment.pretraining("bt") and experiment.pretraining("bt").name.endswith("bt")


def test_no_stage_spells_a_file_name_the_layout_owns():
    """Every name of ``layout`` is written in ``layout.py`` alone (docstrings may mention them)."""
    import ast
    from pathlib import Path

    import lesionssl
    from lesionssl import layout

    names = {value for key, value in vars(layout).items() if key.isupper() and isinstance(value, str) and "." in value}
    root = Path(lesionssl.__file__).parent
    offenders = []
    for source in root.rglob("*.py"):
        if source.name == "layout.py":
            continue
        tree = ast.parse(source.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                offenders.append(f"{source.relative_to(root)}:{node.lineno} {node.value}")
    assert not offenders, offenders


def test_records_of_the_current_format_refuse_unknown_and_missing_keys_older_formats_still_read(tmp_path):
    import pytest

    from lesionssl.errors import LesionSSLError
    from lesionssl.records import RUN_RESULT_FORMAT, BackboneRecord, Calibration, Metrics, RunResult

    metrics = {
        "n": 2,
        "accuracy": 0.5,
        "balanced_accuracy": 0.5,
        "macro_f1": 0.4,
        "weighted_f1": 0.4,
        "ece": 0.1,
        "classes": ["a", "b"],
        "macro_auroc": None,
        "macro_average_precision": None,
        "per_class": {
            c: {
                "precision": 0.5,
                "recall": 0.5,
                "f1": 0.5,
                "support": 1,
                "specificity": 0.5,
                "auroc": None,
                "average_precision": None,
            }
            for c in "ab"
        },
        "confusion_matrix": [[1, 0], [1, 0]],
        "confusion_matrix_normalized": [[1.0, 0.0], [1.0, 0.0]],
    }
    result = RunResult(
        metrics=Metrics.from_dict(metrics),
        seed=3,
        protocol="linear",
        calibration=Calibration(note="no validation split"),
    )
    result.write(tmp_path)
    assert RunResult.read(tmp_path) == result  # the round trip, nested records included
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["format"] == RUN_RESULT_FORMAT and written["accuracy"] == 0.5  # metrics stay at the top level
    for broken, message in (
        ({**written, "acuracy": 0.5}, "unknown key\\(s\\) acuracy"),
        ({k: v for k, v in written.items() if k != "seed"}, "missing key\\(s\\) seed"),
    ):
        (tmp_path / "metrics.json").write_text(json.dumps(broken))
        with pytest.raises(LesionSSLError, match=message):
            RunResult.read(tmp_path)
    # a metrics.json of an earlier lesionssl (no format, fewer keys, old nesting) still reads
    old = {
        **metrics,
        "seed": 1,
        "protocol": "finetune",
        "lr": 0.001,
        "calibration": {"temperature": 1.5, "fitted_on": "val (20 images)", "test": {"ece_before": 0.2}},
        "operating_point": {"note": "no malignant classes"},
        "external": {
            "X": {
                "n": 4,
                "accuracy": 0.25,
                "balanced_accuracy": 0.25,
                "macro_f1": 0.2,
                "weighted_f1": 0.2,
                "macro_auroc": None,
            }
        },
        "retired_key": 1,
    }
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    read = RunResult.read(tmp_path)
    assert (
        read.calibration.temperature == 1.5
        and read.operating_point.note == "no malignant classes"
        and read.external["X"].accuracy == 0.25
        and read.metrics.accuracy == 0.5
    )
    backbone = tmp_path / "backbone.json"
    record = BackboneRecord(
        architecture="resnet18",
        image_size=16,
        normalize="auto",
        preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3},
        pool="inductive",
        pool_images=4,
        init={},
        epochs=1,
        recipe="small-data",
        method="byol",
        method_kwargs={},
    )
    record.write(backbone)
    backbone.write_text(json.dumps({**json.loads(backbone.read_text()), "l2_sp": 1.0}))
    with pytest.raises(LesionSSLError, match="unknown key\\(s\\) l2_sp"):
        BackboneRecord.read(backbone)
    backbone.write_text(json.dumps({**json.loads(backbone.read_text()), "format": "lesionssl-backbone/1"}))
    assert BackboneRecord.read(backbone).method == "byol"  # the older format: its unknown keys are ignored


def _package_imports() -> dict[str, set[str]]:
    """Which lesionssl packages (top-level folders or modules) each one imports, lazily or not."""
    import ast
    from pathlib import Path

    import lesionssl

    root = Path(lesionssl.__file__).parent
    edges: dict[str, set[str]] = {}
    for source in root.rglob("*.py"):
        parts = source.relative_to(root).parts
        package = parts[0] if len(parts) > 1 else source.stem
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("lesionssl.")
                and node.module.split(".")[1] != package
            ):
                edges.setdefault(package, set()).add(node.module.split(".")[1])
    return edges


def test_fine_tuning_never_imports_deploy_and_figures_import_no_stage():
    edges = _package_imports()
    assert (
        "finetuning" in edges["deploy"] and "deploy" not in edges["finetuning"]
    )  # deploy uses the classifier, not the reverse
    assert edges["figures"] <= {"io", "layout", "errors"}


def test_the_manifest_sidecar_is_one_record_with_the_one_split_type(tmp_path):
    import pandas as pd
    import pytest

    from lesionssl.config import SplitConfig
    from lesionssl.data.split import read_manifest, recorded_spec, write_manifest
    from lesionssl.errors import LesionSSLError
    from lesionssl.records import MANIFEST_FORMAT, ManifestRecord

    (tmp_path / "a.png").write_bytes(b"")
    table = pd.DataFrame(
        {
            "image": ["a"],
            "label": ["NV"],
            "split": ["train"],
            "path": [str(tmp_path / "a.png")],
            "pretrain": [1],
            "group": ["g"],
        }
    )
    spec = SplitConfig(per_class=1, val=0, group_by="lesion_id", seed=7)
    write_manifest(table, tmp_path / "m.csv", spec, ["NV"], ["somewhere"])
    record = ManifestRecord.read(tmp_path / "m.csv")
    assert (
        record.format == MANIFEST_FORMAT
        and record.spec == spec
        and record.sources == ["somewhere"]
        and record.data_root == str(tmp_path)
    )
    manifest = read_manifest(tmp_path / "m.csv", check_leaks=False)
    assert manifest.record == record and recorded_spec(manifest) == spec and manifest.pool == "inductive"
    sidecar = tmp_path / "m.json"
    written = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**written, "pools": "inductive"}))
    with pytest.raises(LesionSSLError, match="unknown key\\(s\\) pools"):
        ManifestRecord.read(tmp_path / "m.csv")
    older = {
        k: v for k, v in written.items() if k not in {"format", "site_pool", "near_duplicates"}
    }  # a sidecar of an earlier lesionssl
    sidecar.write_text(json.dumps(older))
    assert ManifestRecord.read(tmp_path / "m.csv").spec == spec


def test_the_configuration_does_not_reach_into_the_methods():
    import ast
    from pathlib import Path

    import lesionssl

    imported = {
        node.module
        for source in (Path(lesionssl.__file__).parent / "config").glob("*.py")
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(module.startswith("lesionssl.pretraining.methods") for module in imported)


def test_preprocessing_is_one_typed_value_read_from_timms_pretrained_cfg_and_from_records(tmp_path):
    from timm.models import PretrainedCfg

    from lesionssl.augment.views import Preprocessing
    from lesionssl.records import ModelRecord

    cfg = PretrainedCfg(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
    typed = Preprocessing.from_config(cfg)
    assert typed == Preprocessing((0.5,) * 3, (0.5,) * 3, "bicubic")
    assert (
        Preprocessing.from_config({"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize": 232})
        == typed
    )
    assert (
        Preprocessing.from_config({"mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "lanczos"}).interpolation
        == "bilinear"
    )
    record = ModelRecord(
        architecture="resnet18",
        classes=["a", "b"],
        image_size=16,
        store_margin=1.14,
        preprocessing=typed,
        train_prior=[0.5, 0.5],
    )
    record.write(tmp_path / "model.json")
    assert json.loads((tmp_path / "model.json").read_text())["preprocessing"]["mean"] == [0.5] * 3
    assert ModelRecord.read(tmp_path / "model.json").preprocessing == typed  # typed again, not a dict


def test_the_report_reads_experiment_yaml_as_the_compare_config_it_was_written_from(tmp_path):
    from lesionssl.config import CompareConfig, to_yaml, validate
    from lesionssl.report.compare import read_experiment

    config = validate(
        CompareConfig,
        {
            "manifest": str(tmp_path / "m.csv"),
            "out": str(tmp_path),
            "initialisations": [{"name": "imagenet", "init": "imagenet"}, {"name": "bt", "init": "pretrain"}],
            "pretrain": {"image_size": 32},
        },
    )
    (tmp_path / "experiment.yaml").write_text(to_yaml(config))
    read = read_experiment(tmp_path)
    assert read == config and read.initialisations[1].init == "pretrain" and read.pretrain.image_size == 32
    (tmp_path / "experiment.yaml").write_text("initialisations: 3\n")  # not an experiment of this lesionssl
    assert read_experiment(tmp_path) is None
