import math

import pytest
import torch

from diffkit.core import make_schedule, q_posterior, q_sample, q_step_sample, training_losses, variational_bound
from diffkit.core.diffusion import (
    discretized_gaussian_nll,
    posterior,
    prior_kl,
    snr_weight,
    split_x0_eps,
    target,
)
from diffkit.errors import DiffkitError

from oracles import exact_reverse_model, gaussian


def test_q_sample_has_the_closed_form_moments(gen):
    s = make_schedule("cosine", 100)
    x0 = torch.full((200_000, 1), 0.8, dtype=torch.float64)
    t = torch.full((200_000,), 60)
    xt = q_sample(s, x0, t, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
    ab = s.alphas_cumprod[60].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.8, abs=0.01)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.01)


def test_single_steps_compose_to_the_closed_form(gen):
    s = make_schedule("linear", 50)
    x = torch.full((100_000, 1), -0.5, dtype=torch.float64)
    for step in range(30):
        x = q_step_sample(s, x, torch.full((x.shape[0],), step), torch.randn(x.shape, generator=gen, dtype=torch.float64))
    ab = s.alphas_cumprod[29].item()
    assert x.mean().item() == pytest.approx(-0.5 * math.sqrt(ab), abs=0.01)
    assert x.var().item() == pytest.approx(1 - ab, rel=0.02)


def test_posterior_is_the_bayes_conditional_of_the_joint_gaussian():
    # Given x_0, (x_{t-1}, x_t) are jointly Gaussian; condition x_{t-1} on x_t directly.
    s = make_schedule("cosine", 100)
    t, x0, xt = 40, torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-1.1]], dtype=torch.float64)
    ab_prev, ab, beta = s.alphas_cumprod[t - 1].item(), s.alphas_cumprod[t].item(), s.betas[t].item()
    m_prev, v_prev = math.sqrt(ab_prev) * 0.3, 1 - ab_prev
    m_t, v_t, cov = math.sqrt(ab) * 0.3, 1 - ab, math.sqrt(1 - beta) * v_prev
    mean, var = q_posterior(s, x0, xt, torch.tensor([t]))
    assert mean.item() == pytest.approx(m_prev + cov / v_t * (-1.1 - m_t), rel=1e-10)
    assert var.item() == pytest.approx(v_prev - cov**2 / v_t, rel=1e-10)


def test_posterior_over_a_respaced_pair_equals_the_chain_of_single_steps():
    s = make_schedule("linear", 1000)
    p = posterior(s.alphas_cumprod[700].item(), s.alphas_cumprod[500].item())
    beta = 1 - s.alphas_cumprod[700].item() / s.alphas_cumprod[500].item()
    assert p.beta == pytest.approx(beta) and p.variance < p.beta
    assert posterior(s.alphas_cumprod[0].item(), 1.0).variance == 0.0


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_parameterisations_convert_both_ways(prediction, gen):
    x0, eps = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(4, 3, generator=gen, dtype=torch.float64)
    ab = torch.tensor([[0.9], [0.5], [0.1], [0.01]], dtype=torch.float64)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    got_x0, got_eps = split_x0_eps(target(prediction, x0, eps, ab), xt, ab, prediction)
    assert torch.allclose(got_x0, x0) and torch.allclose(got_eps, eps)


def test_unknown_prediction_is_a_user_error():
    with pytest.raises(DiffkitError, match="eps, flow, v, x0"):
        split_x0_eps(torch.zeros(1, 1), torch.zeros(1, 1), 0.5, "score")


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_discretized_decoder_is_a_distribution_over_the_levels(bits):
    levels = torch.linspace(-1, 1, 2**bits, dtype=torch.float64).reshape(-1, 1)
    for mean, log_var in [(0.2, math.log(0.01)), (-0.95, math.log(0.3)), (1.4, math.log(1e-4))]:
        nll = discretized_gaussian_nll(levels, torch.full_like(levels, mean), log_var, bits)
        assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-6)


def _exact_bits(data, x0):
    return (-data.log_prob(x0) / (x0.shape[1] * math.log(2))).mean().item()


@pytest.mark.parametrize("T", [20, 200])
def test_bound_with_the_exact_reverse_variance_is_the_true_nll(T):
    # Gaussian data: the reverse conditionals are exactly Gaussian, so with the exact mean and variance
    # the bound is tight for any T (up to the tiny prior mismatch). Tolerance: 3 MC standard errors.
    data, std = gaussian(0.3, 0.5, 16), 0.5
    x0 = data.sample(1024, torch.Generator().manual_seed(0))[0].float()
    s = make_schedule("linear", T)
    bound = variational_bound(s, exact_reverse_model(data, s, std), x0, prediction="eps", variance="learned",
                              generator=torch.Generator().manual_seed(1))
    assert bound.total.mean().item() == pytest.approx(_exact_bits(data, x0), abs=0.025)


def test_fixed_variance_bound_tightens_as_T_grows():
    data = gaussian(0.3, 0.5, 16)
    x0 = data.sample(1024, torch.Generator().manual_seed(0))[0].float()
    exact = _exact_bits(data, x0)
    gaps = {}
    for T in (4, 1000):
        s = make_schedule("linear", T)
        b = variational_bound(s, data.denoiser(s), x0, prediction="eps", variance="fixed_large",
                              generator=torch.Generator().manual_seed(1))
        gaps[T] = b.total.mean().item() - exact
    assert gaps[4] > 0.3
    assert -0.03 < gaps[1000] < 0.09


