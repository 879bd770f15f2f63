"""What the commands of every modality share: starting or resuming a run directory, training into it
with a progress bar, loading it back, and sampling from it. A run's config is a diffkit.config.RunConfig.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from diffkit.config import RunConfig, TrainSpec, read_config
from diffkit.console import log, progress_bar, setting, warn
from diffkit.core import make_schedule, sample
from diffkit.core.spec import SamplingSpec
from diffkit.core.checkpoint import (CONFIG, STATE, WEIGHTS, load_weights, read_trainer_meta, read_warp,
                                     write_config)
from diffkit.core.editing import Bridge, Inpaint, Noised, Restore
from diffkit.core.generate import classifier_free
from diffkit.core.schedule import Schedule
from diffkit.core.nn import drop_labels
from diffkit.core import distributed
from diffkit.core.trainer import AUGMENT, METRICS, BatchAt, Objective, Trainer, seeded, shuffled_batch
from diffkit.errors import DiffkitError, SettingError
from diffkit.io import json_line
from diffkit.loader import Prefetcher
from diffkit.trajectory import Trajectory


class Run(NamedTuple):
    path: Path
    config: RunConfig
    model: nn.Module  # the EMA weights, in eval mode, on the chosen device
    schedule: Schedule
    device: torch.device


def weights_digest(path: Path) -> str:
    """The SHA-256 of a run's weights file: what its results and fitted grids are tied to."""
    import hashlib

    with open(Path(path) / WEIGHTS, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def provenance_of(run: Run, command: str, sampling: SamplingSpec, input: str | None = None, **details) -> dict:
    """What a command's results carry (diffkit.provenance): the run's weights by digest, how they were
    sampled, and for an edit the digest of the input it read."""
    from diffkit import provenance
    from diffkit.io import input_digest

    weights = weights_digest(run.path)
    return provenance.record(command, weights, sampling.sampler, sampling.steps, sampling.seed,
                             input_digest(input) if input is not None else None, **details)


def schedule_of(config: RunConfig) -> Schedule:
    """The run's schedule: a named one, or the ᾱ table an imported model came with."""
    diffusion = config.diffusion
    if diffusion.alphas_cumprod is not None:
        table = torch.tensor(diffusion.alphas_cumprod, dtype=torch.float64)
        if table.dim() != 1 or len(table) < 2 or not ((table >= 0) & (table < 1)).all() or (table.diff() > 0).any():
            raise DiffkitError(f"{CONFIG}: alphas_cumprod must fall from below 1 to 0 or above")
        return Schedule(table, diffusion.schedule)
    return make_schedule(diffusion.schedule, diffusion.timesteps)


def start_run(training: TrainSpec, modality: str, make_config: Callable[[], tuple[dict, Any]],
              open_data: Callable[[RunConfig], Any]) -> tuple[RunConfig, Any]:
    """The run's config and its data: read back and reopened when resuming, else made by `make_config`
    (which loads and checks the data, and returns the config's "model", "diffusion" and "data" parts
    with the data) and written. Nothing is created before the inputs are checked.
    Under torchrun the main process does this; the others then read the config it wrote."""
    training.settings()  # every option checked before anything is written
    world = distributed.join()
    if training.batch_size % world.size:
        raise SettingError("batch_size", f" {training.batch_size} (the global batch) must be a multiple of the "
                           f"{world.size} processes")
    if world.size == 1:
        return _start_run(training, modality, make_config, open_data)
    result, error = None, None
    if world.main:
        try:
            result = _start_run(training, modality, make_config, open_data)
        except DiffkitError as e:
            error = str(e)
    error = distributed.from_main(error, world)
    if error is not None:
        raise DiffkitError(error)
    if world.main:
        return result
    config = read_config(training.out)
    return config, open_data(config)


def _start_run(training: TrainSpec, modality: str, make_config: Callable[[], tuple[dict, Any]],
               open_data: Callable[[RunConfig], Any]) -> tuple[RunConfig, Any]:
    out = Path(training.out)
    if out.exists() and not out.is_dir():
        raise DiffkitError(f"{out}: exists and is not a folder")
    writable_folder(out)
    if training.resume:
        config = read_config(out, modality)
        hold_run(out)
        for stale in out.rglob(".*.tmp"):  # half-written by a killed process (atomic_write's names)
            stale.unlink()
        trained = read_trainer_meta(out)["step"] if (out / STATE).exists() else 0
        if trained > training.steps:
            raise SettingError("steps", f" {training.steps}: {out} has trained {trained} steps already")
        recorded = (config.train or {}).get("steps", training.steps)
        if training.steps != recorded and training.lr_decay == "cosine":
            warn(f"{setting('steps')} {training.steps}: the cosine learning-rate decay now follows this total, not "
                 f"the run's {recorded} steps")
        data = open_data(config)  # before the record changes: data that fail to open leave the run as it was
        if training.record is not None and config.train != training.record:  # a new --steps, ...
            config = dataclasses.replace(config, train=training.record)
            write_config(out, config.to_json())
        return config, data
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    try:
        hold_run(out)  # before anything is read or written there (text writes its tokenizer in make_config)
        if (out / CONFIG).exists() or (out / STATE).exists():
            raise DiffkitError(f"{out}: already holds a run; continue it with {setting('resume')} or choose another "
                               f"{setting('out')}")
        parts, data = make_config()
        config = RunConfig(modality, **parts, train=training.record)
        write_config(out, config.to_json())
    except BaseException:
        if release_run(out):  # leave no half-made run behind, removing only what this process made
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            else:
                (out / LOCK).unlink(missing_ok=True)
        raise
    return config, data


LOCK = ".lock"  # in the run folder: holds the pid of the process training it
_held: dict[Path, Any] = {}  # run folder -> its open lock file, held until training ends or the process exits


def hold_run(out: Path) -> None:
    """Take the run's lock, so that two processes never train into one run (each would overwrite the
    other's checkpoints, and a resume would clear the other's half-written files). The kernel drops an
    flock when its process dies, even by SIGKILL, so a crash never leaves a stale lock."""
    import fcntl

    key = out.resolve()
    if key in _held:
        return
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / LOCK, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise DiffkitError(f"{out}: another process (pid {holder}) is training this run; wait for it or stop "
                           "it first") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    _held[key] = lock


def release_run(out: Path) -> bool:
    """Drop the run's lock; False if this process did not hold it."""
    lock = _held.pop(Path(out).resolve(), None)
    if lock is not None:
        lock.close()  # closing the file drops the flock
    return lock is not None


def writable_folder(out: Path) -> None:
    """Fail before any work if the run folder cannot be created or written (checked on its nearest
    existing ancestor, without creating anything)."""
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise DiffkitError(f"{out}: cannot create or write the run here ({ancestor} is not a writable folder)")


def enough_disk(out: Path, parameters: int) -> None:
    """A checkpoint holds five float32 copies of the weights (state/: weights, EMA and two optimiser
    moments; model.safetensors: the EMA), and each file briefly exists twice while it is replaced:
    refuse to start without room for that."""
    needed = 2 * 5 * 4 * parameters
    free = shutil.disk_usage(out).free
    if free < needed:
        raise DiffkitError(f"{out}: {free / 2**20:.0f} MiB free on its disk, checkpoints need about "
                           f"{needed / 2**20:.0f} MiB")


def train_run(config: dict, build: Callable[[dict], nn.Module], batch_at: BatchAt, training: TrainSpec, *,
              device: str = "auto", quiet: bool = False, json_out: bool = False,
              preview: Callable[[nn.Module, int], None] | None = None, objective: Objective | None = None,
              **settings) -> nn.Module:
    """Build the network from its seed and train (or resume) it into the run with a progress bar (on
    stderr, unless `quiet`; `json_out`: a JSON line on stdout saying where it saved); returns the EMA model."""
    world = distributed.current()
    device = distributed.resolve_device(device)
    quiet, json_out = quiet or not world.main, json_out and world.main  # the main process speaks for all
    torch.manual_seed(training.seed)
    model = build(config)
    trainer = Trainer(model.to(device), schedule_of(config), training.settings(**settings),
                      **config.diffusion.parameterisation(), run=training.out, objective=objective, world=world)
    if training.resume and (Path(training.out) / STATE).exists():
        trainer.restore()
        log(f"resuming {training.out} at step {trainer.step}", quiet)
    elif training.resume:  # stopped before its first checkpoint: its config stands, training restarts
        if world.main:
            trainer.trim_metrics()
        log(f"{training.out} has no checkpoint yet: training from step 0", quiet)
    if training.dry_run:
        return _report_cost(trainer, batch_at, training, quiet=quiet, json_out=json_out)
    size = sum(p.numel() for p in model.parameters())
    if world.main:
        enough_disk(Path(training.out), size)
    processes = f" x {world.size} processes" if world.size > 1 else ""
    log(f"training {size:,} parameters on {device}{processes} for {training.steps} steps into {training.out}",
        quiet)
    workers = training.loader_workers(device.type, world.size)
    loader = Prefetcher(batch_at, workers, training.accumulate) if workers else batch_at
    try:
        with progress_bar(f"train {config.modality}", quiet) as update:
            ema = trainer.fit(loader, preview=preview,
                              on_step=lambda r: update(r["step"], training.steps, loss=r["loss"], it_s=r["it_s"]))
    finally:
        if workers:
            loader.close()
        release_run(Path(training.out))
    if json_out:
        json_line({"run": training.out, "step": trainer.step})
    log(f"saved {training.out} at step {trainer.step}", quiet)
    return ema


def _report_cost(trainer: Trainer, batch_at: BatchAt, training: TrainSpec, *, quiet: bool, json_out: bool) -> nn.Module:
    """A dry run: what training and sampling this network cost, measured on a few real steps."""
    from diffkit.cost import print_cost, training_cost

    log(f"timing {TIMED_STEPS} steps after a counted one (nothing is written)", quiet)
    try:
        cost = training_cost(trainer, batch_at, TIMED_STEPS)
    finally:
        release_run(Path(training.out))
    cost["projected_minutes"] = cost["seconds_per_step"] * training.steps / 60
    cost["steps"] = training.steps
    print_cost(cost, json_out)
    return trainer.ema


TIMED_STEPS = 3


def load_run(path: str, modality: str, build: Callable[[RunConfig], nn.Module], device: str = "auto") -> Run:
    """A run directory's config and EMA weights, checked against each other, on `device` (auto, cpu,
    cuda or cuda:N)."""
    config = read_config(path, modality)
    try:
        model = build(config)
        schedule = schedule_of(config)
    except (KeyError, TypeError) as e:
        raise DiffkitError(f"{path}/{CONFIG}: missing or unexpected setting ({e})") from None
    device = distributed.resolve_device(device)
    model = load_weights(path, model).to(device).eval()
    return Run(Path(path), config, model, dataclasses.replace(schedule, warp=read_warp(path)), device)


def _conditioned(run: Run, labels: torch.Tensor | None, guidance: float, conditions: dict | None = None):
    """(network, its keyword arguments) under class `labels`, mixed by classifier-free guidance when
    `guidance` is not 1 (the null label is the class count), or under other `conditions`."""
    kwargs = {k: v.to(run.device) for k, v in conditions.items()} if conditions else None
    if labels is None:
        return run.model, kwargs
    kwargs = {"y": labels.to(run.device)}
    if guidance == 1:
        return run.model, kwargs
    null = {"y": torch.full_like(kwargs["y"], len(run.config.data.classes))}
    return classifier_free(run.model, guidance, kwargs, null, run.config.diffusion.variance), None


GRIDS = "grids.json"  # in the run folder: the grids fitted to its weights (core.fitting), by sampler and settings
# The fit's own noise, apart from any seed a user samples with.
FIT_SEED = 1_000_003


def fit_batch(example: tuple) -> int:
    """Draws enough that a grid fitted to them holds for others: 2^15 numbers (16 32x32 RGB images), at
    least 16 examples and at most 1,024."""
    return min(1024, max(16, -(-2**15 // math.prod(example))))


# Grids this process fitted, by run folder and weights: windows and tiles reuse them when the run is
# read-only or being trained, and so cannot keep them.
_fitted_here: dict[tuple[Path, str], dict] = {}


def _grid_key(sampling: SamplingSpec, guidance: float, example: tuple) -> str:
    """What a fitted grid depends on besides the weights: the sampler and its settings, guidance, the size."""
    return (f"{sampling.sampler} steps={sampling.steps} eta={sampling.eta} clip={sampling.clip} "
            f"threshold={sampling.threshold} guidance={guidance} shape={'x'.join(map(str, example))}")


def read_grids(path: Path, digest: str) -> dict:
    """The grids fitted to the weights of this digest, by _grid_key; none when the file is absent,
    unreadable or for other weights (a cache: anything wrong with it is fitted again)."""
    try:
        stored = json.loads((Path(path) / GRIDS).read_text())
        return stored["grids"] if stored["weights"] == digest and isinstance(stored["grids"], dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _keep_grids(run: Run, digest: str, grids: dict) -> None:
    """Write grids.json atomically, unless a training holds the run (its weights are about to change)."""
    from diffkit.io import atomic_write

    busy = run.path.resolve() in _held  # this process is training it
    try:
        if not busy:
            hold_run(run.path)
    except (DiffkitError, OSError):
        busy = True
    if busy:
        warn(f"{run.path}: the fitted grid is used but not kept: the run is being trained or is read-only")
        return
    try:
        with atomic_write(run.path / GRIDS, "w") as f:
            json.dump({"weights": digest, "grids": grids}, f, indent=1)
    except DiffkitError as e:
        warn(f"the fitted grid is used but not kept: {e}")
    finally:
        release_run(run.path)


def fitted_grid(run: Run, example: tuple, sampling: SamplingSpec, *, conditional: bool = False, guidance: float = 1.0,
                conditions: dict | None = None, hook=None, quiet: bool = True) -> SamplingSpec:
    """`sampling` (spacing fitted) with the timesteps fitted to the run's weights for its sampler, steps,
    settings, guidance and example size `example`: those kept in the run's grids.json, or fitted now by
    core.fitting on fit_batch(example) draws and kept there. A `conditional` fit draws every class in turn;
    one under other `conditions` (text: a pair's source) draws their rows in turn."""
    from diffkit.core.fitting import check_fittable, fit_timesteps

    check_fittable(sampling)
    digest, key = weights_digest(run.path), _grid_key(sampling, guidance, example)
    grids = read_grids(run.path, digest) | _fitted_here.get((run.path.resolve(), digest), {})
    try:
        kept = dataclasses.replace(sampling, timesteps=tuple(grids[key]))
        if kept.timesteps[0] < run.schedule.T:
            return kept
    except (KeyError, TypeError, ValueError, SettingError):
        pass  # not fitted yet, or damaged: fitted again
    batch = fit_batch(example)
    labels = torch.arange(batch) % len(run.config.data.classes) if conditional else None
    if conditions is not None:
        conditions = {k: v[torch.arange(batch) % len(v)] for k, v in conditions.items()}
    model, kwargs = _conditioned(run, labels, guidance, conditions)
    draw = lambda spec: sample(model, (batch, *example), run.schedule, spec, **run.config.diffusion.parameterisation(),
                               model_kwargs=kwargs, hook=hook, device=run.device)
    with progress_bar(f"fit {sampling.steps}-step grid for {sampling.sampler}", quiet) as update:
        ts = fit_timesteps(draw, run.schedule, dataclasses.replace(sampling, seed=FIT_SEED), progress=update)
    grids[key] = list(ts)
    _fitted_here.setdefault((run.path.resolve(), digest), {})[key] = list(ts)
    _keep_grids(run, digest, grids)
    return dataclasses.replace(sampling, timesteps=ts)


def generate(run: Run, shape: tuple, sampling: SamplingSpec, *, quiet: bool = True, labels: torch.Tensor | None = None,
             guidance: float = 1.0, conditions: dict | None = None, start: Noised | Bridge | None = None,
             source_labels: torch.Tensor | None = None, condition: Inpaint | Restore | None = None,
             hook=None, trajectory: Trajectory | None = None) -> torch.Tensor:
    """core.sample on a loaded run with a progress bar (unless `quiet`), under class `labels` (see _conditioned) or other
    `conditions` of the network (text: a pair's source), from a `start` and under a `condition` of
    core.editing in the model's units. A `Bridge` start inverts from classes `source_labels` (None: the same
    condition); a `trajectory` records every step's x̂_0. The spacing fitted uses (or first fits) the
    grid fitted to the run (fitted_grid)."""
    if sampling.spacing == "fitted" and sampling.timesteps is None:
        sampling = fitted_grid(run, shape[1:], sampling, conditional=labels is not None, guidance=guidance,
                               conditions=conditions, hook=hook, quiet=quiet)
    model, kwargs = _conditioned(run, labels, guidance, conditions)
    if isinstance(start, Bridge) and source_labels is not None:
        source_model, source_kwargs = _conditioned(run, source_labels, guidance)
        start = dataclasses.replace(start, source_model=source_model, source_kwargs=source_kwargs)
    with progress_bar(f"sample {sampling.sampler}", quiet) as update:
        return sample(model, shape, run.schedule, sampling, **run.config.diffusion.parameterisation(), model_kwargs=kwargs,
                      start=start, condition=condition, hook=hook, progress=update,
                      on_denoised=trajectory.recorder() if trajectory is not None else None, device=run.device)


def style_start(x: torch.Tensor, strength: float, source: str | None, inversion_iterations: int) -> Noised | Bridge:
    """Where `style` starts from its input `x` (model units): the bridge's inversion when it has the
    input's class `source` (see style_plan), else SDEdit's partial noising."""
    if source is None:
        if inversion_iterations:
            raise SettingError("inversion_iterations", " apply to the bridge, not SDEdit")
        return Noised(x, strength)
    return Bridge(x, strength, inversion_iterations=inversion_iterations)


def batches(dataset, training: TrainSpec, encode: Callable[[torch.Tensor], torch.Tensor], classes: int,
            label_dropout: float) -> BatchAt:
    """The trainer's batch_at over a dataset with `batch(indices, generator) -> (examples, labels)`:
    shuffled epochs over a finite set, consecutive indices over an endless (`endless`) generated one.
    A pure function of (step, micro-batch), as exact resume needs."""

    def batch_at(step: int, micro: int):
        generator = seeded(training.seed, AUGMENT, step * training.accumulate + micro)
        size = None if getattr(dataset, "endless", False) else len(dataset)
        examples, labels = dataset.batch(batch_indices(step, micro, size, training), generator)
        if not classes:
            return encode(examples), {}
        return encode(examples), {"y": drop_labels(labels, label_dropout, classes, generator)}

    return batch_at


def batch_indices(step: int, micro: int, size: int | None, training: TrainSpec) -> torch.Tensor:
    """This process's examples of micro-batch `micro` of `step`: of shuffled epochs over `size` examples,
    or of consecutive indices of an endless generated set (size None). The global batch is the same for
    any number of processes; process r of N takes its examples r, r + N, ... (DistributedSampler's
    split, as a pure function of the step, which exact resume needs)."""
    position = step * training.accumulate + micro
    if size is None:
        indices = torch.arange(position * training.batch_size, (position + 1) * training.batch_size)
    else:
        indices = shuffled_batch(position, size, training.batch_size, training.seed)
    world = distributed.current()
    return indices[world.rank::world.size]


def summary(path: str, config: RunConfig, build: Callable[[RunConfig], nn.Module], example: tuple[int, ...],
            **fields) -> dict:
    """What `diffkit info` prints: modality, size, data, diffusion settings, the modality's own fields,
    what the network costs (FLOPs of a call on one `example` of the diffused shape, the training state),
    and the last metrics line (step, loss, speed)."""
    from diffkit.cost import SAMPLE_CALLS, call_flops, parameters, state_bytes

    model = load_weights(path, build(config)).eval()
    flops = call_flops(model, torch.zeros(1, *example), torch.zeros(1, dtype=torch.long))
    result = {"modality": config.modality, "parameters": parameters(model), "data": config.data.source, **fields,
              **{k: v for k, v in dataclasses.asdict(config.diffusion).items() if k != "alphas_cumprod"},
              "flops_per_call": flops, "flops_per_sample": flops * SAMPLE_CALLS,
              "training_state_mib": round(state_bytes(model) / 2**20, 1)}
    grids = read_grids(Path(path), weights_digest(Path(path)))
    if grids:
        result["fitted_grids"] = sorted(grids)
    metrics = Path(path) / METRICS
    lines = [line for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if lines:
        last = json.loads(lines[-1])
        result |= {"step": last["step"], "loss": round(last["loss"], 5), "it_s": round(last.get("it_s", 0.0), 2)}
    return result
