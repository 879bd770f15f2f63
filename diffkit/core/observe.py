"""Observations y = A(x_0) + σ_y·n and the methods that condition any sampler on them.

An operator acts on the trailing axes of a batch [B, C, ...] (or [B, D]): `op(x)` is A, `op.adjoint(y)`
Aᵀ, `op.pinv(y)` A⁺, and `op.solve(v, r2, s2)` is Aᵀ(r²AAᵀ + s²I)⁻¹v, the gain of a Gaussian
p(x_0 | x_t) = N(x̂_0, r²I) conditioned on y (closed form where AAᵀ is diagonal, conjugate gradients
otherwise). A method turns a denoiser into one that answers with x̂_0 consistent with y (and ε̂ re-derived
from it), or puts back the observed part after each step; either way every sampler takes it unchanged.
`smc` instead weighs and resamples groups of rows as particles, on ddpm's steps.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from diffkit.core.diffusion import eps_from_x0, interpolate_log_variance, posterior, randn_like
from diffkit.core.samplers import AfterStep, Denoise, Denoised


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-example inner product, shaped [B, 1, ...] to scale a batch."""
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.dim() - 1)))


def conjugate_gradients(apply: Callable[[Tensor], Tensor], v: Tensor, iterations: int) -> Tensor:
    """u with apply(u) = v for a symmetric positive definite `apply`, each example of the batch on its own
    (Hestenes & Stiefel 1952); stops early once every residual is 1e-7 of its right-hand side."""
    u = torch.zeros_like(v)
    residual, direction = v.clone(), v.clone()
    rr, target = _dot(v, v), 1e-14 * _dot(v, v)
    for _ in range(iterations):
        product = apply(direction)
        step = rr / _dot(direction, product).clamp(min=1e-30)
        u, residual = u + step * direction, residual - step * product
        rr_next = _dot(residual, residual)
        if (rr_next <= target).all():
            break
        direction, rr = residual + rr_next / rr.clamp(min=1e-30) * direction, rr_next
    return u


