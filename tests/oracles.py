"""Known answers shared by the tests: Gaussian data and its exact reverse process."""

import torch

from diffkit.core import GaussianMixture
from diffkit.core.diffusion import _log_variance_bounds


def gaussian(mean: float, std: float, dim: int) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.full((1, dim), mean), std**2 * torch.eye(dim).unsqueeze(0))


def exact_reverse_model(data: GaussianMixture, schedule, std: float):
    """For Gaussian data q(x_{t-1} | x_t) is Gaussian with variance V_{t-1} β_t / V_t (V_t = ᾱ_t s² + 1 - ᾱ_t):
    a learned-variance network that outputs exactly it, so its bound is the true NLL for any T."""
    eps_model = data.denoiser(schedule)
    ab, ab_prev = schedule.alphas_cumprod, schedule.alphas_cumprod_prev
    var, var_prev = ab * std**2 + 1 - ab, ab_prev * std**2 + 1 - ab_prev
    lo, hi = _log_variance_bounds(schedule)
    frac = ((var_prev * schedule.betas / var).log() - lo) / (hi - lo)
    assert ((frac >= 0) & (frac <= 1)).all(), "the true variance lies between β̃ and β for 0 < s < 1"

    def model(x, t):
        return torch.cat([eps_model(x, t), (2 * frac[t] - 1).float().reshape(-1, 1).expand_as(x)], 1)

    return model
