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
                  order: int = 2, stochastic: bool = False) -> Tensor:
    """DPM-Solver++(2M / 3M), Lu et al. 2022, Alg. 2: a multistep exponential integrator in x̂_0; with
    `stochastic`, 2M for the reverse SDE instead (sde_update).

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
            if stochastic:
                x = sde_update(x, a, a_next, x0, history[:1], generator)
            else:
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

    Works on y = x/√ᾱ, where the ODE is dy/dσ = (y - x̂_0)/σ. Two model calls a step where the trapezoid
    helps (heun_corrects), else one: Euler's step in σ, which is DDIM's.
    """
    for i in range(len(grid) - 1):
        a, a_next = grid.ab[i], grid.ab[i + 1]
        d = denoise(x, grid.t[i])
        x0 = d.x0
        if not heun_corrects(a, a_next):
            x = after_step(math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * d.eps, a_next)
            continue
        s, s_next = math.sqrt((1 - a) / a), math.sqrt((1 - a_next) / a_next)
        y = x / math.sqrt(a)
        slope = (y - x0) / s
        y_euler = y + (s_next - s) * slope
        slope_next = (y_euler - denoise(y_euler * math.sqrt(a_next), grid.t[i + 1]).x0) / s_next
        x = after_step((y + (s_next - s) * 0.5 * (slope + slope_next)) * math.sqrt(a_next), a_next)
    return x


def heun_corrects(a: float, a_next: float) -> bool:
    """Whether heun's step between two levels takes its second call. Not to clean data (Euler lands on
    x̂_0), not from zero SNR (σ = ∞: only the first-order step is defined), and not across more than a
    decade of σ, where the trapezoid would weigh the end's ε̂ over half of a step whose ε̂ holds nearly
    still until its end (the squeezed grid's wide first step; measured: it moves the mixture's mode weights)."""
    if a_next >= 1 or a <= 0:
        return False
    ratio = math.sqrt((1 - a) / a * a_next / (1 - a_next))  # σ / σ', below 1 when inverting
    return 0.1 <= ratio <= 10


def sde_update(x: Tensor, a: float, a_next: float, x0: Tensor, history: list[tuple[Tensor, float]],
               generator) -> Tensor:
    """One DPM-Solver++(2M) SDE step (Lu et al. 2022, §5; the midpoint form of diffusers'
    sde-dpmsolver++): the same x̂_0 extrapolation as 2M, for the reverse SDE, whose fresh noise at every
    step lets later steps undo an earlier error, at the price of needing more steps than the ODE.

    x' = (σ'/σ) e^{-h} x + α'(1 - e^{-2h})(x̂_0 + D/2) + σ' √(1 - e^{-2h}) z, D = (x̂_0 - x̂_0,prev) / r.
    """
    h = half_log_snr(a_next) - half_log_snr(a)
    decay = -math.expm1(-2 * h)  # 1 - e^{-2h}
    drift = x0 + 0.5 * (x0 - history[0][0]) * h / history[0][1] if history else x0
    x = (math.sqrt((1 - a_next) / (1 - a)) * math.exp(-h)) * x + math.sqrt(a_next) * decay * drift
    return x + math.sqrt((1 - a_next) * decay) * randn_like(x, generator)


def unipc(denoise: Denoise, x: Tensor, grid: Grid, *, generator=None, after_step: AfterStep = _keep,
          order: int = 2) -> Tensor:
    """UniPC, Zhao et al. 2023: the multistep predictor UniP-`order` in x̂_0 and the corrector UniC,
    which refines each step with the model's answer at the level reached. That answer is also the next
    step's x̂_0, so the corrector costs no model call and raises the order by one (B(h) = e^h - 1, the
    paper's B2). The state the model is asked at is the predictor's; edits (`after_step`) apply to both.
    """
    history: list[tuple[Tensor, float]] = []  # (x̂_0, λ) of earlier levels, newest first
    x0 = denoise(x, grid.t[0]).x0
    for i in range(len(grid) - 1):
        a, a_next = grid.ab[i], grid.ab[i + 1]
        if a_next >= 1:  # the step to clean data is x̂_0 itself
            x = after_step(x0, a_next)
            continue
        used = history[: order - 1]
        predicted = after_step(unipc_update(x, a, a_next, x0, used), a_next)
        x0_next = denoise(predicted, grid.t[i + 1]).x0
        x = after_step(unipc_update(x, a, a_next, x0, used, x0_next), a_next)
        if a > 0:  # a zero-SNR level has λ = -∞: no finite offset to extrapolate from
            history = [(x0, half_log_snr(a))] + history[: order - 2]
        x0 = x0_next
    return x


