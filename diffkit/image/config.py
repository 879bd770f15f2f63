"""The image modality's part of a run's config.json ("data"; diffkit.config reads it into this type).

Only the standard library at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageData:
    """config.json's "data" of an image run: the source, the model's size and channels, the class names
    (none: unconditional), how the images were cropped and flipped, the source's columns, and the share
    of labels dropped for classifier-free guidance."""
    source: str
    image_size: tuple[int, ...]
    channels: int
    classes: tuple[str, ...] = ()
    crop: str = "center"
    flip: bool = False
    column: str | None = None
    label_column: str | None = None
    label_dropout: float = 0.0
