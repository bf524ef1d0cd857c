"""The package as published: a wheel built from this tree carries every module, the licence,
the metadata and the entry point, and works installed on its own."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds and installs a wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (found,) = out.glob("lesionssl-*.whl")
    return found


def test_wheel_holds_every_module_the_licence_and_complete_metadata(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(p.relative_to(ROOT / "src")).replace(os.sep, "/") for p in (ROOT / "src" / "lesionssl").rglob("*.py")
    }
    assert sources <= names, sorted(sources - names)
    assert "lesionssl/py.typed" in names
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    for field in (
        "License-Expression: Apache-2.0",
        "Requires-Python: >=3.10",
        "Requires-Dist: torch",
        "Requires-Dist: lightning",
        "Provides-Extra: track",
        "Provides-Extra: wandb",
        "Classifier: Intended Audience :: Science/Research",
        "Description-Content-Type: text/markdown",
    ):
        assert field in metadata, field
    assert "Requires-Dist: mlflow" not in metadata.split("Provides-Extra")[0]  # trackers are extras
    assert "lesionssl = lesionssl.cli:main" in zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()


def test_installed_wheel_runs_on_its_own(wheel, tmp_path, synthetic):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import lesionssl; print(lesionssl.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr  # the wheel's copy, not this tree
    split = subprocess.run(
        [
            sys.executable,
            "-m",
            "lesionssl",
            "split",
            "--data",
            str(synthetic / "labelled"),
            "--per-class",
            "4",
            "--out",
            str(tmp_path / "m.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert split.returncode == 0 and (tmp_path / "m.csv").is_file(), split.stderr
