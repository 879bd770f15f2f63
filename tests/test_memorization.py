"""`eval --memorization`: nearest training examples and the share of samples closer to the training set
than held-out data are, against known answers, and the options checked before any work."""


import pytest
import torch
from cli import assert_bad_input

from diffkit.metrics.memorization import copying_threshold, flagged_share, longest_shared_ngrams, nearest


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


def test_memorization_needs_samples_and_no_restore(tmp_path):
    for args, message in ((["--samples", 1], "--samples of at least 2"), (["--restore", "upscale:2"], "no --restore"),
                          (["--neighbours", tmp_path / "pairs.jpg"], "--neighbours names a .png")):
        line = assert_bad_input(["eval", "image", "-m", tmp_path / "nowhere", "--memorization", *args], b"", tmp_path)
        assert message in line, line  # before the run is even read


def _two_colour_images(folder, seed: int, count: int) -> None:
    """8x8 PNGs, each a band of one random colour above a band of another: a family with endless new
    members, so held-out images are new examples of the same data."""
    from PIL import Image

    folder.mkdir()
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        top, bottom = torch.randint(0, 256, (2, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(torch.cat([top.expand(4, 8, 3), bottom.expand(4, 8, 3)]).numpy()).save(folder / f"{i:02d}.png")


@pytest.mark.slow
def test_a_model_trained_long_on_eight_images_is_flagged_and_noise_is_not(tmp_path):
    """The issue's end-to-end case: 8 training images, a U-Net trained until it reproduces them; its
    samples lie nearer to a training image than almost every held-out image does, noise lies nowhere near."""
    import json

    import numpy as np
    from cli import run
    from PIL import Image

    _two_colour_images(tmp_path / "train", seed=0, count=8)
    _two_colour_images(tmp_path / "held", seed=1, count=32)
    model = tmp_path / "run"
    run("train", "image", "--data", tmp_path / "train", "--out", model, "--image-size", 8, "--width", 16,
        "--mults", "1,2", "--blocks", 1, "--attention", 4, "--prediction", "x0", "--batch-size", 32, "--lr", 3e-3,
        "--ema-decay", 0.99, "--steps", 1000, "--checkpoint-every", 1000, "-q")
    result = run("eval", "image", "-m", model, "--data", tmp_path / "held", "--train-data", tmp_path / "train",
                 "--memorization", "--samples", 16, "--steps", 20, "--reference", "--neighbours", tmp_path / "pairs.png",
                 "--json", "-q")
    shares = [r for r in map(json.loads, result.stdout.decode().splitlines()) if r["metric"] == "memorized_share"]
    samples, noise = shares
    assert "samples" in samples["of"] and "noise" in noise["of"]
    assert samples["value"] > 0.5, samples  # a model that generalised would flag about 5%
    assert noise["value"] == 0.0, noise
    pairs = np.asarray(Image.open(tmp_path / "pairs.png").convert("RGB"))
    assert pairs.shape == (8 * 8 + 9 * 2, 2 * 8 + 3 * 2, 3)  # 8 rows of a sample beside its neighbour
    training = {Image.open(f).convert("RGB").tobytes() for f in (tmp_path / "train").iterdir()}
    for row in range(8):
        top = 2 + row * 10
        assert pairs[top:top + 8, 12:20].tobytes() in training  # each neighbour is a training image
