"""The command line: one-line errors (no traceback), help with examples, YAML configs."""

import os
import subprocess
import sys

import pytest
from PIL import Image

COMMANDS = ["split", "pretrain", "finetune", "predict", "explain", "export", "serve", "card", "compare", "report", "demo", "reproduce", "augment-preview"]


def lesionssl(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "lesionssl", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "─" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # progress lines may precede it
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = lesionssl(command, "--help")
    assert result.returncode == 0 and "Example" in result.stdout
    assert lesionssl(command, "-h").stdout == result.stdout


def test_version():
    from lesionssl import __version__

    result = lesionssl("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"lesionssl {__version__}"


def test_split_cli_prints_table_and_writes_manifest(synthetic, tmp_path):
    result = lesionssl("split", "--data", synthetic / "labelled", "--data", synthetic / "unlabelled", "--per-class", 5, "--val", 2, "--out", tmp_path / "m.csv", "--seed", 7)
    assert result.returncode == 0, result.stderr
    assert "Total" in result.stderr and "inductive" in result.stderr
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header.startswith("image,label,split")


def test_split_from_yaml_config_with_flag_override(synthetic, tmp_path):
    (tmp_path / "split.yaml").write_text(f"data: [{synthetic / 'labelled'}]\nper_class: 5\ntransductive: true\nout: {tmp_path / 'a.csv'}\n")
    result = lesionssl("split", "--config", tmp_path / "split.yaml", "--inductive")
    assert result.returncode == 0, result.stderr
    assert '"pool": "inductive"' in (tmp_path / "a.csv").with_suffix(".json").read_text()


def test_corrupt_image_stops_pretrain_with_one_line_naming_it(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(folder / f"ok{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = lesionssl("pretrain", "--data", folder, "--out", tmp_path / "bt", "--image-size", 16, "--epochs", 1, "--lr", "0.001", "--batch-size", 4)
    assert_one_line_error(result, "broken.jpg")


def test_unknown_config_key_names_the_key(tmp_path):
    (tmp_path / "x.yaml").write_text("image_size: 32\nepochz: 3\n")
    assert_one_line_error(lesionssl("pretrain", "--config", tmp_path / "x.yaml"), "epochz", "unknown key")


def test_impossible_value_names_key_and_allowed_values(tmp_path):
    (tmp_path / "x.yaml").write_text("augmentation: fancy\n")
    assert_one_line_error(lesionssl("pretrain", "--config", tmp_path / "x.yaml"), "augmentation", "'seed' or 'small-data'")


def test_compare_config_without_data_is_rejected(tmp_path):
    (tmp_path / "c.yaml").write_text("initialisations: [{name: r, init: random}]\n")
    assert_one_line_error(lesionssl("compare", "--config", tmp_path / "c.yaml"), "manifest")


def test_wrong_label_file_is_one_line(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,diagnosis\na.jpg,mel\n")
    assert_one_line_error(lesionssl("split", "--data", tmp_path / "labels.csv", "--per-class", 1), "unrecognised label file")


def test_missing_manifest_for_finetune(tmp_path):
    assert_one_line_error(lesionssl("finetune", "--split", tmp_path / "none.csv", "--out", tmp_path / "ft"), "split manifest not found")
