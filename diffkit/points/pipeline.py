"""The points modality's library: training a run, its network, loading it, and drawing points from it in
data units (plain sampling, or any edit of diffkit.core.sample). The commands in commands.py are written
over these.

Only the standard library (and diffkit.config) at import time; torch and the core load inside the
functions.
"""

import functools

from diffkit import config

# --preset: the MLP's width.
PRESETS = {"tiny": {"hidden": 64}, "small": {"hidden": 256}, "base": {"hidden": 1024}}
# v-prediction: x̂0 = α·x - σ·v stays bounded where α → 0, whereas x̂0 = (x - σ·ε̂)/α multiplies ε̂'s error
# by σ/α, and points have no ±1 range to clip to, unlike pixels. The shared cosine schedule: more of
# builtin:ring's samples land on the ring with it than with the linear one (docs/training.md).
TRAINING = {"steps": 3000, "batch_size": 256, "lr": 1e-3, "prediction": "v", "checkpoint_every": 1000}


# train_spec(out, **settings): a diffkit.config.TrainSpec into `out` with the points defaults
# (those `diffkit train points` starts from), `settings` in their place.
train_spec = functools.partial(config.train_spec, TRAINING)


def train(training, *, data: str = "builtin:ring", preset: str = "small", hidden: int | None = None,
          device: str = "auto", quiet: bool = True, json_out: bool = False):
    """Train an MLP denoiser on points (`data`: a CSV file, - for stdin, or builtin:ring / mixture;
    standardised per column, sampling maps back) as `training` (a diffkit.config.TrainSpec) says, into
    training.out. Returns the EMA network."""
    from dataclasses import asdict

    from diffkit.points import data as points_data
    from diffkit.config import preset_sizes
    from diffkit.points.config import PointsData
    from diffkit.points.model import PointsConfig
    from diffkit.runs import batch_indices, start_run, train_run

    def make_config():
        diffusion = training.diffusion()
        points = points_data.load(data, 20_000, training.seed)
        mean, std = points.mean(0), points.std(0).clamp(min=1e-6)
        dim = points.shape[1]
        model = PointsConfig(dim=dim, **preset_sizes(preset, PRESETS, hidden=hidden),
                             out=dim * (2 if diffusion.variance == "learned" else 1), self_cond=diffusion.self_cond)
        spec = PointsData(data, dim, tuple(mean.tolist()), tuple(std.tolist()))
        return {"model": asdict(model), "diffusion": diffusion, "data": spec}, points

    config, points = start_run(training, "points", make_config,
                               lambda config: points_data.load(config.data.source, 20_000, training.seed))
    spec = config.data
    standard = (points - torch_tensor(spec.mean)) / torch_tensor(spec.std)

    def batch_at(step, micro):
        return standard[batch_indices(step, micro, len(standard), training)], {}

    return train_run(config, build, batch_at, training, device=device, quiet=quiet, json_out=json_out)


def build(config: dict):
    from diffkit.points.model import PointsConfig, PointsDenoiser

    return PointsDenoiser(PointsConfig(**config.model))


def nll(run, points, strata: int = 100) -> float:
    """Bits per dimension of `points` [n, dim] (data units) under the run's variational bound."""
    import math

    import torch

    from diffkit.core import variational_bound

    mean, std = (torch_tensor(v).to(run.device) for v in (run.config.data.mean, run.config.data.std))
    bound = variational_bound(run.schedule, run.model, (points.to(run.device) - mean) / std,
                              **run.config.diffusion.parameterisation(), generator=torch.Generator().manual_seed(0),
                              strata=strata)
    # Standardising divided by std; the density in data units pays back log std per dimension.
    return bound.total.mean().item() + std.log().mean().item() / math.log(2)


def torch_tensor(values):
    import torch

    return torch.tensor(values, dtype=torch.float32)


def load(path: str, device: str = "auto"):
    from diffkit.runs import load_run

    return load_run(path, "points", build, device)


def generate(run, n: int, sampling, *, quiet: bool = True, start=None, condition=None, trajectory=None):
    """Sample in standardised units and map back; `start` and `condition` (core.editing) in data units."""
    from diffkit import runs

    mean, std = (torch_tensor(v).to(run.device) for v in (run.config.data.mean, run.config.data.std))

    def standardised(x):
        return (x.to(run.device) - mean) / std

    return runs.generate(run, (n, len(mean)), sampling, quiet=quiet,
                         start=None if start is None else start.map(standardised),
                         condition=None if condition is None else condition.map(standardised),
                         trajectory=trajectory) * std + mean
