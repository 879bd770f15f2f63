"""The grid fitted to a model (core.fitting, runs.fitted_grid): it brings a deterministic sampler closer to
the ODE's own solution than the fixed spacings it starts from, on draws it was not fitted on; a run keeps
it beside its weights and reuses it; it is refused where it means nothing."""

import dataclasses
import json

import pytest
import torch
from cli import run, run_here

from diffkit.core import GaussianMixture, SamplingSpec, make_grid, make_schedule, sample
from diffkit.core.fitting import REFERENCE_STEPS, START_SPACINGS, fit_timesteps
from diffkit.errors import SettingError


def _distance_to_solution(model, schedule, spec, dim, seed):
    """Mean squared distance of 2,000 draws of `spec` to the same draws' converged solution."""
    spec = dataclasses.replace(spec, seed=seed)
    solution = sample(model, (2000, dim), schedule, SamplingSpec(spec.sampler, REFERENCE_STEPS, "logsnr", seed=seed))
    return (sample(model, (2000, dim), schedule, spec) - solution).double().square().mean().item()


@pytest.mark.parametrize("sampler", ["unipc", "dpm++2m", "ddim"])
def test_a_fitted_grid_comes_closer_to_the_solution_than_the_spacings_it_starts_from(sampler):
    """On fresh noise (not the fit's), the exact denoiser of a 16-D four-mode mixture."""
    data = GaussianMixture.random(4, 16, seed=3)
    schedule = make_schedule("linear", 1000)
    model = data.denoiser(schedule)
    spec = SamplingSpec(sampler, 8, "fitted", seed=7)
    ts = fit_timesteps(lambda s: sample(model, (256, data.dim), schedule, s), schedule, spec)
    assert len(ts) == 8 and ts[0] == 999 and list(ts) == sorted(set(ts), reverse=True) and ts[-1] >= 0
    fitted = _distance_to_solution(model, schedule, dataclasses.replace(spec, timesteps=ts), data.dim, seed=1)
    fixed = [_distance_to_solution(model, schedule, SamplingSpec(sampler, 8, spacing), data.dim, seed=1)
             for spacing in START_SPACINGS]
    assert fitted <= min(fixed), (fitted, fixed)


def test_the_fit_reports_progress_and_ends_at_its_total():
    data = GaussianMixture.ring(8, 1.0, 0.05)
    schedule = make_schedule("linear", 200)
    model = data.denoiser(schedule)
    heard = []
    fit_timesteps(lambda s: sample(model, (64, 2), schedule, s), schedule, SamplingSpec("unipc", 4, "fitted"),
                  sweeps=1, progress=lambda done, total: heard.append((done, total)))
    assert heard[-1][0] == heard[-1][1] and all(b == heard[0][1] for _, b in heard)
    assert [d for d, _ in heard] == sorted(d for d, _ in heard)


@pytest.mark.parametrize("sampling", [SamplingSpec("ddpm", 5, "fitted"), SamplingSpec("dpm++2m-sde", 5, "fitted"),
                                      SamplingSpec("ddim", 5, "fitted", eta=1.0)])
def test_a_stochastic_sampler_has_no_fitted_grid(sampling):
    schedule = make_schedule("linear", 100)
    with pytest.raises(SettingError, match="fitted needs a deterministic sampler"):
        fit_timesteps(lambda s: torch.zeros(2, 2), schedule, sampling)


def test_timesteps_are_checked_where_they_are_given():
    with pytest.raises(SettingError, match="go with the spacing fitted"):
        SamplingSpec("unipc", 3, "logsnr", timesteps=(999, 500, 0))
    for wrong in ((999, 500), (999, 999, 0), (999, 500, -1), (10, 500, 0)):
        with pytest.raises(SettingError, match="descending timesteps"):
            SamplingSpec("unipc", 3, "fitted", timesteps=wrong)
    schedule = make_schedule("linear", 100)
    with pytest.raises(SettingError, match="below the schedule's 100 steps"):
        make_grid(schedule, 3, "fitted", fitted=(999, 50, 0))
    with pytest.raises(SettingError, match="fitted needs the timesteps fitted to the model"):
        sample(lambda x, t: x, (2, 2), schedule, SamplingSpec("unipc", 3, "fitted"))


def test_a_walk_from_part_way_keeps_the_fitted_levels_below_its_start():
    schedule = make_schedule("linear", 1000)
    grid = make_grid(schedule, 5, "fitted", t_start=600, fitted=(999, 700, 400, 100, 10))
    assert grid.t == (600, 400, 100, 10, None)


