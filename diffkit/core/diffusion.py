"""Gaussian diffusion math: forward process, parameterisations, reverse process, losses, bound.

Plain functions over a Schedule and tensors of any shape [B, ...]. The timestep index t runs 0..T-1
(the paper's 1..T); per-example tables are gathered in float64 and cast to the data's dtype.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from diffkit.core.schedule import Schedule
from diffkit.core.warp import warped_to_t
from diffkit.errors import DiffkitError, choose

PREDICTIONS = ("eps", "x0", "v", "flow")
VARIANCES = ("fixed_small", "fixed_large", "learned")
WEIGHTINGS = ("uniform", "min_snr")
TIMESTEP_SAMPLINGS = ("uniform", "logit-normal", "warped")


def gather(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """table[t] shaped [B, 1, ...] to broadcast against `like`, in its dtype and device."""
    out = table.to(like.device)[t].to(like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) (Ho et al. 2020, eq. 4)."""
    ab = gather(schedule.alphas_cumprod, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_step_sample(schedule: Schedule, x_prev: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I) (Ho et al. 2020, eq. 2)."""
    beta = gather(schedule.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def renoise(x: Tensor, ab_from: float, ab_to: float, noise: Tensor) -> Tensor:
    """Move x from noise level ᾱ_from up to the noisier ᾱ_to: q(x_to | x_from), a product of forward steps."""
    ratio = ab_to / ab_from
    return math.sqrt(ratio) * x + math.sqrt(1 - ratio) * noise


class Posterior(NamedTuple):
    """q(x_s | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, variance) for s < t (Ho et al. 2020, eqs. 6-7)."""

    coef_x0: float | Tensor
    coef_xt: float | Tensor
    variance: float | Tensor  # β̃: zero when s is clean data
    beta: float | Tensor  # the step's own β = 1 - ᾱ_t/ᾱ_s, the "fixed large" variance


def posterior(ab_t, ab_s) -> Posterior:
    """Posterior between any two levels ᾱ_t < ᾱ_s; respaced samplers and the bound share this one formula."""
    beta = 1 - ab_t / ab_s
    denom = 1 - ab_t
    return Posterior(
        coef_x0=ab_s**0.5 * beta / denom,
        coef_xt=(1 - beta) ** 0.5 * (1 - ab_s) / denom,
        variance=beta * (1 - ab_s) / denom,
        beta=beta,
    )


def q_posterior(schedule: Schedule, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0), per example."""
    p = posterior(schedule.alphas_cumprod, schedule.alphas_cumprod_prev)
    mean = gather(p.coef_x0, t, x0) * x0 + gather(p.coef_xt, t, xt) * xt
    return mean, gather(p.variance, t, x0)


def split_x0_eps(pred: Tensor, x_t: Tensor, ab, prediction: str) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) from the network's output under any parameterisation (v: Salimans & Ho 2022, §4)."""
    a, s = _root(ab), _root(1 - ab)
    if prediction == "eps":
        if isinstance(ab, float):  # the samplers' hot path: one fused pass instead of three
            return torch.sub(x_t, pred, alpha=s).div_(a), pred
        return (x_t - s * pred) / a, pred
    if prediction == "x0":
        return pred, (x_t - a * pred) / s
    if prediction == "v":
        return a * x_t - s * pred, s * x_t + a * pred
    if prediction == "flow":
        # Rectified flow's velocity u = ε - x_0 along x_τ = (1-τ)x_0 + τε, which is this x_t rescaled:
        # x_τ = x_t / (α + σ) at τ = σ / (α + σ), so x_0 = x_τ - τu and ε = x_τ + (1-τ)u.
        return (x_t - s * pred) / (a + s), (x_t + a * pred) / (a + s)
    choose("prediction", prediction, PREDICTIONS)


def eps_from_x0(x0: Tensor, x_t: Tensor, ab) -> Tensor:
    return (x_t - _root(ab) * x0) / _root(1 - ab)


