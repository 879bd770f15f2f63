"""Editing with any sampler. The edits `sample()` takes, each checked where it is made: a start
(`Noised`: SDEdit's partial noising; `Bridge`: deterministic inversion, the bridge between classes) and a
condition (`Inpaint`, `Restore`: an observation of core.observe and a method); then the algorithms they
run on the sampler's levels from outside, so no sampler knows of them: RePaint's resampling plan, the
starting timestep of a strength, inversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from torch import Tensor

from diffkit.core.observe import METHODS, PARTICLE_METHODS, Observation
from diffkit.core.operators import Mask
from diffkit.core.samplers import Denoise, Denoised, model_calls
from diffkit.core.schedule import Grid
from diffkit.core.spec import DEFAULT_METHOD
from diffkit.errors import DiffkitError, SettingError, choose

Map = Callable[[Tensor], Tensor]


def _unchanged(x: Tensor) -> Tensor:
    return x


def _check_strength(strength: float) -> None:
    if not 0 <= strength <= 1:
        raise SettingError("strength", f" must be in [0, 1], got {strength}")


def _check_plan(jump: int, resample: int) -> None:
    if jump < 1 or resample < 1:
        raise DiffkitError(f"jump and resample must be at least 1, got {jump} and {resample}")


@dataclass(frozen=True, eq=False)
class Noised:
    """Start from `x` noised to the level `strength` sets and regenerate (SDEdit, Meng et al. 2022):
    1 ignores `x`, 0 returns it unchanged."""
    x: Tensor
    strength: float

    def __post_init__(self):
        _check_strength(self.strength)

    def map(self, data: Map, mask: Map = _unchanged) -> "Noised":
        """This edit with its data through `data` (into the model's units, onto a device)."""
        return replace(self, x=data(self.x))


@dataclass(frozen=True, eq=False)
class Bridge:
    """Start from `x` inverted deterministically to the level `strength` sets (1: all the way) by
    `source_model(x, t, **source_kwargs)`, the network under the input's own condition (None: the network
    being sampled, under its own), then regenerate under the sampled condition (DDIB, Su et al. 2023). With
    ddim, `inversion_iterations` > 0 makes each inversion step implicit, so that decoding retraces it."""
    x: Tensor
    strength: float = 1.0
    source_model: Callable | None = None
    source_kwargs: dict | None = None
    inversion_iterations: int = 0

    def __post_init__(self):
        _check_strength(self.strength)
        if self.inversion_iterations < 0:
            raise SettingError("inversion_iterations", f" must be at least 0, got {self.inversion_iterations}")

    def map(self, data: Map, mask: Map = _unchanged) -> "Bridge":
        return replace(self, x=data(self.x))


@dataclass(frozen=True, eq=False)
class Restore:
    """Samples consistent with an observation y = A(x_0) + σ·n, by `method`: one of core.observe.METHODS
    (an x̂_0 correction, or "repaint": the observed part put back after each step) or "smc" (ddpm only: the
    batch as groups of `particles` rows sharing their observation). `resample` > 1 repeats every `jump`
    steps (RePaint) so the generated part agrees with the observed."""
    observation: Observation
    method: str = DEFAULT_METHOD
    particles: int = 1
    jump: int = 10
    resample: int = 1

    def __post_init__(self):
        choose("restoration method", self.method, METHODS + PARTICLE_METHODS)
        _check_plan(self.jump, self.resample)
        if self.particles < 1:
            raise SettingError("particles", f" must be at least 1, got {self.particles}")
        if self.method == "smc" and self.resample > 1:
            raise DiffkitError("the smc method weighs ddpm's own steps: it takes no resampling")

    def map(self, data: Map, mask: Map = _unchanged) -> "Restore":
        return self  # an observation is made in the model's units


@dataclass(frozen=True, eq=False)
class Inpaint:
    """Keep `known` where `mask` is 1 and generate where it is 0: the observation of a mask, by RePaint."""
    known: Tensor
    mask: Tensor
    jump: int = 10
    resample: int = 1

    def __post_init__(self):
        _check_plan(self.jump, self.resample)

    def map(self, data: Map, mask: Map = _unchanged) -> "Inpaint":
        return replace(self, known=data(self.known), mask=mask(self.mask))

    def restore(self) -> Restore:
        return Restore(Observation(Mask(self.mask), self.known * self.mask), "repaint", jump=self.jump,
                       resample=self.resample)


def resampling_plan(levels: int, jump: int, resample: int) -> list[tuple[int, int]]:
    """RePaint's schedule as (from, to) level pairs: to > from walks down with the sampler, to < from
    jumps back up by renoising. Each run of `jump` steps is done `resample` times (Lugmayr et al. 2022, §4.2);
    once (resample 1) it is one uninterrupted walk, so a multistep solver keeps its history."""
    _check_plan(jump, resample)
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
