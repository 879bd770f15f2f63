"""Flow matching as a parameterisation of the Gaussian path: the exact velocity of a Gaussian mixture and
its exact ε give the same samples, and every sampler converges to the solution of the flow's own ODE."""

import math

import pytest
import torch

from diffkit.core import GaussianMixture, SamplingSpec, make_schedule, sample
from diffkit.core.diffusion import sample_timesteps, split_x0_eps, target

DATA = GaussianMixture.ring(modes=4, radius=1.0, std=0.2)


def test_the_flow_schedule_is_the_rectified_path_rescaled_to_unit_variance():
    schedule = make_schedule("flow", 100)
    tau = torch.arange(1, 101, dtype=torch.float64) / 100
    ab = schedule.alphas_cumprod
    # x_τ = (1-τ)x_0 + τε over its scale √((1-τ)² + τ²): signal (1-τ)/scale, noise τ/scale
    assert torch.allclose(ab.sqrt() * ((1 - tau) ** 2 + tau**2).sqrt(), 1 - tau)
    assert ab[-1] == 0 and (ab[1:] < ab[:-1]).all()


def test_velocity_and_eps_convert_into_each_other_exactly():
    x0, eps = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    for ab in (0.0, 0.3, 0.97):
        x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
        got_x0, got_eps = split_x0_eps(target("flow", x0, eps, ab), x_t, ab, "flow")
        assert torch.allclose(got_x0, x0) and torch.allclose(got_eps, eps)
        tau = math.sqrt(1 - ab) / (math.sqrt(ab) + math.sqrt(1 - ab))
        x_tau = (1 - tau) * x0 + tau * eps  # the flow's own state is x_t rescaled
        assert torch.allclose(x_tau, x_t / (math.sqrt(ab) + math.sqrt(1 - ab)))


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "ddpm"])
def test_a_velocity_network_samples_as_the_same_eps_network_does(sampler):
    schedule = make_schedule("flow", 1000)
    runs = {prediction: sample(DATA.denoiser(schedule, prediction), (256, 2), schedule, SamplingSpec(sampler, 15),
                               prediction=prediction, dtype=torch.float64)
            for prediction in ("flow", "v")}
    assert torch.allclose(runs["flow"], runs["v"], atol=1e-8)


def _flow_ode_solution(noise: torch.Tensor, schedule, steps: int = 2000) -> torch.Tensor:
    """x̂_0 at the grid's last model level (t = 0, τ = 1/T) after RK4 on dx/dτ = E[ε - x_0 | x_τ = x] from
    τ = 1, in the flow's own coordinates."""
    T = schedule.T

    def velocity(x, tau):
        scale = math.sqrt((1 - tau) ** 2 + tau**2)
        ab = torch.tensor([(1 - tau) ** 2 / scale**2], dtype=torch.float64)
        x_t = x / scale
        x0 = DATA.posterior_mean(x_t, ab)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return eps - x0

    x, taus = noise.clone(), torch.linspace(1.0, 1.0 / T, steps + 1, dtype=torch.float64).tolist()
    for tau, tau_next in zip(taus, taus[1:]):
        h = tau_next - tau
        k1 = velocity(x, tau)
        k2 = velocity(x + h / 2 * k1, tau + h / 2)
        k3 = velocity(x + h / 2 * k2, tau + h / 2)
        k4 = velocity(x + h * k3, tau_next)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    scale = math.sqrt((1 - 1 / T) ** 2 + (1 / T) ** 2)
    return DATA.posterior_mean(x / scale, torch.tensor([(1 - 1 / T) ** 2 / scale**2], dtype=torch.float64))


@pytest.mark.parametrize("sampler, order", [("ddim", 1), ("dpm++2m", 2), ("heun", 2), ("unipc", 3)])
def test_sampling_a_velocity_network_converges_to_the_flow_ode_at_the_samplers_order(sampler, order):
    schedule = make_schedule("flow", 1000)
    # sample() draws its starting noise first from its seed's generator: the same draw starts the reference.
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = _flow_ode_solution(noise, schedule)
    errors = []
    for steps in (40, 80, 160):  # the default grid is evenly spaced from 40 steps on
        out = sample(DATA.denoiser(schedule, "flow"), (64, 2), schedule, SamplingSpec(sampler, steps, seed=1),
                     prediction="flow", dtype=torch.float64)
        errors.append((out - reference).norm(dim=1).mean().item())
    # the mean slope of log error over log steps: ddim 1.0, dpm++2m 2.04, heun 2.07, unipc 2.75
    slope = math.log2(errors[0] / errors[-1]) / (len(errors) - 1)
    assert slope > order - 0.4, (errors, slope)


def test_logit_normal_timesteps_crowd_the_middle():
    schedule = make_schedule("flow", 1000)
    t = sample_timesteps(schedule, 20000, torch.Generator().manual_seed(0), sampling="logit-normal")
    tau = (t.double() + 0.5) / 1000
    logit = torch.log(tau / (1 - tau))
    assert abs(logit.mean()) < 0.03 and abs(logit.std() - 1) < 0.03  # sigmoid of a standard normal
    assert t.min() >= 0 and t.max() <= 999
