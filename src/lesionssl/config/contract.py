"""The generic configuration contract: strict models, validation with one-line errors and
"did you mean", YAML reading, merging, hashing and writing; nothing here knows a stage."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)

from lesionssl.data.colour import DEFAULT_P
from lesionssl.errors import LesionSSLError


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def did_you_mean(name: str, known: list[str] | set[str]) -> str:
    """`` (did you mean 'per_class'?)`` for a near miss among ``known``, else ``""``."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: type[BaseModel], loc: tuple) -> set[str]:
    """The keys allowed where a validation error points (nested sections followed)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        inner = section_model(field.annotation) if field else None
        if inner is None:
            return set()
        model = inner
    return set(model.model_fields)


def config_keys(model: type[BaseModel]) -> set[str]:
    """The keys a configuration accepts: its fields and its shorthands."""
    return set(model.model_fields) | set(getattr(model, "SHORTHANDS", ()))


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The config class of a nested section (``runtime: RuntimeConfig``, ``split: SplitConfig | None``)."""
    candidates = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    for candidate in candidates:  # a list of sections (initialisations) is a value, not a section
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def is_sequence(annotation: Any) -> bool:
    """Whether a field holds a list or tuple (``list[str]``, ``tuple[float, float] | None``, ``Annotated[list[...], ...]``)."""
    origin = get_origin(annotation)
    if origin in (list, tuple):
        return True
    if origin is Annotated:
        return is_sequence(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return any(is_sequence(a) for a in get_args(annotation) if a is not type(None))
    return False


def field_at(model: type[BaseModel], path: list[str]) -> Any:
    """The annotation of the (dotted) key ``path`` of ``model``, or None when it is not a field."""
    section: type[BaseModel] | None = model
    for part in path[:-1]:
        field = section.model_fields.get(part) if section else None
        section = section_model(field.annotation) if field is not None else None
    field = section.model_fields.get(path[-1]) if section else None
    return field.annotation if field is not None else None


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key" + did_you_mean(str(error["loc"][-1]), _fields_at(model, error["loc"]))
    value = error.get("input")
    shown = "" if isinstance(value, dict) or error["type"] == "missing" else f" (got {value!r})"
    return f"{where}: {message}{shown}"


def validate(model: type[ConfigT], values: dict[str, Any], source: str = "config") -> ConfigT:
    """Build a config object, turning validation errors into one readable line per problem."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, model) for e in exc.errors())
        allowed = ", ".join(sorted(model.model_fields))
        raise LesionSSLError(f"{source}: {problems} [keys of {model.__name__}: {allowed}]") from None


def resolve(
    model: type[ConfigT], config: str | Path | dict[str, Any] | BaseModel | None, options: dict[str, Any], source: str
) -> ConfigT:
    """A validated config from a YAML file, a mapping or a config object, changed by ``options``
    (None values ignored; nested sections merge key by key)."""
    if isinstance(config, BaseModel):
        config = config.model_dump(exclude_unset=True)
    values = read_yaml(Path(config)) if isinstance(config, (str, Path)) else dict(config or {})
    return validate(model, merge(values, {k: v for k, v in options.items() if v is not None}), source)


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; mappings merge recursively (a section's other keys stay)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for missing files or bad syntax."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise LesionSSLError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise LesionSSLError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LesionSSLError(f"{path}: the top level must be a mapping of keys to values")
    return data


#: Keys that change no result: where a run is written and tracked, whether it resumes, where its
#: images now lie, whether it draws figures. A run keeps its folder (and its finished work) across them.
NOT_RESULTS = {"out", "tracking", "resume", "data_root", "figures"}


#: Keys added after studies had run, and their value then: hashed only when set otherwise, so a
#: finished run keeps its folder (its hash) and a resumed study does not run it again.
HASHED_WHEN_SET = {
    "malignant_classes": None,
    "colour_constancy": "none",
    "colour_constancy_p": DEFAULT_P,
    "adapt_bn": False,
}


def config_hash(config: BaseModel) -> str:
    """Stable short hash of a run's configuration, without the keys in :data:`NOT_RESULTS`."""
    data = _unset_later_keys(config.model_dump(mode="json", exclude=NOT_RESULTS))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def _unset_later_keys(data: Any) -> Any:
    """``data`` without the :data:`HASHED_WHEN_SET` keys that hold their old value, in nested
    sections too (a run's ``split:`` section gained colour constancy)."""
    if isinstance(data, dict):
        return {
            k: _unset_later_keys(v) for k, v in data.items() if not (k in HASHED_WHEN_SET and v == HASHED_WHEN_SET[k])
        }
    return data


def differing_keys(config: BaseModel, recorded: dict[str, Any]) -> list[str]:
    """The keys (nested ones dotted) whose values differ between ``config`` and a run's recorded
    configuration of the same kind, without the keys in :data:`NOT_RESULTS`."""

    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and value:
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    wanted = flat(config.model_dump(mode="json", exclude=NOT_RESULTS))
    found = flat(type(config).model_validate(recorded).model_dump(mode="json", exclude=NOT_RESULTS))
    return sorted(key for key in wanted.keys() | found.keys() if wanted.get(key) != found.get(key))


def to_yaml(config: BaseModel, extra: dict[str, Any] | None = None) -> str:
    """Serialise a config (plus resolved extras such as the found LR, or a pretraining's method
    hyperparameters as its method resolved them) as YAML, with what its recipe resolved."""
    data = config.model_dump(mode="json")
    if extra:
        data.update(extra)
    return yaml.safe_dump(data, sort_keys=False)
