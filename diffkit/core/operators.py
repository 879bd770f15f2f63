"""Linear operators A for observations y = A(x_0) + σ·n, acting on the trailing axes of a batch [B, C, ...]
(or [B, D]): `op(x)` is A, `op.adjoint(y)` Aᵀ, `op.pinv(y)` A⁺, `op.gram_inverse(v, r2, s2)`
(r²AAᵀ + s²I)⁻¹v and `op.solve(v, r2, s2)` Aᵀ(r²AAᵀ + s²I)⁻¹v, the gain of a Gaussian p(x_0 | x_t) =
N(x̂_0, r²I) conditioned on y (closed form where AAᵀ is diagonal, conjugate gradients otherwise).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-example inner product, shaped [B, 1, ...] to scale a batch."""
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.dim() - 1)))


def conjugate_gradients(apply: Callable[[Tensor], Tensor], v: Tensor, iterations: int) -> Tensor:
    """u with apply(u) = v for a symmetric positive (semi-)definite `apply`, each example of the batch on its own
    (Hestenes & Stiefel 1952); stops early once every residual is within 1e-7 of its right-hand side, or
    within ten rounding units where the dtype cannot resolve that (float32: 1.2e-6), which float32
    residuals would otherwise reach only by chance, running every iteration."""
    u = torch.zeros_like(v)
    residual, direction = v.clone(), v.clone()
    tolerance = max(1e-7, 10 * torch.finfo(v.dtype).eps)
    rr, target = dot(v, v), tolerance**2 * dot(v, v)
    for _ in range(iterations):
        product = apply(direction)
        curvature = dot(direction, product)
        # none along a direction the operator maps to zero (a clipped x̂_0's Jacobian has such): the
        # example keeps what it has solved, where dividing by that zero would make it infinite
        step = torch.where(curvature > 0, rr / curvature.clamp(min=1e-30), torch.zeros_like(rr))
        u, residual = u + step * direction, residual - step * product
        rr_next = dot(residual, residual)
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
