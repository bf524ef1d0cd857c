"""The Python API: the README's notebook example runs verbatim and returns typed results;
importing lesionssl changes no global state."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_notebook_example_runs_and_returns_typed_results(tmp_path, monkeypatch):
    from lesionssl.api import FineTuned, Pretrained, SplitResult
    from lesionssl.evaluate.metrics import metrics_from_predictions
    from lesionssl.records import ClassMetrics, Metrics

    code = re.search(r"<!-- notebook-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    s, bt, run = namespace["s"], namespace["bt"], namespace["run"]
    assert isinstance(s, SplitResult) and isinstance(bt, Pretrained) and isinstance(run, FineTuned)
    assert s.path.is_file() and s.counts.loc["MEL", "train"] == 8 and s.pool_images == int(s.manifest["pretrain"].sum())
    assert isinstance(bt.backbone, torch.nn.Module) and bt.path.is_file() and bt.record.epochs == 1
    assert (
        isinstance(run.model, torch.nn.Module)
        and isinstance(run.metrics, Metrics)
        and isinstance(run.metrics.per_class["MEL"], ClassMetrics)
    )
    # the typed metrics are the run's own, recomputed from its predictions
    recomputed = metrics_from_predictions(run.folder / "predictions.csv", run.metrics.classes)
    assert np.isclose(run.metrics.balanced_accuracy, recomputed["balanced_accuracy"])
    assert np.isclose(run.metrics.per_class["MEL"].specificity, recomputed["per_class"]["MEL"]["specificity"])
    assert namespace["logits"].shape == (2, len(run.metrics.classes))
    # the backbone returned is the pretrained one: its weights are the file's
    from safetensors.torch import load_file

    saved = load_file(bt.path)
    name, tensor = next((k, v) for k, v in saved.items() if v.dtype.is_floating_point and v.ndim == 4)
    assert torch.equal(dict(bt.backbone.state_dict())[name], tensor)


@pytest.mark.slow  # a fresh interpreter is what is under test
def test_importing_lesionssl_and_its_api_changes_no_global_state():
    probe = """
import logging, sys, warnings
import matplotlib
before = (list(warnings.filters), {n: logging.getLogger(n).level for n in ("", "lightning", "lightning.pytorch")}, matplotlib.get_backend(), len(logging.getLogger().handlers))
import lesionssl
from lesionssl import compare, finetune, pretrain, split
import lesionssl.cli
after = (list(warnings.filters), {n: logging.getLogger(n).level for n in ("", "lightning", "lightning.pytorch")}, matplotlib.get_backend(), len(logging.getLogger().handlers))
assert before == after, (before, after)
assert "torch" not in sys.modules and "lightning" not in sys.modules, "a stage's libraries were imported"
print("unchanged")
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "unchanged" in result.stdout, result.stderr


def test_a_finished_run_is_returned_only_for_its_own_settings(synthetic_manifest, tmp_path):
    """Once the old run came back for a new request (its .config showing the new settings)."""
    from lesionssl import finetune
    from lesionssl.errors import LesionSSLError

    tiny = {
        "manifest": str(synthetic_manifest),
        "out": str(tmp_path / "ft"),
        "backbone": "timm:test_resnet",
        "image_size": 16,
        "epochs": 1,
        "lr": 0.001,
        "tracking": {"tensorboard": False, "mlflow": False},
        "figures": False,
    }
    first = finetune(**tiny)
    finished = (tmp_path / "ft" / "metrics.json").stat().st_mtime_ns
    with pytest.raises(LesionSSLError, match=r"other settings \(epochs, runtime.num_workers\)"):
        finetune(**{**tiny, "epochs": 2, "runtime": {"num_workers": 1}})
    again = finetune(
        **{**tiny, "figures": True, "tracking": {}}
    )  # neither changes a result: the finished run is the answer
    assert (
        again.metrics.balanced_accuracy == first.metrics.balanced_accuracy
        and (tmp_path / "ft" / "metrics.json").stat().st_mtime_ns == finished
    )
