"""A run is never lost: SIGKILL at random moments (checkpoint writes included) and resume, a full disk,
an unwritable --out."""

import errno
import random
import signal
import subprocess
import time

import pytest
from cli import DIFFKIT, assert_bad_input, run
from safetensors.torch import load_file

from diffkit.errors import DiffkitError
from diffkit.io import atomic_write

# A checkpoint every 2 steps: much of the run is spent writing one, so the kills land in writes too.
TINY = ["--data", "builtin:ring", "--batch-size", 64, "--hidden", 64, "--timesteps", 100, "-q"]
POINTS = [*TINY, "--steps", 200, "--checkpoint-every", 2, "--log-every", 1]


def test_sigkill_at_random_moments_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    run("train", "points", "--out", reference, *POINTS)
    out, rng, kills = tmp_path / "killed", random.Random(0), 0
    for attempt in range(4):
        resume = ["--resume"] if (out / "config.json").exists() else []
        process = subprocess.Popen([*DIFFKIT, "train", "points", "--out", str(out), *resume, *map(str, POINTS)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(2.0, 4.0))  # past start-up (~2 s), somewhere in training
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    run("train", "points", "--out", out, "--resume", *POINTS)
    assert not list(out.rglob("*.tmp"))  # what a kill left half-written was cleared on resume
    assert kills >= 2
    final, expected = load_file(out / "state" / "trainer.safetensors"), load_file(reference / "state" / "trainer.safetensors")
    assert final.keys() == expected.keys() and all((final[k] == expected[k]).all() for k in final)
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 200  # the steps trained twice were logged once


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
    message = assert_bad_input(["train", "points", "--out", tmp_path / "file" / "run", *POINTS], b"", tmp_path, ".csv")
    assert "cannot create or write the run here" in message
