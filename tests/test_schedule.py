import dataclasses
import math

import pytest
import torch

from diffkit.core import SCHEDULES, SPACINGS, make_grid, make_schedule, timesteps, warp
from diffkit.core.schedule import MAX_BETA
from diffkit.errors import DiffkitError


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("T", [10, 1000, 4000])
def test_alphas_cumprod_is_float64_and_strictly_decreasing(name, T):
    s = make_schedule(name, T)
    ab = s.alphas_cumprod
    assert ab.dtype == torch.float64 and ab.shape == (T,)
    assert (ab[1:] < ab[:-1]).all()
    if name == "flow":  # rectified flow's path ends at pure noise: zero SNR, a last β of 1
        assert ab[-1] == 0 and ab[0] < 1 and s.betas[-1] == 1 and ((s.betas[:-1] > 0) & (s.betas[:-1] <= MAX_BETA)).all()
    else:
        assert 0 < ab[-1] and ab[0] < 1
        assert ((s.betas > 0) & (s.betas <= MAX_BETA)).all()
    assert torch.allclose(torch.cumprod(1 - s.betas, 0), ab, rtol=1e-12)


def test_linear_matches_ho_et_al_at_1000_steps():
    s = make_schedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)


def test_cosine_clips_beta_at_the_end():
    betas = make_schedule("cosine", 1000).betas
    assert betas.max().item() == pytest.approx(MAX_BETA)
    assert betas[-1].item() == pytest.approx(MAX_BETA)
    # Nichol & Dhariwal: the offset s = 0.008 makes √β_1 about the size of one pixel bin (1/127.5).
    assert betas[0].sqrt().item() == pytest.approx(1 / 127.5, rel=0.25)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_zero_terminal_snr_ends_at_pure_noise_and_keeps_the_start(name):
    plain = make_schedule(name, 1000)
    zero = make_schedule(name, 1000, zero_terminal_snr=True)
    assert zero.alphas_cumprod[-1].item() == 0.0
    assert zero.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(), rel=1e-12)
    assert (zero.alphas_cumprod[1:] < zero.alphas_cumprod[:-1]).all()
    assert zero.log_snr[-1].item() == -float("inf")


def test_unknown_schedule_lists_the_choices():
    with pytest.raises(DiffkitError, match="cosine.*linear"):
        make_schedule("quadratic", 1000)


@pytest.mark.parametrize("spacing", [s for s in SPACINGS if s != "fitted"])  # fitted: test_fitting
@pytest.mark.parametrize("steps", [1, 7, 20, 1000])
def test_timesteps_are_distinct_descending_and_in_range(spacing, steps):
    s = make_schedule("linear", 1000)
    if spacing == "warped":  # an error curve rising steeply in the middle of t
        errors = torch.sigmoid(torch.linspace(-8, 8, warp.BINS, dtype=torch.float64))
        s = dataclasses.replace(s, warp=torch.stack([errors, torch.ones_like(errors)]))
    ts = timesteps(s, steps, spacing)
    assert ts == sorted(set(ts), reverse=True)
    assert 0 <= ts[-1] and ts[0] <= 999
    assert len(ts) == steps


def test_spacing_ends():
    s = make_schedule("linear", 1000)
    assert timesteps(s, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timesteps(s, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert timesteps(s, 10, "linspace")[0] == 999 and timesteps(s, 10, "linspace")[-1] == 0
    assert timesteps(s, 10, "karras")[0] == 999 and timesteps(s, 10, "karras")[-1] == 0
    # logsnr's and squeezed's last call sits one interval above t = 0: its x̂_0 is the result
    for spacing in ("logsnr", "squeezed"):
        assert timesteps(s, 10, spacing)[0] == 999 and 0 < timesteps(s, 10, spacing)[-1] < 10
    assert timesteps(s, 1000, "trailing") == list(range(999, -1, -1))
    # Partial noising starts lower down.
    assert timesteps(s, 5, "trailing", t_start=499)[0] == 499


def test_grid_ends_at_clean_data():
    g = make_grid(make_schedule("cosine", 100), 10)
    assert g.t[-1] is None and g.ab[-1] == 1.0
    assert list(g.ab) == sorted(g.ab)
    seg = g.segment(2, 5)
    assert seg.t == g.t[2:6] and len(seg) == 4


def test_unknown_spacing_and_bad_steps():
    s = make_schedule("linear", 100)
    with pytest.raises(DiffkitError, match="trailing"):
        timesteps(s, 10, "random")
    with pytest.raises(DiffkitError, match="at least 1"):
        timesteps(s, 0)


def _log_sigmas(schedule, ts):
    ab = schedule.alphas_cumprod[ts].double()
    return 0.5 * ((1 - ab).log() - ab.log())


def _evenly_spaced_in_log_sigma(s, n, spacing):
    """Evenly spaced in log σ between σ_max and σ_min (to the integer timesteps' rounding), the start
    and the step to clean data included."""
    gaps = _log_sigmas(s, timesteps(s, n, spacing)).diff()
    interval = (_log_sigmas(s, [999]) - _log_sigmas(s, [0])) / n
    return ((gaps[: n // 2] + interval).abs() < 0.1 * interval).all()


def test_squeezed_spacing_squeezes_the_quiet_top_for_small_budgets_only():
    s = make_schedule("linear", 1000)
    quiet = math.log(5.0)
    # 10 steps: the start, then straight below σ = 5; 20 steps: a quarter of the share above it
    assert (_log_sigmas(s, timesteps(s, 10, "squeezed")[1:]) < quiet).all()
    assert (_log_sigmas(s, timesteps(s, 20, "squeezed")) > quiet).sum() == 3
    # from 40 steps on it is logsnr's grid; logsnr is evenly spaced at every budget
    for n in (40, 100):
        assert timesteps(s, n, "squeezed") == timesteps(s, n, "logsnr")
    for n in (10, 40, 100):
        assert _evenly_spaced_in_log_sigma(s, n, "logsnr"), n
