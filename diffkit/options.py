"""Option groups shared by every command, declared once and handed to a command as one object each.

`@with_options(Common, Sampling)` adds the groups' flags to a Typer command's signature and passes the
command `common=Common(...)`, `sampling=Sampling(...)`. It also turns errors into one line on stderr:
a DiffkitError exits 2, anything else 1; --debug shows the traceback instead.
"""

import contextlib
import dataclasses
import functools
import inspect
import os
import sys
import typing
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from diffkit.config import TrainSpec, check_workers
from diffkit.core.spec import SamplingSpec
from diffkit.errors import DiffkitError, Interrupted, Resumable, SettingError


# Options of every class-conditional modality's sample / inpaint / style / eval.
Label = Annotated[Optional[str], typer.Option(
    "--class", help="Class of a class-conditional model: an index or name, a comma list (outputs take them in "
                    "turn) or 'all'.")]
Guidance = Annotated[float, typer.Option(help="Classifier-free guidance scale (1: none; 0: unconditional).")]
FromClass = Annotated[Optional[str], typer.Option(
    "--from-class", help="The input's own class: convert it to --class by the bridge (inverted to noise along "
                         "the probability-flow ODE under this class, regenerated under --class).")]
StyleMethod = Annotated[Optional[str], typer.Option(
    "--method", help="sdedit (noise the input part way, regenerate) or bridge (needs --from-class and a "
                     "deterministic sampler); default: bridge with --from-class, else sdedit.")]
InversionIterations = Annotated[int, typer.Option(
    help="With the bridge and --sampler ddim: fixed-point iterations per inversion step (one model call "
         "each), so that decoding retraces the walk to noise; 0: the explicit step.")]
Strength = Annotated[Optional[float], typer.Option(
    help="How far toward noise the input goes: 0 returns it, 1 all the way; default: 1 for the bridge, "
         "0.6 (images) or 0.5 (audio, text) for SDEdit.")]

# Options of every modality's eval.
Memorization = Annotated[bool, typer.Option(
    "--memorization", help="Instead: does the model copy its training data? Each sample's nearest training example, "
                           "and the share of samples closer to it than 95% of held-out examples are.")]
TrainData = Annotated[Optional[str], typer.Option(
    help="With --memorization: the training data to compare against; default: the run's own.")]

# Options of every modality's sample / inpaint / style / restore.
TrajectoryPath = Annotated[Optional[str], typer.Option(
    "--trajectory", help="Also write x̂0 at every step: images a .png with a row per sample, audio a .png of "
                         "log-mel spectrograms (and a .wav per sample beside it), text a .jsonl, a line per step.")]

# Every modality's eval: how many timesteps estimate the variational bound (each modality its default).
Strata = Annotated[int, typer.Option(help="Timesteps for the bound, one per stratum (T: exact).")]
# Every modality's train: its network's size by name, each size option overriding its part.
Preset = Annotated[str, typer.Option(help="Network size: tiny, small or base (docs/training.md says what each costs and reaches); a size option given beside it wins.")]


# Options of every modality's train, for --data hf:PATH.
Column = Annotated[Optional[str], typer.Option(
    help="With --data hf:PATH: the column holding the examples (default: the usual name, e.g. image, audio, text).")]
LabelColumn = Annotated[Optional[str], typer.Option(
    help="With --data hf:PATH and --class-cond: the column holding the classes (default: label).")]


Method = Annotated[str, typer.Option(
    help="Restoration method: ddnm (null-space projection), pigdm, tmpd or dps (through the network's "
         "Jacobian; tmpd solves with it, several backward passes a step), or repaint (put the observed part "
         "back after each step).")]


@dataclass(frozen=True)
class Common:
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto"
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or log lines.")] = False
    json: Annotated[bool, typer.Option("--json", help="One JSON object per result line on stdout.")] = False
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False


def as_options(spec, name: str, flags: dict[str, str] | None = None, **helps):
    """The library's dataclass `spec` as a group of options, each field a flag with its help (which
    `helps` gives for every field; `flags` names those whose flag is not the field's name, a switch's
    among them): the settings are declared once, where the library takes them. A field marked
    {"option": False} is no option."""
    types, flags = typing.get_type_hints(spec), flags or {}
    fields = [(f.name, Annotated[types[f.name], typer.Option(*filter(None, [flags.get(f.name)]), help=helps[f.name])],
               dataclasses.field(default=f.default))
              for f in dataclasses.fields(spec) if f.metadata.get("option", True)]
    return dataclasses.make_dataclass(name, fields, bases=(spec,), frozen=True)


