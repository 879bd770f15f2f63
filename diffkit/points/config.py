"""The points modality's part of a run's config.json ("data"; diffkit.config reads it into this type).

Only the standard library at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PointsData:
    """config.json's "data" of a points run: the source, the dimension, and the per-column mean and
    standard deviation the network's standardised units are taken in."""
    source: str
    dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
