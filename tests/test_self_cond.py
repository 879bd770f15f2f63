"""Self-conditioning (Chen et al. 2023): what the network is fed in training, in the bound and by every
sampler, checked against the exact mixture oracle; and `train --self-cond` end to end in each modality."""

import json

import pytest
import torch
from cli import run_here
from oracles import GEN, LINEAR, gaussian

from diffkit.core import GaussianMixture, SamplingSpec, make_schedule
from diffkit.core.diffusion import eps_from_x0, gather, split_x0_eps, training_losses, variational_bound
from diffkit.core.generate import classifier_free, make_denoiser, sample
from diffkit.core.samplers import SAMPLERS

from test_contract import TRAIN

MIXTURE = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, -0.5], [-1.0, 0.5]]),
                          0.1 * torch.eye(2).expand(2, 2, 2))


def recording(model, calls: list):
    """`model`, a network that ignores self_cond, recording each call's input, fed estimate and output."""

    def network(x, t, self_cond=None, **kwargs):
        out = model(x, t, **kwargs)
        calls.append((x.clone(), int(t[0]), None if self_cond is None else self_cond.clone(), out))
        return out

    return network


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_feeds_the_network_the_estimate_of_its_previous_call(sampler):
    calls = []
    network = recording(MIXTURE.denoiser(LINEAR), calls)
    spec = SamplingSpec(sampler, 6, seed=3)
    fed = sample(network, (64, 2), LINEAR, spec, self_cond=True, dtype=torch.float64)
    assert calls[0][2] is None  # the first call has no estimate yet: the network sees zeros
    for (x, t, _, out), (_, _, estimate, _) in zip(calls, calls[1:]):
        x0, _ = split_x0_eps(out, x, LINEAR.alphas_cumprod[t].item(), "eps")
        assert torch.equal(estimate, x0)
    # A network that ignores the estimate samples exactly as it does without self-conditioning.
    assert torch.equal(fed, sample(MIXTURE.denoiser(LINEAR), (64, 2), LINEAR, spec, dtype=torch.float64))


def test_guidance_feeds_both_halves_the_same_estimate_and_a_particle_keeps_its_own():
    calls = []
    classes = recording(lambda x, t, y: MIXTURE.denoiser(LINEAR)(x, t) + y[:, None], calls)
    guided = classifier_free(classes, 2.0, {"y": torch.ones(4, dtype=torch.float64)},
                             {"y": torch.zeros(4, dtype=torch.float64)}, "fixed_small")
    sample(guided, (4, 2), LINEAR, SamplingSpec(steps=4), self_cond=True, dtype=torch.float64)
    for _, _, estimate, _ in calls[1:]:
        assert torch.equal(estimate[:4], estimate[4:])
    # A particle filter's resampling moves each row's memory with it (`follow`).
    calls.clear()
    denoise = make_denoiser(recording(MIXTURE.denoiser(LINEAR), calls), LINEAR, self_cond=True)
    first = denoise(torch.randn(5, 2, generator=GEN(1)), 500).x0
    rows = torch.tensor([4, 4, 0, 1, 2])
    denoise.follow(rows)
    denoise(torch.randn(5, 2, generator=GEN(2)), 400)
    assert torch.equal(calls[-1][2], first[rows])


def test_the_bound_of_a_self_conditioned_network_feeds_its_estimate_at_the_same_step():
    # A network that, given an estimate, answers with it (as ε̂ at the same x_t): fed the exact x̂_0 by a
    # first call at the same x_t and t, it is the exact network, and so its bound is the exact one.
    data, schedule = gaussian(0.5, 0.3, 3), make_schedule("cosine", 50)
    exact = data.denoiser(schedule)

    def network(x, t, self_cond=None):
        if self_cond is None:
            return exact(x, t)
        return eps_from_x0(self_cond, x, gather(schedule.alphas_cumprod, t, x))

    x0 = data.sample(32, GEN(4))[0]
    bounds = [variational_bound(schedule, model, x0, prediction="eps", variance="fixed_small", generator=GEN(5),
                                self_cond=self_cond) for model, self_cond in ((exact, False), (network, True))]
    assert torch.allclose(bounds[0].total, bounds[1].total, atol=1e-5)
    # Fed nothing, this network is exact too, but fed zeros it would be far off: the bound really feeds it.
    zeros = variational_bound(schedule, lambda x, t: network(x, t, torch.zeros_like(x)), x0, prediction="eps",
                              variance="fixed_small", generator=GEN(5))
    assert (zeros.total - bounds[0].total).mean() > 1