def _points_run(tmp_path):
    out = tmp_path / "run"
    code, stderr = run_here("train", "points", "--out", out, "--steps", 3, "--hidden", 16, "--batch-size", 16,
                            "--timesteps", 50, "-q")
    assert code == 0, stderr
    return out


def test_a_run_fits_its_grid_once_keeps_it_and_refits_for_new_weights(tmp_path, monkeypatch):
    from diffkit import runs
    from diffkit.core import fitting
    from diffkit.points import pipeline

    out = _points_run(tmp_path)
    fits = []
    real_fit = fitting.fit_timesteps
    monkeypatch.setattr(fitting, "fit_timesteps", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    run = pipeline.load(str(out))
    spec = SamplingSpec("unipc", 4, "fitted", seed=3)
    first = pipeline.generate(run, 6, spec)
    kept = json.loads((out / runs.GRIDS).read_text())
    assert len(fits) == 1 and kept["weights"] == runs.weights_digest(out) and len(kept["grids"]) == 1
    [timesteps] = kept["grids"].values()
    again = pipeline.generate(pipeline.load(str(out)), 6, spec)
    assert len(fits) == 1 and torch.equal(first, again)
    assert torch.equal(first, pipeline.generate(run, 6, dataclasses.replace(spec, timesteps=tuple(timesteps))))
    pipeline.generate(run, 6, dataclasses.replace(spec, steps=5))
    assert len(fits) == 2 and len(json.loads((out / runs.GRIDS).read_text())["grids"]) == 2
    code, stderr = run_here("train", "points", "--out", out, "--resume", "--steps", 5, "-q")
    assert code == 0, stderr
    pipeline.generate(pipeline.load(str(out)), 6, spec)
    assert len(fits) == 3 and len(json.loads((out / runs.GRIDS).read_text())["grids"]) == 1


@pytest.mark.parametrize("content", ["{", "[]", '{"weights": 1, "grids": []}', "\xff"])
def test_a_damaged_grids_file_is_fitted_again(tmp_path, content):
    from diffkit import runs
    from diffkit.points import pipeline

    out = _points_run(tmp_path)
    (out / runs.GRIDS).write_text(content, errors="surrogateescape")
    pipeline.generate(pipeline.load(str(out)), 4, SamplingSpec("dpm++2m", 3, "fitted"))
    assert len(json.loads((out / runs.GRIDS).read_text())["grids"]) == 1


def test_a_kept_grid_outside_the_schedule_is_fitted_again(tmp_path):
    from diffkit import runs
    from diffkit.points import pipeline

    out = _points_run(tmp_path)
    spec = SamplingSpec("dpm++2m", 3, "fitted")
    key = "dpm++2m steps=3 eta=None clip=None threshold=None guidance=1.0 shape=2"
    (out / runs.GRIDS).write_text(json.dumps({"weights": runs.weights_digest(out), "grids": {key: [5000, 10, 0]}}))
    points = pipeline.generate(pipeline.load(str(out)), 4, spec)
    assert torch.isfinite(points).all()
    assert json.loads((out / runs.GRIDS).read_text())["grids"][key][0] == 49  # the top of its 50 timesteps


def test_a_grid_fitted_while_a_training_holds_the_run_is_used_but_not_kept(tmp_path, capsys):
    from diffkit import runs
    from diffkit.points import pipeline

    out = _points_run(tmp_path)
    runs.hold_run(out)
    try:
        points = pipeline.generate(pipeline.load(str(out)), 4, SamplingSpec("unipc", 3, "fitted"))
    finally:
        runs.release_run(out)
    assert torch.isfinite(points).all() and not (out / runs.GRIDS).exists()
    assert "fitted grid is used but not kept" in capsys.readouterr().err


def test_sample_with_a_fitted_grid_from_the_cli_and_info_names_it(tmp_path):
    out = _points_run(tmp_path)
    code, stderr = run_here("sample", "points", "-m", out, "-n", 5, "--sampler", "unipc", "--steps", 4,
                            "--spacing", "fitted", "-o", tmp_path / "s.csv", "-q")
    assert code == 0, stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 5
    info = json.loads(run("info", out, "--json").stdout)
    assert info["fitted_grids"] == ["unipc steps=4 eta=None clip=None threshold=None guidance=1.0 shape=2"]
    code, stderr = run_here("sample", "points", "-m", out, "-n", 5, "--sampler", "ddpm", "--spacing", "fitted",
                            "-o", tmp_path / "t.csv")
    assert code == 2 and stderr.startswith("error: ") and "--spacing fitted needs a deterministic sampler" in stderr
    assert not (tmp_path / "t.csv").exists()
