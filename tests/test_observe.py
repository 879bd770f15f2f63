"""Observations y = A(x_0) + σ·n: the operators' algebra, the exact mixture posterior, every method with
every sampler, inpainting and declipping (the methods against exact posteriors: test_posteriors.py)."""

import pytest
import torch
from oracles import GEN, LINEAR, PRIOR, observed

from diffkit.core import SAMPLERS, GaussianMixture, Inpaint, Restore, SamplingSpec, sample
from diffkit.core.observe import METHODS, PARTICLE_METHODS, Observation, beyond_threshold
from diffkit.core.operators import AveragePool, ChannelMix, GaussianBlur, Identity, LowPass, Mask, as_matrix, compose
from diffkit.errors import DiffkitError



OPERATORS = {  # name -> (operator, the shape of x it acts on)
    "identity": (Identity(), (3, 2, 8, 8)),
    "mask": (Mask((torch.rand(1, 1, 8, 8, generator=GEN(1)) > 0.5).double()), (3, 2, 8, 8)),
    "average 2x2": (AveragePool((2, 2)), (3, 2, 8, 8)),
    "average 4 (1-D)": (AveragePool((4,)), (3, 1, 16)),
    "grey": (ChannelMix((0.299, 0.587, 0.114)), (3, 3, 4, 4)),
    "blur 2-D": (GaussianBlur(1.0, axes=2), (3, 1, 12, 10)),
    "blur 1-D": (GaussianBlur(1.5, axes=1), (3, 1, 32)),
    "low-pass": (LowPass(0.2), (3, 1, 32)),
    "average then grey": (compose([AveragePool((2, 2)), ChannelMix((0.299, 0.587, 0.114))]), (3, 3, 8, 8)),
    "blur then average": (compose([GaussianBlur(0.8, axes=2), AveragePool((2, 2))]), (3, 1, 8, 8)),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_adjoint_pseudo_inverse_and_regularised_solve(name):
    op, shape = OPERATORS[name]
    x = torch.randn(shape, generator=GEN(2), dtype=torch.float64)
    y = op(torch.randn(shape, generator=GEN(3), dtype=torch.float64))
    # <Ax, y> = <x, Aᵀy>
    assert torch.allclose((op(x) * y).sum(), (x * op.adjoint(y)).sum(), rtol=1e-10)
    # A A⁺ A = A: a pseudo-inverse meets the observation it was given
    assert torch.allclose(op(op.pinv(op(x))), op(x), atol=1e-7)
    # solve = Aᵀ(r²AAᵀ + s²I)⁻¹v, against the dense matrices of one example
    flat = int(torch.tensor(shape[1:]).prod())
    A = op(torch.eye(flat, dtype=torch.float64).reshape(flat, *shape[1:])).reshape(flat, -1).T
    r2, s2 = 0.3, 0.05
    v = y[:1]
    dense = A.T @ torch.linalg.solve(r2 * A @ A.T + s2 * torch.eye(len(A), dtype=torch.float64), v.flatten())
    assert torch.allclose(op.solve(v, r2, s2).flatten(), dense, atol=1e-7)
    # vᵀ(r²AAᵀ + s²I)⁻¹v, and with s² = 0 on A's range (a mask's or a projection's AAᵀ is singular)
    for s2 in (0.05, 0.0):
        gram = r2 * A @ A.T + s2 * torch.eye(len(A), dtype=torch.float64)
        expected = v.flatten() @ torch.linalg.pinv(gram, hermitian=True) @ v.flatten()
        assert torch.allclose(op.quadratic(v, r2, s2), expected, rtol=1e-6), s2


@pytest.mark.parametrize("dtype,accuracy", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_conjugate_gradients_solve_to_the_dtype_and_stop_when_converged(dtype, accuracy):
    # 3x3 systems: exact arithmetic ends in 3 steps; in either dtype the solve stops within 6, well before
    # the 50 allowed, with a residual at the dtype's accuracy (float32 cannot reach 1e-7 reliably).
    from diffkit.core.operators import conjugate_gradients

    basis = torch.randn(8, 3, 3, generator=GEN(5), dtype=torch.float64)
    matrices = basis @ basis.transpose(1, 2) + 0.1 * torch.eye(3, dtype=torch.float64)
    v = torch.randn(8, 3, generator=GEN(6), dtype=torch.float64)
    applied = []

    def apply(u):
        applied.append(1)
        return (matrices.to(dtype) @ u.unsqueeze(-1)).squeeze(-1)

    u = conjugate_gradients(apply, v.to(dtype), 50)
    residual = (matrices @ u.double().unsqueeze(-1)).squeeze(-1) - v
    assert len(applied) <= 6 and (residual.norm(dim=1) / v.norm(dim=1)).max() < accuracy


def test_blur_matches_a_reflecting_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    x = torch.randn(2, 3, 24, 40, generator=GEN(4), dtype=torch.float64)
    for axes in (1, 2):
        ours = GaussianBlur(2.0, axes=axes)(x)
        theirs = gaussian_filter(x.numpy(), [0, 0, 2.0, 2.0][-x.dim():] if axes == 2 else [0, 0, 0, 2.0],
                                 mode="reflect", truncate=4.0)
        assert torch.allclose(ours, torch.from_numpy(theirs), atol=1e-10)


def test_exact_posterior_of_a_mask_is_the_conditional_of_the_kept_coordinates():
    mix = GaussianMixture.random(3, 4, seed=2, spread=1.5, std=0.4)
    keep = torch.tensor([True, False, True, False])
    known = torch.tensor([0.3, 0.0, -0.5, 0.0], dtype=torch.float64)
    post = mix.observe(as_matrix(Mask(keep.double()), 4), known)
    cond = mix.condition(known[keep], keep)
    assert torch.allclose(post.weights, cond.weights, atol=1e-10)
    assert torch.allclose(post.means[:, ~keep], cond.means, atol=1e-10)
    assert torch.allclose(post.means[:, keep], known[keep].expand(3, 2), atol=1e-10)
    assert torch.allclose(post.covs[:, ~keep][:, :, ~keep], cond.covs, atol=1e-10)
    assert post.covs[:, keep].abs().max() < 1e-10  # observed exactly: no spread left


def test_exact_posterior_under_noise_matches_bayes_rule_on_a_grid():
    # One Gaussian in 2-D, y = mean of the coordinates + noise: posterior ∝ prior × likelihood, numerically.
    mix = GaussianMixture(torch.ones(2), torch.tensor([[0.5, -0.2], [-0.6, 0.4]]),
                          torch.stack([torch.tensor([[0.2, 0.05], [0.05, 0.1]]), 0.15 * torch.eye(2)]))
    A = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    post = mix.observe(A, torch.tensor([0.1]), 0.2)
    g = torch.linspace(-3, 3, 601, dtype=torch.float64)
    pts = torch.cartesian_prod(g, g)
    log_p = mix.log_prob(pts) - 0.5 * ((pts @ A.T).squeeze(1) - 0.1) ** 2 / 0.04
    p = torch.softmax(log_p, 0)
    mean = (p[:, None] * pts).sum(0)
    cov = (p[:, None, None] * (pts - mean)[:, :, None] * (pts - mean)[:, None, :]).sum(0)
    x = post.sample(400_000, GEN(5))[0]
    assert torch.allclose(x.mean(0), mean, atol=0.005)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.005)


# A 4-D mixture whose two modes a 2x average still tells apart, correlated across the averaged pairs.
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("method", ["ddnm", "repaint"])
def test_projection_meets_a_noiseless_observation_with_every_sampler(sampler, method):
    for op in (Mask(torch.tensor([1.0, 0.0, 1.0, 0.0])), AveragePool((2,)), LowPass(0.3)):
        y, _ = observed(op, 0.0, torch.tensor([0.8, 0.4, 0.9, 1.2]))
        obs = Observation(op, y.float().expand(64, *y.shape))
        x = sample(PRIOR.denoiser(LINEAR), (64, 4), LINEAR, SamplingSpec(sampler, 10), condition=Restore(obs, method))
        assert obs.residual(x).max() < 1e-5


def test_particles_need_ddpm_and_a_batch_of_whole_groups():
    obs = Observation(Identity(), torch.zeros(6, 4), 0.1)
    with pytest.raises(DiffkitError, match="needs the ddpm sampler"):
        sample(PRIOR.denoiser(LINEAR), (6, 4), LINEAR, SamplingSpec("dpm++2m"), condition=Restore(obs, "smc"))
    with pytest.raises(DiffkitError, match="no resampling"):
        Restore(obs, "smc", resample=2)
    with pytest.raises(DiffkitError, match="divide the batch of 6"):
        sample(PRIOR.denoiser(LINEAR), (6, 4), LINEAR, SamplingSpec("ddpm"), condition=Restore(obs, "smc", particles=4))


def test_gradient_methods_work_with_every_sampler():
    # A smoke test: DPS is approximate by design (bench/restore.py measures it); every gradient method
    # with every sampler must move the samples most of the way from the prior's mean to the posterior's.
    y, post = observed(AveragePool((2,)), 0.1, torch.tensor([0.8, 0.4, 0.9, 1.2]))
    target = (post.weights[:, None] * post.means).sum(0)
    prior_gap = ((PRIOR.weights[:, None] * PRIOR.means).sum(0) - target).norm()
    for sampler in SAMPLERS:
        for method in ("pigdm", "tmpd", "dps"):
            observation = Observation(AveragePool((2,)), y.float().expand(500, 2), 0.1)
            x = sample(PRIOR.denoiser(LINEAR), (500, 4), LINEAR, SamplingSpec(sampler, 10),
                       condition=Restore(observation, method))
            assert torch.isfinite(x).all()
            # measured: tmpd within 1% of the gap, pigdm and dps 3-28%
            assert (x.double().mean(0) - target).norm() < (0.05 if method == "tmpd" else 0.35) * prior_gap, (sampler, method)


def test_inpainting_is_the_mask_observation_with_repaint():
    known = torch.tensor([0.7, 0.2, 0.0, 0.0]).expand(300, 4)
    keep = torch.tensor([1.0, 1.0, 0.0, 0.0])
    spec = SamplingSpec("ddim", 20)
    a = sample(PRIOR.denoiser(LINEAR), (300, 4), LINEAR, spec, condition=Inpaint(known, keep, jump=5, resample=3))
    b = sample(PRIOR.denoiser(LINEAR), (300, 4), LINEAR, spec,
               condition=Restore(Observation(Mask(keep), known * keep), "repaint", jump=5, resample=3))
    assert torch.equal(a, b)


def test_declipping_keeps_clipped_samples_beyond_the_threshold():
    truth = PRIOR.sample(200, GEN(3))[0].float()
    level = 0.8
    clipped = truth.clamp(-level, level)
    keep = (clipped.abs() < level).float()
    obs = Observation(Mask(keep), clipped * keep, project=beyond_threshold(clipped, level))
    for method, consistency in (("ddnm", 1e-6), ("pigdm", 0.01)):  # the gradient method meets y approximately
        x = sample(PRIOR.denoiser(LINEAR), truth.shape, LINEAR, SamplingSpec(steps=20), condition=Restore(obs, method))
        beyond = keep == 0
        assert torch.allclose(x[~beyond], clipped[~beyond], atol=consistency)
        assert (x[beyond].abs() >= level - 1e-6).all() and torch.equal(x[beyond].sign(), clipped[beyond].sign())
        # closer to the truth than the clipped input on the clipped samples
        assert (x[beyond] - truth[beyond]).abs().mean() < (clipped[beyond] - truth[beyond]).abs().mean()


def test_unknown_method_names_the_choices():
    with pytest.raises(DiffkitError, match="unknown restoration method 'nope'; choose one of: ddnm, dps"):
        Restore(Observation(Identity(), torch.zeros(2, 4)), "nope")
    assert set(METHODS) == {"ddnm", "pigdm", "tmpd", "dps", "repaint"}


def test_a_noiseless_restoration_ends_within_the_range_and_meets_its_observation():
    # PRIOR's modes sit at ±1 with spread beyond it; the truth lies inside ±1, so the intersection of the
    # range and the observed affine set is not empty. Clipping the sample to the range after sampling
    # would break A x = y; the final projections keep both, for every method and sampler.
    op = AveragePool((2,))
    y = op(torch.tensor([[0.95, 0.9, -0.2, 0.99]])).float().expand(64, 2)
    for method in METHODS + PARTICLE_METHODS:
        for sampler in (["ddpm"] if method == "smc" else sorted(SAMPLERS)):
            x = sample(PRIOR.denoiser(LINEAR), (64, 4), LINEAR, SamplingSpec(sampler, 10, clip=1.0),
                       condition=Restore(Observation(op, y), method, particles=4 if method == "smc" else 1))
            assert x.abs().max() <= 1 + 1e-5, (method, sampler, x.abs().max())
            assert (op(x) - y).abs().max() < 1e-5, (method, sampler)
