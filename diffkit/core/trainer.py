"""The training loop every modality shares.

AdamW with linear warm-up, gradient clipping and accumulation, an EMA of the weights (what sampling
uses), bf16 autocast (on CUDA, and on CPUs with bf16 matrix units), optional torch.compile, checkpoints
in the run directory and exact resume.

Exact resume rests on one rule: everything random in step s is drawn from generators seeded by
(seed, s) — the batch (through `batch_at(step, micro)`, which the modality writes as a pure function),
the timesteps and noise, and dropout. So the RNG state at a step boundary is the step number itself,
and a run stopped and resumed on CPU ends with the same weights as one that never stopped. A learned
time warp (warped timesteps) is state like the optimiser's, saved with it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from diffkit.core import distributed, warp
from diffkit.core.checkpoint import read_state, write_state, write_weights
from diffkit.core.diffusion import sample_timesteps, training_losses
from diffkit.core.distributed import World
from diffkit.core.schedule import Schedule
from diffkit.errors import DiffkitError, Interrupted, Resumable, SettingError

Batch = tuple[Tensor, dict]            # x0 [B, ...] and the model's keyword arguments (labels, ...)
BatchAt = Callable[[int, int], Batch]  # (step, micro-batch) -> Batch, a pure function of its arguments
# (network, x0, keyword arguments, this process's timesteps, generator, shard) -> per-example losses,
# "loss" the one optimised and "x0_error" the one a time warp follows; the shard (rank, processes) says
# which slice of the global batch's noise is this process's (see training_losses). A modality whose data
# are not the diffused tensor itself (text: tokens, embedded inside the step) brings its own.
Objective = Callable[[nn.Module, Tensor, dict, Tensor, torch.Generator, tuple[int, int]], dict[str, Tensor]]
METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    lr: float = 1e-3
    warmup: int = 100
    decay: str = "constant"      # after warm-up: constant, or cosine down to 0 at `steps`
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weighting: str = "uniform"
    timestep_sampling: str = "uniform"  # or logit-normal (rectified flow's), or warped (learned: core.warp)
    seed: int = 0
    accumulate: int = 1          # micro-batches per optimiser step
    checkpoint_every: int = 1000
    preview_every: int = 0       # 0: no previews
    log_every: int = 10          # metrics.jsonl lines
    compile: bool = False
    precision: str = "auto"      # auto, fp32 or bf16 (autocast; weights, optimiser and loss stay fp32)
    bits: int | None = None      # data quantised to 2^bits levels (the hybrid loss's decoder term)
    max_bad_steps: int = 20      # consecutive non-finite losses (each step skipped) before the run stops

    def __post_init__(self):
        for name in ("steps", "accumulate", "checkpoint_every", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise SettingError(name, f" must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "preview_every"):
            if getattr(self, name) < 0:
                raise SettingError(name, f" must not be negative, got {getattr(self, name)}")
        if self.decay not in ("constant", "cosine"):
            raise SettingError("lr_decay", f" must be constant or cosine, got {self.decay!r}")
        if self.precision not in PRECISIONS:
            raise SettingError("precision", f" must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.lr > 0:
            raise SettingError("lr", f" must be positive, got {self.lr}")

    def lr_at(self, step: int) -> float:
        """A pure function of the step, so resuming needs no scheduler state. Cosine decay follows the
        total `steps`: resuming with a larger total stretches the rest of the curve."""
        lr = self.lr * min(1.0, (step + 1) / max(self.warmup, 1))
        if self.decay == "cosine" and step >= self.warmup:
            lr *= 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / max(self.steps - self.warmup, 1)))
        return lr


PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware multiplies it natively: CUDA, and CPUs with AMX tiles, where oneDNN's
    bf16 convolutions make a training step ~1.4x faster. Elsewhere on CPU bf16 is emulated and slower,
    so `auto` keeps fp32 there."""
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    # A private probe, hence the fallback: a torch without it gets fp32.
    return torch.bfloat16 if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() else None


# Independent random streams of one run, each indexed by a step or a batch position.
NOISE, DROPOUT, DATA, AUGMENT = 0, 1, 2, 3


def derived_seed(seed: int, stream: int, index: int) -> int:
    return ((seed * 8 + stream) * 2**40 + index) % 2**63


