"""Samplers: each walks a Grid of noise levels from noisiest to cleanest with one shared signature,

    sampler(denoise, x, grid, *, generator, after_step) -> x

`denoise(x, t)` answers with the model's x̂_0 (and ε̂, and the learned-variance fraction) at integer
timestep t; `after_step(x, ab)` may edit the state once it has reached level ᾱ = ab (inpainting uses
it). Multistep memory is a local variable, so a sampler can be run again over any part of a grid.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from diffkit.core.diffusion import interpolate_log_variance, posterior, randn_like
from diffkit.core.schedule import Grid


class Denoised(NamedTuple):
    x0: Tensor
    eps: Tensor
    var_frac: Tensor | float  # where the reverse variance sits between β̃ (0) and β (1)


Denoise = Callable[[Tensor, int], Denoised]
AfterStep = Callable[[Tensor, float], Tensor]


def _keep(x: Tensor, ab: float) -> Tensor:
    return x


def ddpm(denoise: Denoise, x: Tensor, grid: Grid, *, generator=None, after_step: AfterStep = _keep) -> Tensor:
    """Ancestral sampling, Ho et al. 2020, Alg. 2, on a respaced grid (Nichol & Dhariwal 2021, §4)."""
    for i in range(len(grid) - 1):
        d = denoise(x, grid.t[i])
        p = posterior(grid.ab[i], grid.ab[i + 1])
        x = torch.add(d.x0 * p.coef_x0, x, alpha=p.coef_xt)
        if grid.ab[i + 1] < 1:  # the last step to clean data takes the mean
            log_var = interpolate_log_variance(d.var_frac, math.log(p.variance), math.log(p.beta))
            # A scalar for fixed variances, per element when learned: one fused pass either way.
            x = torch.addcmul(x, torch.exp(0.5 * torch.as_tensor(log_var)), randn_like(x, generator))
        x = after_step(x, grid.ab[i + 1])
    return x


def ddim(denoise: Denoise, x: Tensor, grid: Grid, *, generator=None, after_step: AfterStep = _keep,
         eta: float = 0.0) -> Tensor:
    """DDIM, Song et al. 2021, eq. 12: deterministic at η = 0, ancestral with variance β̃ at η = 1."""
    for i in range(len(grid) - 1):
        d = denoise(x, grid.t[i])
        a, a_next = grid.ab[i], grid.ab[i + 1]
        # (at η = 0 not evaluated: walked toward noise, as inversion does, its root would be of a negative)
        sigma = eta * math.sqrt((1 - a_next) / (1 - a) * (1 - a / a_next)) if eta else 0.0
        x = torch.add(d.x0 * math.sqrt(a_next), d.eps, alpha=math.sqrt(max(1 - a_next - sigma**2, 0.0)))
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)
        x = after_step(x, a_next)
    return x


def half_log_snr(ab: float) -> float:
    """λ = log(α/σ) with α = √ᾱ, σ = √(1-ᾱ); ±inf at the ends."""
    if ab <= 0:
        return -math.inf
    if ab >= 1:
        return math.inf
    return 0.5 * (math.log(ab) - math.log1p(-ab))


def dpm_solver_pp(denoise: Denoise, x: Tensor, grid: Grid, *, generator=None, after_step: AfterStep = _keep,
                  order: int = 2) -> Tensor:
    """DPM-Solver++(2M / 3M), Lu et al. 2022, Alg. 2: a multistep exponential integrator in x̂_0.

    Earlier steps' x̂_0 estimate its λ-derivatives; the step to clean data is x̂_0 itself.
    """
    history: list[tuple[Tensor, float]] = []  # (x̂_0, λ-step that followed it), newest first
    for i in range(len(grid) - 1):
        x0 = denoise(x, grid.t[i]).x0
        a, a_next = grid.ab[i], grid.ab[i + 1]
        if a_next >= 1:
            x = x0
        else:
            h = half_log_snr(a_next) - half_log_snr(a)
            x = multistep_update(x, a, a_next, x0, history[: order - 1])
            history = [(x0, h)] + history[: order - 2]
        x = after_step(x, a_next)
    return x


def multistep_update(x: Tensor, a: float, a_next: float, x0: Tensor, history: list[tuple[Tensor, float]]) -> Tensor:
    """One DPM-Solver++ step from ᾱ = a to a_next, of order 1 + len(history) (at most 3).

    x_next = (σ'/σ) x + α' ∫_0^h e^{u-h} x̂_0(λ+u) du with x̂_0 expanded as x̂_0 + u x̂_0' + u²/2 x̂_0'',
    the derivatives from divided differences of earlier x̂_0 (`history`: (x̂_0, step h) newest first).
    """
    h = half_log_snr(a_next) - half_log_snr(a)
    phi1 = -math.expm1(-h)  # ∫ e^{u-h} du / 1
    phi2 = 1 - phi1 / h  # ∫ e^{u-h} u du / h
    update = phi1 * x0
    if history:
        (x0_1, h_1) = history[0]
        r0 = h_1 / h
        d1 = (x0 - x0_1) / r0  # ≈ h x̂_0'
        if len(history) > 1:
            (x0_2, h_2) = history[1]
            r1 = h_2 / h
            d2 = (d1 - (x0_1 - x0_2) / r1) / (r0 + r1)  # ≈ h² x̂_0'' / 2
            d1 = d1 + d2 * r0
            phi3 = phi2 / h - 0.5  # -∫ e^{u-h} u²/2 du / h²
            # The term is -φ3 h² x̂_0'' = -2 φ3 d2. k-diffusion and diffusers use -φ3 d2, which leaves
            # their 3M second-order; tests/test_samplers.py checks the local error is O(h⁴).
            update = update - 2 * phi3 * d2
        update = update + phi2 * d1
    return math.sqrt((1 - a_next) / (1 - a)) * x + math.sqrt(a_next) * update


def heun(denoise: Denoise, x: Tensor, grid: Grid, *, generator=None, after_step: AfterStep = _keep) -> Tensor:
    """Heun's second-order method on the probability-flow ODE in σ = √((1-ᾱ)/ᾱ) (Karras et al. 2022, Alg. 1).

    Two model calls a step (one on the last step to clean data). Works on y = x/√ᾱ, where the ODE is
    dy/dσ = (y - x̂_0)/σ.
    """
    for i in range(len(grid) - 1):
        a, a_next = grid.ab[i], grid.ab[i + 1]
        x0 = denoise(x, grid.t[i]).x0
        if a_next >= 1:  # Euler to σ = 0 lands on x̂_0
            x = after_step(x0, a_next)
            continue
        s, s_next = math.sqrt((1 - a) / a), math.sqrt((1 - a_next) / a_next)
        y = x / math.sqrt(a)
        slope = (y - x0) / s
        y_euler = y + (s_next - s) * slope
        slope_next = (y_euler - denoise(y_euler * math.sqrt(a_next), grid.t[i + 1]).x0) / s_next
        x = after_step((y + (s_next - s) * 0.5 * (slope + slope_next)) * math.sqrt(a_next), a_next)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpm++2m": partial(dpm_solver_pp, order=2),
    "dpm++3m": partial(dpm_solver_pp, order=3),
    "heun": heun,
}

# Model calls per step where a sampler needs more than one; the last step to clean data needs one.
EVALS_PER_STEP = {"heun": 2}
