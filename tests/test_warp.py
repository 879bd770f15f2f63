"""Time warping (CDCD): the learned density of training timesteps and the warped sampling grid, checked
against Gaussian data whose exact denoiser error is known in closed form; then `--timestep-sampling
warped` end to end in every modality, through resume and data parallelism."""

import dataclasses
import json
import math

import pytest
import torch
from cli import run_here
from oracles import GEN

from diffkit.core import make_schedule, timesteps
from diffkit.core import warp
from diffkit.core.checkpoint import read_warp
from diffkit.core.diffusion import gather, sample_timesteps
from diffkit.errors import DiffkitError

from test_contract import SUFFIX, TRAIN

LINEAR = make_schedule("linear", 1000)


def learned_curve(scale: float, steps: int = 300, batch: int = 4096, dim: int = 8) -> torch.Tensor:
    """The curve the trainer would learn from the exact denoiser of N(0, scale² I) data, timesteps drawn
    uniformly: x̂_0 = √ᾱ s² x_t / (ᾱ s² + 1 - ᾱ), whose mean squared error is s² σ² / (s² + σ²)."""
    curve = warp.empty_curve()
    for step in range(steps):
        t = torch.randint(0, LINEAR.T, (batch,), generator=GEN(step))
        x0 = scale * torch.randn(batch, dim, generator=GEN(10_000 + step), dtype=torch.float64)
        ab = gather(LINEAR.alphas_cumprod, t, x0)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(batch, dim, generator=GEN(20_000 + step), dtype=torch.float64)
        estimate = ab.sqrt() * scale**2 * x_t / (ab * scale**2 + 1 - ab)
        curve = warp.updated(curve, warp.step_totals(t, (estimate - x0).square().mean(1), LINEAR.T))
    return curve


def sigma_at(t: float) -> float:
    ab = LINEAR.alphas_cumprod[min(int(t), LINEAR.T - 1)].item()
    return math.sqrt((1 - ab) / ab)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_the_warp_puts_half_its_learned_mass_where_the_error_is_half_the_datas_spread(scale):
    # The exact error reaches half its final s² at σ = s: data of any scale get their own warp.
    rising = (warp.density(learned_curve(scale)) - warp.UNIFORM_SHARE / warp.BINS) / (1 - warp.UNIFORM_SHARE)
    half = int(torch.searchsorted(rising.cumsum(0), torch.tensor(0.5, dtype=torch.float64)))
    bin_edges = [half * LINEAR.T / warp.BINS, (half + 1) * LINEAR.T / warp.BINS]
    assert sigma_at(bin_edges[0]) <= scale * 1.15 and sigma_at(bin_edges[1]) >= scale / 1.15, (half, scale)


