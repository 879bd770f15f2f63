"""Restoration methods against exact posteriors: Gaussian priors where the methods' assumptions hold
exactly, and a two-mode mixture where only resampling or particles get the mode weights right."""

import pytest
import torch
from oracles import LINEAR, PRIOR, observed

from diffkit.core import SAMPLERS, GaussianMixture, Restore, SamplingSpec, sample
from diffkit.core.observe import Observation
from diffkit.core.operators import AveragePool, Mask, as_matrix


AMBIGUOUS = torch.tensor([0.1, 0.1, 0.0, -0.2])  # under a 2x average, posterior mode weights about 0.2 / 0.8


def _posterior_error(method, op, sigma, n=4000, sampler="ddpm", steps=100, resample=10):
    """(largest mode-weight error, largest mean distance, largest relative covariance error) over the two modes."""
    y, post = observed(op, sigma, AMBIGUOUS)
    observation = Observation(op, y.float().expand(n, *y.shape), sigma)
    x = sample(PRIOR.denoiser(LINEAR), (n, 4), LINEAR, SamplingSpec(sampler, steps),
               condition=Restore(observation, method, jump=5, resample=resample)).double()
    mode = PRIOR.responsibilities(x).argmax(1)
    errors = []
    for k in range(2):
        chosen = x[mode == k]
        errors.append(((mode == k).double().mean() - post.weights[k]).abs().item())
        errors.append((chosen.mean(0) - post.means[k]).norm().item())
        errors.append(((torch.cov(chosen.T) - post.covs[k]).norm() / post.covs[k].norm()).item())
    return max(errors[0::3]), max(errors[1::3]), max(errors[2::3])


UNIT = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -0.3, 0.2, 0.8]]), torch.eye(4).unsqueeze(0))


@pytest.mark.parametrize("sigma", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("method", ["ddnm", "pigdm"])
def test_gaussian_methods_are_exact_for_a_unit_gaussian_prior(method, sigma):
    # Both methods take p(x_0 | x_t) as N(x̂_0, (1-ᾱ)I), which is exact for N(μ, I) data: the conditioned
    # x̂_0 is then E[x_0 | x_t, y] itself, and every sampler converges to the exact posterior.
    n, truth = 20_000, torch.tensor([[0.1, 0.4, -0.5, 1.0]], dtype=torch.float64)
    # ΠGDM differentiates the network at every step: with every sampler for ddnm, which composes with
    # them the same way, and with one of each kind (ancestral, multistep, predictor-corrector) for pigdm.
    samplers = SAMPLERS if method == "ddnm" else ("ddpm", "dpm++2m", "unipc")
    for op in (AveragePool((2,)), Mask(torch.tensor([1.0, 0.0, 1.0, 0.0]))):
        y = op(truth)[0]
        post = UNIT.observe(as_matrix(op, 4), y, sigma)
        for sampler in samplers:
            x = sample(UNIT.denoiser(LINEAR), (n, 4), LINEAR, SamplingSpec(sampler, 50),
                       condition=Restore(Observation(op, y.float().expand(n, *y.shape), sigma), method)).double()
            cov_error = ((torch.cov(x.T) - post.covs[0]).norm() / post.covs[0].norm()).item()
            assert (x.mean(0) - post.means[0]).norm() < 0.03
            # first-order samplers at 50 steps still carry their discretisation error in the spread, and
            # the SDE solver's fresh noise a little of it (0.031 here)
            loose = {"ddpm": 0.2, "ddim": 0.2, "dpm++2m-sde": 0.05}
            assert cov_error < loose.get(sampler, 0.03), (sampler, cov_error)


# Bounds on (mode weight, mean distance, relative covariance error) over both modes of the 2x-average
# posterior; a true posterior sample of 4000 scores about (0.013, 0.005, 0.045).
NOISELESS_WITH_RESAMPLING = (0.07, 0.03, 0.15)


def test_moment_matching_is_exact_for_a_gaussian_prior_of_any_covariance():
    # TMPD conditions on y with the network's own covariance of x_0 given x_t, which for Gaussian data is
    # exact whatever its covariance (here correlated, stds 0.2-0.4), where ddnm and pigdm assume (1-ᾱ)I.
    one = GaussianMixture(torch.ones(1), PRIOR.means[:1], PRIOR.covs[:1])
    n, truth, sigma = 10_000, torch.tensor([[0.8, 0.4, 0.9, 1.2]], dtype=torch.float64), 0.1
    op = AveragePool((2,))
    y = op(truth)[0]
    post = one.observe(as_matrix(op, 4), y, sigma)
    errors = {}
    for method in ("tmpd", "ddnm", "pigdm"):
        x = sample(one.denoiser(LINEAR), (n, 4), LINEAR, SamplingSpec("dpm++2m", 50),
                   condition=Restore(Observation(op, y.float().expand(n, 2), sigma), method)).double()
        errors[method] = ((x.mean(0) - post.means[0]).norm().item(),
                          ((torch.cov(x.T) - post.covs[0]).norm() / post.covs[0].norm()).item())
    # (mean distance, relative covariance error); 20,000 of them reach (0.003, 0.008), (0.013, 0.04), (0.05, 0.16)
    assert errors["tmpd"][0] < 0.006 and errors["tmpd"][1] < 0.02, errors
    assert min(errors["ddnm"][0], errors["pigdm"][0]) > 0.01 and min(errors["ddnm"][1], errors["pigdm"][1]) > 0.03, errors


@pytest.mark.parametrize("method", ["ddnm", "pigdm", "tmpd", "repaint"])
def test_projection_methods_with_resampling_match_a_noiseless_mixture_posterior(method):
    errors = _posterior_error(method, AveragePool((2,)), 0.0)
    assert all(e < bound for e, bound in zip(errors, NOISELESS_WITH_RESAMPLING)), errors


@pytest.mark.parametrize("sigma, particles, bound", [(0.0, 20, 0.04), (0.1, 400, 0.06)])
def test_particles_converge_to_the_posterior_mode_weights(sigma, particles, bound):
    # smc's weights correct what its proposal alone (one particle per group) gets wrong: measured at 200
    # steps, the share of the 0.2-weight mode is 0.11 off (noiseless) and 0.31 off (σ 0.1) with one
    # particle, 0.003-0.026 with 20, and 0.001-0.09 with 400 (in 10 groups: a group's particles often
    # end in one mode, so the share over groups moves more than over independent draws).
    op = AveragePool((2,))
    y, post = observed(op, sigma, AMBIGUOUS)
    n = 8000
    obs = Observation(op, y.float().expand(n, *y.shape), sigma)
    share = {}
    for k in (1, particles):
        x = sample(PRIOR.denoiser(LINEAR), (n, 4), LINEAR, SamplingSpec("ddpm", 200),
                   condition=Restore(obs, "smc", particles=k)).double()
        share[k] = ((PRIOR.responsibilities(x).argmax(1) == 0).double().mean() - post.weights[0]).abs().item()
        if sigma == 0:
            assert obs.residual(x.float()).max() < 1e-5
    assert share[particles] < bound < share[1], share
