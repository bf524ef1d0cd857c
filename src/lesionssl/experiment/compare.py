"""``lesionssl compare``: initialisations x seeds (x label budgets) under one split and protocol.

Each run lives in ``out/runs/<init>/[b<budget>-]seed<k>-<hash>`` where the hash is taken over the
run's resolved fine-tuning configuration; a run whose ``metrics.json`` exists is finished and
skipped, so an interrupted ``compare`` resumes where it stopped. ``--jobs N`` runs N runs at once
(one GPU each when there are GPUs); ``--shard k/n`` runs every n-th run starting at the k-th, so
the array jobs of a cluster can share an experiment; ``lesionssl report`` merges what finished.
A ``pretrain`` initialisation is produced once, in ``out/pretrain`` (or ``out/pretrain-<name>``
when the initialisation changes the pretraining, e.g. another method), from the experiment's own
unlabelled pool; concurrent shards wait for it on a file lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from lesionssl.config import (
    CompareConfig,
    FinetuneConfig,
    InitConfig,
    PretrainConfig,
    SplitConfig,
    config_hash,
    to_yaml,
)
from lesionssl.data.split import nested_budgets, pool_rows, prepare_manifest, read_manifest, write_manifest
from lesionssl.errors import LesionSSLError
from lesionssl.experiment.finetune import finetune
from lesionssl.experiment.probes import probe_run
from lesionssl.experiment.selection import Draw, selection_draws
from lesionssl.io import file_lock, write_json, write_text
from lesionssl.layout import BACKBONE_WEIGHTS, ExperimentFolder, RunFolder
from lesionssl.pretraining.methods import build_method
from lesionssl.pretraining.run import pretrain
from lesionssl.progress import console
from lesionssl.records import BackboneRecord, RunRecord
from lesionssl.report.compare import write_report


def parse_shard(value: str | None) -> tuple[int, int]:
    """``"k/n"`` -> (k, n) with 1 <= k <= n; None -> (1, 1)."""
    if value is None:
        return 1, 1
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise LesionSSLError(f"--shard must look like k/n (e.g. 2/8), got {value!r}") from None
    if not 1 <= k <= n:
        raise LesionSSLError(f"--shard {value}: need 1 <= k <= n")
    return k, n


def _with_paths(config: CompareConfig, manifest: Path) -> CompareConfig:
    """The configuration as run: the manifest used, and where pretraining and the runs write."""
    out = Path(config.out)
    folder = ExperimentFolder(out)
    pretrain = (
        config.pretrain.model_copy(update={"manifest": manifest, "out": folder.pretraining()})
        if config.pretrain
        else None
    )
    return config.model_copy(
        update={
            "manifest": manifest,
            "pretrain": pretrain,
            "finetune": config.finetune.model_copy(update={"out": folder.runs}),
        }
    )


def budget_manifests(config: CompareConfig, manifest: Path) -> list[Draw]:
    """The manifest of every (label budget, seed): per seed, nested subsets of the labelled
    images that may train (a new draw for every seed, so seeds vary the labels too); one test set."""
    if not config.budgets:
        return [Draw(manifest, seed) for seed in config.seeds]
    base = read_manifest(manifest, data_root=config.data_root)
    spec = config.split or SplitConfig(per_class=max(config.budgets))
    out = []
    with file_lock(Path(config.out) / ".manifest.lock"):  # shards started together draw them once
        for seed in config.seeds:
            paths = {
                budget: Path(config.out) / f"manifest-b{budget}-s{seed}.csv" for budget in sorted(set(config.budgets))
            }
            if not all(path.is_file() for path in paths.values()):
                for budget, table in nested_budgets(base.table, config.budgets, (spec.seed, seed)).items():
                    write_manifest(table, paths[budget], spec, base.classes, list(config.data))
            out += [Draw(path, seed, budget) for budget, path in paths.items()]
    return out


def prepare_pretrained(config: CompareConfig, manifest: Path, initialisation: InitConfig) -> Path:
    """Pretrain once (resuming an interrupted pretraining) and return the backbone file."""
    out = ExperimentFolder(config.out).pretraining(initialisation.name if initialisation.pretrain else None)
    backbone = out / BACKBONE_WEIGHTS
    settings = config.pretrain_settings(initialisation).model_copy(
        update={
            "manifest": manifest,
            "data_root": config.data_root,
            "out": out,
            "backbone": config.finetune_settings(initialisation).backbone,
            "tracking": _experiment_tracking(config),
        }
    )
    with file_lock(Path(config.out) / f".{out.name}.lock"):
        if backbone.is_file():
            check_pretrained(
                backbone,
                settings,
                len(pool_rows(read_manifest(manifest, data_root=config.data_root).table, settings.site_pool)),
            )
            return backbone
        settings.resume = (out / "checkpoints").is_dir()
        console.print(f"pretraining ({settings.method}) for {initialisation.name} -> {out}", markup=False)
        return pretrain(settings)


def check_pretrained(backbone: Path, settings: PretrainConfig, pool_images: int) -> None:
    """Refuse a finished pretraining (of an earlier configuration, or copied from a GPU machine)
    whose recorded settings differ from the experiment's."""
    if not backbone.with_suffix(".json").is_file():
        raise LesionSSLError(
            f"{backbone} has no {backbone.with_suffix('.json').name}: its settings cannot be checked; move it away to pretrain again"
        )
    recorded = BackboneRecord.read(backbone.with_suffix(".json")).settings()
    expected = {
        "architecture": settings.backbone,
        "image_size": settings.image_size,
        "epochs": settings.epochs,
        "recipe": settings.recipe,
        "method": settings.method,
        "method_kwargs": build_method(settings).resolved(),
        "positives": settings.positives,
        "pool_images": pool_images,
        "encoder_lr_scale": settings.encoder_lr_scale,
        "bn_statistics": settings.bn_statistics,
        "l2sp": settings.l2sp,
        "colour_constancy": settings.colour_constancy,
    }
    differ = {k: (recorded[k], v) for k, v in expected.items() if recorded[k] != v}
    if differ:
        details = "; ".join(f"{k} {a} (recorded) vs {b} (this experiment)" for k, (a, b) in differ.items())
        raise LesionSSLError(
            f"{backbone} was pretrained with other settings: {details}; move it away to pretrain again"
        )