def target(prediction: str, x0: Tensor, eps: Tensor, ab) -> Tensor:
    """What the network regresses on under each parameterisation."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return _root(ab) * eps - _root(1 - ab) * x0
    if prediction == "flow":
        return eps - x0
    choose("prediction", prediction, PREDICTIONS)


def _root(a):
    return a.sqrt() if isinstance(a, Tensor) else math.sqrt(a)


def interpolate_log_variance(frac, min_log, max_log):
    """Learned variance Σ = exp(v log β + (1-v) log β̃), v in [0, 1] (Nichol & Dhariwal 2021, eq. 15)."""
    return frac * max_log + (1 - frac) * min_log


def split_output(out: Tensor, variance: str) -> tuple[Tensor, Tensor | float]:
    """(prediction, variance fraction v in [0, 1]); a learned variance doubles the channels (dim 1).

    The fixed variances are the ends of the same interpolation: β̃ (small) is v = 0, β (large) is v = 1.
    """
    if variance == "learned":
        pred, raw = out.chunk(2, dim=1)
        return pred, (raw + 1) / 2
    choose("variance", variance, VARIANCES)
    return out, 1.0 if variance == "fixed_large" else 0.0


Model = Callable[..., Tensor]


def x0_of(out: Tensor, x_t: Tensor, ab, *, prediction: str, variance: str) -> Tensor:
    """x̂_0 from a raw network output."""
    return split_x0_eps(split_output(out, variance)[0], x_t, ab, prediction)[0]


def self_conditioned(model: Model, schedule: Schedule, *, prediction: str, variance: str) -> Model:
    """A self-conditioned network (one that also takes `self_cond`, a previous x̂_0) as a plain one of
    (x_t, t): fed its own x̂_0 from a first call given none at the same x_t, as the fed half of its
    training was. That is a Markov reverse process, so the variational bound holds for it exactly (a
    sampler instead feeds the previous step's x̂_0, saving the second call)."""

    def twice(x_t: Tensor, t: Tensor, **kwargs) -> Tensor:
        ab = gather(schedule.alphas_cumprod, t, x_t)
        estimate = x0_of(model(x_t, t, **kwargs), x_t, ab, prediction=prediction, variance=variance)
        return model(x_t, t, self_cond=estimate, **kwargs)

    return twice


class ReverseStep(NamedTuple):
    """p_θ(x_{t-1} | x_t) = N(mean, exp(log_variance)) and the x̂_0 and network prediction behind it."""

    mean: Tensor
    log_variance: Tensor
    x0: Tensor
    pred: Tensor


def p_mean_variance(schedule: Schedule, out: Tensor, x_t: Tensor, t: Tensor, *, prediction: str, variance: str,
                    clip: float | None = None) -> ReverseStep:
    """The reverse step from a network output at integer timesteps t (Ho et al. 2020, eq. 1)."""
    pred, frac = split_output(out, variance)
    ab = gather(schedule.alphas_cumprod, t, x_t)
    x0, _ = split_x0_eps(pred, x_t, ab, prediction)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    mean, _ = q_posterior(schedule, x0, x_t, t)
    min_log, max_log = _log_variance_bounds(schedule)
    log_var = interpolate_log_variance(frac, gather(min_log, t, x_t), gather(max_log, t, x_t))
    return ReverseStep(mean, log_var, x0, pred)


def _log_variance_bounds(schedule: Schedule) -> tuple[Tensor, Tensor]:
    """log β̃_t and log β_t; β̃_0 = 0, so t = 0 borrows β̃_1 (improved DDPM's clipped posterior variance)."""
    p = posterior(schedule.alphas_cumprod, schedule.alphas_cumprod_prev)
    small = torch.cat([p.variance[1:2], p.variance[1:]])
    return small.log(), p.beta.log()


# ---------------------------------------------------------------- likelihood terms (in nats, per dimension)

def normal_kl(mean1: Tensor, logvar1, mean2: Tensor, logvar2) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    logvar1, logvar2 = torch.as_tensor(logvar1, dtype=mean1.dtype), torch.as_tensor(logvar2, dtype=mean1.dtype)
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1)


