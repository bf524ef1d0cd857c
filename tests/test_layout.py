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
        docstrings = {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                offenders.append(f"{source.relative_to(root)}:{node.lineno} {node.value}")
    assert not offenders, offenders
