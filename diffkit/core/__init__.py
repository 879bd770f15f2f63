"""The modality-agnostic diffusion core: schedules, forward and reverse processes, bound, samplers.

Its names load on first use, so that the light module the CLI imports (spec.py) does not bring torch
with it: `from diffkit.core import sample` works as from any package.
"""

import importlib

_WHERE = {
    "PREDICTIONS": "diffusion", "VARIANCES": "diffusion", "p_mean_variance": "diffusion", "q_posterior": "diffusion",
    "q_sample": "diffusion", "q_step_sample": "diffusion", "split_x0_eps": "diffusion",
    "training_losses": "diffusion", "variational_bound": "diffusion",
    "Bridge": "editing", "Inpaint": "editing", "Noised": "editing", "Restore": "editing",
    "resampling_plan": "editing", "strength_to_timestep": "editing",
    "fit_timesteps": "fitting",
    "make_denoiser": "generate", "sample": "generate",
    "GaussianMixture": "mixture",
    "Observation": "observe",
    "SAMPLERS": "samplers",
    "SamplingSpec": "spec",
    "SCHEDULES": "schedule", "SPACINGS": "schedule", "Grid": "schedule", "Schedule": "schedule",
    "make_grid": "schedule", "make_schedule": "schedule", "timesteps": "schedule",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'diffkit.core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"diffkit.core.{_WHERE[name]}"), name)
