"""Distances between sample sets, on whatever features a modality extracts."""

from typing import Callable

import torch
from torch import Tensor

from diffkit.errors import DiffkitError


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: √(mean over random directions of W2² between the 1-D projections).

    Sets of unequal size are compared through their quantiles at the smaller size.
    """
    return sliced_wasserstein_to(y, projections, seed)(x)


def sliced_wasserstein_to(y: Tensor, projections: int = 256, seed: int = 0) -> Callable[[Tensor], float]:
    """sliced_wasserstein(x, y) as a function of x, with y's projections sorted once (a large reference
    set scored against many samples)."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(y.shape[1], projections, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=0)
    py, _ = (y.double() @ directions).sort(0)

    def distance(x: Tensor) -> float:
        px, _ = (x.double() @ directions).sort(0)
        n = min(len(px), len(py))
        q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return ((px[(q * len(px)).long()] - py[(q * len(py)).long()]) ** 2).mean().sqrt().item()

    return distance


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """‖μ_a - μ_b‖² + tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^½), the trace of the root through the eigenvalues of
    the symmetric Σ_a^½ Σ_b Σ_a^½ (same spectrum as Σ_a Σ_b, and numerically stable)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return ((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


def kernel_distance(a: Tensor, b: Tensor, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD² between feature sets under k(x, y) = (x·y / d + 1)³, averaged over random
    subsets; returns (mean, standard deviation over subsets)."""
    g = torch.Generator().manual_seed(seed)
    n = min(len(a), len(b))
    # Sets no larger than a subset are halved: whole-set "subsets" would all agree, and their spread of 0
    # would claim a certainty the estimate does not have.
    m = subset_size if n > subset_size else n // 2
    if m < 2:
        raise DiffkitError("KID needs at least 4 images in each set")
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off_diagonal = (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1))
        values.append((off_diagonal - 2 * kxy.mean()).item())
    values = torch.tensor(values)
    return values.mean().item(), values.std().item() if subsets > 1 else 0.0
