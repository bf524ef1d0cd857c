"""The command line: one-line errors (no traceback), help with examples, YAML configs."""

from pathlib import Path

import pytest
from PIL import Image

from conftest import lesionssl

COMMANDS = [
    "split",
    "pretrain",
    "finetune",
    "predict",
    "explain",
    "export",
    "serve",
    "card",
    "compare",
    "report",
    "demo",
    "reproduce",
    "augment-preview",
]


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
    import re

    from lesionssl.cli import cli

    result = lesionssl(command, "--help")
    assert result.returncode == 0 and "Example" in result.stdout
    assert lesionssl(command, "-h").stdout == result.stdout
    # its own example: every command its epilog shows is this one (an epilog once showed another's)
    shown = re.findall(r"lesionssl ([a-z-]+)", cli().commands[command].epilog or "")
    assert shown and set(shown) == {command}, shown


def test_version():
    from lesionssl import __version__

    result = lesionssl("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"lesionssl {__version__}"


def test_split_cli_prints_table_and_writes_manifest(synthetic, tmp_path):
    result = lesionssl(
        "split",
        "--data",
        synthetic / "labelled",
        "--data",
        synthetic / "unlabelled",
        "--per-class",
        5,
        "--val",
        2,
        "--out",
        tmp_path / "m.csv",
        "--seed",
        7,
    )
    assert result.returncode == 0, result.stderr
    assert "Total" in result.stderr and "inductive" in result.stderr
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header.startswith("image,label,split")


def test_split_from_yaml_config_with_flag_override(synthetic, tmp_path):
    (tmp_path / "split.yaml").write_text(
        f"data: [{synthetic / 'labelled'}]\nper_class: 5\ntransductive: true\nout: {tmp_path / 'a.csv'}\n"
    )
    result = lesionssl("split", "--config", tmp_path / "split.yaml", "--inductive")
    assert result.returncode == 0, result.stderr
    assert '"pool": "inductive"' in (tmp_path / "a.csv").with_suffix(".json").read_text()


def test_corrupt_image_stops_pretrain_with_one_line_naming_it(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(folder / f"ok{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = lesionssl(
        "pretrain",
        "--data",
        folder,
        "--out",
        tmp_path / "bt",
        "--image-size",
        16,
        "--epochs",
        1,
        "--lr",
        "0.001",
        "--batch-size",
        4,
    )
    assert_one_line_error(result, "broken.jpg")


def test_unknown_config_key_names_the_key(tmp_path):
    (tmp_path / "x.yaml").write_text("image_size: 32\nepochz: 3\n")
    assert_one_line_error(lesionssl("pretrain", "--config", tmp_path / "x.yaml"), "epochz", "unknown key")


def test_impossible_value_names_key_and_allowed_values(tmp_path):
    (tmp_path / "x.yaml").write_text("augmentation: fancy\n")
    assert_one_line_error(
        lesionssl("pretrain", "--config", tmp_path / "x.yaml"), "augmentation", "'seed' or 'small-data'"
    )


def test_compare_config_without_data_is_rejected(tmp_path):
    (tmp_path / "c.yaml").write_text("initialisations: [{name: r, init: random}]\n")
    assert_one_line_error(lesionssl("compare", "--config", tmp_path / "c.yaml"), "manifest")


def test_wrong_label_file_is_one_line(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,diagnosis\na.jpg,mel\n")
    assert_one_line_error(
        lesionssl("split", "--data", tmp_path / "labels.csv", "--per-class", 1), "unrecognised label file"
    )


def test_missing_manifest_for_finetune(tmp_path):
    assert_one_line_error(
        lesionssl("finetune", "--manifest", tmp_path / "none.csv", "--out", tmp_path / "ft"), "split manifest not found"
    )


def _leaf_keys(model, prefix=""):
    """Every key of a configuration, nested sections as dotted paths (``runtime.devices``)."""
    from lesionssl.config import section_model

    for name, field in model.model_fields.items():
        inner = section_model(field.annotation)
        if inner is None:
            yield prefix + name, field
        else:
            yield from _leaf_keys(inner, f"{prefix}{name}.")


def test_every_flag_is_a_yaml_key_and_every_yaml_key_a_flag():
    """The contract walked over every command: a declared flag names a key of the command's
    configuration (dashes for underscores); every key, nested ones dotted, is accepted as a flag
    and lands at that key; commands without a configuration take their flags as YAML keys."""
    import yaml

    from lesionssl.cli import COMMAND_CONFIGS, _generic_flags, cli
    from lesionssl.config import config_keys, is_sequence

    group = cli()
    assert set(group.commands) >= set(COMMANDS)
    for name, command in group.commands.items():
        options = {p.name for p in command.params if p.expose_value}
        assert {"--config", "--print-config"} <= {o for p in command.params for o in getattr(p, "opts", [])}, name
        model = COMMAND_CONFIGS.get(name)
        if model is None:
            continue
        assert options <= config_keys(model), (name, options - config_keys(model))
        for path, field in _leaf_keys(model):
            default = "x" if field.is_required() else field.get_default(call_default_factory=True)
            text = (
                yaml.safe_dump(default if not isinstance(default, Path) else str(default), default_flow_style=True)
                .strip()
                .removesuffix("...")
                .strip()
            )
            parsed = _generic_flags([f"--{path.replace('_', '-')}", text], model, set())
            for part in path.split("."):
                parsed = parsed[part]
            expected = yaml.safe_load(text)
            if expected is not None and is_sequence(field.annotation) and not isinstance(expected, list):
                expected = [expected]  # a list key takes one value as a one-element list
            assert parsed == expected, (name, path)


def test_dotted_flags_override_the_yaml_and_print_config_shows_them(tmp_path):
    (tmp_path / "ft.yaml").write_text("manifest: m.csv\nepochs: 4\nruntime: {num_workers: 2}\n")
    result = lesionssl(
        "finetune",
        "--config",
        tmp_path / "ft.yaml",
        "--runtime.devices",
        2,
        "--head-lr=0.01",
        "--tracking.mlflow",
        "false",
        "--print-config",
    )
    assert result.returncode == 0, result.stderr
    import yaml

    shown = yaml.safe_load(result.stdout)
    assert (
        shown["runtime"] == {**shown["runtime"], "devices": 2, "num_workers": 2}
        and shown["head_lr"] == 0.01
        and shown["epochs"] == 4
    )
    assert shown["tracking"]["mlflow"] is False and shown["manifest"] == "m.csv"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["finetune", "--epoch", "3"], "did you mean --epochs?"),
        (["pretrain", "--runtime.device", "2"], "did you mean --runtime.devices?"),
        (["finetune", "--split", "m.csv"], "--split is now --manifest"),
        (["pretrain", "--precision", "bf16-mixed"], "--precision is now --runtime.precision"),
    ],
)
def test_misspelt_or_renamed_flag_gets_a_suggestion(args, expected):
    assert_one_line_error(lesionssl(*args), expected)


