"""`train --resume` continues with the run's own settings: none need retyping, the ones a run may change
(its length, how often it writes, how it runs here) change, and any other one given differently is refused
by name."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli import DIFFKIT, assert_bad_input, run_here
from safetensors.torch import load_file

from test_contract import TRAIN

# Away from each modality's defaults, so that a resume which fell back to a default would show.
OWN = {"image": ["--weighting", "uniform", "--no-self-cond"], "audio": ["--weighting", "uniform", "--self-cond"],
       "text": ["--weighting", "min_snr", "--no-self-cond"]}
SETTINGS = ["--lr", 5e-4, "--batch-size", 3, "--seed", 3, "--ema-decay", 0.99]
STEPS = 24


def _stopped_early(out, args) -> int:
    """A run of STEPS steps started with `args`, stopped by SIGTERM after its first step; returns the step
    its checkpoint holds."""
    process = subprocess.Popen([*DIFFKIT, "train", *map(str, [*args, "--log-every", 1])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()
    return int(stderr.decode().split("checkpoint saved at step ")[1].split(";")[0])


def _trained(*args) -> str:
    """The command run in this process (no fresh interpreter for each); its stderr."""
    code, stderr = run_here(*args)
    assert code == 0, stderr
    return stderr


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_a_stopped_run_resumed_by_out_alone_ends_as_an_uninterrupted_one(modality, tmp_path):
    args = [*TRAIN[modality], *SETTINGS, *OWN[modality], "--steps", STEPS]
    _trained("train", modality, "--out", tmp_path / "whole", *args, "--log-every", 1)
    step = _stopped_early(tmp_path / "split", [modality, "--out", tmp_path / "split", *args])
    assert 0 < step < STEPS, step
    _trained("train", modality, "--out", tmp_path / "split", "--resume", "-q")
    for name in ("model.safetensors", "state/trainer.safetensors"):
        a, b = (load_file(tmp_path / folder / name) for folder in ("whole", "split"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "whole" / "metrics.jsonl").read_text().count("\n") == STEPS
    assert (tmp_path / "split" / "metrics.jsonl").read_text().count("\n") == STEPS


POINTS = [*TRAIN["points"], "--lr", 5e-4, "--lr-decay", "cosine", "--seed", 2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    code, stderr = run_here("train", "points", "--out", out, *POINTS, "--steps", 4)
    assert code == 0, stderr
    return out


@pytest.mark.parametrize("args, message", [
    (["--lr", 1e-3], "--lr: {out} was trained with 0.0005, not 0.001; a resumed run keeps its own settings"),
    (["--seed", 0], "--seed: {out} was trained with 2, not 0"),
    (["--self-cond"], "--self-cond: {out} was trained with False, not True"),
    (["--batch-size", 32], "--batch-size: {out} was trained with 16, not 32"),
    (["--data", "builtin:moons"], "--data: {out} was trained with builtin:ring, not builtin:moons"),
    (["--hidden", 32], "--hidden: {out} was trained with 16, not 32"),
    (["--prediction", "eps"], "--prediction: {out} was trained with v, not eps"),
    (["--schedule", "linear"], "--schedule: {out} was trained with the default, not linear"),
    (["--steps", 2], "--steps 2: {out} has trained 4 steps already"),
])
def test_a_setting_given_anew_that_differs_is_refused_by_its_flag(trained, tmp_path, args, message):
    before = (trained / "config.json").read_bytes()
    line = assert_bad_input(["train", "points", "--out", trained, "--resume", *args], b"", tmp_path)
    assert message.format(out=trained) in line
    assert (trained / "config.json").read_bytes() == before


def test_the_same_command_again_with_resume_and_more_steps_goes_on_with_a_warning(tmp_path):
    out = tmp_path / "run"
    _trained("train", "points", "--out", out, *POINTS, "--steps", 4)
    stderr = _trained("train", "points", "--out", out, *POINTS, "--steps", 6, "--resume", "--log-every", 1)
    assert "warning: --steps 6: the cosine learning-rate decay now follows this total, not the run's 4 steps" in stderr
    recorded = json.loads((out / "config.json").read_text())["train"]
    assert recorded["steps"] == 6 and recorded["log_every"] == 1 and recorded["lr"] == 5e-4
    _trained("train", "points", "--out", tmp_path / "whole", *POINTS, "--steps", 6)
    a, b = (load_file(folder / "state" / "trainer.safetensors") for folder in (out, tmp_path / "whole"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_made_before_runs_recorded_their_options_resumes_with_its_checkpoints_settings(tmp_path):
    out = tmp_path / "old"
    _trained("train", "points", "--out", out, *POINTS, "--steps", 3)
    config = json.loads((out / "config.json").read_text())
    del config["train"]  # as runs of format 1 were written
    config["format_version"] = 1
    (out / "config.json").write_text(json.dumps(config))
    _trained("train", "points", "--out", out, "--resume", "--steps", 5, *TRAIN["points"])
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == 5e-4
    _trained("train", "points", "--out", tmp_path / "whole", *POINTS, "--steps", 5)
    a, b = (load_file(folder / "state" / "trainer.safetensors") for folder in (out, tmp_path / "whole"))
    assert all(torch.equal(a[k], b[k]) for k in a)


FIXTURE = Path(__file__).parent / "fixtures" / "run-format-1-points"


def test_a_run_directory_of_format_1_loads_samples_and_resumes(tmp_path):
    """A points run made by diffkit before config.json had a version 2 (trained with --lr 5e-4 --seed 2
    --batch-size 16 --hidden 16 --timesteps 50, 3 steps): it loads through the migration, samples, and
    resumed to 5 steps ends as a run trained 5 steps at once by today's code."""
    from diffkit.core.checkpoint import FORMAT_VERSION, load_config

    old = tmp_path / "old"
    shutil.copytree(FIXTURE, old)
    config = load_config(old)
    assert json.loads((FIXTURE / "config.json").read_text())["format_version"] == 1
    assert config["format_version"] == FORMAT_VERSION and config["train"] is None
    assert config["diffusion"]["self_cond"] is False
    _trained("sample", "points", "-m", old, "-n", 4, "-o", tmp_path / "points.csv")
    assert len((tmp_path / "points.csv").read_text().splitlines()) == 4
    _trained("train", "points", "--out", old, "--resume", "--steps", 5, "--batch-size", 16, "-q")
    recorded = json.loads((old / "config.json").read_text())
    assert recorded["format_version"] == FORMAT_VERSION
    assert recorded["train"]["lr"] == 5e-4 and recorded["train"]["seed"] == 2 and recorded["train"]["steps"] == 5
    _trained("train", "points", "--out", tmp_path / "whole", "--data", "builtin:ring", "--hidden", 16, "--batch-size", 16,
        "--timesteps", 50, "--lr", 5e-4, "--seed", 2, "--steps", 5, "-q")
    a, b = (load_file(folder / "state" / "trainer.safetensors") for folder in (old, tmp_path / "whole"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
