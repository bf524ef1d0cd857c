"""``lesionssl compare``: several initialisations x seeds under the same split and protocol.

Each run lives in ``out/runs/<init>/seed<k>-<hash>`` where the hash is taken over the run's
resolved fine-tuning configuration; a run whose ``metrics.json`` exists is finished and skipped,
so an interrupted ``compare`` resumes where it stopped. The ``pretrain`` initialisation is
produced once, in ``out/pretrain``, from the experiment's own split (its unlabelled pool).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lesionssl.data.classes import resolve_class_order
from lesionssl.config import CompareConfig, FinetuneConfig, to_yaml
from lesionssl.data.sources import read_sources
from lesionssl.data.split import SplitSpec, make_split, split_table, write_manifest
from lesionssl.finetune.run import finetune
from lesionssl.io import write_text
from lesionssl.pretrain.run import BACKBONE_FILE, pretrain
from lesionssl.progress import console
from lesionssl.report.compare import write_report


def config_hash(config: FinetuneConfig) -> str:
    """Stable short hash of a run's configuration, excluding where it is written."""
    data = config.model_dump(mode="json", exclude={"out"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def prepare_manifest(config: CompareConfig) -> Path:
    """The experiment's manifest: the given one, or a split of ``data`` written to ``out``."""
    if config.manifest is not None:
        return Path(config.manifest)
    target = Path(config.out) / "manifest.csv"
    spec = SplitSpec(**config.split.model_dump())
    if target.is_file() and json.loads(target.with_suffix(".json").read_text()).get("spec") == config.split.model_dump():
        return target
    table = read_sources(config.data)
    manifest = make_split(table, spec)
    classes = resolve_class_order(manifest["label"])
    write_manifest(manifest, target, spec, classes, list(config.data))
    console.print(split_table(manifest, classes).to_string())
    return target


def prepare_pretrained(config: CompareConfig, manifest: Path) -> Path:
    """Pretrain once (resuming an interrupted pretraining) and return the backbone file."""
    out = Path(config.out) / "pretrain"
    backbone = out / BACKBONE_FILE
    if backbone.is_file():
        return backbone
    settings = config.pretrain.model_copy(update={"manifest": manifest, "out": out, "backbone": config.finetune.backbone})
    settings.resume = (out / "checkpoints").is_dir()
    console.print(f"[bold]pretraining[/bold] Barlow Twins -> {out}")
    return pretrain(settings)


def run_configs(config: CompareConfig, manifest: Path, pretrained: Path | None) -> list[tuple[str, FinetuneConfig]]:
    """The fine-tuning configuration of every (initialisation, seed) run."""
    runs = []
    for initialisation in config.initialisations:
        init = str(pretrained) if initialisation.init == "pretrain" else initialisation.init
        for seed in config.seeds:
            run = config.finetune.model_copy(update={"manifest": manifest, "init": init, "seed": seed})
            run.out = Path(config.out) / "runs" / initialisation.name / f"seed{seed}-{config_hash(run)}"
            runs.append((initialisation.name, run))
    return runs


def compare(config: CompareConfig) -> Path:
    """Run (or resume) the experiment and write ``results.csv`` and ``report.md``; return the report."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "experiment.yaml", to_yaml(config))
    manifest = prepare_manifest(config)
    needs_pretraining = any(i.init == "pretrain" for i in config.initialisations)
    pretrained = prepare_pretrained(config, manifest) if needs_pretraining else None
    runs = run_configs(config, manifest, pretrained)
    for number, (name, run) in enumerate(runs, start=1):
        if (run.out / "metrics.json").is_file():
            console.print(f"[{number}/{len(runs)}] {name} seed {run.seed}: finished earlier, skipped", markup=False)
            continue
        console.print(f"[{number}/{len(runs)}] {name} seed {run.seed} -> {run.out}", markup=False)
        metrics = finetune(run)
        console.print(f"    accuracy {metrics['accuracy']:.4f}  balanced accuracy {metrics['balanced_accuracy']:.4f}")
    return write_report(out, {i.name: i.init for i in config.initialisations})