def test_misspelt_yaml_key_gets_a_suggestion_on_every_command(tmp_path):
    (tmp_path / "s.yaml").write_text("data: x\nper_clas: 3\n")
    assert_one_line_error(lesionssl("split", "--config", tmp_path / "s.yaml"), "per_clas", "did you mean 'per_class'")
    (tmp_path / "p.yaml").write_text("model: m\nbatch_sise: 3\n")
    assert_one_line_error(
        lesionssl("predict", "--config", tmp_path / "p.yaml"), "batch_sise", "did you mean 'batch_size'"
    )


def test_list_and_tuple_keys_take_repeated_flags_and_comma_separated_values():
    """Once only YAML syntax (``[a, b]``) was accepted, though the help says "repeatable"."""
    import yaml

    result = lesionssl(
        "pretrain",
        "--extra-augmentations",
        "rotate90",
        "--extra-augmentations",
        "noise,cutout",
        "--augment.crop-scale",
        "0.08,1.0",
        "--projector",
        "[64, 32]",
        "--print-config",
    )
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert (
        shown["extra_augmentations"] == ["rotate90", "noise", "cutout"]
        and shown["augment"]["crop_scale"] == [0.08, 1.0]
        and shown["method_kwargs"]["projector"] == [64, 32]
    )
    assert_one_line_error(
        lesionssl("pretrain", "--extra-augmentations", "rotate91", "--print-config"), "extra_augmentations"
    )
    assert_one_line_error(
        lesionssl("pretrain", "--projector", "64,x", "--print-config"), "--projector takes positive layer widths"
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ("--recipe", "official"),
            {"optimizer": "lars", "warmup_epochs": None, "projector_warmup_epochs": 0, "augmentation": "official"},
        ),
        (("--init", "imagenet"), {"recipe": "continue", "encoder_lr_scale": 0.1, "projector_warmup_epochs": 1}),
        (("--recipe", "seed"), {"lr": "find", "weight_decay": 0.01}),
    ],
)
def test_print_config_shows_what_the_recipe_resolved_and_reads_back_the_same(flags, expected, tmp_path):
    from lesionssl.pretraining.methods import build_method

    """Once ``--recipe official`` printed lr 0.001 and no projector: the recipe's keys were missing."""
    import yaml

    from lesionssl.config import PretrainConfig, validate

    result = lesionssl("pretrain", *flags, "--print-config")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert {k: shown[k] for k in expected} == expected
    resolved = validate(PretrainConfig, {flags[0].lstrip("-"): flags[1]})
    assert shown["method_kwargs"] == build_method(resolved).resolved() and shown["method_kwargs"]["projector"]
    (tmp_path / "shown.yaml").write_text(result.stdout)
    assert lesionssl("pretrain", "--config", tmp_path / "shown.yaml", "--print-config").stdout == result.stdout


