"""Network pieces every modality shares, and one U-Net generic over 1-D (audio) and 2-D (images).

The U-Net follows improved DDPM (Nichol & Dhariwal 2021): residual blocks with GroupNorm and a
scale-shift timestep conditioning, self-attention at chosen levels, skip connections from every block
of the way down, and a zero-initialised output so that a fresh model predicts 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffkit.errors import DiffkitError

CONV = {1: nn.Conv1d, 2: nn.Conv2d}


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps [B] -> [B, dim] (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def with_self_condition(x: Tensor, estimate: Tensor | None, self_cond: bool, dim: int) -> Tensor:
    """A self-conditioned network's input: x and a previous x̂_0 (zeros when there is none yet) side by
    side along `dim` (Chen et al. 2023); x alone for a network without self-conditioning."""
    if not self_cond:
        if estimate is not None:
            raise DiffkitError("this network was trained without self-conditioning")
        return x
    return torch.cat([x, torch.zeros_like(x) if estimate is None else estimate.to(x.dtype)], dim=dim)


class TimeMLP(nn.Module):
    """Maps a timestep to a conditioning vector: sinusoid -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, t: Tensor) -> Tensor:
        return self.net(timestep_embedding(t, self.dim))


def drop_labels(labels: Tensor, probability: float, null: int, generator: torch.Generator) -> Tensor:
    """Replace each label by the null label with `probability`, so that one network learns both the
    conditional and the unconditional model that classifier-free guidance mixes (Ho & Salimans 2022)."""
    if probability <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device=generator.device).to(labels.device) < probability
    return torch.where(drop, torch.full_like(labels, null), labels)


