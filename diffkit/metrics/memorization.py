"""Does a model copy its training data? Each sample's nearest training example, and the share of samples
closer to the training set than held-out real examples are.

The threshold is calibrated on held-out data, as the data-copying tests do (Meehan et al. 2020; Carlini
et al. 2023 threshold a distance in a feature space): a held-out example was never trained on, so its
distance to the nearest training example is what "a new example of the data" looks like; a sample is
flagged when it lies closer than all but a `false_positive_rate` share of held-out examples do. A model
that generalises then flags about that share, and one that copies flags far more. Images and audio
measure Euclidean distance in the metric's feature space; text the longest word n-gram a line shares
with a training line (longer is closer).
"""

from __future__ import annotations

import torch
from torch import Tensor

FALSE_POSITIVE_RATE = 0.05


def nearest(queries: Tensor, keys: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Each query's Euclidean distance to its nearest key, and that key's index."""
    distances, indices = [], []
    keys = keys.double()
    for part in queries.double().split(chunk):
        d = torch.cdist(part, keys)
        best = d.min(1)
        distances.append(best.values)
        indices.append(best.indices)
    return torch.cat(distances), torch.cat(indices)


def copying_threshold(held_out: Tensor, false_positive_rate: float = FALSE_POSITIVE_RATE) -> float:
    """The distance to the training set below which only `false_positive_rate` of held-out examples lie."""
    return torch.quantile(held_out.double(), false_positive_rate).item()


def flagged_share(distances: Tensor, threshold: float) -> float:
    """The share of examples closer to the training set than the threshold."""
    return (distances < threshold).double().mean().item()


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def longest_shared_ngrams(lines: list[str], training: list[str]) -> Tensor:
    """For each line, the length in words of the longest n-gram it shares with any training line."""
    split = [line.split() for line in lines]
    seen = [line.split() for line in training]
    longest = torch.zeros(len(lines))
    n, pending = 1, list(range(len(lines)))
    while pending:  # a line sharing no n-gram shares no longer one: test n only where n - 1 matched
        index = set().union(*(_ngrams(words, n) for words in seen if len(words) >= n))
        matched = [i for i in pending if _ngrams(split[i], n) & index]
        for i in matched:
            longest[i] = n
        pending, n = matched, n + 1
    return longest
