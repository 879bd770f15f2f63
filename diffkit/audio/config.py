"""The audio modality's part of a run's config.json ("data"; diffkit.config reads it into this type).

Only the standard library at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AudioData:
    """config.json's "data" of an audio run: the source, its sample rate, a clip's length and the model's
    window (the length padded to what the network divides), the loudness normalisation, the class names
    (none: unconditional), the source's columns, and the share of labels dropped for guidance."""
    source: str
    sample_rate: int
    length: int
    window: int
    normalise: str = "peak"
    classes: tuple[str, ...] = ()
    column: str | None = None
    label_column: str | None = None
    label_dropout: float = 0.0