class Operator(ABC):
    """A linear map; subclasses give A, Aᵀ and A⁺, and a closed-form `solve` where AAᵀ is diagonal."""

    @abstractmethod
    def __call__(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def adjoint(self, y: Tensor) -> Tensor: ...

    @abstractmethod
    def pinv(self, y: Tensor) -> Tensor: ...

    def gram_inverse(self, v: Tensor, r2: float, s2: float) -> Tensor:
        """(r²AAᵀ + s²I)⁻¹v by conjugate gradients (s² = 0: A of full row rank); subclasses give it in
        closed form, for s² = 0 on A's range."""
        return conjugate_gradients(lambda u: r2 * self(self.adjoint(u)) + s2 * u, v, 50)

    def solve(self, v: Tensor, r2: float, s2: float) -> Tensor:
        """Aᵀ(r²AAᵀ + s²I)⁻¹v; with s² = 0 it is A⁺v / r² (A of full row rank)."""
        return self.pinv(v) / r2 if s2 == 0 else self.adjoint(self.gram_inverse(v, r2, s2))

    def quadratic(self, v: Tensor, r2: float, s2: float) -> Tensor:
        """vᵀ(r²AAᵀ + s²I)⁻¹v per example, v in A's range: the exponent of a Gaussian likelihood of y."""
        return (v * self.gram_inverse(v, r2, s2)).flatten(1).sum(1)


class OrthogonalProjection(Operator):
    """A = Aᵀ = A² : its own adjoint and pseudo-inverse, and AAᵀ = A is the identity on its range."""

    def adjoint(self, y):
        return self(y)

    def pinv(self, y):
        return self(y)

    def gram_inverse(self, v, r2, s2):
        return self(v) / (r2 + s2)


@dataclass(frozen=True, eq=False)
class Identity(OrthogonalProjection):
    """y = x: denoising."""

    def __call__(self, x):
        return x


@dataclass(frozen=True, eq=False)
class Mask(OrthogonalProjection):
    """y = keep ⊙ x with keep 1 where observed, 0 where not (broadcastable to x). Inpainting is this
    operator."""

    keep: Tensor

    def __call__(self, x):
        return x * self.keep.to(x)


@dataclass(frozen=True, eq=False)
class AveragePool(Operator):
    """Means over blocks of `factors` along the last len(factors) axes: down-sampling. A⁺ repeats each
    value over its block (AAᵀ = I / block size)."""

    factors: tuple[int, ...]

    @property
    def block(self) -> int:
        return math.prod(self.factors)

    def __call__(self, x):
        lead, axes = x.shape[: x.dim() - len(self.factors)], x.shape[x.dim() - len(self.factors):]
        split = [d for size, f in zip(axes, self.factors) for d in (size // f, f)]
        means = x.reshape(*lead, *split)
        return means.mean(dim=tuple(range(len(lead) + 1, len(lead) + 2 * len(self.factors), 2)))

    def pinv(self, y):
        for i, f in enumerate(self.factors):
            y = y.repeat_interleave(f, dim=y.dim() - len(self.factors) + i)
        return y

    def adjoint(self, y):
        return self.pinv(y) / self.block

    def gram_inverse(self, v, r2, s2):
        return v / (r2 / self.block + s2)


@dataclass(frozen=True, eq=False)
class ChannelMix(Operator):
    """y = Σ_c w_c x_c over axis 1: colour to grey with luminance weights."""

    weights: tuple[float, ...]

    def _w(self, like: Tensor) -> Tensor:
        return torch.tensor(self.weights, dtype=like.dtype, device=like.device).reshape(1, -1, *([1] * (like.dim() - 2)))

    def __call__(self, x):
        return (x * self._w(x)).sum(1, keepdim=True)

    def adjoint(self, y):
        return y * self._w(y)

    def pinv(self, y):
        return self.adjoint(y) / sum(w * w for w in self.weights)

    def gram_inverse(self, v, r2, s2):
        return v / (r2 * sum(w * w for w in self.weights) + s2)


def _mirrored_filter(x: Tensor, axes: int, gain: Callable[[int, bool], Tensor],
                     response: Callable[[Tensor], Tensor]) -> Tensor:
    """Filter the last `axes` axes with half-sample symmetric boundaries (scipy's 'reflect'): mirror each to
    twice its length, multiply the spectrum by response(G), G the product of the axes' gains (`gain(n,
    last)`: real and even, rfft bins on the last axis), and keep the first half of each. For a real even
    response the operator is symmetric (the DCT-II diagonalises it), so it is its own adjoint."""
    dims = list(range(x.dim() - axes, x.dim()))
    sizes = [2 * x.shape[d] for d in dims]
    for d in dims:
        x = torch.cat([x, x.flip(d)], d)
    total = None
    for i, n in enumerate(sizes):
        g = gain(n, i == axes - 1).reshape(-1, *([1] * (axes - 1 - i)))
        total = g if total is None else total * g
    spectrum = torch.fft.rfftn(x, dim=dims) * response(total).to(x.device)
    out = torch.fft.irfftn(spectrum, s=sizes, dim=dims)
    for d, n in zip(dims, sizes):
        out = out.narrow(d, 0, n // 2)
    return out.to(x.dtype)


@dataclass(frozen=True, eq=False)
class GaussianBlur(Operator):
    """Separable Gaussian blur of standard deviation `sigma` (samples) along the last `axes` axes, with
    reflecting boundaries, diagonal in the cosine basis with gains G. A⁺ inverts each gain above `cutoff`
    and drops the rest (a truncated SVD); (r²AAᵀ + s²I)⁻¹ is 1 / (r²G² + s²) per frequency."""

    sigma: float
    axes: int = 2
    cutoff: float = 1e-6

    def _gain(self, length: int, half: bool) -> Tensor:
        """The kernel's real spectrum on a periodic grid of `length` (rfft bins if `half`)."""
        radius = min(math.ceil(4 * self.sigma), length // 2 - 1)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (offsets / self.sigma) ** 2)
        periodic = torch.zeros(length, dtype=torch.float64)
        periodic[offsets.long() % length] = kernel / kernel.sum()
        return (torch.fft.rfft(periodic) if half else torch.fft.fft(periodic)).real

    def _filter(self, x: Tensor, response: Callable[[Tensor], Tensor]) -> Tensor:
        return _mirrored_filter(x, self.axes, self._gain, response)

    def __call__(self, x):
        return self._filter(x, lambda g: g)

    adjoint = __call__

    def pinv(self, y):
        return self._filter(y, lambda g: torch.where(g.abs() > self.cutoff, 1 / g, torch.zeros_like(g)))

    def gram_inverse(self, v, r2, s2):
        if s2 == 0:  # the truncated SVD's range, as A⁺
            return self._filter(v, lambda g: torch.where(g.abs() > self.cutoff, 1 / (r2 * g * g), torch.zeros_like(g)))
        return self._filter(v, lambda g: 1 / (r2 * g * g + s2))


@dataclass(frozen=True, eq=False)
class LowPass(OrthogonalProjection):
    """Keep the frequencies below `fraction` of the sampling rate along the last axis, in the cosine basis
    of the reflected sequence (no wrap-around at its ends, so windows of a long recording agree). A
    band-limited recording is this held at the model's rate (decimating it further would lose nothing that
    a band-limited signal holds)."""

    fraction: float

    def _band(self, length: int, half: bool) -> Tensor:
        bins = torch.fft.rfftfreq(length, dtype=torch.float64) if half else torch.fft.fftfreq(length, dtype=torch.float64)
        return (bins.abs() < self.fraction).double()

    def __call__(self, x):
        return _mirrored_filter(x, 1, self._band, lambda g: g)


@dataclass(frozen=True, eq=False)
class Compose(Operator):
    """A = outer ∘ inner. A⁺ = inner⁺ ∘ outer⁺ meets AA⁺A = A whenever inner has full row rank (as every
    operator here but a mask does)."""

    outer: Operator
    inner: Operator

    def __call__(self, x):
        return self.outer(self.inner(x))

    def adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))

    def pinv(self, y):
        return self.inner.pinv(self.outer.pinv(y))


def compose(operators: list[Operator]) -> Operator:
    """The operators applied in list order (first to x first)."""
    op = operators[0] if operators else Identity()
    for nxt in operators[1:]:
        op = Compose(nxt, op)
    return op


def as_matrix(op: Operator, dim: int) -> Tensor:
    """The operator on vectors [B, dim] as a matrix [M, dim] (for the exact posteriors of core.mixture)."""
    return op(torch.eye(dim, dtype=torch.float64)).reshape(dim, -1).T


# ---------------------------------------------------------------- observations and the methods

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
    return vjp(DPS_STEP * obs.operator.adjoint(gap) / _dot(gap, gap).sqrt().clamp(min=1e-12))


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
    draw_on = generator.device if generator is not None else device
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
