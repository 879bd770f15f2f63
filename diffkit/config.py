"""config.json as types: a run's `RunConfig`, read from JSON with every field checked against its type, so
that a run directory whose config was mangled is refused in one line naming the file and the field,
before anything is built from it.

config.json holds four parts that rebuild everything: "modality", "model" (the network's own config,
which the modality's `build` reads), "diffusion" (schedule, T, parameterisation, variance) and "data"
(the modality's own dataclass: sizes, channels, class names, ...), plus "train": every option the run
was trained with, which --resume continues with (None where unknown). Runs of an older format reach
today's through core.checkpoint's migrations before they are read here.

Only the standard library at import time: the CLI imports this.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkit.errors import DiffkitError


@dataclass(frozen=True)
class Diffusion:
    """The process the network was trained for: a named schedule of `timesteps` steps (or the ᾱ table an
    imported model came with), what the network predicts, its variance, and self-conditioning."""
    schedule: str
    timesteps: int
    prediction: str
    variance: str
    self_cond: bool
    alphas_cumprod: list[float] | None = None

    def parameterisation(self) -> dict:
        """How the network answers, as the core's functions take it."""
        return {"prediction": self.prediction, "variance": self.variance, "self_cond": self.self_cond}


@dataclass(frozen=True)
class RunConfig:
    modality: str
    model: dict[str, Any]  # the network's own config: the modality's build() checks it
    diffusion: Diffusion
    data: Any  # the modality's data dataclass
    train: dict[str, Any] | None = None  # every train option; None where unknown (diffkit.resume)

    def to_json(self) -> dict:
        """config.json's content (without its format version, which core.checkpoint writes)."""
        diffusion = {k: v for k, v in dataclasses.asdict(self.diffusion).items()
                     if not (k == "alphas_cumprod" and v is None)}
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.data).items()}
        return {"modality": self.modality, "model": self.model, "diffusion": diffusion, "data": data,
                "train": self.train}


def read_config(run: str | Path, modality: str | None = None) -> RunConfig:
    """A run directory's config.json, of any past format (core.checkpoint's migrations), as a RunConfig
    (of `modality`, if given); a missing, unknown or mistyped field is a DiffkitError naming the file and
    the field."""
    from diffkit.core.checkpoint import CONFIG, load_config
    from diffkit.modalities import MODALITIES, data_type

    raw, where = load_config(run), f"{Path(run) / CONFIG}"
    if not isinstance(raw["modality"], str) or raw["modality"] not in MODALITIES:
        raise DiffkitError(f"{where}: unknown modality {raw['modality']!r}; choose one of: {', '.join(MODALITIES)}")
    if modality is not None and raw["modality"] != modality:
        raise DiffkitError(f"{run}: holds a run of modality {raw['modality']}, not {modality}")
    modality = raw["modality"]
    raw = {k: v for k, v in raw.items() if k != "format_version"}
    return typed(RunConfig, raw, where, {"data": data_type(modality)})


def typed(cls: type, raw: Any, where: str, override: dict | None = None):
    """An instance of dataclass `cls` from the JSON value `raw`, each field checked against its annotation
    (`override` replaces some annotations); lists become tuples where the field says tuple."""
    if not isinstance(raw, dict):
        raise DiffkitError(f"{where} must be an object, got {_json_name(raw)}")
    hints = {**typing.get_type_hints(cls), **(override or {})}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise DiffkitError(f"{where}: unexpected setting {unknown[0]!r}")
    values = {}
    for name, field in fields.items():
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise DiffkitError(f"{where}: missing setting {name!r}")
            continue
        values[name] = _value(hints[name], raw[name], f"{where}: {name}")
    return cls(**values)


def _value(kind, raw: Any, where: str):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, raw, where)
    if dataclasses.is_dataclass(kind):
        return typed(kind, raw, where)
    if kind is Any:
        return raw
    if origin in (list, tuple):
        if not isinstance(raw, list):
            raise DiffkitError(f"{where} must be a list, got {_json_name(raw)}")
        item = args[0] if args else Any
        items = [_value(item, x, where) for x in raw]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(raw, dict):
            raise DiffkitError(f"{where} must be an object, got {_json_name(raw)}")
        return raw
    if kind is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if kind in (int, str, bool) and isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    raise DiffkitError(f"{where} must be {_NAMES.get(kind, kind)}, got {_json_name(raw)}")


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _json_name(raw: Any) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true or false"
    return {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(
        type(raw), type(raw).__name__)