def test_commands_without_a_configuration_take_their_flags_from_yaml(tmp_path):
    (tmp_path / "a.yaml").write_text("rows: 2\nout: g.png\naugmentation: seed\n")
    result = lesionssl("augment-preview", "--config", tmp_path / "a.yaml", "--rows", 3, "--print-config")
    assert result.returncode == 0, result.stderr
    import yaml

    shown = yaml.safe_load(result.stdout)
    assert (shown["rows"], shown["out"], shown["augmentation"]) == (3, "g.png", "seed")


def test_help_names_the_extras_rich_markup_would_swallow():
    assert "the [serve] extra" in lesionssl("serve", "--help").stdout
    assert "needs the [export] extra" in lesionssl("export", "--help").stdout


def test_help_shows_the_configurations_defaults():
    result = lesionssl("pretrain", "--help")
    assert "[default: (64)]" in result.stdout.replace("\n", " ") or "default: (64)" in result.stdout
    assert "--print-config" in result.stdout and "--runtime.devices" in result.stdout


def test_trackers_are_optional_extras(tmp_path, monkeypatch):
    """``auto`` uses a tracker only when its package is installed; ``true`` without the package is
    a one-line error naming the extra; W&B is an option."""
    import importlib.util

    from lesionssl.config import TrackingConfig
    from lesionssl.engine.trainer import make_loggers

    assert_one_line_error(
        lesionssl("finetune", "--manifest", "m.csv", "--tracking.wandb", "true"), "pip install 'lesionssl[wandb]'"
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    auto = TrackingConfig()
    assert not auto.enabled("mlflow") and auto.enabled("tensorboard") == (real("tensorboard") is not None)
    loggers = make_loggers(auto, tmp_path, "run", {})
    assert not any("MLFlow" in type(logger).__name__ for logger in loggers)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # fresh processes: the reference the in-process runner is checked against
@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("split", "--help"),
        ("finetune", "--epoch", "3"),
        ("split", "--data", "{tmp}/none", "--per-class", "2", "--out", "{tmp}/m.csv"),
    ],
)
def test_the_in_process_runner_gives_what_a_fresh_process_gives(tmp_path, args):
    """Exit code, stdout and stderr of ``conftest.lesionssl`` equal those of ``python -m lesionssl``."""
    from conftest import lesionssl_process

    args = [a.format(tmp=tmp_path) for a in args]
    inside, fresh = lesionssl(*args), lesionssl_process(*args, env={**__import__("os").environ, "COLUMNS": "200"})
    assert (inside.returncode, inside.stdout, inside.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [("--runtime.accelerator", "gpu", "sees 0 CUDA GPUs"), ("--runtime.devices", "COUNT", "use --runtime.devices")],
)
def test_an_accelerator_or_device_count_the_machine_lacks_is_one_line(
    synthetic_manifest, tmp_path, flag, value, fragment
):
    """Once a Lightning traceback (no GPU) or, with more CPU processes than cores, an error about a missing history.csv."""
    import os

    import torch

    if flag == "--runtime.accelerator" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    value = (
        str((torch.cuda.device_count() if torch.cuda.is_available() else os.cpu_count()) + 1)
        if value == "COUNT"
        else value
    )
    result = lesionssl(
        "finetune",
        "--manifest",
        synthetic_manifest,
        "--backbone",
        "timm:test_resnet",
        "--image-size",
        16,
        "--epochs",
        1,
        "--lr",
        "0.001",
        flag,
        value,
        "--out",
        tmp_path / "ft",
    )
    assert_one_line_error(result, fragment)
    assert "history.csv" not in result.stderr


def test_help_choices_come_from_the_configuration_and_notes_only_name_real_choices():
    from lesionssl.cli import choices_of, one_of
    from lesionssl.config import FinetuneConfig

    assert choices_of(FinetuneConfig, "sampling") == ("shuffle", "class-balanced")
    assert choices_of(FinetuneConfig, "test_prior") == (
        "train",
        "uniform",
        "pool",
    )  # the words of `Literal[...] | dict`
    assert one_of(["a", "b"], {"b": "note"}, "PATH") == "a | b (note) | PATH"
    with pytest.raises(ValueError, match="unknown choices"):
        one_of(["a"], {"c": "a word the vocabulary no longer has"})
