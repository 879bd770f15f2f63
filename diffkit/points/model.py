"""A residual MLP denoiser for vectors."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from diffkit.core.nn import TimeMLP, with_self_condition
from diffkit.errors import DiffkitError


@dataclass(frozen=True)
class PointsConfig:
    dim: int = 2
    hidden: int = 256
    blocks: int = 3
    out: int = 2  # dim, or 2·dim when the variance is learned
    self_cond: bool = False  # also takes a previous x̂_0

    def __post_init__(self):
        if min(self.dim, self.hidden, self.out) < 1 or self.blocks < 0:
            raise DiffkitError(f"points model: --hidden must be at least 1, got {self.hidden}"
                               if self.hidden < 1 else f"points model: a bad config {self}")


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.net = nn.Sequential(nn.Linear(width, width * 2), nn.SiLU(), nn.Linear(width * 2, width))

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        return h + self.net(self.norm(h) + cond)


class PointsDenoiser(nn.Module):
    def __init__(self, config: PointsConfig):
        super().__init__()
        self.self_cond = config.self_cond
        self.inp = nn.Linear(config.dim * (2 if config.self_cond else 1), config.hidden)
        self.time = TimeMLP(64, config.hidden)
        self.blocks = nn.ModuleList(Block(config.hidden) for _ in range(config.blocks))
        self.out = nn.Sequential(nn.LayerNorm(config.hidden), nn.Linear(config.hidden, config.out))

    def forward(self, x: Tensor, t: Tensor, self_cond: Tensor | None = None) -> Tensor:
        h, cond = self.inp(with_self_condition(x, self_cond, self.self_cond, dim=1)), self.time(t)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h)
