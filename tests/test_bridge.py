"""Deterministic inversion and the bridge between classes (DDIB) against their known answers: the affine
map between Gaussian classes, round trips that close at the sampler's order, and a mixture oracle."""

import math

import pytest
import torch

from diffkit.core import Bridge, GaussianMixture, SamplingSpec, make_schedule, sample, strength_to_timestep
from diffkit.core.mixture import class_denoiser
from diffkit.errors import DiffkitError
from diffkit.metrics import sliced_wasserstein

LINEAR = make_schedule("linear", 1000)
MEANS = torch.tensor([[1.0, -0.5, 0.3], [-0.8, 0.6, 0.0]])
VARIANCES = torch.tensor([[0.25, 0.5, 0.1], [0.6, 0.2, 0.3]])
GAUSSIANS = [GaussianMixture(torch.ones(1), m[None], torch.diag(v)[None]) for m, v in zip(MEANS, VARIANCES)]
EXACT = class_denoiser(GAUSSIANS, LINEAR)
INPUT = GAUSSIANS[0].sample(500, torch.Generator().manual_seed(0))[0].float()


def bridged(model, x, source: int, target: int, sampler: str, steps: int, strength: float = 1.0):
    labels = lambda k: {"y": torch.full((len(x),), k, dtype=torch.long)}
    return sample(model, tuple(x.shape), LINEAR, SamplingSpec(sampler, steps), model_kwargs=labels(target),
                  start=Bridge(x, strength, source_model=model, source_kwargs=labels(source)), dtype=x.dtype)


def affine_bridge(x, strength):
    """The probability-flow ODE of N(μ, diag v) maps level ᾱ to level ᾱ' by
    x' = √ᾱ'μ + M(ᾱ')/M(ᾱ)·(x − √ᾱμ), M(ᾱ) = √(ᾱv + 1 − ᾱ): class 0 inverted to the strength's level,
    class 1 from there back to data."""
    ab = LINEAR.alphas_cumprod[strength_to_timestep(strength, LINEAR.T)].item()
    M = (ab * VARIANCES + 1 - ab).sqrt()
    noised = math.sqrt(ab) * MEANS[0] + M[0] / VARIANCES[0].sqrt() * (x - MEANS[0])
    return MEANS[1] + VARIANCES[1].sqrt() / M[1] * (noised - math.sqrt(ab) * MEANS[1])


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_bridge_between_gaussian_classes_is_the_closed_form_affine_map(strength):
    exact = affine_bridge(INPUT, strength)
    # measured at 80 steps: dpm++2m 6e-4 / 5e-4, dpm++3m 4e-4, heun 8e-4 / 6e-4 (max over 500 points)
    for sampler in ("dpm++2m", "dpm++3m", "heun"):
        assert (bridged(EXACT, INPUT, 0, 1, sampler, 80, strength) - exact).abs().max() < 2e-3, sampler
    # at strength 1 the map is nearly the isotropic rule x ↦ μ_B + (σ_B/σ_A)(x − μ_A)
    if strength == 1:
        rule = MEANS[1] + (VARIANCES[1] / VARIANCES[0]).sqrt() * (INPUT - MEANS[0])
        assert (exact - rule).abs().max() < 0.02


@pytest.mark.parametrize("sampler, order", [("ddim", 1), ("dpm++2m", 2), ("heun", 2), ("unipc", 3)])
def test_round_trip_error_falls_with_steps_at_the_samplers_order(sampler, order):
    # Inverted and regenerated under its own class, the input comes back. The default grid is evenly spaced
    # in log σ, so the order is measured from 40 to 80 steps in float64; measured slopes of log error: ddim
    # 0.96, dpm++2m 3.1, heun 3.0, unipc 2.8. dpm++3m sits at the walk's floor (2e-4, the integer
    # timesteps' uneven spacing near t = 0) by 40 steps.
    x = INPUT.double()
    errors = [(bridged(EXACT, x, 0, 0, sampler, steps) - x).abs().max().item() for steps in (40, 80)]
    slope = math.log2(errors[0] / errors[1])
    assert slope > order - 0.25, (errors, slope)
    assert errors[0] < {"ddim": 0.3, "unipc": 1e-2}.get(sampler, 3e-3)


def test_round_trips_close_with_every_deterministic_sampler():
    # measured (max over 500 points) at 10 and 40 steps: ddim 0.84 / 0.25, dpm++2m 0.018 / 1.1e-3, heun
    # 0.12 / 1.9e-3, dpm++3m 0.12 / 2e-4, unipc 0.24 / 5e-3; the squeezed grid, whose one wide step across
    # the quiet top inverts it with less error, gave 0.65, 0.010, 0.066, 0.080 and 0.095 at 10
    for sampler, at_10, at_40 in (("ddim", 0.9, 0.3), ("dpm++2m", 0.02, 3e-3), ("heun", 0.15, 3e-3),
                                  ("dpm++3m", 0.15, 1e-3), ("unipc", 0.3, 1e-2)):
        errors = [(bridged(EXACT, INPUT, 0, 0, sampler, steps) - INPUT).abs().max().item() for steps in (10, 40)]
        assert errors[0] < at_10 and errors[1] < at_40, (sampler, errors)


def test_bridged_samples_follow_the_target_class_of_a_mixture():
    rings = [GaussianMixture.ring(4, 1.0, 0.1), GaussianMixture.ring(8, 2.0, 0.1)]
    model = class_denoiser(rings, LINEAR)
    source = rings[0].sample(2000, torch.Generator().manual_seed(1))[0].float()
    target = rings[1].sample(2000, torch.Generator().manual_seed(2))[0]
    floor = sliced_wasserstein(target, rings[1].sample(2000, torch.Generator().manual_seed(3))[0])
    distance = sliced_wasserstein(bridged(model, source, 0, 1, "dpm++2m", 30), target)
    assert distance < 2 * floor < sliced_wasserstein(source, target), (distance, floor)


def test_bridge_refuses_a_stochastic_sampler():
    start = Bridge(INPUT[:4], source_model=EXACT, source_kwargs={"y": torch.zeros(4, dtype=torch.long)})
    for spec in (SamplingSpec("ddpm"), SamplingSpec("ddim", eta=1.0)):
        with pytest.raises(DiffkitError, match="dpm\\+\\+3m, heun or unipc, not a stochastic sampler"):
            sample(EXACT, (4, 3), LINEAR, spec, model_kwargs={"y": torch.ones(4, dtype=torch.long)}, start=start)


def test_exact_ddim_inversion_closes_the_round_trip_by_iterating():
    # Explicit DDIM inversion at 10 steps misses the input by 0.65; each step solved for the answer at its
    # destination, ddim's decoding retraces it (measured: 0.09, 0.009, 1e-5 after 1, 3, 10 iterations).
    labels = {"y": torch.zeros(len(INPUT), dtype=torch.long)}
    def round_trip(sampler, iterations):
        start = Bridge(INPUT, source_model=EXACT, source_kwargs=labels, inversion_iterations=iterations)
        return sample(EXACT, tuple(INPUT.shape), LINEAR, SamplingSpec(sampler, 10), model_kwargs=labels, start=start)

    errors = [(round_trip("ddim", k) - INPUT).abs().max().item() for k in (0, 3, 10)]
    assert errors[0] > 0.5 and errors[1] < 0.03 and errors[2] < 1e-3, errors
    with pytest.raises(DiffkitError, match="apply to a bridge with the ddim sampler"):
        round_trip("dpm++2m", 3)