def gaussian_nll(x: Tensor, mean: Tensor, log_var) -> Tensor:
    """-log N(x; mean, e^log_var) per element, in nats: the decoder for continuous data."""
    log_var = torch.as_tensor(log_var, dtype=x.dtype)
    return 0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def discretized_gaussian_nll(x: Tensor, mean: Tensor, log_var, bits: int) -> Tensor:
    """-log P(x) per element for data in [-1, 1] quantised to 2^bits levels (Ho et al. 2020, eq. 13).

    The edge bins extend to ±∞ so the probabilities of all levels sum to one.
    """
    half_bin = 1.0 / (2**bits - 1)
    inv_std = torch.exp(-0.5 * torch.as_tensor(log_var, dtype=x.dtype))
    normal = torch.distributions.Normal(0.0, 1.0)
    upper, lower = (x - mean + half_bin) * inv_std, (x - mean - half_bin) * inv_std
    log_cdf_upper = normal.cdf(upper).clamp(min=1e-12).log()
    log_one_minus_cdf_lower = (1 - normal.cdf(lower)).clamp(min=1e-12).log()
    log_mass = (normal.cdf(upper) - normal.cdf(lower)).clamp(min=1e-12).log()
    edge = 1 - half_bin  # the lowest / highest level sit at ∓1
    log_p = torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_one_minus_cdf_lower, log_mass))
    return -log_p


def prior_kl(schedule: Schedule, x0: Tensor) -> Tensor:
    """KL(q(x_T | x_0) || N(0, I)) per example in nats: the L_T term."""
    ab = float(schedule.alphas_cumprod[-1])
    var = 1 - ab
    return _per_example_sum(0.5 * (var - 1 - math.log(var) + ab * x0**2))


def _per_example_sum(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)


def vlb_term(schedule: Schedule, model: Model, x0: Tensor, t: Tensor, noise: Tensor, *, prediction: str,
             variance: str, bits: int | None = None, model_kwargs: dict | None = None,
             clip: float | None = None, out: Tensor | None = None) -> Tensor:
    """L_{t-1} per example in nats: the KL of the reverse step at t > 0, the decoder NLL at t = 0.

    `out` may be a precomputed network output (the hybrid loss stops the mean's gradient through it).
    """
    x_t = q_sample(schedule, x0, t, noise)
    if out is None:
        out = model(x_t, t, **(model_kwargs or {}))
    step = p_mean_variance(schedule, out, x_t, t, prediction=prediction, variance=variance, clip=clip)
    true_mean, true_var = q_posterior(schedule, x0, x_t, t)
    kl = normal_kl(true_mean, true_var.clamp(min=1e-40).log(), step.mean, step.log_variance)
    if bits is None:
        decoder = gaussian_nll(x0, step.mean, step.log_variance)
    else:
        decoder = discretized_gaussian_nll(x0, step.mean, step.log_variance, bits)
    first = (t == 0).reshape(-1, *([1] * (x0.dim() - 1)))
    return _per_example_sum(torch.where(first, decoder, kl))


# (x_1, t = 0) -> -log p_θ(data | x_1) of each example in nats: the bound's last step, for a modality
# whose data are read back from x_1 in its own way.
Decoder = Callable[[Tensor, Tensor], Tensor]


class Bound(NamedTuple):
    """The variational bound of each example, in bits per dimension, and the terms it sums."""

    total: Tensor  # [B]
    prior: Tensor  # [B]: L_T
    terms: Tensor  # [B, T]: terms[:, 0] the decoder L_0, terms[:, t] the KL L_t


