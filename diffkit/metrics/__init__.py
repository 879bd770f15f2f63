"""Distances between sample sets that need no trained network."""

import torch
from torch import Tensor


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: √(mean over random directions of W2² between the 1-D projections).

    Sets of unequal size are compared through their quantiles at the smaller size.
    """
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(x.shape[1], projections, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=0)
    px, _ = (x.double() @ directions).sort(0)
    py, _ = (y.double() @ directions).sort(0)
    n = min(len(px), len(py))
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    px, py = px[(q * len(px)).long()], py[(q * len(py)).long()]
    return ((px - py) ** 2).mean().sqrt().item()
