"""Inputs larger than a model: process overlapping windows (tiles of an image, stretches of a recording)
and cross-fade them back into one result. Shared by every modality whose network has a fixed size."""

from __future__ import annotations

import itertools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def window_starts(size: int, window: int) -> list[int]:
    """Starts of windows half a window apart covering 0..size (size >= window), the last flush with the end."""
    hop = max(1, window // 2)
    starts = list(range(0, size - window + 1, hop))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _fade(length: int) -> Tensor:
    # Floored, so that a stretch that only one window covers (the ends) keeps its weight.
    return torch.hann_window(length, periodic=True, dtype=torch.float64).clamp(min=1e-3)


def overlap_process(x: Tensor, window: tuple[int, ...], process: Callable[[Tensor], Tensor], *, scale: int = 1,
                    batch: int | None = None) -> Tensor:
    """Apply `process` (windows [N, C, *window] -> [N, C', *(window·scale)]) to x [C, *size] of any size
    through half-overlapping windows, and blend the results with a Hann cross-fade into [C', *(size·scale)].

    `scale` relates input to output (super-resolution: the factor); a side shorter than its window is padded
    with zeros at the end and the padding trimmed. `batch` caps the windows per call."""
    size = x.shape[1:]
    padded = tuple(max(s, w) for s, w in zip(size, window))
    x = F.pad(x, [p for s, full in reversed(list(zip(size, padded))) for p in (0, full - s)])
    corners = list(itertools.product(*(window_starts(s, w) for s, w in zip(padded, window))))
    views = [x[(slice(None), *(slice(c, c + w) for c, w in zip(corner, window)))] for corner in corners]
    done = []
    for first in range(0, len(views), batch or len(views)):
        done.append(process(torch.stack(views[first:first + (batch or len(views))])).double().cpu())
    done = torch.cat(done)
    out_window = tuple(w * scale for w in window)
    weight = _fade(out_window[0])
    for w in out_window[1:]:
        weight = weight[..., None] * _fade(w)
    out = torch.zeros(done.shape[1], *(s * scale for s in padded), dtype=torch.float64)
    norm = torch.zeros(out.shape[1:], dtype=torch.float64)
    for corner, result in zip(corners, done):
        region = tuple(slice(c * scale, c * scale + w) for c, w in zip(corner, out_window))
        out[(slice(None), *region)] += result * weight
        norm[region] += weight
    out = out / norm
    return out[(slice(None), *(slice(0, s * scale) for s in size))].float()
