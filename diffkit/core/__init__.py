"""The modality-agnostic diffusion core: schedules, forward and reverse processes, bound, samplers."""

from diffkit.core.diffusion import (
    PREDICTIONS,
    VARIANCES,
    p_mean_variance,
    q_posterior,
    q_sample,
    q_step_sample,
    split_x0_eps,
    training_losses,
    variational_bound,
)
from diffkit.core.editing import resampling_plan, strength_to_timestep
from diffkit.core.generate import make_denoiser, sample
from diffkit.core.mixture import GaussianMixture
from diffkit.core.samplers import SAMPLERS
from diffkit.core.schedule import SCHEDULES, SPACINGS, Grid, Schedule, make_grid, make_schedule, timesteps

__all__ = [
    "GaussianMixture", "Grid", "PREDICTIONS", "SAMPLERS", "SCHEDULES", "SPACINGS", "Schedule", "VARIANCES",
    "make_denoiser", "make_grid", "make_schedule", "p_mean_variance", "q_posterior", "q_sample",
    "q_step_sample", "resampling_plan", "sample", "split_x0_eps", "strength_to_timestep", "timesteps",
    "training_losses", "variational_bound",
]
