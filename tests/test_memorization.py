"""`eval --memorization`: nearest training examples and the share of samples closer to the training set
than held-out data are, against known answers, and end to end: a run trained long on 8 images flags most
of its samples, uniform noise none."""

import json

import numpy as np
import pytest
import torch
from cli import assert_bad_input, run
from PIL import Image

from diffkit.metrics.memorization import copying_threshold, flagged_share, longest_shared_ngrams, nearest

MEMORISING_STEPS = 400


def test_nearest_and_the_calibrated_threshold():
    keys = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    distances, index = nearest(torch.tensor([[1.0, 0.0], [9.0, 1.0], [5.0, 0.0]]), keys)
    assert torch.allclose(distances, torch.tensor([1.0, 2 ** 0.5, 5.0]).double()) and index.tolist() == [0, 1, 0]
    held_out = torch.arange(1, 101).double()  # distances 1..100: 5% of them lie below 5.95
    threshold = copying_threshold(held_out)
    assert threshold == pytest.approx(5.95)
    assert flagged_share(torch.tensor([0.5, 3.0, 50.0, 80.0]).double(), threshold) == 0.5
    assert flagged_share(held_out, threshold) == 0.05  # held-out data flag the share they were calibrated to


def test_longest_shared_ngrams_of_lines():
    training = ["the cat sat on the mat", "a dog ran"]
    found = longest_shared_ngrams(["the cat sat on a log", "a dog ran home", "nothing here", "mat"], training)
    assert found.tolist() == [4, 3, 0, 1]


def _pictures(folder, count: int, seed: int):
    """Two random colours in one of four layouts (halves, quarters, a centre square, stripes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(count):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        image = np.zeros((16, 16, 3), dtype=np.int64) + a
        layout = rng.integers(4)
        if layout == 0:
            image[:, 8:] = b
        elif layout == 1:
            image[:8, :8] = image[8:, 8:] = b
        elif layout == 2:
            image[4:12, 4:12] = b
        else:
            image[::4] = image[1::4] = b
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i}.png")


@pytest.mark.slow
def test_a_run_trained_long_on_8_images_copies_them_and_noise_copies_nothing(tmp_path):
    _pictures(tmp_path / "train", 8, seed=0)
    _pictures(tmp_path / "held", 32, seed=1)
    run("train", "image", "--data", tmp_path / "train", "--out", tmp_path / "run", "--image-size", 16, "--preset",
        "tiny", "--attention", "8", "--batch-size", 8, "--lr", "2e-3", "--steps", MEMORISING_STEPS, "-q")
    records = [json.loads(line) for line in run("eval", "image", "-m", tmp_path / "run", "--memorization", "--data",
                                                tmp_path / "held", "--samples", 32, "--reference", "--neighbours",
                                                tmp_path / "pairs.png", "--steps", 20, "-q", "--json").stdout.splitlines()]
    shares = {r["of"].split(" nearer")[0]: r["value"] for r in records if r["metric"] == "memorized_share"}
    assert shares["dpm++2m-20 samples"] > 0.5 and shares["uniform noise"] == 0.0, shares
    assert Image.open(tmp_path / "pairs.png").size == (2 + 2 * 18, 2 + 8 * 18)  # 8 sample / neighbour rows


def test_memorization_needs_samples_and_no_restore(tmp_path):
    for args, message in ((["--samples", 1], "--samples of at least 2"), (["--restore", "upscale:2"], "no --restore"),
                          (["--neighbours", tmp_path / "pairs.jpg"], "--neighbours names a .png")):
        line = assert_bad_input(["eval", "image", "-m", tmp_path / "nowhere", "--memorization", *args], b"", tmp_path)
        assert message in line, line  # before the run is even read
