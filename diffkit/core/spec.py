"""What `sample()` is asked for, as one small value a library user builds and every modality's pipeline
takes (the CLI's Sampling options are this with their flags). No torch at import: the CLI imports it."""

from __future__ import annotations

from dataclasses import dataclass

from diffkit.errors import SettingError


@dataclass(frozen=True)
class SamplingSpec:
    """A sampler of diffkit.core.SAMPLERS, its steps and timestep spacing, DDIM's η (None: the sampler's
    own), the seed of its noise, and a clip of x̂_0 to ±clip (None: the modality's range, or none)."""
    sampler: str = "dpm++2m"
    steps: int = 20
    spacing: str = "squeezed"
    eta: float | None = None
    seed: int = 0
    clip: float | None = None

    def kwargs(self) -> dict:
        """Keyword arguments for diffkit.core.sample."""
        import torch

        if self.steps < 1:
            raise SettingError("steps", f" must be at least 1, got {self.steps}")
        return dict(sampler=self.sampler, steps=self.steps, spacing=self.spacing, eta=self.eta, clip=self.clip,
                    generator=torch.Generator().manual_seed(self.seed))
