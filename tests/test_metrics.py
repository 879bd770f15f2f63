"""Sample-quality metrics against closed forms: Fréchet distance of Gaussians, KID's unbiasedness; BLEU, chrF
and the minimum-Bayes-risk choice."""

import math

import pytest
import torch

from diffkit.metrics import frechet_distance, kernel_distance


def test_frechet_distance_matches_the_gaussian_closed_form(gen):
    # N(0, I) vs N(mu, s^2 I) in d dims: |mu|^2 + d (1 - s)^2.
    d, n, shift, scale = 8, 200_000, 0.5, 2.0
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    b = shift + scale * torch.randn(n, d, generator=gen, dtype=torch.float64)
    expected = d * shift**2 + d * (1 - scale) ** 2
    assert math.isclose(frechet_distance(a, b), expected, rel_tol=0.02)
    assert abs(frechet_distance(a[: n // 2], a[n // 2:])) < 0.01


def test_kernel_distance_is_unbiased_for_equal_distributions_and_grows_with_a_shift(gen):
    # Small sets: a biased MMD would sit well above 0 here; the unbiased one averages to it.
    same = [kernel_distance(torch.randn(50, 16, generator=gen), torch.randn(50, 16, generator=gen), seed=k)[0]
            for k in range(200)]
    mean, stderr = sum(same) / len(same), torch.tensor(same).std().item() / len(same) ** 0.5
    assert abs(mean) < 4 * stderr
    near, spread = kernel_distance(torch.randn(200, 16, generator=gen), 0.3 + torch.randn(200, 16, generator=gen))
    far, _ = kernel_distance(torch.randn(200, 16, generator=gen), 1.0 + torch.randn(200, 16, generator=gen))
    assert 0 < spread < near < far


def test_translation_scores_and_the_mbr_choice_of_the_consensus():
    from diffkit.metrics.text import mbr_choice, translation_scores

    same = translation_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same["bleu"] == pytest.approx(100) and same["chrf"] == pytest.approx(100)
    apart = translation_scores(["completely different words here"], ["the cat sat on the mat"])
    assert apart["bleu"] < 5 and apart["chrf"] < 20
    # three samples agree but for a word, one is an outlier: the choice is one of the three
    candidates = ["the cat sat on the mat", "a dog barked loudly", "the cat sat on a mat", "the cat sat on the rug"]
    assert mbr_choice(candidates) in (0, 2, 3) and mbr_choice(["only one"]) == 0
    assert mbr_choice(["x y z", "x y z", "q"]) in (0, 1)


def test_translation_scores_warn_of_nothing_for_lines_ending_in_a_spaced_period(caplog):
    # builtin:weather's sentences end in " .": sacrebleu would warn of undetokenised text on every eval
    from diffkit.metrics.text import translation_scores

    lines = [f"oslo , day {i} : snowy ." for i in range(200)]
    assert translation_scores(lines, lines)["bleu"] == pytest.approx(100)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
