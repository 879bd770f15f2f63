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
