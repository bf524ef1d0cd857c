"""Shared fixtures: a tiny synthetic lesion set, an isolated image-store cache, the shared data."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LESIONSSL_SHARED_DATA", REPO.parent / "shared" / "data"))
SKIN_LESIONS = SHARED_DATA / "skin-lesions"
LABEL_FORMATS = SHARED_DATA / "label-formats"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"needs the shared data at {SHARED_DATA}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(pytest.mark.slow)  # real data is outside the fast lane
            if not (SKIN_LESIONS / "labels.csv").is_file():
                item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["LESIONSSL_CACHE"] = str(tmp_path_factory.mktemp("store-cache"))


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """120 labelled + 60 unlabelled synthetic lesions, 40x30 px (ImageFolder + plain folder)."""
    from lesionssl.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), n_labelled=120, n_unlabelled=60, size=(40, 30), seed=1
    )


@pytest.fixture(scope="session")
def synthetic_manifest(synthetic, tmp_path_factory) -> Path:
    """A per-class-8 split of the synthetic set."""
    from lesionssl.config import SplitConfig
    from lesionssl.data.classes import resolve_class_order
    from lesionssl.data.sources import read_sources
    from lesionssl.data.split import make_split, write_manifest

    sources = [str(synthetic / "labelled"), str(synthetic / "unlabelled")]
    spec = SplitConfig(per_class=8, seed=0)
    manifest = make_split(read_sources(sources), spec)
    path = tmp_path_factory.mktemp("manifest") / "split.csv"
    write_manifest(manifest, path, spec, resolve_class_order(manifest["label"]), sources)
    return path


#: A fine-tuning run small enough for the deploy tests (timm's 2-layer test ResNet at 16 px, a
#: fixed LR, no trackers).
TINY_CLASSIFIER = (
    "--backbone",
    "timm:test_resnet",
    "--image-size",
    16,
    "--batch-size",
    16,
    "--epochs",
    2,
    "--lr",
    "0.002",
    "--init",
    "random",
    "--tracking.mlflow",
    "false",
    "--tracking.tensorboard",
    "false",
)


@dataclass
class CliResult:
    """What a command left: its exit code and what it printed (as ``subprocess.CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


def lesionssl(*args, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """The CLI as a user runs it (``python -m lesionssl ARGS``), in this process: the same exit
    code, stdout and stderr as a fresh process (test_cli checks that), without a new interpreter
    and its imports.

    stderr is not a terminal (as under ``capture_output``); an uncaught exception becomes exit
    code 1 with its traceback on stderr, as Python would print it. The working folder, the
    environment, ``sys.argv`` and the signal handlers the CLI installs are restored afterwards.
    """
    import lesionssl as package
    from lesionssl.cli import main

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    program, saved_package = sys.modules["__main__"], getattr(sys.modules["__main__"], "__package__", None)
    stdout, stderr = io.StringIO(), io.StringIO()
    # What `python -m lesionssl` sets, from which Click names the program in usage lines.
    sys.argv = [str(Path(package.__file__).with_name("__main__.py")), *map(str, args)]
    program.__package__ = "lesionssl"
    os.environ.update({"COLUMNS": "200", **(env or {})})  # help text as wide as test_cli has always read it
    if cwd is not None:
        os.chdir(cwd)
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv, program.__package__ = saved_argv, saved_package
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def lesionssl_process(*args, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: only where the process itself is under test (signals, kills,
    the console script, an installed wheel, a server)."""
    return subprocess.run(
        [sys.executable, "-m", "lesionssl", *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs
    )


@pytest.fixture(scope="session")
def fine_tuned(synthetic, tmp_path_factory) -> Path:
    """A folder with ``split.csv`` (8 per class, 6 validation) and ``ft/``, a finished fine-tuning
    run with its model, calibration and operating point."""
    folder = tmp_path_factory.mktemp("deploy")
    split = lesionssl(
        "split", "--data", synthetic / "labelled", "--per-class", 8, "--val", 6, "--out", folder / "split.csv"
    )
    assert split.returncode == 0, split.stderr
    result = lesionssl("finetune", "--manifest", folder / "split.csv", "--out", folder / "ft", *TINY_CLASSIFIER)
    assert result.returncode == 0, result.stderr
    (folder / "finetune.log").write_text(result.stderr)
    return folder