def test_timesteps_are_drawn_with_the_warped_density_and_uniform_before_every_bin_is_seen():
    assert torch.allclose(warp.density(warp.empty_curve()), torch.full((warp.BINS,), 1 / warp.BINS, dtype=torch.float64))
    schedule = dataclasses.replace(LINEAR, warp=learned_curve(1.0, steps=100))
    t = sample_timesteps(schedule, 200_000, GEN(5), sampling="warped")
    assert t.min() >= 0 and t.max() < LINEAR.T
    frequencies = torch.bincount(t * warp.BINS // LINEAR.T, minlength=warp.BINS).double() / t.numel()
    assert torch.allclose(frequencies, warp.density(schedule.warp), atol=0.004)
    # the CDF and its inverse agree
    for u in (0.0, 0.13, 0.5, 0.91):
        back = warp.t_to_warped(schedule.warp, warp.warped_to_t(schedule.warp, torch.tensor([u]), LINEAR.T).item(), LINEAR.T)
        assert abs(back - u) < 1e-6


def test_the_warped_grid_spends_its_levels_where_the_error_grows():
    schedule = dataclasses.replace(LINEAR, warp=learned_curve(3.0, steps=100))
    levels = [sigma_at(t) for t in timesteps(schedule, 20, "warped")]
    assert levels[0] == sigma_at(999) and len(set(levels)) == 20
    # the error of scale-3 data rises from σ = 1 to 9: most levels lie there, fewer in logsnr's grid
    between = sum(1.0 < s < 9.0 for s in levels)
    assert between >= 10 and between > sum(1.0 < sigma_at(t) < 9.0 for t in timesteps(LINEAR, 20, "logsnr"))
    # partial noising starts at t_start and keeps the shape below it
    assert timesteps(schedule, 5, "warped", t_start=400)[0] == 400
    with pytest.raises(DiffkitError, match="spacing warped needs a run trained on warped timesteps"):
        timesteps(LINEAR, 10, "warped")


@pytest.mark.parametrize("modality", sorted(TRAIN))
def test_train_warped_then_resume_and_sample_warped_in_every_modality(modality, tmp_path):
    out = tmp_path / "run"
    code, stderr = run_here("train", modality, "--out", out, "--steps", 2, "--timestep-sampling", "warped",
                            *TRAIN[modality])
    assert code == 0, stderr
    first = read_warp(out)
    assert first.shape == (2, warp.BINS) and first[1].sum() > 0
    code, stderr = run_here("train", modality, "--out", out, "--steps", 3, "--resume", "--timestep-sampling",
                            "warped", *TRAIN[modality])
    assert code == 0, stderr
    assert read_warp(out)[1].sum() > first[1].sum() * warp.DECAY  # the resumed run kept learning the same curve
    target = tmp_path / f"s{SUFFIX[modality]}"
    code, stderr = run_here("sample", modality, "-m", out, "-n", 2, "--steps", 3, "--spacing", "warped", "-o", target, "-q")
    assert code == 0, stderr
    assert target.exists()


def test_a_run_without_a_warp_cannot_sample_warped(tmp_path):
    out = tmp_path / "run"
    assert run_here("train", "points", "--out", out, "--steps", 1, *TRAIN["points"])[0] == 0
    assert read_warp(out) is None
    code, stderr = run_here("sample", "points", "-m", out, "-n", 2, "--spacing", "warped", "-o", tmp_path / "s.csv")
    assert code == 2 and stderr.startswith("error: ") and "--spacing warped needs a run trained on warped timesteps" in stderr


def test_too_few_timesteps_for_the_bins_is_one_error_and_no_run(tmp_path):
    options = [*TRAIN["points"][:-3], "--timesteps", 20, "-q"]  # TRAIN's points options end with --timesteps 50 -q
    code, stderr = run_here("train", "points", "--out", tmp_path / "run", "--steps", 1, "--timestep-sampling", "warped",
                            *options)
    assert code == 2 and "at least 50, got 20" in stderr and not (tmp_path / "run").exists()


def test_a_tampered_warp_is_one_error(tmp_path):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    assert run_here("train", "points", "--out", out, "--steps", 1, "--timestep-sampling", "warped", *TRAIN["points"])[0] == 0
    save_file(load_file(out / "model.safetensors"), out / "model.safetensors", metadata={"time_warp": json.dumps([1, 2])})
    code, stderr = run_here("sample", "points", "-m", out, "-n", 2, "-o", tmp_path / "s.csv")
    assert code == 2 and "model.safetensors: the time warp is not" in stderr and len(stderr.strip().splitlines()) == 1


def test_a_run_trained_uniform_continues_warped_from_an_empty_curve(tmp_path):
    out = tmp_path / "run"
    assert run_here("train", "points", "--out", out, "--steps", 1, *TRAIN["points"])[0] == 0
    code, stderr = run_here("train", "points", "--out", out, "--steps", 2, "--resume", "--timestep-sampling", "warped",
                            *TRAIN["points"])
    assert code == 0, stderr
    assert read_warp(out)[1].sum() == 16  # the one warped step's batch
