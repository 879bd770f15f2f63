"""The training loop every modality shares: AdamW, warm-up, gradient clipping, EMA of the weights."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from diffkit.core.diffusion import training_losses
from diffkit.core.schedule import Schedule


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weighting: str = "uniform"
    seed: int = 0


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    # Ramp the decay up from 0 so that short runs are not dominated by their random initial weights.
    decay = min(decay, (1 + step) / (10 + step))
    ema_params, params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_params, params, 1 - decay)


def train(model: nn.Module, batches: Iterator[Tensor], schedule: Schedule, settings: TrainSettings, *,
          prediction: str, variance: str, on_step: Callable[[dict], None] | None = None) -> nn.Module:
    """Train `model` on `batches` for `settings.steps` steps; returns the EMA copy used for sampling."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(settings.seed)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(settings.warmup, 1)))
    model.train()
    start = time.perf_counter()
    for step in range(settings.steps):
        x0 = next(batches).to(device)
        losses = training_losses(schedule, model, x0, prediction=prediction, variance=variance,
                                 weighting=settings.weighting, generator=generator)
        loss = losses["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        warmup.step()
        update_ema(ema, model, step, settings.ema_decay)
        if on_step is not None:
            on_step({"step": step + 1, "loss": loss.item(), "grad_norm": grad_norm.item(),
                     "lr": warmup.get_last_lr()[0], "it_s": (step + 1) / (time.perf_counter() - start)})
    return ema