Sampling = as_options(
    SamplingSpec, "Sampling",
    sampler="ddpm, ddim, dpm++2m, dpm++3m, dpm++2m-sde, heun or unipc.",
    steps="Sampler steps (heun calls the model about twice a step).",
    spacing="Timesteps: logsnr (evenly in log σ), squeezed (log σ, its quiet top counted short below 40 steps), "
            "warped (by the run's learned time warp), fitted (fitted to the run's model, sampler and steps once, then "
            "kept in the run: deterministic samplers), trailing, leading, linspace or karras.",
    eta="DDIM noise: 0 deterministic, 1 ancestral.",
    seed="Same seed, same samples.",
    clip="Clip predicted data to ±CLIP at every step.",
    threshold="Dynamic thresholding (Imagen): at every step scale predicted data by this percentile of its "
              "absolute values (e.g. 0.995) where that exceeds 1; default: none.")


def or_sampler(sampling: SamplingSpec, default: str) -> SamplingSpec:
    """`sampling` with `default` where the command leaves --sampler unset (None) to decide later."""
    return sampling if sampling.sampler is not None else dataclasses.replace(sampling, sampler=default)


@dataclass(frozen=True)
class Signing:
    """C2PA content credentials for the PNG and WAV files a generating command writes (diffkit[c2pa])."""
    c2pa_cert: Annotated[Optional[str], typer.Option("--c2pa-cert", help="PEM certificate chain (signer first) to sign C2PA content credentials into every PNG / WAV written; needs --c2pa-key.")] = None
    c2pa_key: Annotated[Optional[str], typer.Option("--c2pa-key", help="PEM private key (EC P-256/384, Ed25519 or RSA) of --c2pa-cert.")] = None

    def credentials(self) -> tuple[bytes, bytes] | None:
        """The certificate chain and key, read and checked before any work; None without them."""
        if (self.c2pa_cert is None) != (self.c2pa_key is None):
            raise DiffkitError("--c2pa-cert and --c2pa-key go together")
        if self.c2pa_cert is None:
            return None
        from pathlib import Path

        files = []
        for option, name in (("--c2pa-cert", self.c2pa_cert), ("--c2pa-key", self.c2pa_key)):
            try:
                data = Path(name).read_bytes()
            except OSError as e:
                raise DiffkitError(f"{name}: cannot read {option} ({e.strerror})") from None
            if b"-----BEGIN " not in data:
                raise DiffkitError(f"{name}: {option} is not a PEM file")
            files.append(data)
        return files[0], files[1]


Training = as_options(
    TrainSpec, "Training",
    flags={"out": "--out", "resume": "--resume", "self_cond": "--self-cond/--no-self-cond", "compile": "--compile",
           "dry_run": "--dry-run"},
    out="Run directory to create (or to continue with --resume).",
    resume="Continue the run in --out from its last checkpoint.",
    steps="Optimiser steps in all (with --resume: the new total).",
    batch_size="Examples per micro-batch.",
    accumulate="Micro-batches per optimiser step.",
    lr="Peak AdamW learning rate.",
    warmup="Linear warm-up steps.",
    lr_decay="After warm-up: constant, or cosine down to 0 at --steps.",
    weight_decay="AdamW weight decay.",
    grad_clip="Clip the gradient norm to this.",
    ema_decay="EMA decay of the sampling weights.",
    weighting="Loss weighting over timesteps: uniform or min_snr.",
    schedule="Noise schedule: linear, cosine, sigmoid, sqrt or flow (rectified flow's path); default: flow with "
             "--prediction flow, else cosine.",
    timesteps="Diffusion steps T.",
    prediction="What the network predicts: eps, x0, v, or flow (rectified flow's velocity ε - x0).",
    timestep_sampling="Training timesteps: uniform, logit-normal (most at middle noise) or warped (learned: where the "
                      "x0 error grows fastest, CDCD's time warping; sample it with --spacing warped); default: warped "
                      "for text, else logit-normal with --prediction flow, else uniform.",
    variance="fixed (small), fixed_large or learned (hybrid loss).",
    self_cond="Self-conditioning: the network also sees its previous x̂0 (half the training examples), every "
              "sampler feeding it the last step's (text: on by default).",
    checkpoint_every="Save state/ and model.safetensors every N steps.",
    preview_every="Write a preview every N steps (0: never).",
    log_every="Append a metrics.jsonl line every N steps.",
    max_bad_steps="Stop after this many steps in a row with a non-finite loss (each is skipped).",
    compile="Run the network through torch.compile.",
    precision="auto (bf16 autocast on CUDA and on CPUs with AMX), fp32 or bf16.",
    seed="Seed of initialisation, data order and noise.",
    workers="Processes that decode batches ahead of the step (0: the training process itself); default: from the "
            "cores and the device. Results do not depend on it.",
    dry_run="Measure what the training would cost instead (parameters, FLOPs per step and per sample, memory, "
            "seconds per step over a few steps on this device), writing nothing.")


