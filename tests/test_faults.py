"""A run is never lost: SIGKILL at random moments (checkpoint writes included) and resume, a full disk,
an unwritable --out. And files handed to us are never trusted: pickles where checkpoints belong, configs
that do not fit."""

import errno
import json
import pickle
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli import DIFFKIT, assert_bad_input, run, run_here
from safetensors.torch import load_file

from diffkit.errors import DiffkitError
from diffkit.io import atomic_write

# A checkpoint every 2 steps: much of the run is spent writing one, so the kills land in writes too.
TINY = ["--data", "builtin:ring", "--batch-size", 64, "--hidden", 64, "--timesteps", 100, "-q"]
POINTS = [*TINY, "--steps", 200, "--checkpoint-every", 2, "--log-every", 1]


def _processes_naming(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sigkill_at_random_moments_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    """Killed and resumed with two data workers, it ends with the weights of an uninterrupted run with
    none; the killed runs' workers do not outlive them."""
    reference = tmp_path / "reference"
    run("train", "points", "--out", reference, *POINTS, "--workers", 0)
    out, rng, kills = tmp_path / "killed", random.Random(0), 0
    for attempt in range(4):
        resume = ["--resume"] if (out / "config.json").exists() else []
        process = subprocess.Popen([*DIFFKIT, "train", "points", "--out", str(out), *resume, *map(str, POINTS),
                                    "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(2.0, 4.0))  # past start-up (~2 s), somewhere in training
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    deadline = time.time() + 10
    while _processes_naming(str(out)) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_naming(str(out)), "a killed run's data workers are still running"
    run("train", "points", "--out", out, "--resume", *POINTS, "--workers", 2)
    assert not list(out.rglob("*.tmp"))  # what a kill left half-written was cleared on resume
    assert kills >= 2
    final, expected = load_file(out / "state" / "trainer.safetensors"), load_file(reference / "state" / "trainer.safetensors")
    assert final.keys() == expected.keys() and all((final[k] == expected[k]).all() for k in final)
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 200  # the steps trained twice were logged once


def _training_in_background(out) -> subprocess.Popen:
    """A long points run into `out`, returned once it has logged its first step."""
    args = ["train", "points", "--out", out, *TINY, "--steps", 100_000, "--checkpoint-every", 100_000]
    process = subprocess.Popen([*DIFFKIT, *map(str, args)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    return process


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_save_a_checkpoint_then_exit_130_and_143(stop, tmp_path):
    out = tmp_path / "stopped"
    process = _training_in_background(out)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, stderr.decode()
    assert b"checkpoint saved at step" in stderr and b"Traceback" not in stderr
    step = int(stderr.decode().split("checkpoint saved at step ")[1].split(";")[0])
    run("train", "points", "--out", out, *TINY, "--steps", step + 3, "--resume")
    run("train", "points", "--out", tmp_path / "whole", *TINY, "--steps", step + 3)
    final, expected = (load_file(folder / "state" / "trainer.safetensors") for folder in (out, tmp_path / "whole"))
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)


def test_a_run_in_training_is_locked_against_a_second_process(tmp_path):
    out = tmp_path / "busy"
    process = _training_in_background(out)
    try:
        code, stderr = run_here("train", "points", "--out", out, *TINY, "--steps", 5, "--resume")
        assert code == 2 and f"another process (pid {process.pid}) is training this run" in stderr
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        _, stopped = process.communicate(timeout=120)
    assert process.returncode == 143
    step = int(stopped.decode().split("checkpoint saved at step ")[1].split(";")[0])
    code, stderr = run_here("train", "points", "--out", out, *TINY, "--steps", step + 2, "--resume")  # the lock went with it
    assert code == 0, stderr


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed(tmp_path):
    out = tmp_path / "early"
    run("train", "points", "--out", out, "--steps", 1, *TINY)
    (out / "state" / "trainer.safetensors").unlink()  # as if killed before the first checkpoint
    (out / "model.safetensors").unlink()
    result = run("train", "points", "--out", out, "--resume", "--steps", 2, *TINY)
    assert (out / "model.safetensors").exists() and b"Traceback" not in result.stderr


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"previous")
    with pytest.raises(DiffkitError, match="No space left on device.*previous version is intact"):
        with atomic_write(path) as f:
            f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [path]


def test_an_unwritable_out_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    message = assert_bad_input(["train", "points", "--out", tmp_path / "file" / "run", *POINTS], b"", tmp_path)
    assert "cannot create or write the run here" in message


class Payload:
    """A pickle that would leave a marker file behind if anything ever unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def points_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("untrusted") / "run"
    run("train", "points", "--out", out, "--steps", 2, *TINY)
    return out


def _copy(run_dir, tmp_path):
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


@pytest.mark.parametrize("where", ["model.safetensors", "state/trainer.safetensors"])
def test_a_pickle_where_a_checkpoint_belongs_is_rejected_unexecuted(points_run, tmp_path, where):
    copy, marker = _copy(points_run, tmp_path), tmp_path / "executed"
    (copy / where).write_bytes(pickle.dumps(Payload(marker)))
    args = ["sample", "points", "-m", copy, "-n", 1] if where == "model.safetensors" else \
        ["train", "points", "--out", copy, "--resume", "--steps", 4, *TINY]
    message = assert_bad_input(args, b"", tmp_path)
    assert "not a safetensors file" in message or "not a diffkit trainer state" in message
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(modality="video"), "unknown modality 'video'"),
    (lambda c: c.update(format_version=99), "written by a newer diffkit (format 99)"),
    (lambda c: c.pop("model"), "config.json: missing setting 'model'"),
    (lambda c: c["model"].update(hidden=32), "weights do not fit the model in config.json"),
    (lambda c: c.pop("modality"), "missing the 'modality' key"),
])
def test_a_config_that_does_not_fit_is_refused(points_run, tmp_path, change, message):
    copy = _copy(points_run, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    change(config)
    (copy / "config.json").write_text(json.dumps(config))
    command = ["info", copy] if "video" in message else ["sample", "points", "-m", copy, "-n", 1]
    assert message in assert_bad_input(command, b"", tmp_path)


def test_non_finite_losses_are_skipped_then_stop_the_run_with_its_checkpoint_intact(tmp_path):
    import torch

    from diffkit.core import make_schedule
    from diffkit.core.checkpoint import read_state
    from diffkit.core.trainer import TrainSettings, Trainer
    from diffkit.points.model import PointsConfig, PointsDenoiser

    model = PointsDenoiser(PointsConfig(dim=2, hidden=16, out=2))
    settings = TrainSettings(steps=20, checkpoint_every=2, max_bad_steps=3, warmup=1, log_every=1)
    trainer = Trainer(model, make_schedule("cosine", 100), settings, prediction="eps", variance="fixed_small",
                      run=tmp_path)
    data = torch.randn(16, 2)
    # Good data for the first 4 steps, then a NaN in every batch.
    batch_at = lambda step, micro: (data if step < 4 else data * float("nan"), {})  # noqa: E731
    with pytest.raises(DiffkitError, match="3 steps in a row had a non-finite loss; stopped at step 6"):
        trainer.fit(batch_at)
    tensors, meta = read_state(tmp_path)
    assert meta["step"] == 6 and all(torch.isfinite(t).all() for t in tensors.values())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("skipped")] == [5, 6] and len(records) == 6
