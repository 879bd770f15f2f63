"""Gaussian mixtures with their exact denoiser: the known answer samplers and bounds are checked against.

Under q(x_t | x_0) a mixture Σ_k w_k N(μ_k, Σ_k) stays a mixture Σ_k w_k N(√ᾱ μ_k, ᾱ Σ_k + (1-ᾱ) I), so
E[x_0 | x_t] is closed-form: the component posteriors times each component's linear denoiser.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffkit.core.diffusion import target
from diffkit.core.schedule import Schedule


class GaussianMixture:
    """Weights [K], means [K, D] and covariances [K, D, D], all held in float64."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        self.weights = torch.as_tensor(weights, dtype=torch.float64) / torch.as_tensor(weights).sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        # Σ_k = U diag(s) Uᵀ makes every noised covariance ᾱ Σ_k + (1-ᾱ) I diagonal in the same basis.
        self.scales, self.bases = torch.linalg.eigh(self.covs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def ring(cls, modes: int = 8, radius: float = 1.0, std: float = 0.05) -> "GaussianMixture":
        angle = torch.arange(modes, dtype=torch.float64) * 2 * math.pi / modes
        means = radius * torch.stack([angle.cos(), angle.sin()], 1)
        return cls(torch.ones(modes), means, std**2 * torch.eye(2, dtype=torch.float64).expand(modes, 2, 2))

    @classmethod
    def random(cls, modes: int, dim: int, seed: int = 0, spread: float = 1.0, std: float = 0.3) -> "GaussianMixture":
        """Modes at random places with random full covariances (std along each axis up to `std`)."""
        g = torch.Generator().manual_seed(seed)
        means = spread * torch.randn(modes, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) * 2
        rotations, _ = torch.linalg.qr(torch.randn(modes, dim, dim, generator=g, dtype=torch.float64))
        scales = (std * (0.3 + 0.7 * torch.rand(modes, dim, generator=g, dtype=torch.float64))) ** 2
        covs = rotations @ torch.diag_embed(scales) @ rotations.transpose(1, 2)
        weights = 0.5 + torch.rand(modes, generator=g, dtype=torch.float64)
        return cls(weights, means, covs)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n draws [n, D] (float64) and the component each came from [n]."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        # clamp: a posterior under a noiseless observation has exactly singular covariances
        x = self.means[labels] + ((z * self.scales[labels].clamp(min=0).sqrt()).unsqueeze(1) @ self.bases[labels].transpose(1, 2)).squeeze(1)
        return x, labels

    def _noised(self, x: Tensor, ab: Tensor):
        """Per-component log-likelihood of x_t, its coordinates z in each eigenbasis, and the noised variances."""
        x = x.to(torch.float64)
        ab = ab.reshape(-1, 1, 1)  # [B or 1, 1, 1] against [B, K, D]
        var = ab * self.scales.unsqueeze(0) + (1 - ab)  # [., K, D]
        centred = x.unsqueeze(1) - ab.sqrt() * self.means.unsqueeze(0)  # [B, K, D]
        z = torch.einsum("bkd,kde->bke", centred, self.bases)
        log_lik = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return log_lik + self.weights.log(), z, var

    def log_prob(self, x: Tensor) -> Tensor:
        log_joint, _, _ = self._noised(x, torch.ones(1, dtype=torch.float64))
        return torch.logsumexp(log_joint, 1)

    def responsibilities(self, x: Tensor, ab: float = 1.0) -> Tensor:
        """p(component | x_t) [B, K]."""
        log_joint, _, _ = self._noised(x, torch.full((1,), ab, dtype=torch.float64))
        return torch.softmax(log_joint, 1)

    def posterior_mean(self, x_t: Tensor, ab: Tensor) -> Tensor:
        """E[x_0 | x_t] at noise levels ab ([B] or [1]), exactly, in float64."""
        log_joint, z, var = self._noised(x_t, ab)
        resp = torch.softmax(log_joint, 1)  # [B, K]
        gain = ab.reshape(-1, 1, 1).sqrt() * self.scales.unsqueeze(0) / var  # Σ_k √ᾱ (ᾱΣ_k + (1-ᾱ)I)⁻¹ in the basis
        per_component = self.means.unsqueeze(0) + torch.einsum("bke,kde->bkd", gain * z, self.bases)
        return (resp.unsqueeze(-1) * per_component).sum(1)

    def denoiser(self, schedule: Schedule, prediction: str = "eps"):
        """The exact network `model(x_t, t)` for this data under `schedule`, predicting eps, x0 or v."""
        table = schedule.alphas_cumprod

        def model(x_t: Tensor, t: Tensor) -> Tensor:
            ab = table[t.cpu()]
            x0 = self.posterior_mean(x_t, ab)
            a = ab.reshape(-1, 1)
            eps = (x_t.double() - a.sqrt() * x0) / (1 - a).sqrt()
            return target(prediction, x0, eps, a).to(x_t.dtype)

        return model

    def condition(self, known: Tensor, keep: Tensor) -> "GaussianMixture":
        """The mixture of the free coordinates given the kept ones have values `known` [D_keep]."""
        free = ~keep
        known = known.to(torch.float64)
        log_w, means, covs = [], [], []
        for k in range(len(self.weights)):
            c = self.covs[k]
            c_ff, c_fk, c_kk = c[free][:, free], c[free][:, keep], c[keep][:, keep]
            gain = c_fk @ torch.linalg.inv(c_kk)
            diff = known - self.means[k][keep]
            means.append(self.means[k][free] + gain @ diff)
            covs.append(c_ff - gain @ c_fk.T)
            marginal = torch.distributions.MultivariateNormal(self.means[k][keep], c_kk)
            log_w.append(self.weights[k].log() + marginal.log_prob(known))
        return GaussianMixture(torch.softmax(torch.stack(log_w), 0), torch.stack(means), torch.stack(covs))

    def observe(self, A: Tensor, y: Tensor, sigma: float = 0.0) -> "GaussianMixture":
        """The exact posterior p(x_0 | y) for y = A x_0 + σ n, A [M, D], y [M]: again a mixture, with weights
        ∝ w_k N(y; Aμ_k, S_k), S_k = AΣ_kAᵀ + σ²I, means μ_k + Σ_kAᵀS_k⁻¹(y − Aμ_k) and covariances
        Σ_k − Σ_kAᵀS_k⁻¹AΣ_k. A rank-deficient A (a mask, a projection) is first reduced to its row space,
        A = U diag(s) Vᵀ -> diag(s) Vᵀ and y -> Uᵀy over the non-zero s: the directions it drops carry no
        information about x_0."""
        U, s, Vt = torch.linalg.svd(A.to(torch.float64), full_matrices=False)
        rank = s > s.max() * 1e-10
        A, y = s[rank, None] * Vt[rank], U[:, rank].T @ y.to(torch.float64)
        cross = self.covs @ A.T  # Σ_k Aᵀ [K, D, M]
        S = A @ cross + sigma**2 * torch.eye(len(A), dtype=torch.float64)
        gain = cross @ torch.linalg.inv(S)  # [K, D, M]
        predicted = self.means @ A.T  # [K, M]
        means = self.means + (gain @ (y - predicted).unsqueeze(-1)).squeeze(-1)
        covs = self.covs - gain @ cross.transpose(1, 2)
        covs = (covs + covs.transpose(1, 2)) / 2
        log_w = self.weights.log() + torch.distributions.MultivariateNormal(predicted, S).log_prob(y)
        return GaussianMixture(torch.softmax(log_w, 0), means, covs)


def class_denoiser(classes: list[GaussianMixture], schedule: Schedule, prediction: str = "eps"):
    """The exact class-conditional network `model(x_t, t, y)` of data whose class k is `classes[k]`."""
    models = [c.denoiser(schedule, prediction) for c in classes]

    def model(x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
        out = torch.empty_like(x_t)
        for k, exact in enumerate(models):
            chosen = y == k
            if chosen.any():
                out[chosen] = exact(x_t[chosen], t[chosen])
        return out

    return model