@dataclass(frozen=True)
class Preparing:
    """`diffkit prepare`'s options, the same for every modality."""
    out: Annotated[str, typer.Option("--out", help="New folder for the shards and their manifest.json.")]
    shard_size: Annotated[int, typer.Option(help="Examples per tar shard.")] = 5000
    workers: Annotated[Optional[int], typer.Option(help="Processes that decode and encode (0: this one); default: every core.")] = None

    def worker_count(self) -> int:
        from diffkit.loader import available_cores

        check_workers(self.workers)
        return available_cores() if self.workers is None else self.workers


def with_defaults(group, **defaults):
    """The option group with other defaults, for a modality whose sensible settings differ."""
    fields = [(f.name, f.type, dataclasses.field(default=defaults.get(f.name, f.default), compare=f.compare,
                                                 metadata=f.metadata))
              for f in dataclasses.fields(group)]
    return dataclasses.make_dataclass(group.__name__, fields, bases=(group,), frozen=True)


def _options(group) -> list:
    return [f for f in dataclasses.fields(group) if f.metadata.get("option", True)]


def _parameters(group) -> list:
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type,
                              default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
            for f in _options(group)]


def with_options(*groups):
    names = {group.__name__.lower(): group for group in groups}

    def decorate(fn):
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.name not in names]

        training = next((group for group in groups if issubclass(group, Training)), None)
        # A train command is handed its click context, which says what the command line gave.
        context = [inspect.Parameter("context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]

        @functools.wraps(fn)
        def command(**kwargs):
            context = kwargs.pop("context", None)

            def body():
                if training is not None and kwargs["resume"] and not kwargs["dry_run"]:  # scope() refuses both
                    kwargs.update({k: v for k, v in _resumed(context, kwargs).items() if k in kwargs})
                bundles = {}
                for name, group in names.items():
                    bundles[name] = group(**{f.name: kwargs.pop(f.name) for f in _options(group)})
                if training is not None:
                    record = {k: v for k, v in {**kwargs, **dataclasses.asdict(bundles["training"])}.items()
                              if k not in UNRECORDED}
                    bundles["training"] = dataclasses.replace(bundles["training"], record=record)
                return _within_scopes(fn, kwargs, bundles)

            return run(body, kwargs.get("debug", False))

        command.__signature__ = signature.replace(parameters=own + [p for g in groups for p in _parameters(g)]
                                                  + (context if training is not None else []))
        return command

    return decorate


# What a run does not record: where it is, how this command was asked to run and report.
UNRECORDED = {"out", "resume", "dry_run", "record", *(f.name for f in dataclasses.fields(Common))}


def _resumed(context: typer.Context, kwargs: dict) -> dict:
    """The options a `train --resume` continues with: the run's recorded ones, with those given on this
    command line that a run may change (diffkit.resume). The CLI names the flag of a
    setting that may not change."""
    from diffkit.config import read_config
    from diffkit.resume import ChangedSetting, recorded_options, resumed_options

    config = read_config(kwargs["out"], context.info_name)
    given = {name: value for name, value in kwargs.items()
             if getattr(context.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"}
    try:
        return resumed_options(recorded_options(kwargs["out"], config), given)
    except ChangedSetting as e:
        option = next(max(p.opts, key=len) for p in context.command.params if p.name == e.name)
        raise DiffkitError(f"{option}: {kwargs['out']} was trained with {_shown(e.recorded)}, not {_shown(e.given)}; "
                           f"a resumed run keeps its own settings (leave {option} out, or start a new run)") from None


def _shown(value) -> str:
    return "the default" if value is None else str(value)


def _within_scopes(fn, kwargs: dict, bundles: dict):
    """fn called with the option groups, each one that has a `scope()` entered first (Training's)."""
    with contextlib.ExitStack() as stack:
        entered = {name: stack.enter_context(b.scope()) if hasattr(b, "scope") else b for name, b in bundles.items()}
        return fn(**kwargs, **entered)


def flag(setting: str) -> str:
    """The flag of a library setting: batch_size -> --batch-size, n -> -n."""
    return "-" + setting if len(setting) == 1 else "--" + setting.replace("_", "-")


def run(action, debug: bool):
    """Run a command body with the CLI's error contract, its messages naming settings by their flags."""
    from diffkit.console import name_settings

    name_settings(flag)
    try:
        return action()
    except (typer.Exit, typer.Abort):
        raise
    except DiffkitError as e:
        if debug:
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun the main process speaks for all
            message = flag(e.setting) + e.rest if isinstance(e, SettingError) else str(e)
            print(f"error: {message}{', continue with --resume' if isinstance(e, Resumable) else ''}", file=sys.stderr)
        raise typer.Exit(2)
    except Interrupted as e:
        print(f"interrupted: {e}; continue with --resume", file=sys.stderr)
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise typer.Exit(130)
    except Exception as e:  # a runtime failure, not the user's mistake
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        raise typer.Exit(1)


def style_plan(run, method: str | None, from_class: str | None, label: str | None, strength: float | None,
               sdedit_strength: float, guidance: float) -> tuple[float, str | None]:
    """`style`'s options checked before any input is read: (strength, the input's class for the bridge or
    None for SDEdit; class_labels turns None into no labels)."""
    from diffkit.errors import choose

    method = method or ("bridge" if from_class is not None else "sdedit")
    choose("style method", method, ("sdedit", "bridge"))
    if method == "bridge":
        if from_class is None:
            raise DiffkitError("--method bridge needs --from-class, the input's own class")
        if label is None:
            raise DiffkitError("the bridge needs --class, the class to convert to")
        class_labels(run, from_class, 1, guidance, "--from-class")  # no classes, or an unknown name, fails here
    elif from_class is not None:
        raise DiffkitError("--from-class is for --method bridge, not sdedit")
    strength = (1.0 if method == "bridge" else sdedit_strength) if strength is None else strength
    if not 0 <= strength <= 1:
        raise DiffkitError(f"--strength must be in [0, 1], got {strength}")
    return strength, from_class if method == "bridge" else None


def class_labels(run, wanted: str | None, n: int, guidance: float, option: str = "--class"):
    """`--class` (or `option`) as n labels: an index or name, a comma list taken in turn, or "all"; None
    without it."""
    import torch

    classes = run.config.data.classes
    if wanted is None:
        if guidance != 1 and not classes:
            raise DiffkitError("--guidance needs a class-conditional model (trained with --class-cond)")
        return None
    if not classes:
        raise DiffkitError(f"{run.path} is not class-conditional; {option} does not apply")
    parts = [part.strip() for part in wanted.split(",")]
    indices = list(range(len(classes))) if parts == ["all"] else [_class_index(classes, p, option) for p in parts]
    return torch.tensor(indices)[torch.arange(n) % len(indices)]


def _class_index(classes, wanted: str, option: str) -> int:
    if wanted in classes:
        return classes.index(wanted)
    if wanted.isdigit() and int(wanted) < len(classes):
        return int(wanted)
    listing = ", ".join(f"{i}={name}" for i, name in enumerate(classes))
    raise DiffkitError(f"{option} {wanted!r} is neither a class index nor a name ({listing})")



def print_record(record: dict, common: Common) -> None:
    """One record of `diffkit eval`: a JSON line, or "metric  value ± stderr  what it was measured on"."""
    if common.json:
        from diffkit.io import json_line

        json_line(record)
    else:
        print(f"{record['metric']:>22}  {record['value']:.4f} ± {record['stderr']:.4f}  {record['of']}")

# Restoration samples ancestrally by default: its fresh noise each step lets the model shed what the
# projection carried in from a noisy y, where an ODE sampler keeps it (docs/measurements/restoration.md).
RestoreSampling = with_defaults(Sampling, sampler="ddpm")
# eval samples with dpm++2m, and restores (--restore) with restore's ddpm, unless told otherwise.
EvalSampling = with_defaults(Sampling, sampler=None)
