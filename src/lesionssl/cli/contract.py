"""The generic flag and YAML contract of every command: each key of a command's configuration is
also a flag (nested ones dotted), ``--config FILE`` and ``--print-config``, "did you mean" for a
mistyped flag, and help text derived from the vocabulary where it is defined."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer
import yaml
from pydantic import BaseModel

from lesionssl.config import (
    CompareConfig,
    FinetuneConfig,
    PretrainConfig,
    SelectConfig,
    ShiftConfig,
    SplitCommand,
    config_keys,
    did_you_mean,
    field_at,
    is_sequence,
    merge,
    read_yaml,
    section_model,
    to_yaml,
    validate,
)
from lesionssl.errors import LesionSSLError

try:  # recent Typer runs on its own copy of click: its contexts are that copy's
    from typer import _click as click
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - Typer before the copy
    import click
    from click import get_current_context


DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="Image source (repeatable): shared layout, ImageFolder, plain folder, path,label CSV, ISIC ground truth, HAM10000 metadata.",
    ),
]


SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (recorded in every output).")]


OutOpt = Annotated[Path | None, typer.Option("--out", help="Output folder.")]


ManifestOpt = Annotated[Path | None, typer.Option("--manifest", help="Manifest from `lesionssl split`.")]


DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="The folder that now holds the manifest's images, when they moved (e.g. to node scratch); default: the root the manifest recorded.",
    ),
]


ResumeOpt = Annotated[
    bool | None, typer.Option("--resume", help="Continue an interrupted run in --out, or keep a finished one.")
]


#: Flags of earlier versions, named in the error that refuses them.
def choices_of(model: type[BaseModel], field: str) -> tuple[str, ...]:
    """The words a config field takes (its ``Literal`` values, wherever they sit in its type)."""

    def words(annotation: Any) -> list[str]:
        if get_origin(annotation) is Literal:
            return [a for a in get_args(annotation) if isinstance(a, str)]
        return [w for arg in get_args(annotation) for w in words(arg)]

    return tuple(dict.fromkeys(words(model.model_fields[field].annotation)))


def one_of(choices: Iterable[str], notes: dict[str, str] | None = None, more: str = "") -> str:
    """A flag's help from the vocabulary where it is defined (a config field, a registry): the
    choices in order, each with its note; ``more`` adds what is not a word (``PATH``)."""
    choices, notes = list(choices), notes or {}
    if set(notes) - set(choices):  # a note for a word the vocabulary no longer has
        raise ValueError(f"help notes for unknown choices {sorted(set(notes) - set(choices))}")
    return " | ".join([*(f"{c} ({notes[c]})" if c in notes else c for c in choices), *([more] if more else [])])


RENAMED = {"split": "manifest", "preset": "recipe", "precision": "runtime.precision", "method-kwarg": "method-kwargs"}


#: Keys of ``click.Context.meta`` the contract layer fills before a command runs.
FILE, EXTRA, PRINT = "lesionssl.file", "lesionssl.extra", "lesionssl.print_config"


def _values(**flags: Any) -> dict[str, Any]:
    """A command's settings: its ``--config`` file, changed by the declared flags given, then by
    the generic ``--key`` / ``--section.key`` flags."""
    ctx = get_current_context()
    values = merge(ctx.meta.get(FILE, {}), {k: v for k, v in flags.items() if v is not None})
    return merge(values, ctx.meta.get(EXTRA, {}))


def _settings(model: type[BaseModel], values: dict[str, Any], source: str) -> Any:
    """Validate; with ``--print-config``, write the resolved YAML and exit instead."""
    settings = validate(model, values, source)
    if get_current_context().meta.get(PRINT):
        extra = None
        if isinstance(settings, PretrainConfig):  # what the method resolves: its defaults filled
            from lesionssl.pretraining.methods import build_method

            extra = {"method_kwargs": build_method(settings).resolved()}
        typer.echo(to_yaml(settings, extra), nl=False)
        raise typer.Exit()
    return settings


def _widths(text: str | None) -> list[int] | None:
    """``--projector 2048,2048`` (or YAML ``[2048, 2048]``) -> ``[2048, 2048]``."""
    if text is None:
        return None
    parts = [p.strip() for p in text.strip().strip("[]").split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise LesionSSLError(f"--projector takes positive layer widths, comma-separated (e.g. 2048,2048), got {text!r}")
    return [int(p) for p in parts]


def _key_values(values: list[str] | None, flag: str) -> dict[str, Any] | None:
    """``["lambd=0.0051", "projector=[64, 64]"]`` -> ``{"lambd": 0.0051, "projector": [64, 64]}`` (values read as YAML)."""
    if not values:
        return None
    out: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise LesionSSLError(f"{flag} must look like KEY=VALUE, got {value!r}")
        out[key] = yaml.safe_load(text)
    return out


def _hold_out(values: list[str] | None) -> dict[str, list[str]] | None:
    """``["dataset=A,B", "site=C"]`` -> ``{"dataset": ["A", "B"], "site": ["C"]}``."""
    if not values:
        return None
    out: dict[str, list[str]] = {}
    for value in values:
        column, sep, listed = value.partition("=")
        if not sep or not column or not listed:
            raise LesionSSLError(
                f"--hold-out must look like COLUMN=V1,V2 (e.g. dataset=ISIC2017_Training), got {value!r}"
            )
        out.setdefault(column, []).extend(v for v in listed.split(",") if v)
    return out


def _lr(value: str | None) -> float | str | None:
    if value is None or value == "find":
        return value
    try:
        return float(value)
    except ValueError:
        raise LesionSSLError(f"--lr must be 'find' or a number, got {value!r}") from None


def _read_config(ctx: click.Context, param: click.Parameter, path: Path | None) -> None:
    """``--config FILE``: the values of a configured command are merged under its flags; for the
    other commands the file's keys become the defaults of the flags of the same names."""
    if path is None:
        return
    values = read_yaml(path)
    if ctx.command.name in COMMAND_CONFIGS:
        ctx.meta[FILE] = values
        return
    names = {p.name for p in ctx.command.params if p.expose_value}
    unknown = [k for k in values if k not in names]
    if unknown:
        raise LesionSSLError(
            f"{path}: {unknown[0]}: unknown key{did_you_mean(unknown[0], names)} [keys of {ctx.command.name}: {', '.join(sorted(names))}]"
        )
    ctx.default_map = {**(ctx.default_map or {}), **values}


