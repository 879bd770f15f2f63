"""`sample()`: a model, a schedule and a sampling spec in; samples out, with any edit of core.editing."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
from torch import Tensor

from diffkit.core.diffusion import eps_from_x0, randn, randn_like, renoise, split_output, split_x0_eps
from diffkit.core.editing import (Bridge, Inpaint, Noised, Restore, invert, invert_ddim_exactly, inversion_calls,
                                  resampling_plan, strength_to_timestep)
from diffkit.core.observe import X0_METHODS, particle_filter, put_back_observed, within_range
from diffkit.core.samplers import SAMPLERS, STOCHASTIC, Denoise, Denoised, model_calls
from diffkit.core.schedule import Schedule, make_grid
from diffkit.core.spec import SamplingSpec
from diffkit.errors import DiffkitError, SettingError, choose

X0Hook = Callable[[Tensor, int], Tensor]
X0Report = Callable[[Tensor, int], None]


def dynamic_threshold(x0: Tensor, percentile: float) -> Tensor:
    """Clamp each example to its `percentile` of |x̂_0| (at least 1) and rescale (Saharia et al. 2022, §2.3)."""
    s = torch.quantile(x0.flatten(1).abs().float(), percentile, dim=1).clamp(min=1).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def make_denoiser(model, schedule: Schedule, *, prediction: str = "eps", variance: str = "fixed_small",
                  clip: float | None = None, threshold: float | None = None, hook: X0Hook | None = None,
                  model_kwargs: dict | None = None, on_call: Callable[[], None] | None = None,
                  self_cond: bool = False) -> Denoise:
    """Adapt a network `model(x_t, t, **model_kwargs)` to the samplers' contract: x̂_0, ε̂, variance.

    Clipping, thresholding and the modality's hook all act on x̂_0; ε̂ is then re-derived from it, so
    every sampler sees one consistent prediction (as improved DDPM does for its DDIM). A `self_cond`
    network is also fed the x̂_0 it predicted on this denoiser's last call (before clipping and hooks, as
    in training; zeros on the first call), whatever the sampler, as Chen et al. 2023 sample;
    `denoise.follow(rows)` keeps that memory with its rows when a particle filter resamples them.
    """
    ab_table = schedule.alphas_cumprod.tolist()
    kwargs = model_kwargs or {}
    previous: Tensor | None = None  # the last x̂_0, for a self-conditioned network

    def denoise(x: Tensor, t: int) -> Denoised:
        nonlocal previous
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        fed = {} if previous is None else {"self_cond": previous}
        pred, frac = split_output(model(x, t_batch, **kwargs, **fed), variance)
        ab = ab_table[t]
        x0, eps = split_x0_eps(pred.to(x.dtype), x, ab, prediction)
        if self_cond:
            previous = x0.detach()
        if clip is not None or threshold is not None or hook is not None:
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
            if threshold is not None:
                x0 = dynamic_threshold(x0, threshold)
            if hook is not None:
                x0 = hook(x0, t)
            eps = eps_from_x0(x0, x, ab)
        if on_call is not None:
            on_call()
        return Denoised(x0, eps, frac)

    def follow(rows: Tensor) -> None:
        nonlocal previous
        if previous is not None:
            previous = previous[rows]

    denoise.follow = follow
    return denoise


def classifier_free(model, scale: float, cond: dict, uncond: dict, variance: str):
    """Classifier-free guidance (Ho & Salimans 2022): u + scale·(c - u) from one batched call on the
    conditional and unconditional inputs; scale 1 is the plain conditional model, 0 the unconditional.
    Any parameterisation mixes alike, being affine in the other two at a fixed x_t. A learned variance
    is not extrapolated: it comes from the conditional half."""

    def guided(x: Tensor, t: Tensor, **shared) -> Tensor:  # shared: inputs both halves see (self_cond)
        both = model(torch.cat([x, x]), torch.cat([t, t]), **{k: torch.cat([cond[k], uncond[k]]) for k in cond},
                     **{k: torch.cat([v, v]) for k, v in shared.items()})
        c, u = both.chunk(2)
        if variance == "learned":
            (c, c_var), (u, _) = c.chunk(2, dim=1), u.chunk(2, dim=1)
            return torch.cat([torch.lerp(u, c, scale), c_var], dim=1)
        return torch.lerp(u, c, scale)

    return guided


def _reporting(denoise: Denoise, report: X0Report) -> Denoise:
    """`denoise`, telling `report` each call's x̂_0 and timestep."""

    def reported(x: Tensor, t: int) -> Denoised:
        out = denoise(x, t)
        report(out.x0, t)
        return out

    return reported


def _model_device(model) -> torch.device:
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if params is not None else None
    return first.device if first is not None else torch.device("cpu")


def _check(sampling: SamplingSpec, start, condition: Restore | None, variance: str, batch: int) -> None:
    """What only the edits and the sampler together can say is wrong."""
    choose("sampler", sampling.sampler, SAMPLERS)
    if sampling.eta is not None and "eta" not in inspect.signature(SAMPLERS[sampling.sampler]).parameters:
        raise SettingError("eta", f" applies to the ddim sampler, not {sampling.sampler}")
    if isinstance(start, Bridge):
        if sampling.sampler in STOCHASTIC or (sampling.eta or 0) > 0:
            raise SettingError("sampler", f" {sampling.sampler}: a bridge inverts its input deterministically; it "
                               "needs the sampler ddim (η 0), dpm++2m, dpm++3m, heun or unipc, not a stochastic sampler")
        if start.inversion_iterations and sampling.sampler != "ddim":
            raise SettingError("inversion_iterations", " apply to a bridge with the ddim sampler, "
                               "whose decoding step they turn around")
    if condition is not None and condition.method == "smc":
        if sampling.sampler != "ddpm" or variance == "learned":
            raise DiffkitError("the smc method weighs ddpm's own steps: it needs the ddpm sampler and a fixed variance")
        if batch % condition.particles:
            raise SettingError("particles", f" must divide the batch of {batch}, got {condition.particles}")


