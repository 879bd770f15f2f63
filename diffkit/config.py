"""A run as types: `TrainSpec`, how it is trained (the CLI's Training options are it with their flags),
and its config.json as a `RunConfig`, read from JSON with every field checked against its type, so that
a run directory whose config was mangled is refused in one line naming the file and the field, before
anything is built from it.

config.json holds four parts that rebuild everything: "modality", "model" (the network's own config,
which the modality's `build` reads), "diffusion" (schedule, T, parameterisation, variance) and "data"
(the modality's own dataclass: sizes, channels, class names, ...), plus "train": every option the run
was trained with, which --resume continues with (None where unknown). Runs of an older format reach
today's through core.checkpoint's migrations before they are read here.

Only the standard library at import time: the CLI imports this.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkit.errors import DiffkitError, SettingError, choose


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


@dataclass(frozen=True)
class TrainSpec:
    """How a run is trained, as `train` commands take it (the CLI's Training options are this with their
    flags) and the run layer (diffkit.runs) reads it: where the run goes and whether it continues there,
    the optimiser and its schedule, the diffusion process (see `diffusion`), the checkpoint, preview and
    log cadence, and the machine's part (compile, precision, workers). `record`: every option of the train
    command that made it (the modality's too), which the run keeps in its config so that a resumed run
    continues with them (diffkit.resume)."""
    out: str
    resume: bool = False
    steps: int = 2000
    batch_size: int = 16
    accumulate: int = 1
    lr: float = 2e-4
    warmup: int = 100
    lr_decay: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weighting: str = "uniform"
    schedule: str | None = None
    timesteps: int = 1000
    prediction: str = "eps"
    timestep_sampling: str | None = None
    variance: str = "fixed"
    self_cond: bool = False
    checkpoint_every: int = 500
    preview_every: int = 0
    log_every: int = 10
    max_bad_steps: int = 20
    compile: bool = False
    precision: str = "auto"
    seed: int = 0
    workers: int | None = None
    dry_run: bool = False
    record: dict | None = dataclasses.field(default=None, compare=False, metadata={"option": False})

    @contextlib.contextmanager
    def scope(self):
        """The spec a command runs with: a dry run goes to a temporary folder, removed afterwards, so
        that nothing is written anywhere else (text trains its tokenizer there too)."""
        if not self.dry_run:
            yield self
            return
        if self.resume:
            raise SettingError("dry_run", " measures a new run; it does not resume one")
        with tempfile.TemporaryDirectory(prefix="diffkit-dry-run-") as folder:
            yield dataclasses.replace(self, out=os.path.join(folder, "run"))

    def loader_workers(self, device_type: str, processes: int) -> int:
        from diffkit.loader import default_workers

        return default_workers(device_type, processes) if self.workers is None else self.workers

    def diffusion(self) -> Diffusion:
        """The diffusion part of the run's config, checked."""
        from diffkit.core.diffusion import PREDICTIONS, VARIANCES
        from diffkit.core.schedule import make_schedule

        variance = "fixed_small" if self.variance == "fixed" else self.variance
        choose("prediction", self.prediction, PREDICTIONS)
        choose("variance", variance, VARIANCES)
        schedule = self.schedule or ("flow" if self.prediction == "flow" else "cosine")
        make_schedule(schedule, self.timesteps)  # fails early on a bad name or T
        return Diffusion(schedule, self.timesteps, self.prediction, variance, self.self_cond)

    def settings(self, **extra):
        """The core trainer's TrainSettings, checked."""
        from diffkit.core.diffusion import TIMESTEP_SAMPLINGS, WEIGHTINGS
        from diffkit.core.trainer import TrainSettings

        choose("loss weighting", self.weighting, WEIGHTINGS)
        if self.batch_size < 1:
            raise SettingError("batch_size", f" must be at least 1, got {self.batch_size}")
        check_workers(self.workers)
        sampling = self.timestep_sampling or ("logit-normal" if self.prediction == "flow" else "uniform")
        choose("timestep sampling", sampling, TIMESTEP_SAMPLINGS)
        if sampling == "warped" and not self.resume:  # a resumed run keeps its own T (the trainer checks it)
            from diffkit.core.warp import check_timesteps

            check_timesteps(self.timesteps)
        return TrainSettings(timestep_sampling=sampling, steps=self.steps, lr=self.lr, warmup=self.warmup,
                             decay=self.lr_decay, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                             ema_decay=self.ema_decay, weighting=self.weighting, seed=self.seed,
                             accumulate=self.accumulate, checkpoint_every=self.checkpoint_every,
                             preview_every=self.preview_every, log_every=self.log_every,
                             max_bad_steps=self.max_bad_steps, compile=self.compile, precision=self.precision,
                             **extra)



def train_spec(defaults: dict, out: str, **settings) -> TrainSpec:
    """A TrainSpec into `out` with a modality's `defaults` (its pipeline's TRAINING), `settings` in their
    place: what `diffkit train` starts from."""
    return TrainSpec(out=out, **{**defaults, **settings})

def preset_sizes(preset: str, presets: dict[str, dict], **given) -> dict:
    """The network sizes of `preset` with each one given (not None) in its place."""
    choose("preset", preset, presets)
    return {name: presets[preset][name] if value is None else value for name, value in given.items()}


def int_list(setting_name: str, text: str) -> tuple[int, ...]:
    """A comma-separated setting of integers ("1,2,4"), with a clear error naming the setting."""
    from diffkit.console import setting

    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise DiffkitError(f"{setting(setting_name)}: expected integers like 1,2,4, got {text!r}") from None


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 0:
        raise SettingError("workers", f" must be 0 or more, got {workers}")


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