def test_a_modality_decoder_replaces_only_the_last_step_and_gets_x1_from_q():
    # The decoder sees x_1 ~ q(x_1 | x_0): its squared noise, scaled by the variance, averages to the
    # dimension count. The network is not called at t = 0, and every other term is unchanged.
    data = gaussian(0.3, 0.5, 3)
    x0 = data.sample(4000, torch.Generator().manual_seed(0))[0]
    s = make_schedule("linear", 20)
    a0 = s.alphas_cumprod[0]
    calls = []

    def model(x, t):
        calls.append(int(t[0]))
        return data.denoiser(s)(x, t)

    def decoder(x1, t):
        assert (t == 0).all()
        return ((x1 - a0.sqrt() * x0) ** 2).sum(1) / (1 - a0)

    plain = variational_bound(s, data.denoiser(s), x0, prediction="eps", variance="fixed_small",
                              generator=torch.Generator().manual_seed(1))
    own = variational_bound(s, model, x0, prediction="eps", variance="fixed_small",
                            generator=torch.Generator().manual_seed(1), decoder=decoder)
    assert 0 not in calls and len(calls) == 19
    assert torch.equal(own.terms[:, 1:], plain.terms[:, 1:]) and torch.equal(own.prior, plain.prior)
    assert abs(own.terms[:, 0].mean().item() * 3 * math.log(2) - 3) < 0.1
    assert torch.allclose(own.total, own.prior + own.terms.sum(1))


def test_terms_sum_to_the_bound_and_match_their_expectations():
    # With fixed-small variance each KL term has a closed-form expectation for Gaussian data:
    # E KL_t = c_x0² E[(x_0 - x̂_0)²] / (2 β̃_t), with x̂_0 = μ + g (x_t - √ᾱ μ), g = √ᾱ s² / V_t.
    mean, std, T = 0.3, 0.5, 30
    data = gaussian(mean, std, 1)
    x0 = data.sample(20_000, torch.Generator().manual_seed(0))[0]
    s = make_schedule("linear", T)
    b = variational_bound(s, data.denoiser(s), x0, prediction="eps", variance="fixed_small",
                          generator=torch.Generator().manual_seed(1))
    assert torch.allclose(b.total, b.prior + b.terms.sum(1), rtol=0, atol=1e-12)
    ab = s.alphas_cumprod
    p = posterior(ab, s.alphas_cumprod_prev)
    var = ab * std**2 + 1 - ab
    g = ab.sqrt() * std**2 / var
    sq_err = ((1 - g * ab.sqrt()) ** 2 * ((x0 - mean) ** 2).mean() + g**2 * (1 - ab))
    expected_bits = (p.coef_x0**2 * sq_err / (2 * p.variance.clamp(min=1e-30)) / math.log(2))[1:]
    got = b.terms[:, 1:].mean(0)
    assert torch.allclose(got, expected_bits, rtol=0.06, atol=1e-4)
    expected_prior = 0.5 * ((1 - ab[-1]) - 1 - torch.log(1 - ab[-1]) + ab[-1] * x0**2).squeeze(1) / math.log(2)
    assert torch.allclose(b.prior, expected_prior, rtol=1e-9)
    assert torch.allclose(prior_kl(s, x0), expected_prior * math.log(2), rtol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_training_loss_is_per_example_and_smallest_for_the_exact_denoiser(prediction, gen):
    # E[target | x_t] minimises the squared error: scaled or shifted versions of it do worse.
    data = gaussian(0.2, 0.5, 4)
    x0 = data.sample(4096, gen)[0].float()
    s = make_schedule("cosine", 100)
    t, noise = torch.randint(0, 100, (4096,), generator=gen), torch.randn(x0.shape, generator=gen)
    model = data.denoiser(s, prediction)
    loss = lambda m: training_losses(s, m, x0, prediction=prediction, t=t, noise=noise)["loss"]
    exact = loss(model)
    assert exact.shape == (4096,)
    for wrong in (lambda x, t: 1.1 * model(x, t), lambda x, t: model(x, t) + 0.05, lambda x, t: 0.9 * model(x, t)):
        assert exact.mean() < loss(wrong).mean()


def test_min_snr_weights():
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0])
    assert torch.allclose(snr_weight("eps", snr, "min_snr", 5.0), torch.tensor([1.0, 1.0, 1.0, 0.05]))
    assert torch.allclose(snr_weight("x0", snr, "min_snr", 5.0), torch.tensor([0.01, 1.0, 5.0, 5.0]))
    assert torch.allclose(snr_weight("v", snr, "min_snr", 5.0), torch.tensor([0.01 / 1.01, 0.5, 5 / 6, 5 / 101]))
    assert torch.equal(snr_weight("eps", snr, "uniform", 5.0), torch.ones(4))


def test_hybrid_loss_trains_the_variance_only_through_the_bound(gen):
    s = make_schedule("linear", 100)
    x0 = torch.randn(8, 2, 5, generator=gen)
    out = torch.zeros(8, 4, 5, requires_grad=True)
    losses = training_losses(s, lambda x, t: out, x0, variance="learned", generator=gen)
    assert set(losses) == {"mse", "vlb", "loss", "x0_error"} and not losses["x0_error"].requires_grad
    (grad,) = torch.autograd.grad(losses["vlb"].sum(), out)
    assert grad[:, :2].abs().max() == 0 and grad[:, 2:].abs().max() > 0
    assert torch.allclose(losses["loss"], losses["mse"] + 0.001 * losses["vlb"])