@torch.no_grad()  # not inference_mode: the gradient methods differentiate the network inside
def sample(model, shape, schedule: Schedule, sampling: SamplingSpec = SamplingSpec(), *, prediction: str = "eps",
           variance: str = "fixed_small", self_cond: bool = False, model_kwargs: dict | None = None,
           start: Noised | Bridge | None = None, condition: Inpaint | Restore | None = None,
           hook: X0Hook | None = None, progress: Callable[[int, int], None] | None = None,
           on_denoised: X0Report | None = None, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw samples of `shape` from a diffusion model `model(x_t, t, **model_kwargs)` that predicts
    `prediction` (a `self_cond` one: see make_denoiser), as `sampling` says (sampler, steps, spacing, η,
    seed, clipping), with any edit of core.editing:

    - start: where the walk begins, `Noised` (SDEdit) or `Bridge` (deterministic inversion); none: noise.
    - condition: `Inpaint` or `Restore`, samples consistent with what is known of them; under a noiseless
      observation with `sampling.clip`, the output ends in the observation's set within ±clip.
    - hook(x̂_0, t) -> x̂_0: a modality's projection at every step (text clamps to its embeddings).
    - on_denoised(x̂_0, t): told the x̂_0 the sampler goes by (after hooks and restoration's correction)
      at every model call of the sampling, one a step (heun: two), not the bridge's inversion: the
      denoising trajectory.
    """
    if isinstance(condition, Inpaint):
        condition = condition.restore()
    _check(sampling, start, condition, variance, shape[0])
    solver = SAMPLERS[sampling.sampler]
    options = {} if sampling.eta is None else {"eta": sampling.eta}
    generator = torch.Generator().manual_seed(sampling.seed)
    device = torch.device(device) if device is not None else _model_device(model)
    bridge = isinstance(start, Bridge)

    partial = start is not None and (start.strength < 1 or bridge)
    if partial and start.strength == 0:
        return start.x.to(device=device, dtype=dtype).clone()
    t_start = strength_to_timestep(start.strength, schedule.T) if partial else schedule.T - 1
    grid = make_grid(schedule, sampling.steps, sampling.spacing, t_start, sampling.timesteps)
    if grid.ab[0] == 0 and prediction == "eps":
        raise DiffkitError("zero terminal SNR needs v, x0 or flow prediction: ε alone says nothing of x_0 there")
    if bridge and grid.ab[0] == 0:
        raise DiffkitError("a bridge cannot invert to zero SNR, where the ODE starts from pure noise; "
                           "use a strength below 1")
    plan = (resampling_plan(len(grid), condition.jump, condition.resample) if condition is not None
            else [(0, len(grid) - 1)])
    runs = [grid.segment(a, b) for a, b in plan if b > a]
    inverting = inversion_calls(sampling.sampler, grid, start.inversion_iterations) if bridge else 0
    done, total = 0, inverting + sum(model_calls(sampling.sampler, run) for run in runs)

    def on_call():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def denoiser(network, kwargs):
        return make_denoiser(network, schedule, prediction=prediction, variance=variance, clip=sampling.clip,
                             threshold=sampling.threshold, hook=hook, model_kwargs=kwargs, on_call=on_call,
                             self_cond=self_cond)

    if bridge:
        x0 = start.x.to(device=device, dtype=dtype)
        source = (denoiser(start.source_model, start.source_kwargs) if start.source_model is not None
                  else denoiser(model, model_kwargs))
        if start.inversion_iterations:
            x = invert_ddim_exactly(source, x0, grid, start.inversion_iterations)
        else:
            x = invert(functools.partial(solver, **options), source, x0, grid)
    else:
        x = randn(shape, generator, device, dtype)
        if partial:
            x = renoise(start.x.to(device=device, dtype=dtype), 1.0, grid.ab[0], x)

    after_step = None
    denoise = denoiser(model, model_kwargs)
    if condition is not None:
        observation = condition.observation.to(device, dtype)
        if condition.method == "repaint":
            after_step = put_back_observed(observation, generator)
            x = after_step(x, grid.ab[0])
        elif condition.method in X0_METHODS:
            denoise = X0_METHODS[condition.method](denoise, observation, schedule.alphas_cumprod.tolist())
        else:  # smc
            denoise, after_step = particle_filter(denoise, observation, schedule.alphas_cumprod.tolist(),
                                                  condition.particles, generator)
    if on_denoised is not None:
        denoise = _reporting(denoise, on_denoised)
    extra = {"after_step": after_step} if after_step is not None else {}
    for a, b in plan:
        if b > a:
            x = solver(denoise, x, grid.segment(a, b), generator=generator, **extra, **options)
        else:
            x = renoise(x, grid.ab[a], grid.ab[b], randn_like(x, generator))
    if condition is not None and observation.sigma == 0 and sampling.clip is not None:
        # the range the data live in (pixels, samples) is the last thing imposed on the output: it must
        # keep what the observation says, or clipping after sampling would undo the consistency
        x = within_range(observation, x, sampling.clip)
    return x