def test_training_feeds_half_the_examples_their_own_estimate_without_its_gradient():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    calls = []

    def network(x, t, self_cond=None):
        calls.append((torch.is_grad_enabled(), self_cond))
        return net(torch.cat([x, torch.zeros_like(x) if self_cond is None else self_cond], 1))

    x0 = torch.randn(4000, 2, generator=GEN(0))
    losses = training_losses(LINEAR, network, x0, prediction="v", generator=GEN(1), self_cond=True)
    (first_grad, first_fed), (second_grad, estimate) = calls
    assert not first_grad and first_fed is None and second_grad and not estimate.requires_grad
    fed = estimate.abs().sum(1) > 0
    assert 0.45 < fed.float().mean() < 0.55
    losses["loss"].mean().backward()
    assert net.weight.grad is not None
    # Under data parallelism each process gets its slice of the same draws, which of them are fed included.
    halves = [training_losses(LINEAR, network, x0[rank::2], prediction="v", generator=GEN(1), self_cond=True,
                              shard=(rank, 2))["loss"] for rank in (0, 1)]
    assert torch.allclose(torch.stack(halves, 1).flatten(), losses["loss"], atol=1e-6)


@pytest.mark.parametrize("modality", sorted(TRAIN))
def test_train_self_cond_then_sample_and_eval_in_every_modality(modality, tmp_path):
    out = tmp_path / "run"
    code, stderr = run_here("train", modality, "--out", out, "--steps", 2, "--self-cond", *TRAIN[modality])
    assert code == 0, stderr
    assert json.loads((out / "config.json").read_text())["diffusion"]["self_cond"] is True
    suffix = {"image": ".png", "audio": ".wav", "text": ".txt", "points": ".csv"}[modality]
    code, stderr = run_here("sample", modality, "-m", out, "-n", 2, "--steps", 3, "-o", tmp_path / f"s{suffix}", "-q")
    assert code == 0, stderr
    assert (tmp_path / f"s{suffix}").exists()


def test_a_run_from_before_self_conditioning_resumes_and_is_bounded(tmp_path):
    out = tmp_path / "run"
    code, stderr = run_here("train", "text", "--out", out, "--steps", 1, "--no-self-cond", *TRAIN["text"])
    assert code == 0, stderr
    config = json.loads((out / "config.json").read_text())
    del config["diffusion"]["self_cond"], config["train"]  # as runs made before the option were written
    config["format_version"] = 1
    (out / "config.json").write_text(json.dumps(config))
    code, stderr = run_here("train", "text", "--out", out, "--steps", 2, "--resume", *TRAIN["text"])
    assert code == 0, stderr
    code, stderr = run_here("eval", "text", "-m", out, "--samples", 2, "-q")
    assert code == 0, stderr


@pytest.mark.parametrize("modality,default", [("image", True), ("text", True), ("audio", False), ("points", False)])
def test_each_modality_s_default_self_conditioning_and_prediction(modality, default, tmp_path):
    # Self-conditioning where bench/mnist.py and bench/text.py measured it to pay (images, text), not
    # where it was not measured (audio, points); `--no-self-cond` turns it off everywhere.
    for flags, expected in (([], default), (["--no-self-cond"], False)):
        out = tmp_path / f"run{len(flags)}"
        code, stderr = run_here("train", modality, "--out", out, "--steps", 1, *flags, *TRAIN[modality])
        assert code == 0, stderr
        diffusion = json.loads((out / "config.json").read_text())["diffusion"]
        assert diffusion["self_cond"] is expected
        assert diffusion["prediction"] == {"image": "v", "text": "x0", "audio": "v", "points": "v"}[modality]