@torch.no_grad()
def variational_bound(schedule: Schedule, model: Model, x0: Tensor, *, prediction: str, variance: str,
                      bits: int | None = None, model_kwargs: dict | None = None, clip: float | None = None,
                      generator: torch.Generator | None = None, strata: int | None = None,
                      decoder: Decoder | None = None, self_cond: bool = False) -> Bound:
    """-log p_θ(x_0) ≤ L_T + Σ_t L_{t-1}, every term in bits/dim (Ho et al. 2020, eq. 5).

    Exact in its KL terms; each x_t is one draw from q(x_t | x_0), so the bound is unbiased over draws.
    With `strata` = K < T-1, the decoder term stays exact and the T-1 KL terms are estimated, still
    without bias, from one random timestep in each of K equal strata, weighted by the stratum's width:
    T/K times fewer network calls. `terms` then holds the decoder term and the K weighted terms.
    `decoder` replaces the Gaussian decoder L_0 for data that are not the diffused vectors themselves
    (text: tokens, read back from x_1 through the network's categorical prediction). A `self_cond`
    network is bounded as `self_conditioned` makes it.
    """
    if self_cond:
        model = self_conditioned(model, schedule, prediction=prediction, variance=variance)
    dims = x0[0].numel()
    steps, weights = list(range(schedule.T)), [1.0] * schedule.T
    if strata is not None and strata < schedule.T - 1:
        edges = torch.linspace(1, schedule.T, strata + 1).round().long().tolist()
        offsets = torch.rand(strata, generator=generator, device=draw_device(generator)).cpu()
        steps = [0] + [lo + int(u * (hi - lo)) for lo, hi, u in zip(edges, edges[1:], offsets.tolist())]
        weights = [1.0] + [float(hi - lo) for lo, hi in zip(edges, edges[1:])]
    terms = []
    for step, weight in zip(steps, weights):
        t = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
        noise = randn_like(x0, generator)
        if step == 0 and decoder is not None:
            term = decoder(q_sample(schedule, x0, t, noise), t)
        else:
            term = vlb_term(schedule, model, x0, t, noise, prediction=prediction, variance=variance, bits=bits,
                            model_kwargs=model_kwargs, clip=clip)
        terms.append(weight * term)
    to_bits = 1.0 / (dims * math.log(2))
    terms = torch.stack(terms, 1) * to_bits
    prior = prior_kl(schedule, x0) * to_bits
    return Bound(terms.sum(1) + prior, prior, terms)


def draw_device(generator: torch.Generator | None, fallback="cpu"):
    """Where to draw random numbers: on the generator's device, so a seed gives the same draw anywhere."""
    return generator.device if generator is not None else fallback


def randn(shape, generator: torch.Generator | None, device, dtype: torch.dtype) -> Tensor:
    """Standard normal noise, drawn on the generator's device, then moved to `device`."""
    return torch.randn(shape, generator=generator, device=draw_device(generator, device), dtype=dtype).to(device)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return randn(x.shape, generator, x.device, x.dtype)


# ---------------------------------------------------------------- training losses

def sample_timesteps(schedule: Schedule, batch: int, generator: torch.Generator | None = None,
                     device=None, sampling: str = "uniform") -> Tensor:
    """t in 0..T-1, one per example: uniform, logit-normal (τ = sigmoid(n), n ~ N(0, 1), the share of
    the way to noise, which puts most examples at middle noise levels: Esser et al. 2024, §3.1), or warped
    by the schedule's learned time warp (diffkit.core.warp)."""
    choose("timestep sampling", sampling, TIMESTEP_SAMPLINGS)
    gen_device = draw_device(generator)
    if sampling == "uniform":
        return torch.randint(0, schedule.T, (batch,), generator=generator, device=gen_device).to(device)
    if sampling == "warped":
        if schedule.warp is None:
            raise DiffkitError("warped timesteps need a schedule with a time warp (see diffkit.core.warp)")
        u = torch.rand(batch, generator=generator, device=gen_device, dtype=torch.float64)
        return warped_to_t(schedule.warp, u.cpu(), schedule.T).long().to(device)
    tau = torch.sigmoid(torch.randn(batch, generator=generator, device=gen_device, dtype=torch.float64))
    return (tau * schedule.T).long().clamp(max=schedule.T - 1).to(device)


def snr_weight(prediction: str, snr: Tensor, weighting: str, gamma: float) -> Tensor:
    """Per-example weight of the squared error; min-SNR-γ caps the weight of easy low-noise steps
    (Hang et al. 2023, eq. 7, translated to each parameterisation's loss scale)."""
    choose("loss weighting", weighting, WEIGHTINGS)
    if weighting == "uniform":
        return torch.ones_like(snr)
    capped = snr.clamp(max=gamma)
    # An error δ in x̂_0 is δ·√snr in ε̂, δ·√(snr + 1) in v̂, δ·(1 + √snr) in the flow's velocity.
    return {"eps": capped / snr, "x0": capped, "v": capped / (snr + 1), "flow": capped / (1 + snr.sqrt()) ** 2}[prediction]


