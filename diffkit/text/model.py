"""Diffusion-LM in the shared core: tokens become learned embeddings, the core diffuses them, and
rounding maps vectors back to tokens (Li et al. 2022).

Layout: a sequence of L embeddings of size D is a tensor [B, D, L], channels first like audio, so the
core's channel conventions (a learned variance doubles dim 1) hold unchanged.

- `TextDenoiser`: the token embeddings plus a bidirectional pre-norm Transformer encoder (SDPA attention,
  learned positions, the timestep added to every position). A linear readout of its last hidden state
  gives a distribution over tokens (CDCD's), and x̂_0 is the expected embedding under it. Runs made
  before it read the distribution off an output vector instead, by the rounding below (`readout="tied"`).
- Rounding: p(w | x) ∝ exp(-‖x - e_w‖²), so its most likely token is the nearest embedding, which is
  also the clamping trick applied to x̂_0 while sampling (`clamp_hook`).
- Partial noising (DiffuSeq, Gong et al. 2023): `keep` marks the positions of a given source; the
  network sees them clean and predicts them exactly, so a pair's source conditions its target with the
  same network, sampler and loss.
- The objective is Diffusion-LM's end-to-end one with x_0 = EMB(w) exactly: the rounding cross-entropy
  -log p(w | ·) of the network's token distribution, plus the diffusion loss on x̂_0 (`--mse-weight`, a
  fifth by default: `text_objective` says why). The cross-entropy reaches the embeddings through the
  noised input, which keeps them apart (the squared error alone would shrink them together).
  Diffusion-LM's extra Gaussian step from EMB(w) to a noisy x_0 is left out: its 64 continuous
  dimensions per token put so much slack into the likelihood bound (~470 bits per token on
  builtin:weather after 2,000 steps) that the bound said nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffkit.core.diffusion import training_losses, variational_bound
from diffkit.core.nn import TimeMLP, with_self_condition
from diffkit.core.schedule import Schedule
from diffkit.errors import DiffkitError
from diffkit.text.tokenizer import PAD


@dataclass(frozen=True)
class TextConfig:
    vocab: int
    seq_len: int = 64
    embed_dim: int = 64
    width: int = 224
    depth: int = 4
    heads: int = 4
    dropout: float = 0.0
    learned_variance: bool = False
    classes: int = 0  # > 0: class-conditional; label `classes` means "no label" (classifier-free guidance)
    self_cond: bool = False  # also takes a previous x̂_0 (CDCD's and Plaid's self-conditioning)
    # How the token distribution is read off the last hidden state: "linear", a free linear layer (what
    # `train` writes), or "tied", the rounding of one output vector, -‖out - e_w‖² (runs made before,
    # whose config has no such field). The tied logits are linear in a point of the embedding space, so
    # a distribution such as "the temperatures a snowy sky allows" had to be carved out of the geometry
    # the diffusion loss also shapes (docs/measurements/text.md compares them).
    # The price: the tied readout reads a clean input's token off its geometry from the first step, the
    # linear one learns each token's identity.
    readout: str = "tied"

    def __post_init__(self):
        if self.vocab < 4 or self.seq_len < 2 or self.embed_dim < 1 or self.depth < 1:
            raise DiffkitError("text model: needs vocab >= 4, seq_len >= 2, embed_dim >= 1 and depth >= 1")
        if self.readout not in ("tied", "linear"):
            raise DiffkitError(f"text model: readout must be tied or linear, got {self.readout!r}")
        if self.width % self.heads:
            raise DiffkitError(f"text model: width {self.width} is not a multiple of {self.heads} heads")

    def to_json(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm Transformer encoder layer: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.proj(h.transpose(1, 2).reshape(b, n, c)), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), self.dropout, self.training)


class TextDenoiser(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab, config.embed_dim)
        self.input = nn.Linear(config.embed_dim * (2 if config.self_cond else 1), config.width)
        self.positions = nn.Parameter(torch.randn(config.seq_len, config.width) * 0.02)
        self.time = TimeMLP(config.width, config.width)
        self.label = nn.Embedding(config.classes + 1, config.width) if config.classes else None
        self.blocks = nn.ModuleList(Block(config.width, config.heads, config.dropout) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        tied = config.readout == "tied"
        # The output vectors: the one rounded to logits (tied readout), and a learned variance's interpolation.
        vectors = int(tied) + int(config.learned_variance)
        self.output = nn.Linear(config.width, config.embed_dim * vectors) if vectors else None
        self.readout = None if tied else nn.Linear(config.width, config.vocab)

    def embed(self, tokens: Tensor) -> Tensor:
        """[B, L] token ids -> [B, D, L]."""
        return self.embedding(tokens).transpose(1, 2)

    def logits(self, x: Tensor) -> Tensor:
        """Rounding logits [B, L, V] of vectors [B, D, L]: -‖x - e_w‖² up to a per-position constant."""
        table = self.embedding.weight.float()
        x = x.transpose(1, 2).float()
        return 2 * x @ table.T - (table**2).sum(1)

    def nearest(self, x: Tensor) -> Tensor:
        """Each vector replaced by the nearest token embedding (Diffusion-LM's clamping)."""
        return self.embed(self.logits(x).argmax(-1)).to(x.dtype)

    def forward(self, x: Tensor, t: Tensor, clean: Tensor | None = None, keep: Tensor | None = None,
                with_logits: bool = False, y: Tensor | None = None, self_cond: Tensor | None = None):
        """`predict`'s output, and with `with_logits` its token logits too (through forward, so that a
        DistributedDataParallel wrapper sees the call)."""
        out, logits = self.predict(x, t, clean, keep, y, self_cond)
        return (out, logits) if with_logits else out

    def predict(self, x: Tensor, t: Tensor, clean: Tensor | None = None, keep: Tensor | None = None,
                y: Tensor | None = None, self_cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The network's output [B, D (x2 with a learned variance), L] and its token logits [B, L, V];
        `y` the class labels of a class-conditional model (none: the null label), `self_cond` a previous
        x̂_0 of a self-conditioned one.

        x̂_0 is the expected embedding under the network's token distribution: exactly a token's
        embedding once the network is sure of it (the low-noise steps, where any error costs most in
        the bound), a weighted mean while it is not."""
        length = x.shape[-1]
        if length > self.config.seq_len:
            raise DiffkitError(f"sequence of {length} tokens is longer than the model's {self.config.seq_len}")
        if keep is not None:
            x = torch.where(keep[:, None], clean, x)
        condition = self.time(t)
        if self.label is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.config.classes, dtype=torch.long, device=x.device)
            condition = condition + self.label(y)
        x = with_self_condition(x, self_cond, self.config.self_cond, dim=1)
        h = self.input(x.transpose(1, 2)) + self.positions[:length] + condition[:, None]
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        out = self.output(h).transpose(1, 2) if self.output is not None else h.new_zeros(h.shape[0], 0, length)
        if self.readout is None:
            d = self.config.embed_dim
            logits, variance = self.logits(out[:, :d]), out[:, d:]
        else:
            logits, variance = self.readout(h).float(), out
        x0 = (logits.softmax(-1) @ self.embedding.weight.float()).transpose(1, 2).to(out.dtype)
        if keep is not None:  # the source is known: predict it exactly
            x0 = torch.where(keep[:, None], clean, x0)
        return torch.cat([x0, variance], dim=1), logits


def text_objective(schedule: Schedule, *, variance: str, weighting: str, self_cond: bool = False,
                   mse_weight: float):
    """The trainer's objective for token batches: the rounding cross-entropy -log p(w | x_t) of the
    network's token distribution (the last call: a self-conditioned network's first one only makes its
    estimate), plus `mse_weight` times the diffusion loss, the squared error of x̂_0 against the
    embeddings x_0 = EMB(w).

    The cross-entropy alone is CDCD's score interpolation; it is what teaches the distribution. The squared
    error constrains only its mean in embedding space, which many distributions share (a vocabulary of
    hundreds in 64 dimensions), so at full weight its noisy gradient competes with the cross-entropy's
    for what the network learns; at a small weight it still shapes the embeddings' geometry
    (docs/measurements/text.md, the weights tried)."""

    def objective(model, tokens: Tensor, kwargs: dict, t: Tensor, generator, shard: tuple[int, int]) -> dict:
        net = getattr(model, "_orig_mod", model)  # the module behind torch.compile and DDP wrappers
        net = getattr(net, "module", net)
        x0 = net.embed(tokens)
        if "keep" in kwargs:
            kwargs = {**kwargs, "clean": x0}
        logits = []

        def recorded(x, t, **kw):  # the network, keeping its token logits for the rounding term
            out, token_logits = model(x, t, with_logits=True, **kw)
            logits.append(token_logits)
            return out

        losses = training_losses(schedule, recorded, x0, prediction="x0", variance=variance, weighting=weighting,
                                 t=t, generator=generator, model_kwargs=kwargs, shard=shard, self_cond=self_cond)
        rounding = F.cross_entropy(logits[-1].transpose(1, 2), tokens, reduction="none")
        if "keep" in kwargs:  # the source is given, nothing to learn there
            rounding = rounding * ~kwargs["keep"]
        rounding = rounding.mean(1)
        # Only the squared error is reweighted; a learned variance's bound term keeps its own weight.
        loss = losses["loss"] + (mse_weight - 1) * losses["mse"] + rounding
        # A time warp follows the cross-entropy, as CDCD's does: it is the error of what is decided, the
        # tokens, where the squared error also counts how far apart their embeddings lie.
        return {**losses, "rounding": rounding, "loss": loss, "x0_error": rounding.detach()}

    return objective


@torch.no_grad()
def bits_per_token(model: TextDenoiser, schedule: Schedule, tokens: Tensor, *, variance: str, strata: int | None,
                   generator, self_cond: bool = False) -> Tensor:
    """An upper bound on -log2 p(w) of each padded sequence, per real token (end of sequence included,
    padding not). With x_0 = EMB(w) a function of the tokens, the bound is the Gaussian one on x_0 with
    its last step replaced by a categorical decoder: L_T + sum of the KL terms + E[-log p(w | x̂_0(x_1))],
    the rounding of the network's prediction from the least noisy level."""
    x0 = model.embed(tokens)
    d = model.config.embed_dim

    def rounding(x1: Tensor, t: Tensor) -> Tensor:
        estimate = model.predict(x1, t)[0][:, :d] if self_cond else None  # as self_conditioned feeds it
        logits = model.predict(x1, t, self_cond=estimate)[1]
        return F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none").sum(1)

    bound = variational_bound(schedule, model, x0, prediction="x0", variance=variance, generator=generator,
                              strata=strata, decoder=rounding, self_cond=self_cond)
    return bound.total * x0[0].numel() / (tokens != PAD).sum(1).clamp(min=1)


def clamp_hook(model: TextDenoiser):
    """The core's x̂_0 hook: snap every predicted vector to its nearest token embedding."""
    return lambda x0, t: model.nearest(x0)