def seeded(seed: int, stream: int, index: int, device="cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(derived_seed(seed, stream, index))


@functools.lru_cache(maxsize=2)
def _permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=seeded(seed, DATA, epoch))


def shuffled_batch(position: int, n: int, batch_size: int, seed: int) -> Tensor:
    """Indices of batch number `position` in an endless run of epochs, each a fresh permutation of
    range(n): a pure function, so the data position of a run is just its batch count."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(position, per_epoch)
    perm = _permutation(n, seed, epoch)
    if n < batch_size:
        return perm[torch.arange(batch_size) % n]
    return perm[k * batch_size:(k + 1) * batch_size]


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    # Ramp the decay up from 0 so that short runs are not dominated by their random initial weights.
    decay = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


@contextmanager
def stop_requests():
    """Turn SIGINT / SIGTERM into a flag the loop checks between steps, so a stop always lands on a step
    boundary with a checkpoint. Yields a one-element list holding the signal number (or None)."""
    requested = [None]
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        requested[0] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """Owns model, EMA and optimiser; `run` (a folder) receives checkpoints and metrics. Without a run
    it trains in memory, for library use. Under torchrun (`world` of several processes) the network is
    wrapped in DistributedDataParallel, every process keeps the same weights and EMA, and only the main
    one writes to the run."""

    def __init__(self, model: nn.Module, schedule: Schedule, settings: TrainSettings, *, prediction: str,
                 variance: str, self_cond: bool = False, run: str | Path | None = None,
                 objective: Objective | None = None, world: World = World()):
        self.model, self.schedule, self.settings = model, schedule, settings
        self.prediction, self.variance, self.self_cond = prediction, variance, self_cond
        self.objective = objective or self.diffusion_loss
        self.run = Path(run) if run is not None else None
        self.world = world
        self.device = next(model.parameters()).device
        # 2-D convolutions on CUDA run fastest on NHWC tensors (the tensor-core kernels' layout).
        self.channels_last = self.device.type == "cuda" and any(p.dim() == 4 for p in model.parameters())
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        # The fused kernel does the update in one pass over each tensor, a visible share of a small model's
        # step on CPU.
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                           fused=True)
        self.autocast = autocast_dtype(settings.precision, self.device)
        network = model
        if world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            network = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward = torch.compile(network) if settings.compile else network
        self.step = 0
        self.skipped = 0  # consecutive steps with a non-finite loss
        self.warp = None
        if settings.timestep_sampling == "warped":
            warp.check_timesteps(schedule.T)
            self.warp = warp.empty_curve()

    # ------------------------------------------------------------ state
    def save(self) -> None:
        """state/ first, then the EMA weights: a crash in between leaves a resumable run."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        optim = self.optimizer.state_dict()
        for index, values in optim["state"].items():
            tensors |= {f"optim.{index}.{k}": v for k, v in values.items()}
        if self.warp is not None:
            tensors["warp"] = self.warp
        meta = {"step": self.step, "param_groups": optim["param_groups"], "settings": asdict(self.settings)}
        write_state(self.run, tensors, meta)
        write_weights(self.run, self.ema, warp=self.warp)

    def restore(self) -> None:
        tensors, meta = read_state(self.run)

        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        try:
            self.model.load_state_dict(part("model."))
            self.ema.load_state_dict(part("ema."))
            states: dict[int, dict] = {}
            for key, value in part("optim.").items():
                index, name = key.split(".", 1)
                states.setdefault(int(index), {})[name] = value
            self.optimizer.load_state_dict({"state": states, "param_groups": meta["param_groups"]})
            if self.warp is not None and "warp" in tensors:  # else the run trained unwarped until now
                self.warp = tensors["warp"].double()
        except (RuntimeError, ValueError, KeyError) as e:
            raise DiffkitError(f"{self.run}: trainer state does not fit the model ({str(e).splitlines()[0]})") from None
        self.step = int(meta["step"])
        if self.world.main:
            self.trim_metrics()

    def trim_metrics(self) -> None:
        """Drop metric lines past the checkpoint: those steps are about to be trained again."""
        path = self.run / METRICS
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line).get("step", 0) <= self.step]
            path.write_text("".join(line + "\n" for line in kept))

    # ------------------------------------------------------------ one step
    def diffusion_loss(self, model, x0: Tensor, kwargs: dict, t: Tensor, generator: torch.Generator,
                       shard: tuple[int, int]) -> dict[str, Tensor]:
        return training_losses(self.schedule, model, x0, prediction=self.prediction, variance=self.variance,
                               weighting=self.settings.weighting, bits=self.settings.bits, t=t,
                               generator=generator, model_kwargs=kwargs, shard=shard, self_cond=self.self_cond)

    def draw_timesteps(self, examples: int, generator: torch.Generator) -> Tensor:
        """This process's slice of timesteps for a micro-batch of `examples` per process, drawn for the
        global batch (as training_losses would draw them, first from the generator)."""
        rank, processes = self.world.shard
        schedule = dataclasses.replace(self.schedule, warp=self.warp)
        return sample_timesteps(schedule, examples * processes, generator, self.device,
                                self.settings.timestep_sampling)[rank::processes]

    def train_step(self, batch_at: BatchAt) -> dict:
        s = self.settings
        generator = seeded(s.seed, NOISE, self.step, self.device)
        torch.manual_seed(derived_seed(s.seed, DROPOUT, self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = s.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total, seen = 0.0, warp.empty_curve()
        for micro in range(s.accumulate):
            try:
                x0, kwargs = batch_at(self.step, micro)
            except DiffkitError as e:  # the data failed (gone, unreadable): keep every step trained so far
                self._checkpoint()
                raise Resumable(f"{e}; checkpoint saved at step {self.step}") from None
            x0 = self._to_device(x0)
            kwargs = {k: self._to_device(v) for k, v in kwargs.items()}
            if self.channels_last and x0.dim() == 4:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                t = self.draw_timesteps(x0.shape[0], generator)
                losses = self.objective(self.forward, x0, kwargs, t, generator, self.world.shard)
            loss = losses["loss"].mean() / s.accumulate
            loss.backward()
            total += loss.item()
            if self.warp is not None:
                seen += warp.step_totals(t, losses["x0_error"], self.schedule.T)
        # The loss of the global batch, the same on every process, so that all of them skip alike.
        total = distributed.mean(total, self.world)
        record = {"step": self.step + 1, "loss": total, "lr": s.lr_at(self.step)}
        if not math.isfinite(total):
            self.skipped += 1
            if self.skipped >= s.max_bad_steps:
                raise DiffkitError(f"{self.skipped} steps in a row had a non-finite loss; stopped at step "
                                   f"{self.step} (the last checkpoint is intact; try a lower learning rate)")
            record["skipped"] = True
        else:
            self.skipped = 0
            record["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip).item()
            self.optimizer.step()
            update_ema(self.ema, self.model, self.step, s.ema_decay)
        if self.warp is not None and math.isfinite(total):
            self.warp = warp.updated(self.warp, distributed.total(seen, self.world))
        self.step += 1
        return record

    def _to_device(self, x: Tensor) -> Tensor:
        """Host batches go through pinned memory to CUDA, so the copy overlaps the step."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    # ------------------------------------------------------------ the loop
    def fit(self, batch_at: BatchAt, *, on_step: Callable[[dict], None] | None = None,
            preview: Callable[[nn.Module, int], None] | None = None) -> nn.Module:
        """Train up to settings.steps, checkpointing and previewing into the run; returns the EMA model."""
        s = self.settings
        self.model.train()
        start, first = time.perf_counter(), self.step
        metrics = open(self.run / METRICS, "a") if self.run is not None and self.world.main else None
        try:
            with stop_requests() as stop:
                while self.step < s.steps:
                    # A signal may reach only some processes: all stop at the same step.
                    if distributed.any_true(stop[0] is not None, self.world):
                        self._checkpoint()
                        raise Interrupted(stop[0] or signal.SIGTERM,
                                          f"checkpoint saved at step {self.step}")
                    record = self.train_step(batch_at)
                    record["it_s"] = (self.step - first) / (time.perf_counter() - start)
                    if metrics is not None and (self.step % s.log_every == 0 or self.step == s.steps):
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                    if on_step is not None:
                        on_step(record)
                    if self.step % s.checkpoint_every == 0 or self.step == s.steps:
                        self._checkpoint()
                    if preview is not None and s.preview_every and self.step % s.preview_every == 0 and self.world.main:
                        preview(self.ema, self.step)
        finally:
            if metrics is not None:
                metrics.close()
        return self.ema

    def _checkpoint(self) -> None:
        if self.run is not None and self.world.main:
            self.save()

