"""The cost before training: `train --dry-run` measures FLOPs, memory and time on real steps and writes
nothing; `diffkit info RUN` reports the same network's FLOPs for a trained run."""

import json

import torch
from cli import assert_bad_input, run
from torch import nn

from diffkit.cost import call_flops, state_bytes
from test_text import TINY as TEXT


def test_flops_and_state_of_a_known_network():
    layer = nn.Linear(10, 20)
    assert call_flops(layer, torch.zeros(7, 10)) == 2 * 7 * 10 * 20  # two FLOPs per multiply-add
    assert state_bytes(layer) == 5 * 4 * (10 * 20 + 20)


def _dry_run(*args) -> dict:
    result = run("train", *args, "--dry-run", "--json", "-q")
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def test_a_dry_run_measures_real_steps_and_writes_nothing(tmp_path):
    cost = _dry_run("points", "--out", tmp_path / "points", "--batch-size", 64, "--steps", 1000)
    assert not (tmp_path / "points").exists()
    # forward and backward: about three forward passes of the batch, all in the MLP's matrix products
    assert 2.5 < cost["flops_per_step"] / (64 * cost["flops_per_call"]) < 3.5
    assert cost["flops_per_sample"] == 20 * cost["flops_per_call"]
    assert cost["state_mib"] * 2**20 == 5 * 4 * cost["parameters"] and cost["activations_mib"] > 0
    assert cost["seconds_per_step"] > 0 and abs(cost["projected_minutes"] - cost["seconds_per_step"] * 1000 / 60) < 1e-9

    text = _dry_run("text", "--out", tmp_path / "text", *TEXT)  # its tokenizer is trained, but not into --out
    assert not (tmp_path / "text").exists() and text["parameters"] > 0

    run("train", "text", "--out", tmp_path / "trained", "--steps", 2, *TEXT)
    info = json.loads(run("info", tmp_path / "trained", "--json").stdout)
    assert info["flops_per_call"] == text["flops_per_call"] and info["parameters"] == text["parameters"]


def test_a_dry_run_does_not_resume(tmp_path):
    line = assert_bad_input(["train", "points", "--out", tmp_path / "run", "--resume", "--dry-run"], b"", tmp_path)
    assert "--dry-run" in line