def _experiment_tracking(config: CompareConfig):
    """All runs of an experiment share one MLflow database and experiment name (not in the run hash)."""
    tracking = config.finetune.tracking
    uri = tracking.mlflow_uri or f"sqlite:///{(Path(config.out) / 'mlflow.db').resolve()}"
    return tracking.model_copy(update={"mlflow_uri": uri, "experiment": Path(config.out).name})


@dataclass(frozen=True)
class PlannedRun:
    """One run of the experiment (its record) and the configuration that trains it."""

    record: RunRecord
    config: FinetuneConfig

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def title(self) -> str:
        """The run in a progress line: arm, protocol, budget and seed."""
        budget = "" if self.record.budget is None else f" {self.record.budget} labels"
        return f"{self.record.label} {self.protocol}{budget} seed {self.config.seed}"

    @property
    def protocol(self) -> str:
        return self.record.protocol


#: Fine-tuning keys a probe never uses, set to the value probe runs were hashed with when their
#: default changed, so a new fine-tuning default does not run finished probes again.
NOT_USED_BY_PROBES = {"lr": "find", "adapt_bn": False}


def run_configs(config: CompareConfig, draws: list[Draw], pretrained: dict[str, Path]) -> list[PlannedRun]:
    """Every (protocol, initialisation, draw) run, in that order. Fine-tuning runs live in
    ``runs/<init>/[<strategy>-][b<budget>-]seed<k>-<hash>``, the others in ``runs/<init>/<protocol>-...``."""
    runs = []
    for protocol in config.protocols:
        for initialisation in config.initialisations:
            init = str(pretrained[initialisation.name]) if initialisation.init == "pretrain" else initialisation.init
            for draw in (d for d in draws if d.serves(initialisation.name)):
                run = config.finetune_settings(initialisation).model_copy(
                    update={
                        "manifest": draw.manifest,
                        "data_root": config.data_root if draw.budget is None else None,
                        "init": init,
                        "seed": draw.seed,
                    }
                )
                run.tracking = _experiment_tracking(config)
                prefix = (
                    ("" if protocol == "finetune" else f"{protocol}-")
                    + (f"{draw.strategy}-" if draw.strategy else "")
                    + (f"b{draw.budget}-" if draw.budget is not None else "")
                )
                hashed = run if protocol == "finetune" else run.model_copy(update=NOT_USED_BY_PROBES)
                tag = (
                    config_hash(hashed)
                    if protocol == "finetune"
                    else hashlib.sha256(f"{config_hash(hashed)}:{protocol}:{config.knn_k}".encode()).hexdigest()[:10]
                )
                run.out = ExperimentFolder(config.out).runs / initialisation.name / f"{prefix}seed{draw.seed}-{tag}"
                runs.append(
                    PlannedRun(
                        RunRecord(
                            initialisation.name, protocol, draw.seed, initialisation.init, draw.budget, draw.strategy
                        ),
                        run,
                    )
                )
    return runs