@dataclass(frozen=True)
class UNetConfig:
    dims: int = 2                       # 1: sequences [B, C, L]; 2: images [B, C, H, W]
    in_channels: int = 3
    out_channels: int = 3               # twice in_channels when the variance is learned
    channels: int = 64                  # width of the first level
    mults: tuple = (1, 2, 2)            # width of each level, in multiples of `channels`
    blocks: int = 2                     # residual blocks per level on the way down
    attention: tuple = (1,)             # levels (0 = full resolution) with self-attention
    head_channels: int = 32
    dropout: float = 0.0
    classes: int = 0                    # > 0: class-conditional; label `classes` means "no label"
    factor: int = 2                     # down-sampling factor between levels
    dilations: tuple = (1,)             # dilation of each block's convolutions, cycled within a level
    kernel: int = 3
    self_cond: bool = False             # also takes a previous x̂_0 (as many channels again at the input)

    def __post_init__(self):
        # JSON round trips give lists; the config must stay hashable and compare equal.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        if self.dims not in CONV:
            raise DiffkitError(f"U-Net: dims must be 1 or 2, got {self.dims}")
        if not self.mults or self.channels < 1 or self.blocks < 1 or self.factor < 2:
            raise DiffkitError("U-Net: needs at least one level, channels >= 1, blocks >= 1 and factor >= 2")
        if any(level < 0 or level >= len(self.mults) for level in self.attention):
            raise DiffkitError(f"U-Net: attention levels {self.attention} outside 0..{len(self.mults) - 1}")

    @property
    def downsampling(self) -> int:
        """Every spatial size must be a multiple of this."""
        return self.factor ** (len(self.mults) - 1)

    def to_json(self) -> dict:
        return asdict(self)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch, so each block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int, emb: int, dropout: float, dilation: int = 1, kernel: int = 3):
        super().__init__()
        conv = CONV[dims]
        pad = dilation * (kernel // 2)
        self.norm1, self.norm2 = group_norm(cin), group_norm(cout)
        self.conv1 = conv(cin, cout, kernel, padding=pad, dilation=dilation)
        self.emb = nn.Linear(emb, 2 * cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero(conv(cout, cout, kernel, padding=pad, dilation=dilation))
        self.skip = conv(cin, cout, 1) if cin != cout else nn.Identity()
        self.expand = (...,) + (None,) * dims  # [B, C] -> [B, C, 1(, 1)]

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[self.expand].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # scale-shift norm (improved DDPM, §B)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all positions, through PyTorch's fused SDPA kernel."""

    def __init__(self, dims: int, channels: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero(nn.Linear(channels, channels))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, *spatial = x.shape
        h = self.qkv(self.norm(x).reshape(b, c, -1).transpose(1, 2))          # [B, N, 3C]
        # [3, B, heads, N, d] with unit stride in d: the fused CPU and GPU kernels need it (the
        # strided layout falls back to the unfused path, ~1.5x slower here).
        q, k, v = h.reshape(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)                             # [B, heads, N, d]
        h = self.out(h.transpose(1, 2).reshape(b, -1, c))                       # [B, N, C]
        return x + h.transpose(1, 2).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, dims: int, channels: int, factor: int):
        super().__init__()
        # Kernel 2f-1 with padding f-1 maps a length L to exactly L/f when f divides L.
        self.conv = CONV[dims](channels, channels, 2 * factor - 1, stride=factor, padding=factor - 1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dims: int, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.conv = CONV[dims](channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        # Convolve before repeating: the same weights at 1/factor^dims of the cost. The repeated values are
        # smoothed by the next block's convolutions, which also see the skip connection's full detail.
        return F.interpolate(self.conv(x), scale_factor=self.factor, mode="nearest")


class UNet(nn.Module):
    """model(x_t, t, y=None, self_cond=None) -> prediction with `out_channels` channels, same spatial size
    as x_t; `y` class labels, `self_cond` a previous x̂_0 of a self-conditioned network."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        dims, emb = c.dims, 4 * c.channels
        widths = [c.channels * m for m in c.mults]
        self.time = TimeMLP(c.channels, emb)
        self.label = nn.Embedding(c.classes + 1, emb) if c.classes else None
        self.inp = CONV[dims](c.in_channels * (2 if c.self_cond else 1), widths[0], 3, padding=1)

        def block(cin, cout, i):
            return ResBlock(dims, cin, cout, emb, c.dropout, c.dilations[i % len(c.dilations)], c.kernel)

        self.down = nn.ModuleList()
        skips, width = [widths[0]], widths[0]
        for level, w in enumerate(widths):
            for i in range(c.blocks):
                layers = [block(width, w, i)] + ([Attention(dims, w, c.head_channels)] if level in c.attention else [])
                self.down.append(nn.ModuleList(layers))
                width = w
                skips.append(width)
            if level < len(widths) - 1:
                self.down.append(nn.ModuleList([Downsample(dims, width, c.factor)]))
                skips.append(width)
        self.middle = nn.ModuleList([block(width, width, 0), Attention(dims, width, c.head_channels),
                                     block(width, width, 1)])
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for i in range(c.blocks + 1):
                layers = [block(width + skips.pop(), w, i)]
                if level in c.attention:
                    layers.append(Attention(dims, w, c.head_channels))
                if level > 0 and i == c.blocks:
                    layers.append(Upsample(dims, w, c.factor))
                self.up.append(nn.ModuleList(layers))
                width = w
        self.out = nn.Sequential(group_norm(width), nn.SiLU(), zero(CONV[dims](width, c.out_channels, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, self_cond: Tensor | None = None) -> Tensor:
        if any(s % self.config.downsampling for s in x.shape[2:]):
            raise DiffkitError(f"U-Net: sizes {tuple(x.shape[2:])} must be multiples of {self.config.downsampling}")
        x = with_self_condition(x, self_cond, self.config.self_cond, dim=1)
        emb = self.time(t)
        if self.label is not None:
            if y is None:  # unconditional: the null label the network learned under label dropout
                y = torch.full((x.shape[0],), self.config.classes, dtype=torch.long, device=x.device)
            emb = emb + self.label(y)
        h = self.inp(x)
        skips = [h]
        for layers in self.down:
            for layer in layers:
                h = layer(h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layers in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in layers:
                h = layer(h, emb)
        return self.out(h)
