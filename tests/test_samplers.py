import math

import pytest
import torch

from diffkit.core import (SAMPLERS, Bridge, GaussianMixture, Grid, Inpaint, Noised, Restore, SamplingSpec, make_denoiser,
                          make_schedule, sample)
from diffkit.core.samplers import STOCHASTIC, half_log_snr, multistep_update
from diffkit.errors import DiffkitError

from oracles import gaussian

MIX = GaussianMixture.random(3, 2, seed=3, spread=1.5, std=0.3)  # unequal weights, full covariances
LINEAR = make_schedule("linear", 1000)


def _mode_stats(mix, x):
    label = mix.responsibilities(x).argmax(1)
    k = range(len(mix.weights))
    weights = torch.stack([(label == i).double().mean() for i in k])
    means = torch.stack([x[label == i].double().mean(0) for i in k])
    covs = torch.stack([torch.cov(x[label == i].double().T) for i in k])
    return weights, means, covs


REFERENCE = _mode_stats(MIX, MIX.sample(200_000, torch.Generator().manual_seed(9))[0])
# (mode weight, mean distance, relative covariance error); a true sample of 4000 scores (0.007, 0.009, 0.08).
TOLERANCE = {1000: (0.03, 0.04, 0.15), 50: (0.05, 0.05, 0.3), 20: (0.1, 0.1, 0.6), 10: (0.2, 0.2, 1.2)}


@pytest.mark.parametrize("steps", [10, 20, 50, pytest.param(1000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_sampler_recovers_the_mixture(sampler, steps):
    x = sample(MIX.denoiser(LINEAR), (4000, 2), LINEAR, SamplingSpec(sampler, steps))
    weights, means, covs = _mode_stats(MIX, x)
    w_tol, m_tol, c_tol = TOLERANCE[steps]
    assert (weights - REFERENCE[0]).abs().max() < w_tol
    assert (means - REFERENCE[1]).norm(dim=1).max() < m_tol
    assert ((covs - REFERENCE[2]).norm(dim=(1, 2)) / REFERENCE[2].norm(dim=(1, 2))).max() < c_tol


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_every_parameterisation_samples_alike(prediction):
    spec = SamplingSpec("dpm++2m", 20)
    eps = sample(MIX.denoiser(LINEAR), (500, 2), LINEAR, spec)
    other = sample(MIX.denoiser(LINEAR, prediction), (500, 2), LINEAR, spec, prediction=prediction)
    assert torch.allclose(eps, other, atol=1e-3)


def test_ddpm_and_ddim_with_eta_one_take_the_same_steps():
    # DDIM at η = 1 is ancestral sampling with variance β̃: same transitions, same draws, same samples.
    # In float64: the two formulas round differently, and a point near a boundary between modes
    # amplifies that (float32: 4e-4 at worst of 2,000).
    ddpm = sample(MIX.denoiser(LINEAR), (2000, 2), LINEAR, SamplingSpec("ddpm", 50, seed=3), dtype=torch.float64)
    ddim = sample(MIX.denoiser(LINEAR), (2000, 2), LINEAR, SamplingSpec("ddim", 50, eta=1.0, seed=3), dtype=torch.float64)
    assert torch.allclose(ddpm, ddim, atol=1e-5)


def _gaussian_ode_solution(x, a0, a1, mean, std):
    """The probability-flow ODE maps N(√ᾱ μ, V) to N(√ᾱ' μ, V') affinely, V = ᾱ s² + 1 - ᾱ."""
    v0, v1 = a0 * std**2 + 1 - a0, a1 * std**2 + 1 - a1
    return math.sqrt(a1) * mean + math.sqrt(v1 / v0) * (x - math.sqrt(a0) * mean)


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("dpm++2m", 2), ("heun", 2), ("unipc", 3)])
def test_deterministic_samplers_converge_at_their_order(sampler, order):
    # unipc: the 2-step predictor, one order more with its corrector
    # A near-continuous schedule so integer timesteps do not disturb the step sizes.
    s = make_schedule("cosine", 1 << 16)
    data = gaussian(0.7, 0.5, 1)
    denoise = make_denoiser(data.denoiser(s), s)
    x = torch.linspace(-3, 3, 101, dtype=torch.float64).reshape(-1, 1)
    errors = []
    for steps in (32, 64, 128):
        ts = torch.linspace(int(0.9 * s.T), int(0.05 * s.T), steps + 1).round().long().tolist()
        grid = Grid(tuple(ts), tuple(s.alphas_cumprod[ts].tolist()))
        y = SAMPLERS[sampler](denoise, x.clone(), grid)
        errors.append((y - _gaussian_ode_solution(x, grid.ab[0], grid.ab[-1], 0.7, 0.5)).abs().max().item())
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.25 for r in rates), rates


