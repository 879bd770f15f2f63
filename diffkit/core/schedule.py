"""Noise schedules: the table of ᾱ_t (alphas_cumprod) from which every other quantity follows.

Tables are float64: ᾱ_t spans ~1 to ~1e-5, and the variational bound takes logs of differences of
neighbouring entries, which float32 would round away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from diffkit.core import warp
from diffkit.core.spec import DEFAULT_SPACING
from diffkit.errors import DiffkitError, SettingError, choose

# β_t may not reach 1 except at a zero-terminal-SNR end: improved DDPM clips at 0.999 (Nichol & Dhariwal 2021, §3.2).
MAX_BETA = 0.999


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete Gaussian diffusion with T steps, defined by ᾱ_t for t = 0..T-1 (paper's t = 1..T)."""

    alphas_cumprod: torch.Tensor  # float64 [T]
    name: str = "custom"
    # A run's learned time warp (diffkit.core.warp: the x̂_0 error curve over t), when it trained with
    # warped timesteps: what the warped spacing places levels by.
    warp: torch.Tensor | None = None

    @property
    def T(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """ᾱ_{t-1}, with ᾱ before the first step equal to 1 (clean data)."""
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])

    @property
    def betas(self) -> torch.Tensor:
        return 1 - self.alphas_cumprod / self.alphas_cumprod_prev

    @property
    def log_snr(self) -> torch.Tensor:
        """λ_t = log(ᾱ_t / (1 - ᾱ_t)); -inf at a zero-terminal-SNR end."""
        return torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)


def _linear(T: int) -> torch.Tensor:
    # Ho et al. 2020 use β from 1e-4 to 0.02 for T = 1000; scaling by 1000/T keeps ᾱ_T alike for any T.
    scale = 1000 / T
    betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64).clamp(max=MAX_BETA)
    return torch.cumprod(1 - betas, 0)


def _betas_to_alphas_cumprod(alpha_bar: Callable[[torch.Tensor], torch.Tensor], T: int) -> torch.Tensor:
    """Discretise a continuous ᾱ(τ), τ in [0, 1], with β clipped at MAX_BETA (improved DDPM, eq. 17)."""
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    a = alpha_bar(tau)
    betas = (1 - a[1:] / a[:-1]).clamp(max=MAX_BETA)
    return torch.cumprod(1 - betas, 0)


def _cosine(T: int, s: float = 0.008) -> torch.Tensor:
    # Nichol & Dhariwal 2021, eq. 17: the offset s keeps β_1 from being vanishingly small.
    f = lambda tau: torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    return _betas_to_alphas_cumprod(lambda tau: f(tau) / f(tau.new_zeros(())), T)


def _sigmoid(T: int, start: float = -3.0, end: float = 3.0, tau_scale: float = 1.0) -> torch.Tensor:
    # Chen 2023, "On the importance of noise scheduling for diffusion models", Alg. 1.
    v_start = torch.sigmoid(torch.tensor(start / tau_scale, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau_scale, dtype=torch.float64))
    f = lambda tau: (v_end - torch.sigmoid((tau * (end - start) + start) / tau_scale)) / (v_end - v_start)
    return _betas_to_alphas_cumprod(f, T)


def _sqrt(T: int, s: float = 1e-4) -> torch.Tensor:
    # Li et al. 2022 (Diffusion-LM), §4.2: noise rises fast at first, which suits embeddings of tokens.
    return _betas_to_alphas_cumprod(lambda tau: 1 - torch.sqrt(tau + s), T)


