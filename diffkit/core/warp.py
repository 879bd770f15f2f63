"""Time warping (Dieleman et al. 2022, CDCD §3.3): training timesteps, and a sampler's levels, put where
the network's x̂_0 error grows fastest with the noise level (the objective's "x0_error": the squared
error, or for tokens the cross-entropy of their distribution, the error CDCD fits its warp to).

The best denoiser's error grows with t, from nothing where x_t is the data to the data's spread where
x_t is noise, and it grows fastest where x_t stops telling which data point it came from: where the
network decides what the data are (for text, which token). So the running error as a function of t,
made monotone and normalised, is a CDF: timesteps drawn from it, and levels evenly spaced in it, go
where the decisions are, for data of any scale or dimension. Half the density is uniform, to keep every
level trained (and the bound, which weighs them all, fed): a curve's steepest rise can hold most of its
mass in one bin (text's sqrt schedule, ~40% in its top 2% of t, where each sentence's shape is
decided), which starves the levels where tokens learn to agree with one another (builtin:weather's sky
and temperature); a fifth uniform left training seed 3 at 84% of samples grammatical, half at 88%.

The curve is two tensors of BINS running sums (error, examples) that decay by DECAY a step: plain
numbers, saved in the trainer's state for exact resume and beside the weights for sampling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffkit.errors import SettingError

BINS = 50
DECAY = 0.99          # a window of ~100 steps: the curve follows the network as it learns
UNIFORM_SHARE = 0.5   # of the timestep density, spread evenly over 0..T-1


def check_timesteps(T: int) -> None:
    """Every bin must hold a timestep, or the curve stays unseen (and the draws uniform) for good."""
    if T < BINS:
        raise SettingError("timesteps", f" must be at least {BINS}, got {T}, for warped timesteps")


def empty_curve() -> Tensor:
    """[2, BINS]: decayed sums of the per-example x̂_0 error and of the example counts, per bin of t."""
    return torch.zeros(2, BINS, dtype=torch.float64)


def step_totals(t: Tensor, errors: Tensor, T: int) -> Tensor:
    """This step's [2, BINS] sums (error, count) from per-example timesteps and x̂_0 errors."""
    bins = (t.detach().cpu().long() * BINS // T).clamp(max=BINS - 1)
    totals = empty_curve()
    totals[0].index_add_(0, bins, errors.detach().cpu().double())
    totals[1].index_add_(0, bins, torch.ones_like(bins, dtype=torch.float64))
    return totals


def updated(curve: Tensor, totals: Tensor) -> Tensor:
    return DECAY * curve + totals


def density(curve: Tensor) -> Tensor:
    """Probability of each bin of t: where the monotone mean error rises, plus the uniform share.
    Uniform until every bin has been seen."""
    errors, counts = curve
    uniform = torch.full((BINS,), 1 / BINS, dtype=torch.float64)
    if (counts <= 0).any():
        return uniform
    rising = torch.cummax(errors / counts, 0).values.diff(prepend=torch.zeros(1, dtype=torch.float64))
    if rising.sum() <= 0:
        return uniform
    return (1 - UNIFORM_SHARE) * rising / rising.sum() + UNIFORM_SHARE * uniform


def _cdf(curve: Tensor) -> Tensor:
    """The warped time at the BINS + 1 bin edges, 0 at t = 0 and 1 at t = T."""
    return torch.cat([torch.zeros(1, dtype=torch.float64), density(curve).cumsum(0)]).clamp(max=1.0)


def warped_to_t(curve: Tensor, u: Tensor, T: int) -> Tensor:
    """Continuous t in [0, T) at warped times u in [0, 1] (the CDF inverted, linear within a bin)."""
    cdf = _cdf(curve)
    b = (torch.searchsorted(cdf, u.double(), right=True) - 1).clamp(0, BINS - 1)
    within = (u.double() - cdf[b]) / (cdf[b + 1] - cdf[b]).clamp(min=1e-12)
    return ((b + within.clamp(0, 1)) * T / BINS).clamp(max=T - 1)


def t_to_warped(curve: Tensor, t: float, T: int) -> float:
    """The warped time of a continuous t in [0, T]."""
    cdf = _cdf(curve)
    position = min(max(t, 0.0), T) * BINS / T
    b = min(int(position), BINS - 1)
    return (cdf[b] + (position - b) * (cdf[b + 1] - cdf[b])).item()
