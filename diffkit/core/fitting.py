"""A grid fitted to the model: the timesteps at which a deterministic sampler with a given number of steps
ends closest to the ODE's own solution from the same noise.

From the same starting noise, a deterministic sampler and the probability-flow ODE it discretises map
each draw to one output each; the mean squared distance between the two bounds the squared Wasserstein-2
distance between their output distributions. So the fit asks the model itself (not a rule tuned on other
problems) where its levels should go: it solves the ODE finely once, then moves each level of the grid in
log σ, one at a time, keeping a move only when the sampler's outputs come closer to that solution.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from diffkit.core.samplers import STOCHASTIC
from diffkit.core.schedule import Schedule, strictly_descending, timesteps, timesteps_at
from diffkit.core.spec import SamplingSpec
from diffkit.errors import SettingError

# The ODE's solution the grid is fitted to: the same sampler over this many levels evenly spaced in log σ,
# where every sampler of diffkit has converged to well below the error of any 10-40 step grid.
REFERENCE_STEPS = 100
# The fixed spacings the search starts from (the best of them on this model), so that it never ends
# worse than they are on the fitting draws.
START_SPACINGS = ("logsnr", "squeezed", "karras", "trailing")


def check_fittable(sampling: SamplingSpec) -> None:
    """A grid is fitted along the deterministic path from each noise draw: a sampler that draws fresh noise
    at every step has no such path."""
    if sampling.sampler in STOCHASTIC or (sampling.eta or 0) > 0:
        raise SettingError("spacing", f" fitted needs a deterministic sampler (ddim with η 0, dpm++2m, dpm++3m, "
                           f"heun or unipc), not {sampling.sampler}" + (f" with η {sampling.eta}" if sampling.eta else ""))


def _to_timesteps(log_sigmas: Tensor, levels: list[float], top: int) -> tuple[int, ...]:
    """Levels in log σ as a grid: the timesteps at or above them, the first at `top`, strictly descending."""
    return tuple(strictly_descending(timesteps_at(log_sigmas, torch.tensor(levels, dtype=torch.float64), top).tolist()))


def clearly_better(errors: Tensor, than: Tensor) -> bool:
    """Whether per-draw errors are lower than `than`'s on the same draws by more than twice the standard
    error of their difference. A few draws near the border between two modes, which one grid carries
    across and the other not, make the whole of a small difference; a move they alone favour is noise."""
    difference = (errors - than).double()
    return difference.mean().item() < -2 * difference.std().item() / len(difference) ** 0.5


def fit_timesteps(draw: Callable[[SamplingSpec], Tensor], schedule: Schedule, sampling: SamplingSpec, *,
                  sweeps: int = 2, progress: Callable[[int, int], None] | None = None) -> tuple[int, ...]:
    """The `sampling.steps` timesteps (from T-1 down) at which `sampling`'s deterministic sampler, drawing
    with `draw(spec)` (the caller's sample() on its model, a fixed batch and `spec`'s seed), comes closest in
    mean squared distance to the same draw over REFERENCE_STEPS levels.

    The search starts from the best of START_SPACINGS, then for `sweeps` rounds tries moving each level
    towards each neighbour by a fraction of the gap (a half, then a quarter, ...) in log σ, keeping a move
    only when it lowers the distance clearly (clearly_better); `progress(done, total)` hears of each draw.
    """
    check_fittable(sampling)
    if sampling.steps >= schedule.T:
        raise SettingError("steps", f" {sampling.steps}: a fitted grid needs fewer steps than the schedule's {schedule.T}")
    top, log_sigmas = schedule.T - 1, -0.5 * schedule.log_snr  # log σ, rising with t
    moves = sweeps * 2 * (sampling.steps - 1)
    total, done = 1 + len(START_SPACINGS) + moves, 0

    def drawn(spec: SamplingSpec) -> Tensor:
        nonlocal done
        x = draw(spec).double()
        done += 1
        if progress is not None:
            progress(done, total)
        return x

    solution = drawn(dataclasses.replace(sampling, steps=REFERENCE_STEPS, spacing="logsnr", timesteps=None))
    tried: dict[tuple[int, ...], Tensor] = {}

    def errors(ts: tuple[int, ...]) -> Tensor:
        """Each draw's squared distance to its solution, per number."""
        if ts not in tried:
            x = drawn(dataclasses.replace(sampling, spacing="fitted", timesteps=ts))
            tried[ts] = (x - solution).square().flatten(1).mean(1)
        return tried[ts]

    best = min((tuple(timesteps(schedule, sampling.steps, spacing)) for spacing in START_SPACINGS),
               key=lambda ts: errors(ts).mean().item())
    levels = log_sigmas[list(best)].tolist()
    floor = log_sigmas[0].item()  # the last level may move down to t = 0
    fraction = 0.5
    for _ in range(sweeps):
        for i in range(1, sampling.steps):
            for neighbour in (levels[i - 1], levels[i + 1] if i + 1 < len(levels) else floor):
                moved = levels[:i] + [levels[i] + fraction * (neighbour - levels[i])] + levels[i + 1:]
                candidate = _to_timesteps(log_sigmas, moved, top)
                if clearly_better(errors(candidate), errors(best)):
                    best, levels = candidate, moved
        fraction /= 2
    if progress is not None:
        progress(total, total)  # draws a revisited grid did not need
    return best
