"""What `sample()` is asked for, as one small value a library user builds and every modality's pipeline
takes (the CLI's Sampling options are this with their flags). No torch at import: the CLI imports it."""

from __future__ import annotations

from dataclasses import dataclass

from diffkit.errors import SettingError


# The restoration method (core.observe.METHODS) used unless told: the best that bench/restore.py measured
# (docs/measurements/restoration.md).
DEFAULT_METHOD = "ddnm"


@dataclass(frozen=True)
class SamplingSpec:
    """A sampler of diffkit.core.SAMPLERS, its steps and timestep spacing, DDIM's η (None: the sampler's
    own), the seed of its noise, a clip of x̂_0 to ±clip (None: the modality's range, or none), and
    dynamic thresholding of x̂_0 at that percentile of |x̂_0| (Saharia et al. 2022; None: none)."""
    sampler: str = "dpm++2m"
    steps: int = 20
    spacing: str = "squeezed"
    eta: float | None = None
    seed: int = 0
    clip: float | None = None
    threshold: float | None = None

    def __post_init__(self):
        if self.steps < 1:
            raise SettingError("steps", f" must be at least 1, got {self.steps}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise SettingError("threshold", f" must be in (0, 1], got {self.threshold}")