def _flow(T: int) -> torch.Tensor:
    # Rectified flow's path x_τ = (1-τ)x_0 + τε (Liu et al. 2023; Esser et al. 2024) as a variance-
    # preserving one: x_t = x_τ / √((1-τ)² + τ²) has √ᾱ = (1-τ) / √((1-τ)² + τ²). τ = t/T for t = 1..T,
    # so that it ends at zero SNR (pure noise), as the flow does.
    tau = torch.arange(1, T + 1, dtype=torch.float64) / T
    return (1 - tau) ** 2 / ((1 - tau) ** 2 + tau**2)


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": _linear,
    "cosine": _cosine,
    "sigmoid": _sigmoid,
    "sqrt": _sqrt,
    "flow": _flow,
}


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale √ᾱ so that ᾱ_T = 0 and ᾱ_1 is unchanged (Lin et al. 2024, Alg. 1)."""
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    return root**2


def make_schedule(name: str, T: int = 1000, *, zero_terminal_snr: bool = False) -> Schedule:
    """Build a named schedule with T steps, optionally rescaled to zero terminal SNR."""
    choose("schedule", name, SCHEDULES)
    if T < 2:
        raise DiffkitError(f"a schedule needs at least 2 steps, got T={T}")
    alphas_cumprod = SCHEDULES[name](T)
    if zero_terminal_snr:
        alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
    return Schedule(alphas_cumprod, name)


class Grid(NamedTuple):
    """The noise levels a sampler visits, from noisiest to cleanest.

    `t[i]` is the integer timestep the model is queried at and `ab[i]` its ᾱ as a Python float (double);
    a final `t[-1] = None` with `ab[-1] = 1.0` is clean data. A sampler walks from level 0 to the last.
    """

    t: tuple
    ab: tuple

    def __len__(self) -> int:
        return len(self.t)

    def segment(self, start: int, stop: int) -> "Grid":
        """Levels start..stop inclusive: a sampler run over it ends at level `stop`."""
        return Grid(self.t[start : stop + 1], self.ab[start : stop + 1])


SPACINGS = ("trailing", "leading", "linspace", "karras", "logsnr", "squeezed", "warped", "fitted")
LOG_SIGMA_MAX = math.log(160.0)
# Above σ ≈ 5, x_t of unit-scale continuous data is noise to within a few percent and x̂_0 barely moves
# with the level: one wide step there costs less error than any step spent below. So the squeezed
# spacing counts log σ up there at a fraction of its length that grows with the budget, (steps / 40)²,
# in full from 40 steps on: 10 steps go from σ_max to σ ≈ 3 at once, and the grids still refine evenly
# as steps grow. Data whose points stay apart far above σ = 5 are not quiet there: token embeddings in
# 64-D lie ~9 apart, and mixtures of tight modes are decided at σ of a few units, which the first step
# jumps past; on bench/samplers.py's suite it is far from the best grid as often as it is the best, so it
# is an option, not the default.
QUIET_LOG_SIGMA, QUIET_FULL_STEPS = math.log(5.0), 40


def _squeeze_quiet(log_sigma: torch.Tensor, slope: float) -> torch.Tensor:
    return log_sigma - (1 - slope) * (log_sigma - QUIET_LOG_SIGMA).clamp(min=0)


def _unsqueeze_quiet(u: torch.Tensor, slope: float) -> torch.Tensor:
    return u + (1 / slope - 1) * (u - QUIET_LOG_SIGMA).clamp(min=0)


def timesteps(schedule: Schedule, steps: int, spacing: str = DEFAULT_SPACING, t_start: int | None = None,
              fitted: tuple[int, ...] | None = None) -> list[int]:
    """`steps` distinct integer timesteps in t_start..0, descending (Lin et al. 2024, Table 2; Karras et al. 2022, eq. 5).

    trailing starts at t_start and ends above 0; leading ends at 0 and starts below t_start; linspace
    spans both ends; karras, logsnr and squeezed space the noise level itself, dense at low noise where
    detail forms; warped spaces the run's learned time warp, dense where its x̂_0 error grows fastest;
    fitted takes the timesteps `fitted` to the model (diffkit.core.fitting) below t_start.
    """
    choose("timestep spacing", spacing, SPACINGS)
    t_start = schedule.T - 1 if t_start is None else t_start
    if steps < 1:
        raise DiffkitError(f"steps must be at least 1, got {steps}")
    n = t_start + 1
    steps = min(steps, n)
    i = torch.arange(steps, dtype=torch.float64)
    if spacing == "trailing":
        ts = torch.round(n - i * n / steps) - 1
    elif spacing == "leading":
        ts = torch.floor((steps - 1 - i) * n / steps)
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(t_start, 0, steps, dtype=torch.float64))
    elif spacing == "warped":
        ts = _warped_timesteps(schedule, steps, t_start)
    elif spacing == "fitted":
        ts = _fitted_timesteps(schedule, fitted, t_start)
    else:
        ts = _noise_spaced_timesteps(schedule, steps, t_start, spacing)
    return strictly_descending(ts.long().tolist())


def _noise_spaced_timesteps(schedule: Schedule, steps: int, t_start: int, spacing: str) -> torch.Tensor:
    """Timesteps nearest to levels evenly spaced in σ^(1/ρ) from σ_max to σ_min (karras, ρ = 7), or in log σ
    (logsnr, the DPM-Solver paper's choice), or so with the quiet stretch above σ ≈ 5 squeezed (squeezed),
    where σ = √((1-ᾱ)/ᾱ) grows with t."""
    ab = schedule.alphas_cumprod[: t_start + 1]
    log_sigmas = 0.5 * ((1 - ab).log() - ab.log())
    # A zero-terminal-SNR start has σ = ∞: space from the level below it and start there anyway.
    lo, hi = log_sigmas[0], log_sigmas[-1] if ab[-1] > 0 else log_sigmas[-2]
    # Past σ ≈ 160 (the linear schedule's σ at T = 1000) x_t is noise to within 1% of the data's scale.
    # Cosine's clipped tail shoots to σ ~ 10^4 in its last few timesteps; spacing up there would spend
    # 8 of 20 steps on t = 999..992. The first step still starts at t_start.
    hi = torch.clamp(hi, max=LOG_SIGMA_MAX)
    if spacing == "karras":
        rho = 7.0
        ramp = torch.linspace(1, 0, steps, dtype=torch.float64)
        target = rho * torch.log(torch.exp(lo / rho) + ramp * (torch.exp(hi / rho) - torch.exp(lo / rho)))
    else:
        # `steps` intervals down to σ_min, the model called at the top of each: the last call's x̂_0 is
        # the clean result, so no call goes to t = 0, where x_t is already the data to within σ_min.
        ramp = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
        slope = min(1.0, steps / QUIET_FULL_STEPS) ** 2 if spacing == "squeezed" else 1.0
        lo, hi = _squeeze_quiet(lo, slope), _squeeze_quiet(hi, slope)
        target = _unsqueeze_quiet(lo + ramp * (hi - lo), slope)
    return timesteps_at(log_sigmas, target, t_start).double()


def timesteps_at(log_sigmas: torch.Tensor, levels: torch.Tensor, top: int) -> torch.Tensor:
    """The timestep at or just above each level of log σ (`log_sigmas` rises with t), none above `top`,
    the first at `top`: a walk starts where it is asked to."""
    ts = torch.searchsorted(log_sigmas, levels).clamp(max=top)
    ts[0] = top
    return ts


def _warped_timesteps(schedule: Schedule, steps: int, t_start: int) -> torch.Tensor:
    """`steps` intervals evenly spaced in warped time from t_start down to t = 0, the model called at the
    top of each (as logsnr's: the last call's x̂_0 is the result)."""
    if schedule.warp is None:
        raise SettingError("spacing", " warped needs a run trained on warped timesteps")
    top = warp.t_to_warped(schedule.warp, t_start + 1, schedule.T)
    ramp = torch.linspace(top, 0, steps + 1, dtype=torch.float64)[:-1]
    ts = warp.warped_to_t(schedule.warp, ramp, schedule.T).floor().clamp(max=t_start)
    ts[0] = t_start
    return ts


def _fitted_timesteps(schedule: Schedule, fitted: tuple[int, ...] | None, t_start: int) -> torch.Tensor:
    """t_start, then the fitted levels below it: a walk that starts part-way (SDEdit, a bridge) keeps the
    levels the fit placed where it walks."""
    if fitted is None:
        raise SettingError("spacing", " fitted needs the timesteps fitted to the model "
                           "(diffkit.core.fitting.fit_timesteps; a run's pipeline fits and keeps them)")
    if fitted[0] >= schedule.T:
        raise SettingError("timesteps", f" must lie below the schedule's {schedule.T} steps, got {fitted[0]}")
    return torch.tensor([t_start] + [t for t in fitted if t < t_start], dtype=torch.float64)


def strictly_descending(ts: list[int]) -> list[int]:
    """Resolve collisions (several levels rounding to one integer): push each repeat down, then lift any
    that fell below 0 back up. With steps <= t_start + 1 this keeps every requested step."""
    for i in range(1, len(ts)):
        ts[i] = min(ts[i], ts[i - 1] - 1)
    ts[-1] = max(ts[-1], 0)
    for i in range(len(ts) - 2, -1, -1):
        ts[i] = max(ts[i], ts[i + 1] + 1)
    return ts


def make_grid(schedule: Schedule, steps: int, spacing: str = DEFAULT_SPACING, t_start: int | None = None,
              fitted: tuple[int, ...] | None = None) -> Grid:
    """The sampler's levels: `steps` model timesteps (see timesteps), then clean data."""
    ts = timesteps(schedule, steps, spacing, t_start, fitted)
    ab = schedule.alphas_cumprod[ts].tolist()
    return Grid(tuple(ts) + (None,), tuple(ab) + (1.0,))