def _set_print(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta[PRINT] = value


def _generic_flags(args: list[str], model: type[BaseModel], declared: set[str]) -> dict[str, Any]:
    """``--head-lr 0.01 --runtime.devices=4 --tracking.mlflow`` -> nested values (read as YAML),
    each key checked against the configuration; a near miss gets "did you mean". A list or tuple
    key also takes comma-separated values (``--augment.crop-scale 0.08,1.0``) and repeated flags
    (``--extra-augmentations rotate90 --extra-augmentations noise``), besides YAML (``[a, b]``)."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise LesionSSLError(f"unexpected argument {token!r} (options look like --key VALUE)")
        name, has_value, text = token[2:].partition("=")
        if not has_value:  # a flag alone is true
            has_next = i + 1 < len(args) and not args[i + 1].startswith("--")
            text = args[i + 1] if has_next else "true"
            i += has_next
        i += 1
        path = name.replace("-", "_").split(".")
        _check_key(path, model, declared)
        value = yaml.safe_load(text)
        if value is not None and is_sequence(field_at(model, path)) and not isinstance(value, list):
            value = [yaml.safe_load(part) for part in text.split(",")] if isinstance(value, str) else [value]
            earlier = values
            for part in path:
                earlier = earlier.get(part) if isinstance(earlier, dict) else None
            value = (earlier if isinstance(earlier, list) else []) + value
        leaf: dict[str, Any] = {path[-1]: value}
        for part in reversed(path[:-1]):
            leaf = {part: leaf}
        values = merge(values, leaf)
    return values


def _check_key(path: list[str], model: type[BaseModel], declared: set[str]) -> None:
    """Every part of a dotted flag names a key of its section; below a mapping field such as
    ``method_kwargs`` any key passes (the method checks its own)."""
    section = model
    for depth, part in enumerate(path):
        flag = part.replace("_", "-")
        where = "".join(f"{p.replace('_', '-')}." for p in path[:depth])
        field = section.model_fields.get(part)
        inner = section_model(field.annotation) if field is not None else None
        renamed = depth == 0 and RENAMED.get(flag, "").split(".")[0].replace("-", "_") in section.model_fields
        if renamed and (field is None or (inner is not None and len(path) == 1)):
            raise LesionSSLError(f"--{flag} is now --{RENAMED[flag]}")
        if part not in config_keys(section):
            known = {f.replace("_", "-") for f in config_keys(section)} | (declared if depth == 0 else set())
            close = did_you_mean(flag, known)
            hint = f" (did you mean --{where}{close[close.index(chr(39)) + 1 : -3]}?)" if close else ""
            raise LesionSSLError(
                f"no such option --{where}{flag}{hint} [see --help; every key --print-config shows is a flag]"
            )
        if depth < len(path) - 1 and inner is None:
            if field is not None and "dict" in str(field.annotation):
                return
            raise LesionSSLError(f"--{where}{flag} is not a section; give it as --{where}{flag} VALUE")
        if inner is not None:
            section = inner


def _shared_options() -> list[click.Parameter]:
    """Fresh ``--config`` and ``--print-config`` options, built by Typer so its help shows them."""
    holder = typer.Typer(add_completion=False)

    @holder.command()
    def options(
        config: Annotated[
            Path | None,
            typer.Option("--config", help="YAML file with the same option names; flags override it.", dir_okay=False),
        ] = None,
        print_config: Annotated[
            bool, typer.Option("--print-config", help="Write the resolved configuration as YAML and exit.")
        ] = False,
    ) -> None: ...

    params = typer.main.get_command(holder).params
    for param, callback in zip(params, (_read_config, _set_print)):
        param.expose_value, param.callback = False, callback
    params[0].is_eager = True
    return params


def _example_key(model: type[BaseModel]) -> str:
    return (
        "runtime.devices 2"
        if "runtime" in model.model_fields
        else "finetune.epochs 3"
        if "finetune" in model.model_fields
        else "dedup-hash 6"
    )


COMMAND_CONFIGS: dict[str, type[BaseModel]] = {
    "split": SplitCommand,
    "pretrain": PretrainConfig,
    "select": SelectConfig,
    "finetune": FinetuneConfig,
    "compare": CompareConfig,
    "shift": ShiftConfig,
}