def training_losses(schedule: Schedule, model: Model, x0: Tensor, *, prediction: str = "eps",
                    variance: str = "fixed_small", weighting: str = "uniform", gamma: float = 5.0,
                    timestep_sampling: str = "uniform", vlb_weight: float = 0.001, bits: int | None = None, t: Tensor | None = None,
                    noise: Tensor | None = None, generator: torch.Generator | None = None,
                    model_kwargs: dict | None = None, shard: tuple[int, int] = (0, 1),
                    self_cond: bool = False) -> dict[str, Tensor]:
    """Per-example losses: "mse" (weighted L_simple), "vlb" (learned variance only) and their sum "loss";
    and, not differentiated, "x0_error", the mean squared error of x̂_0 (what a time warp follows).

    With a learned variance the hybrid loss L_simple + λ L_vlb trains Σ through the bound while the
    mean's gradient comes from L_simple alone (Nichol & Dhariwal 2021, §3.1, λ = 0.001).
    `shard` = (rank, processes): x0 is examples rank, rank + processes, ... of a global batch, and gets
    the same slice of timesteps and noise drawn for all of it, so that data-parallel processes train
    exactly as one process would. With `self_cond`, half the examples (drawn like the noise) also see
    the network's own x̂_0 from a first call given none, without its gradient; the others see zeros
    (Chen et al. 2023, §3.1), so one network serves a sampler's first step and every later one.
    """
    choose("prediction", prediction, PREDICTIONS)
    rank, processes = shard
    whole = (x0.shape[0] * processes, *x0.shape[1:])
    if t is None:
        t = sample_timesteps(schedule, whole[0], generator, x0.device, timestep_sampling)[rank::processes]
    if noise is None:
        noise = randn(whole, generator, x0.device, x0.dtype)[rank::processes]
    x_t = q_sample(schedule, x0, t, noise)
    ab = gather(schedule.alphas_cumprod, t, x0)
    kwargs = model_kwargs or {}
    if self_cond:
        fed = (torch.rand(whole[0], generator=generator, device=draw_device(generator)) < 0.5)[rank::processes].to(x0.device)
        # The first call only for the examples that see its estimate (the model kwargs are per-example,
        # batch first): half its cost. A process with none fed skips it; without gradients or buffers a
        # data-parallel wrapper's forward exchanges nothing, so the processes stay in step.
        estimate = torch.zeros_like(x_t)
        if fed.any():
            with torch.no_grad():
                first = model(x_t[fed], t[fed], **{k: v[fed] for k, v in kwargs.items()})
                estimate[fed] = x0_of(first, x_t[fed], ab[fed], prediction=prediction, variance=variance).to(x_t.dtype)
        kwargs = {**kwargs, "self_cond": estimate}
    out = model(x_t, t, **kwargs)
    pred, frac = split_output(out, variance)
    err = (pred.float() - target(prediction, x0, noise, ab).float()) ** 2
    snr = (schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)).to(x0.device)[t].float()
    mse = err.flatten(1).mean(1) * snr_weight(prediction, snr, weighting, gamma)
    estimate = x0_of(out.detach(), x_t, ab, prediction=prediction, variance=variance)
    losses = {"mse": mse, "x0_error": (estimate.float() - x0.float()).square().flatten(1).mean(1)}
    if variance == "learned":
        frozen = torch.cat([pred.detach(), frac * 2 - 1], dim=1)
        vlb = vlb_term(schedule, model, x0, t, noise, prediction=prediction, variance=variance, bits=bits,
                       out=frozen)
        # L_vlb = T · E_t[L_t] in bits per dimension, as in improved DDPM, so λ keeps its meaning for any T.
        losses["vlb"] = vlb / (x0[0].numel() * math.log(2)) * schedule.T
        losses["loss"] = mse + vlb_weight * losses["vlb"]
    else:
        losses["loss"] = mse
    return losses
