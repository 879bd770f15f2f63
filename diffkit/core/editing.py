"""Editing with any sampler: RePaint's resampling plan (for inpainting and every observation of
core.observe), partial noising (SDEdit) and deterministic inversion (the bridge between classes). All
work on the sampler's levels from outside, so no sampler knows of them.
"""

from __future__ import annotations

import math

from torch import Tensor

from diffkit.core.samplers import Denoise, Denoised, model_calls
from diffkit.core.schedule import Grid
from diffkit.errors import DiffkitError


def resampling_plan(levels: int, jump: int, resample: int) -> list[tuple[int, int]]:
    """RePaint's schedule as (from, to) level pairs: to > from walks down with the sampler, to < from
    jumps back up by renoising. Each run of `jump` steps is done `resample` times (Lugmayr et al. 2022, §4.2);
    once (resample 1) it is one uninterrupted walk, so a multistep solver keeps its history."""
    if jump < 1 or resample < 1:
        raise DiffkitError(f"jump and resample must be at least 1, got {jump} and {resample}")
    last = levels - 1
    if resample == 1:
        return [(0, last)]
    plan = []
    for start in range(0, last, jump):
        stop = min(start + jump, last)
        for repeat in range(resample):
            plan.append((start, stop))
            if repeat < resample - 1:
                plan.append((stop, start))
    return plan


def strength_to_timestep(strength: float, T: int) -> int:
    """The timestep at which partial noising of strength s in (0, 1] starts (Meng et al. 2022, SDEdit)."""
    if not 0 < strength <= 1:
        raise DiffkitError(f"strength must be in (0, 1], got {strength}")
    return max(math.ceil(strength * T) - 1, 0)


def _toward_noise(grid: Grid) -> Grid:
    """A sampler's grid (noisiest level first, clean data last) walked back: its model levels, cleanest first."""
    if grid.ab[-1] < 1:
        raise DiffkitError("inversion starts from clean data: the grid must end there")
    return Grid(tuple(reversed(grid.t[:-1])), tuple(reversed(grid.ab[:-1])))


def invert(solver, denoise: Denoise, x0: Tensor, grid: Grid) -> Tensor:
    """Clean data x_0 carried to the noisiest level of `grid` along the probability-flow ODE: a
    deterministic sampler (ddim at η = 0, dpm++2m/3m, heun) walked over the grid's model levels backward,
    which its update rules allow, as each step is the exact or extrapolated ODE solution between any two
    levels (DDIM inversion, Song et al. 2021, §4.3; the encoder of DDIB, Su et al. 2023). The first step,
    from clean data to the cleanest level, is DDIM's with x̂_0 = x_0 and ε̂ from the model at that level."""
    back = _toward_noise(grid)
    ab = back.ab[0]
    x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * denoise(x0, back.t[0]).eps
    return solver(denoise, x, back)


def inversion_calls(sampler: str, grid: Grid, iterations: int = 0) -> int:
    """The model calls invert makes with `sampler` (the first step's, then the sampler's walk back), or
    invert_ddim_exactly with `iterations` (1 + iterations a model level)."""
    back = _toward_noise(grid)
    return len(back) * (1 + iterations) if iterations else 1 + model_calls(sampler, back)


def invert_ddim_exactly(denoise: Denoise, x0: Tensor, grid: Grid, iterations: int) -> Tensor:
    """DDIM inversion that ddim's own decoding retraces: each step up takes the model's answer at its
    destination x', not at its start, solving the decoding step x = √ᾱ x̂_0(x') + √(1-ᾱ) ε̂(x') for x' by
    `iterations` fixed-point iterations (Pan et al. 2023, AIDI; Garibi et al. 2024, ReNoise). Each
    iteration holds one answer still and solves for x': ε̂ where x' is mostly data, x̂_0 where it is mostly
    noise (σ' > 1), as that is the answer that barely moves with x' there; holding ε̂ across a wide step
    into noise (the squeezed grid's first) contracts by only ~2% an iteration. Explicit inversion loses the
    input where the network's ODE is sensitive (a trained image model: some inputs come back tens of
    levels off); each iteration costs one call."""
    back = _toward_noise(grid)
    x, ab, t = x0, 1.0, back.t[0]  # from clean data, with ε̂ first taken at the cleanest level
    for t_next, ab_next in zip(back.t, back.ab):
        # the decoding step in x̂_0 form: x = keep·x' + mix·x̂_0(x')
        keep = math.sqrt((1 - ab) / (1 - ab_next))
        mix = math.sqrt(ab) - keep * math.sqrt(ab_next)

        def solve(d: Denoised) -> Tensor:
            if ab_next < 0.5 and ab < 1:  # (from clean data, keep = 0: x = x̂_0(x') has no such solution)
                return (x - mix * d.x0) / keep
            return math.sqrt(ab_next / ab) * (x - math.sqrt(1 - ab) * d.eps) + math.sqrt(1 - ab_next) * d.eps

        x_next = solve(denoise(x, t))
        for _ in range(iterations):
            x_next = solve(denoise(x_next, t_next))
        x, ab, t = x_next, ab_next, t_next
    return x
