"""Observations y = A(x_0) + σ_y·n (A from core.operators) and the methods that condition any sampler on
them. A method turns a denoiser into one that answers with x̂_0 consistent with y (and ε̂ re-derived from
it), or puts back the observed part after each step; either way every sampler takes it unchanged. `smc`
instead weighs and resamples groups of rows as particles, on ddpm's steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from diffkit.core.diffusion import draw_device, eps_from_x0, interpolate_log_variance, posterior, randn_like
from diffkit.core.operators import Operator, conjugate_gradients, dot
from diffkit.core.samplers import AfterStep, Denoise, Denoised


Projection = Callable[[Tensor], Tensor]  # x̂_0 -> the nearest x̂_0 in the set the observation allows


@dataclass(frozen=True, eq=False)
class Observation:
    """y = A(x_0) + σ·n; `project` (optional) enforces what a non-linear part of the observation says
    (declipping: clipped samples lie beyond the threshold) on x̂_0 after the linear conditioning."""

    operator: Operator
    y: Tensor
    sigma: float = 0.0
    project: Projection | None = None

    def to(self, device, dtype) -> "Observation":
        return Observation(self.operator, self.y.to(device=device, dtype=dtype), self.sigma, self.project)

    def residual(self, x: Tensor) -> Tensor:
        """‖A(x) − y‖ per example: the consistency error."""
        return (self.operator(x) - self.y).flatten(1).norm(dim=1)


def beyond_threshold(clipped: Tensor, level: float) -> Projection:
    """Declipping's constraint: where the clipped input reached `level`, the true sample lies at or beyond
    it with the same sign; elsewhere nothing is said (the linear part, a mask, keeps the other samples)."""

    def project(x0: Tensor) -> Tensor:
        held = clipped.to(x0)
        sign = torch.sign(held) * (held.abs() >= level)
        return torch.where(sign != 0, sign * torch.maximum(sign * x0, torch.full_like(x0, level)), x0)

    return project


def posterior_variance(ab: float) -> float:
    """r_t² = σ_t² / (1 + σ_t²) with σ_t² = (1-ᾱ)/ᾱ: the variance of x_0 given x_t for unit-variance data
    (Song et al. 2023, ΠGDM, §3)."""
    return 1 - ab


def _with_x0(x0: Tensor, x: Tensor, ab: float, d: Denoised) -> Denoised:
    return Denoised(x0, eps_from_x0(x0, x, ab), d.var_frac)


def _finish(obs: Observation, x0: Tensor) -> Tensor:
    return obs.project(x0) if obs.project is not None else x0


def null_space(denoise: Denoise, obs: Observation, alphas_cumprod: list[float]) -> Denoise:
    """DDNM (Wang et al. 2023, eq. 10): x̂_0 ← x̂_0 − A⁺(A x̂_0 − y), the range of Aᵀ from y, the null space
    from the model, which meets a noiseless y exactly. With σ_y > 0 the range-space correction shrinks
    as DDNM+'s Σ_t does, here in closed form: x̂_0 + r²Aᵀ(r²AAᵀ + σ_y²I)⁻¹(y − A x̂_0), the mean of a
    Gaussian N(x̂_0, r_t²I) conditioned on y."""

    def denoised(x: Tensor, t: int) -> Denoised:
        d = denoise(x, t)
        ab = alphas_cumprod[t]
        gap = obs.y - obs.operator(d.x0)
        if obs.sigma == 0:
            x0 = d.x0 + obs.operator.pinv(gap)
        else:
            r2 = posterior_variance(ab)
            x0 = d.x0 + r2 * obs.operator.solve(gap, r2, obs.sigma**2)
        return _with_x0(_finish(obs, x0), x, ab, d)

    return denoised


VectorJacobian = Callable[[Tensor], Tensor]  # v -> Jᵀv, J = ∂x̂_0/∂x_t at the current step


def _through_network(correction: Callable[[Observation, Tensor, float, VectorJacobian], Tensor]):
    """A method that differentiates the network: x̂_0 ← x̂_0 + correction(obs, x̂_0, ᾱ, v ↦ Jᵀv), with J
    taken through the network by backward passes (J of an exact denoiser is symmetric, so Jᵀv = Jv)."""

    def method(denoise: Denoise, obs: Observation, alphas_cumprod: list[float]) -> Denoise:
        def denoised(x: Tensor, t: int) -> Denoised:
            ab = alphas_cumprod[t]
            with torch.enable_grad():
                x_in = x.detach().requires_grad_()
                d = denoise(x_in, t)
                vjp = lambda v: torch.autograd.grad(d.x0, x_in, v, retain_graph=True)[0]
                x0 = d.x0.detach() + correction(obs, d.x0.detach(), ab, vjp)
            return _with_x0(_finish(obs, x0), x, ab, Denoised(d.x0.detach(), d.eps.detach(), d.var_frac))

        return denoised

    return method


def _pigdm(obs: Observation, x0: Tensor, ab: float, vjp: VectorJacobian) -> Tensor:
    """ΠGDM (Song et al. 2023, eq. 8): p(y | x_t) ≈ N(A x̂_0, r_t²AAᵀ + σ_y²I), whose score Jᵀ Aᵀ(r²AAᵀ + σ²I)⁻¹
    (y − Ax̂_0) moves x̂_0 by (1-ᾱ)/√ᾱ times itself (Tweedie's formula)."""
    r2 = posterior_variance(ab)
    return vjp((1 - ab) / math.sqrt(ab) * obs.operator.solve(obs.y - obs.operator(x0), r2, obs.sigma**2))


DPS_STEP = 1.0


def _dps(obs: Observation, x0: Tensor, ab: float, vjp: VectorJacobian) -> Tensor:
    """DPS (Chung et al. 2023, Alg. 1): the step −ζ∇_{x_t}‖y − A x̂_0‖ (the paper's ζ_i = ζ / ‖y − A x̂_0‖ on
    the squared norm), here taken on x̂_0 so that every sampler carries it."""
    gap = obs.y - obs.operator(x0)
    return vjp(DPS_STEP * obs.operator.adjoint(gap) / dot(gap, gap).sqrt().clamp(min=1e-12))


COVARIANCE_ITERATIONS = 20


def _tmpd(obs: Observation, x0: Tensor, ab: float, vjp: VectorJacobian) -> Tensor:
    """TMPD (Boys et al. 2023): p(y | x_t) ≈ N(A x̂_0, A C Aᵀ + σ²I) with the network's own covariance of x_0
    given x_t, C = (1-ᾱ)/√ᾱ ∂x̂_0/∂x_t (Tweedie's second moment), so x̂_0 ← x̂_0 + C Aᵀ(A C Aᵀ + σ²I)⁻¹(y − A x̂_0):
    E[x_0 | x_t, y] exactly for Gaussian data, where ΠGDM assumes C = r²I inside the inverse. The inverse
    is conjugate gradients over products with C (one backward pass each)."""
    op, scale = obs.operator, (1 - ab) / math.sqrt(ab)
    cov = lambda v: scale * vjp(v)
    u = conjugate_gradients(lambda u: op(cov(op.adjoint(u))) + obs.sigma**2 * u, obs.y - op(x0), COVARIANCE_ITERATIONS)
    return cov(op.adjoint(u))


# Alternating projections converge linearly at a rate set by the angle between the two sets: fast for a
# pooling or a mask, slow for a channel mix whose pixels sit near the range's ends (colourising a nearly
# white pixel); the rounds stop once the range is met to within RANGE_TOLERANCE of the bound.
RANGE_ROUNDS = 500
RANGE_TOLERANCE = 1e-6


def within_range(obs: Observation, x: Tensor, bound: float, rounds: int = RANGE_ROUNDS) -> Tensor:
    """A sample moved into the set a noiseless observation allows that also lies within ±`bound`, by
    alternating projections between the box and {x : A x = y} (von Neumann's, which converge to a point
    of the intersection when it is not empty, as it is when the truth lies in both), ending on the affine
    set, so that A x = y holds while the range is met to within RANGE_TOLERANCE. It starts on the affine
    set: an `x` within the range need not meet y (windows cross-faded together)."""
    for round in range(rounds + 1):
        x = x + obs.operator.pinv(obs.y - obs.operator(x))
        if round == rounds or (x.abs() <= bound * (1 + RANGE_TOLERANCE)).all():
            break
        x = x.clamp(-bound, bound)
    return _finish(obs, x)


def put_back_observed(obs: Observation, generator: torch.Generator | None) -> AfterStep:
    """RePaint (Lugmayr et al. 2022, eq. 8), for any A: after each step, replace the observed part of x_t
    by a fresh draw of A x_t ~ √ᾱ y + √(1-ᾱ) A n, x ← x + A⁺(that − A x). For a mask this keeps the
    known region as a noised copy of the input; the noise σ_y of y is not modelled."""

    def after_step(x: Tensor, ab: float) -> Tensor:
        op = obs.operator
        if ab >= 1:
            target = obs.y
        else:
            target = math.sqrt(ab) * obs.y + math.sqrt(1 - ab) * op(randn_like(x, generator))
        x = x + op.pinv(target - op(x))
        return _finish(obs, x) if ab >= 1 else x

    return after_step


def _resample(log_w: Tensor, particles: int, generator: torch.Generator | None, every: bool) -> tuple[Tensor, Tensor]:
    """Ancestors for a batch of groups of `particles` rows, each group one particle system: where a group's
    effective sample size (Σw)²/Σw² falls below half of it, systematic resampling (one uniform per group,
    each particle kept ⌊Kw⌋ or ⌈Kw⌉ times); with `every`, independent draws by weight for every group, so
    that each row is on its own a draw from the group's weighted particles. Returns (indices into the
    batch, log-weights after)."""
    groups = log_w.reshape(-1, particles)
    groups = groups - groups.amax(1, keepdim=True)
    weights = groups.softmax(1)
    count, device = len(groups), log_w.device
    draw_on = draw_device(generator, device)
    keep = torch.arange(particles, device=device).expand(count, -1)
    if every:
        picked = torch.multinomial(weights.to(draw_on), particles, replacement=True, generator=generator).to(device)
        groups = torch.zeros_like(groups)
    else:
        low = 1 / weights.square().sum(1) < particles / 2
        if not low.any():
            return torch.arange(len(log_w), device=device), groups.flatten()
        points = (torch.rand((count, 1), generator=generator, device=draw_on, dtype=weights.dtype).to(device)
                  + keep) / particles
        spread = torch.searchsorted(weights.cumsum(1), points).clamp(max=particles - 1)
        picked = torch.where(low[:, None], spread, keep)
        groups = torch.where(low[:, None], torch.zeros_like(groups), groups)
    offsets = torch.arange(count, device=device)[:, None] * particles
    return (picked + offsets).flatten(), groups.flatten()


def particle_filter(denoise: Denoise, obs: Observation, alphas_cumprod: list[float], particles: int,
                    generator: torch.Generator | None) -> tuple[Denoise, AfterStep]:
    """MCGdiff (Cardoso et al. 2024) for any A and σ_y, on ddpm's steps: a sequential Monte Carlo sampler
    whose weighted particles tend to the exact posterior as they grow in number. The batch holds groups of
    `particles` rows that share their observation. At level ᾱ a particle's potential is the likelihood of
    y noised to that level, g(x) = N(A x; √ᾱ y, (1-ᾱ)AAᵀ + ᾱσ²I), which is p(y | x_0) at ᾱ = 1. Each step
    (the denoiser is the model's own, so the step's mean m and variance s² are ddpm's) draws x' from
    N(m, s²I) times g, a Gaussian conditioning by Matheron's rule on the step's own draw, and weights the
    particle by ∫N(x'; m, s²I) g(x') dx' over its previous potential; groups resample when their weights
    degenerate. The last step, to clean data, takes the conditioned mean with s² = 1-ᾱ, as `null_space`
    does, and draws every row anew by weight. Returns the recording denoiser and the after-step hook."""
    op, noise2 = obs.operator, obs.sigma**2
    follow = getattr(denoise, "follow", lambda rows: None)
    last: dict = {}
    log_w: Tensor | None = None

    def recorded(x: Tensor, t: int) -> Denoised:
        d = denoise(x, t)
        last.update(x=x, x0=d.x0, var_frac=d.var_frac, ab=alphas_cumprod[t])
        return d

    def log_potential(v: Tensor, ab: float, r2: float) -> Tensor:
        """log N(v; 0, r²AAᵀ + ᾱσ²I) up to a constant shared by the group; v = √ᾱ y − A(·)."""
        return -0.5 * op.quadratic(v, r2, ab * noise2).double()

    def after_step(x_next: Tensor, ab_next: float) -> Tensor:
        nonlocal log_w
        x, ab = last["x"], last["ab"]
        before = log_potential(math.sqrt(ab) * obs.y - op(x), ab, 1 - ab)
        if log_w is None:  # the first particles come from N(0, I), not yet weighted by their potential
            log_w = before
        p = posterior(ab, ab_next)
        mean = p.coef_x0 * last["x0"] + p.coef_xt * x
        final = ab_next >= 1
        s2 = 1 - ab if final else \
            math.exp(interpolate_log_variance(last["var_frac"], math.log(p.variance), math.log(p.beta)))
        target = math.sqrt(ab_next) * obs.y
        log_w = log_w - before + log_potential(target - op(mean), ab_next, s2 + 1 - ab_next)
        ancestors, log_w = _resample(log_w, particles, generator, every=final)
        follow(ancestors)  # a self-conditioned denoiser's last x̂_0 goes with its particle
        # Each row keeps the noise the step drew for it, so an ancestor's copies part at once.
        x_next, mean = mean[ancestors] + (x_next - mean), mean[ancestors]
        if final:
            return _finish(obs, mean + s2 * op.solve(obs.y - op(mean), s2, noise2))
        drawn = math.sqrt(1 - ab_next) * op(randn_like(x_next, generator)) + math.sqrt(ab_next * noise2) * randn_like(obs.y, generator)
        return x_next + s2 * op.solve(target - op(x_next) - drawn, s2 + 1 - ab_next, ab_next * noise2)

    return recorded, after_step


# Methods that act on x̂_0 (wrapping the denoiser); "repaint" acts on x_t after each step instead.
X0_METHODS = {"ddnm": null_space, "pigdm": _through_network(_pigdm), "dps": _through_network(_dps),
              "tmpd": _through_network(_tmpd)}
METHODS = ("ddnm", "pigdm", "tmpd", "dps", "repaint")
# ...and one whose rows are particles of a group, weighted and resampled together.
PARTICLE_METHODS = ("smc",)
