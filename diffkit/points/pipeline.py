"""The points modality's library: a run's network, loading a run, and drawing points from it in data
units (plain sampling, or any edit of diffkit.core.sample). The commands in commands.py are written over
these.

Only the standard library at import time; torch and the core load inside the functions.
"""


def build(config: dict):
    from diffkit.points.model import PointsConfig, PointsDenoiser

    return PointsDenoiser(PointsConfig(**config.model))


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