def execute_run(run: PlannedRun, cache: Path, knn_k: int) -> dict | None:
    """Train and evaluate one planned run; return its test metrics, or None when another
    process (a concurrent shard or ``compare``) is training it or has just finished it."""
    with file_lock(run.config.out / ".lock", wait=False) as mine:
        if not mine or RunFolder(run.config.out).finished:
            return None
        if run.protocol == "finetune":
            return finetune(run.config)
        return probe_run(run.config, run.protocol, cache, knn_k)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(counter, threads: int, gpus: int) -> None:
    """Each ``--jobs`` worker takes the next slot: its own GPU (round robin) and a share of the CPU."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the workers
    _die_with_parent()
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the ``compare`` process dies, even by SIGKILL,
    so no orphan keeps training (and holding its run's lock) after a kill."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _execute(pending: list[PlannedRun], jobs: int, cache: Path, knn_k: int) -> None:
    def done(run: PlannedRun, metrics: dict | None) -> None:
        if metrics is None:
            console.print(f"    {run.title}: trained by another process, skipped", markup=False)
            return
        console.print(
            f"    {run.title}: accuracy {metrics['accuracy']:.4f}  balanced accuracy {metrics['balanced_accuracy']:.4f}",
            markup=False,
        )

    if jobs <= 1:
        for number, run in enumerate(pending, start=1):
            console.print(f"[{number}/{len(pending)}] {run.title} -> {run.config.out}", markup=False)
            done(run, execute_run(run, cache, knn_k))
        return
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = get_context("spawn")
    counter = context.Value("i", 0)
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(counter, threads, gpus)
    )
    try:
        futures = {pool.submit(execute_run, run, cache, knn_k): run for run in pending}
        console.print(f"running {len(pending)} runs, {jobs} at a time")
        for future in as_completed(futures):
            done(futures[future], future.result())
    except BaseException:
        # Stopped (SIGTERM / Ctrl-C) or a failed run: end the workers now instead of waiting
        # for their runs; an unfinished run has no metrics.json and is trained again on resume.
        workers = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        raise
    pool.shutdown()


def compare(config: CompareConfig) -> Path:
    """Run (or resume) the experiment and write ``results.csv``, ``report.md`` and ``report.html``."""
    k, n = parse_shard(config.shard)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = prepare_manifest(config.manifest, config.data, config.split, Path(config.out))
    write_text(ExperimentFolder(out).config, to_yaml(_with_paths(config, manifest)))
    pretrained = {
        i.name: prepare_pretrained(config, manifest, i) for i in config.initialisations if i.init == "pretrain"
    }
    draws = selection_draws(config, manifest, pretrained) if config.selection else budget_manifests(config, manifest)
    every_run = run_configs(config, draws, pretrained)
    for run in every_run:
        run.record.write(run.config.out)
    write_json(ExperimentFolder(out).run_index, {"runs": [str(run.config.out.relative_to(out)) for run in every_run]})
    runs = every_run[k - 1 :: n]
    pending = [run for run in runs if not RunFolder(run.config.out).finished]
    if len(pending) < len(runs):
        console.print(f"{len(runs) - len(pending)} of {len(runs)} runs finished earlier: skipped")
    _execute(pending, config.jobs, ExperimentFolder(out).features, config.knn_k)
    with file_lock(out / ".report.lock"):  # concurrent shards: the last report sees every finished run
        return write_report(out, {i.name: i.init for i in config.initialisations})
