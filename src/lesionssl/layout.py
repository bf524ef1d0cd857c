"""Where lesionssl puts things: every file and folder name of a run and of an experiment, once.

A fine-tuning or probe run is a :class:`RunFolder`; ``compare`` writes an :class:`ExperimentFolder`
holding one run folder per planned run. The runners, the report, the model card, the API and the
CLI ask these objects for paths, so a renamed file is one edit here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: A finished run's results; its presence marks the run (or an external set's evaluation) as done.
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
#: What ``compare`` planned for a run (``records.RunRecord``).
RUN_PLAN = "run.json"
CONFIG = "config.yaml"
ENVIRONMENT = "environment.json"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
MODEL_WEIGHTS = "model.safetensors"
MODEL_RECORD = "model.json"
CARD = "MODEL_CARD.md"
#: The images a model was trained and validated on (``path``, ``split``), so ``predict`` can tell
#: which labelled images it was given are the model's own and leave them out of metrics.
MODEL_IMAGES = "model_images.csv"
#: The ``stage`` column of a pretraining's history.csv for its main epochs (``warmup`` before them).
PRETRAIN_STAGE = "pretrain"
#: Figures and tables a run writes that the card and the report show.
EXAMPLES_FIGURE = "examples.png"
EXAMPLES = "examples.csv"
RELIABILITY_FIGURE = "reliability.png"
LR_FINDER = "lr_finder.csv"
#: The folder of a run's evaluations on held-out sets, one subfolder per set.
EXTERNAL = "external"

#: A pretraining's exported backbone (torchvision / timm key names), its ``.pth`` twin and its record.
BACKBONE_WEIGHTS = "backbone.safetensors"
BACKBONE_PTH = "backbone.pth"
BACKBONE_RECORD = "backbone.json"

RUNS = "runs"
FEATURES = "features"
RUN_INDEX = "runs.json"
RESULTS = "results.csv"
LABELS_SAVED = "labels_saved.csv"
REPORT = "report.md"
REPORT_HTML = "report.html"
PRETRAIN = "pretrain"
#: The experiment's own split (``compare`` with a ``split`` section), and its config.
MANIFEST = "manifest.csv"
EXPERIMENT_CONFIG = "experiment.yaml"


@dataclass(frozen=True)
class RunFolder:
    """One run's folder (a fine-tuning or probe run, or an external set's evaluation inside one)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def plan(self) -> Path:
        return self.path / RUN_PLAN

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def environment(self) -> Path:
        return self.path / ENVIRONMENT

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def model(self) -> Path:
        return self.path / MODEL_WEIGHTS

    @property
    def model_record(self) -> Path:
        return self.path / MODEL_RECORD

    @property
    def card(self) -> Path:
        return self.path / CARD

    @property
    def examples_figure(self) -> Path:
        return self.path / EXAMPLES_FIGURE

    @property
    def examples(self) -> Path:
        return self.path / EXAMPLES

    @property
    def reliability_figure(self) -> Path:
        return self.path / RELIABILITY_FIGURE

    @property
    def lr_finder(self) -> Path:
        return self.path / LR_FINDER

    @property
    def finished(self) -> bool:
        return self.metrics.is_file()

    def external(self, name: str) -> RunFolder:
        """The evaluation on the held-out set ``name`` (its own predictions and metrics)."""
        return RunFolder(self.path / EXTERNAL / name)


@dataclass(frozen=True)
class ExperimentFolder:
    """``compare``'s output: the runs, the feature cache, the pretrainings, results and report."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def runs(self) -> Path:
        return self.path / RUNS

    @property
    def features(self) -> Path:
        return self.path / FEATURES

    @property
    def run_index(self) -> Path:
        """The run folders of the current configuration (earlier configurations' runs are stale)."""
        return self.path / RUN_INDEX

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def labels_saved(self) -> Path:
        return self.path / LABELS_SAVED

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def config(self) -> Path:
        return self.path / EXPERIMENT_CONFIG

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def report_html(self) -> Path:
        return self.path / REPORT_HTML

    def pretraining(self, arm: str | None = None) -> Path:
        """The experiment's shared pretraining, or that of an arm that changes its settings."""
        return self.path / (PRETRAIN if arm is None else f"{PRETRAIN}-{arm}")

    def run(self, relative: str | Path) -> RunFolder:
        return RunFolder(self.path / relative)

    def finished_runs(self) -> list[RunFolder]:
        """Every finished planned run under ``runs/`` (external evaluations inside runs are not runs)."""
        return [RunFolder(m.parent) for m in sorted(self.runs.rglob(METRICS)) if (m.parent / RUN_PLAN).is_file()]