def test_dpm_solver_pp_third_order_step_has_fourth_order_local_error():
    # One 3M step from an exact trajectory with exact history: local error O(h⁴).
    mean, std = 0.7, 0.5
    ab = lambda lam: 1 / (1 + math.exp(-2 * lam))
    trajectory = lambda lam: _gaussian_ode_solution(torch.tensor([[1.3]], dtype=torch.float64), ab(0.0), ab(lam), mean, std)
    x0_hat = lambda lam: mean + math.sqrt(ab(lam)) * std**2 / (ab(lam) * std**2 + 1 - ab(lam)) * (trajectory(lam) - math.sqrt(ab(lam)) * mean)
    errors = []
    for h in (0.2, 0.1, 0.05):
        history = [(x0_hat(-h), h), (x0_hat(-2 * h), h)]
        x = multistep_update(trajectory(0.0), ab(0.0), ab(h), x0_hat(0.0), history)
        errors.append((x - trajectory(h)).abs().item())
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(r > 3.6 for r in rates), rates
    assert half_log_snr(ab(0.3)) == pytest.approx(0.3)


# Inpainting: modes separated in the kept coordinates, correlated across the split.
_A = torch.tensor([[1, 0.5, 0.4, 0], [0.5, 1, 0, 0.3], [0.4, 0, 1, 0.2], [0, 0.3, 0.2, 1]], dtype=torch.float64)
INPAINT = GaussianMixture(torch.tensor([0.5, 0.5]),
                          torch.tensor([[1.0, 0.0, 1.0, 1.0], [-1.0, 0.0, -1.0, -1.0]]), 0.09 * torch.stack([_A, _A @ _A / 2]))
KEEP = torch.tensor([True, True, False, False])


def _inpaint(sampler, steps, jump, resample, n=4000):
    known = torch.zeros(n, 4)
    known[:, :2] = torch.tensor([0.7, 0.2])
    x = sample(INPAINT.denoiser(LINEAR), (n, 4), LINEAR, SamplingSpec(sampler, steps),
               condition=Inpaint(known, KEEP.float().expand(n, 4), jump, resample))
    assert torch.equal(x[:, :2], known[:, :2]), "the kept region is returned exactly"
    cond = INPAINT.condition(torch.tensor([0.7, 0.2]), KEEP)  # all its weight is on mode 0
    free = x[:, 2:].double()
    mean = (cond.weights[:, None] * cond.means).sum(0)
    wrong_mode = (free.sum(1) < 0).double().mean().item()
    cov_error = ((torch.cov(free.T) - cond.covs[0]).norm() / cond.covs[0].norm()).item()
    return wrong_mode, (free.mean(0) - mean).norm().item(), cov_error


def test_inpainting_with_resampling_yields_the_exact_conditional():
    wrong_mode, mean_error, cov_error = _inpaint("ddpm", 100, jump=5, resample=10)
    assert wrong_mode < 0.01 and mean_error < 0.07 and cov_error < 0.2
    # Without resampling the generated half often disagrees with the kept half.
    assert _inpaint("ddpm", 100, jump=5, resample=1)[0] > 0.1


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"ddpm"}))
def test_inpainting_works_with_every_sampler(sampler):
    wrong_mode, mean_error, cov_error = _inpaint(sampler, 50, jump=5, resample=10, n=2000)
    assert wrong_mode < 0.03 and mean_error < 0.12 and cov_error < 0.6


def test_partial_noising_at_full_strength_is_plain_sampling():
    start = torch.full((300, 2), 5.0)
    plain = sample(MIX.denoiser(LINEAR), (300, 2), LINEAR, SamplingSpec(steps=10, seed=1))
    edited = sample(MIX.denoiser(LINEAR), (300, 2), LINEAR, SamplingSpec(steps=10, seed=1), start=Noised(start, 1.0))
    assert torch.equal(plain, edited)


def test_partial_noising_at_vanishing_strength_returns_the_input():
    start = MIX.sample(300, torch.Generator().manual_seed(2))[0].float()
    same = sample(MIX.denoiser(LINEAR), (300, 2), LINEAR, start=Noised(start, 0.0))
    assert torch.equal(same, start)
    near = sample(MIX.denoiser(LINEAR), (300, 2), LINEAR, SamplingSpec(steps=10, seed=1), start=Noised(start, 1e-4))
    assert (near - start).abs().max() < 0.05
    halfway = sample(MIX.denoiser(LINEAR), (300, 2), LINEAR, SamplingSpec(steps=10, seed=1), start=Noised(start, 0.5))
    assert 0.05 < (halfway - start).abs().mean() < 1.0


