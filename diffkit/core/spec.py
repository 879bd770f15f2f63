"""What `sample()` is asked for, as one small value a library user builds and every modality's pipeline
takes (the CLI's Sampling options are this with their flags). No torch at import: the CLI imports it."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffkit.errors import SettingError


# The restoration method (core.observe.METHODS) used unless told: the best that bench/restore.py measured
# (docs/measurements/restoration.md).
DEFAULT_METHOD = "ddnm"
# The sampler and grid used unless told: the best mean and worst case over the tuning half of bench/samplers.py's
# suite at 10 model calls, checked on its held-out half (docs/measurements/samplers.md).
DEFAULT_SAMPLER, DEFAULT_SPACING = "unipc", "logsnr"


@dataclass(frozen=True)
class SamplingSpec:
    """A sampler of diffkit.core.SAMPLERS, its steps and timestep spacing, DDIM's η (None: the sampler's
    own), the seed of its noise, a clip of x̂_0 to ±clip (None: the modality's range, or none), and
    dynamic thresholding of x̂_0 at that percentile of |x̂_0| (Saharia et al. 2022; None: none). The
    spacing "fitted" walks `timesteps`, a grid fitted to the model (diffkit.core.fitting; a run's pipeline
    fits it and fills them in)."""
    sampler: str = DEFAULT_SAMPLER
    steps: int = 20
    spacing: str = DEFAULT_SPACING
    eta: float | None = None
    seed: int = 0
    clip: float | None = None
    threshold: float | None = None
    timesteps: tuple[int, ...] | None = field(default=None, metadata={"option": False})

    def __post_init__(self):
        if self.steps < 1:
            raise SettingError("steps", f" must be at least 1, got {self.steps}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise SettingError("threshold", f" must be in (0, 1], got {self.threshold}")
        if self.timesteps is not None:
            ts = self.timesteps
            if self.spacing != "fitted":
                raise SettingError("timesteps", f" go with the spacing fitted, not {self.spacing}")
            if len(ts) != self.steps or any(b >= a for a, b in zip(ts, ts[1:])) or ts[-1] < 0:
                raise SettingError("timesteps", f" must be {self.steps} (the steps) descending timesteps from "
                                   f"the top down to 0 or above, got {list(ts)}")
