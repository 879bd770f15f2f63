"""Editing with any sampler: RePaint's resampling plan (for inpainting and every observation of
core.observe) and partial noising (SDEdit). Both work on the sampler's levels from outside, so no
sampler knows of them.
"""

from __future__ import annotations

import math

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