def test_x0_hook_sees_every_step_and_shapes_the_result():
    seen = []

    def snap_to_grid(x0, t):
        seen.append(t)
        return x0.round()

    for name in SAMPLERS:
        seen.clear()
        x = sample(MIX.denoiser(LINEAR), (50, 2), LINEAR, SamplingSpec(name, 8), hook=snap_to_grid)
        assert torch.equal(x, x.round()) and len(seen) >= 8 and seen == sorted(seen, reverse=True)


def test_clipping_and_thresholding_bound_the_prediction():
    far = GaussianMixture(torch.ones(1), torch.tensor([[3.0, -3.0]]), 0.01 * torch.eye(2).unsqueeze(0))
    for kw in ({"clip": 1.0}, {"threshold": 0.995}):
        x = sample(far.denoiser(LINEAR), (100, 2), LINEAR, SamplingSpec(steps=10, **kw))
        assert x.abs().max() <= 1.0 + 1e-5


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_progress_counts_every_model_call(sampler):
    """The progress total is the calls the sampler makes, for plain sampling, inpainting's resampling
    and a bridge's inversion (heun takes one or two calls a step, unipc one more than its steps)."""
    oracle, made = MIX.denoiser(LINEAR), []

    def counted(x, t):
        made.append(t)
        return oracle(x, t)

    cases = [(n, {}) for n in (1, 2, 5, 10, 20)]
    cases.append((12, {"condition": Inpaint(torch.zeros(10, 2), torch.ones(10, 2), jump=3, resample=2)}))
    if sampler not in STOCHASTIC:
        cases.append((7, {"start": Bridge(torch.zeros(10, 2), 0.8, source_model=counted)}))
    for steps, case in cases:
        made.clear()
        reports = []
        sample(counted, (10, 2), LINEAR, SamplingSpec(sampler, steps), progress=lambda d, t: reports.append((d, t)), **case)
        assert reports == [(i + 1, len(made)) for i in range(len(made))], case


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_the_trajectory_reports_every_call_and_ends_at_the_result(sampler):
    """on_denoised sees the x̂_0 of every model call in order (heun: two a step), the last one being the
    sample itself; with a restoration method, the corrected x̂_0 (DDNM: consistent with y at every step)."""
    from diffkit.core.observe import Observation
    from diffkit.core.operators import Mask

    made, seen = [], []

    def counted(x, t):
        made.append(int(t[0]))
        return MIX.denoiser(LINEAR)(x, t)

    x = sample(counted, (10, 2), LINEAR, SamplingSpec(sampler, 6), on_denoised=lambda x0, t: seen.append((t, x0)))
    assert [t for t, _ in seen] == made and torch.equal(seen[-1][1], x)
    keep, known = torch.tensor([1.0, 0.0]), torch.full((10, 2), 0.7)
    seen.clear()
    sample(MIX.denoiser(LINEAR), (10, 2), LINEAR, SamplingSpec(sampler, 6),
           condition=Restore(Observation(Mask(keep), known * keep), "ddnm"), on_denoised=lambda x0, t: seen.append(x0))
    assert all(torch.allclose(x0[:, 0], known[:, 0], atol=1e-5) for x0 in seen)


def test_sampler_errors_name_the_choices():
    with pytest.raises(DiffkitError, match="unknown sampler 'euler'; choose one of: ddim, ddpm, dpm\\+\\+2m"):
        sample(MIX.denoiser(LINEAR), (2, 2), LINEAR, SamplingSpec("euler"))
    with pytest.raises(DiffkitError, match="eta applies to the ddim sampler"):
        sample(MIX.denoiser(LINEAR), (2, 2), LINEAR, SamplingSpec("dpm++2m", eta=0.5))
    with pytest.raises(DiffkitError, match="strength"):
        Noised(torch.zeros(2, 2), 1.5)
    zero_snr = make_schedule("linear", 1000, zero_terminal_snr=True)
    with pytest.raises(DiffkitError, match="zero terminal SNR"):
        sample(MIX.denoiser(zero_snr), (2, 2), zero_snr)


def test_zero_terminal_snr_samples_with_v_prediction():
    s = make_schedule("cosine", 1000, zero_terminal_snr=True)
    for name in ("ddim", "dpm++2m", "ddpm"):
        x = sample(MIX.denoiser(s, "v"), (2000, 2), s, SamplingSpec(name, 50), prediction="v")
        assert torch.isfinite(x).all()
        assert (_mode_stats(MIX, x)[0] - REFERENCE[0]).abs().max() < 0.05
