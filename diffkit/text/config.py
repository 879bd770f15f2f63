"""The text modality's part of a run's config.json ("data"; diffkit.config reads it into this type).

Only the standard library at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextData:
    """config.json's "data" of a text run: the source and whether it is of pairs, how it splits into
    examples, the packed length, the seed and count of its examples, the class names (none:
    unconditional), the dtype of its token rows and where they lie (relative to the run), the source's
    columns, and the share of labels dropped for guidance."""
    source: str
    pairs: bool
    split: str
    seq_len: int
    seed: int
    examples: int
    classes: tuple[str, ...] = ()
    dtype: str | None = None  # None with rows: a run from before token rows, which tokenises its corpus again
    rows: str | None = None
    column: str | None = None
    label_column: str | None = None
    label_dropout: float = 0.0
