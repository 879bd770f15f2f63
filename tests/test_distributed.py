"""Data-parallel training with torchrun: two gloo processes on CPU train as one process does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli import run
from safetensors.torch import load_file

from diffkit.core.checkpoint import read_warp

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
POINTS = ["--data", "builtin:ring", "--batch-size", 64, "--log-every", 1, "--hidden", 64, "--timesteps", 100,
          "--precision", "fp32", "-q"]


def torchrun(*args, check=True):
    result = subprocess.run([*TORCHRUN, *map(str, args)], capture_output=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], rtol=1e-4, atol=1e-5)


def assert_same_training(a: Path, b: Path) -> None:
    """Two runs followed the same loss curve, step for step, to the same weights."""
    torch.testing.assert_close(torch.tensor(losses(a)), torch.tensor(losses(b)), rtol=1e-4, atol=1e-6)
    assert_same_weights(a, b)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    run("train", "points", "--out", out, "--steps", 12, "--checkpoint-every", 6, *POINTS)
    return out


def test_two_processes_follow_the_single_process_loss_curve(single, tmp_path):
    out = tmp_path / "ddp"
    result = torchrun("-m", "diffkit", "train", "points", "--out", out, "--steps", 12, "--checkpoint-every", 6, *POINTS)
    assert len(losses(out)) == 12  # one process wrote the metrics
    assert_same_training(out, single)
    assert b"Traceback" not in result.stderr


def test_two_processes_learn_the_single_process_time_warp(tmp_path):
    # Each process sees half the batch's errors: only their sum over processes gives one curve and the
    # same timesteps (the warp is uniform until every bin is seen, here from the 4th step on).
    warped = [*POINTS, "--steps", 12, "--timestep-sampling", "warped"]
    run("train", "points", "--out", tmp_path / "single", *warped)
    torchrun("-m", "diffkit", "train", "points", "--out", tmp_path / "ddp", *warped)
    assert_same_training(tmp_path / "ddp", tmp_path / "single")
    torch.testing.assert_close(read_warp(tmp_path / "ddp"), read_warp(tmp_path / "single"), rtol=1e-5, atol=1e-8)


def test_self_conditioned_processes_follow_one_process_when_one_feeds_no_estimate(tmp_path):
    # One example per process: at about half the steps one process feeds its example a first estimate and
    # makes that extra call while the other, feeding none, skips it.
    options = [*POINTS, "--steps", 12, "--self-cond"]
    options[options.index("--batch-size") + 1] = 2
    run("train", "points", "--out", tmp_path / "single", *options)
    torchrun("-m", "diffkit", "train", "points", "--out", tmp_path / "ddp", *options)
    assert_same_training(tmp_path / "ddp", tmp_path / "single")


def test_both_ranks_hold_identical_weights(tmp_path):
    torchrun(Path(__file__).parent / "ddp_ranks.py", tmp_path)
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key


def test_resume_with_another_number_of_processes(single, tmp_path):
    out = tmp_path / "resumed"
    torchrun("-m", "diffkit", "train", "points", "--out", out, "--steps", 6, "--checkpoint-every", 6, *POINTS)
    run("train", "points", "--out", out, "--resume", "--steps", 12, "--checkpoint-every", 6, *POINTS)
    assert_same_training(out, single)


def test_a_bad_input_stops_every_process_with_one_error(tmp_path):
    result = torchrun("-m", "diffkit", "train", "points", "--out", tmp_path / "run", "--steps", 2,
                      "--data", tmp_path / "missing.csv", "-q", check=False)
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1 and "missing.csv: no such file" in errors[0]
    assert "diffkit/" not in result.stderr.decode()  # no traceback of ours (torchrun prints its own)