def unipc_update(x: Tensor, a: float, a_next: float, x0: Tensor, history: list[tuple[Tensor, float]],
                 x0_next: Tensor | None = None) -> Tensor:
    """One UniPC step from ᾱ = a to a_next in x̂_0: the predictor from x̂_0 and `history` ((x̂_0, λ) of
    earlier levels, newest first), or with `x0_next` (x̂_0 at the predicted point) the corrector.

    x' = (σ'/σ) x + α'(1 - e^{-h}) x̂_0 - α' B(h) Σ_k ρ_k D_k, D_k = (x̂_0,k - x̂_0) / r_k, r_k the λ-offset
    of level k over h; the ρ solve Σ_k ρ_k r_k^(i-1) = i! φ_(i+1)(h) h / B(h) for i = 1..p.
    """
    lam, h = half_log_snr(a), half_log_snr(a_next) - half_log_snr(a)
    offsets = [(lam_k - lam) / h for _, lam_k in history]
    differences = [(x0_k - x0) / r for (x0_k, _), r in zip(history, offsets)]
    if x0_next is not None:
        offsets, differences = offsets + [1.0], differences + [x0_next - x0]
    B = -math.expm1(-h)  # B(h) = e^h - 1 in the paper's -h convention for x̂_0: 1 - e^{-h}
    linear = math.sqrt((1 - a_next) / (1 - a)) * x + math.sqrt(a_next) * B * x0
    if not differences:
        return linear
    rhos = _unipc_weights(offsets, h, B, predictor=x0_next is None)
    correction = sum(rho * d for rho, d in zip(rhos, differences))
    return linear + math.sqrt(a_next) * B * correction


def _unipc_weights(offsets: list[float], h: float, B: float, predictor: bool) -> list[float]:
    """The ρ of UniPC's order conditions, solved in float64. The predictor solves the first len(offsets)
    conditions with the points it has; with one difference both use ρ = 1/2 (the paper's choice)."""
    if len(offsets) == 1:
        return [0.5]
    count = len(offsets)
    hh = -h
    phi = math.expm1(hh) / hh - 1  # h φ_2 over hh, then each next φ by its recurrence
    rhs, factorial = [], 1.0
    for i in range(1, count + 1):
        rhs.append(phi * factorial / -B)
        factorial *= i + 1
        phi = phi / hh - 1 / factorial
    matrix = torch.tensor([[r ** (i - 1) for r in offsets] for i in range(1, count + 1)], dtype=torch.float64)
    return torch.linalg.solve(matrix, torch.tensor(rhs, dtype=torch.float64)).tolist()


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpm++2m": partial(dpm_solver_pp, order=2),
    "dpm++3m": partial(dpm_solver_pp, order=3),
    "heun": heun,
    "unipc": unipc,
    "dpm++2m-sde": partial(dpm_solver_pp, order=2, stochastic=True),
}


def model_calls(sampler: str, grid: Grid) -> int:
    """The model calls `sampler` makes walking `grid`: one a step, plus heun's corrections, plus unipc's
    first (its corrector's call is the next step's, and its step to clean data reuses the last)."""
    steps = list(zip(grid.ab, grid.ab[1:]))
    if sampler == "heun":
        return sum(1 + heun_corrects(a, b) for a, b in steps)
    if sampler == "unipc":
        return 1 + sum(b < 1 for _, b in steps)
    return len(steps)


# Samplers that draw fresh noise at every step (ddim too at η > 0): no deterministic inversion.
STOCHASTIC = ("ddpm", "dpm++2m-sde")
