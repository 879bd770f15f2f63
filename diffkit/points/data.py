"""Data for the points modality: CSV files of numbers, or built-in Gaussian mixtures."""

from __future__ import annotations

import io

import numpy as np
import torch

from diffkit.core.mixture import GaussianMixture
from diffkit.errors import DiffkitError
from diffkit.io import decode_utf8, display_name, read_input

BUILTINS = {
    "ring": lambda: GaussianMixture.ring(8, radius=1.0, std=0.05),
    "mixture": lambda: GaussianMixture.random(3, 2, seed=3, spread=1.5, std=0.3),
}


def builtin(name: str) -> GaussianMixture:
    if name not in BUILTINS:
        raise DiffkitError(f"unknown built-in data 'builtin:{name}'; choose one of: "
                           + ", ".join(f"builtin:{n}" for n in BUILTINS))
    return BUILTINS[name]()


def read_csv(source: str) -> torch.Tensor:
    """Rows of numbers separated by commas (a header line is skipped); "-" reads stdin."""
    name = display_name(source)
    text = decode_utf8(read_input(source), name)
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if lines and not _is_numeric_row(lines[0][1]):
        lines = lines[1:]
    if not lines:
        raise DiffkitError(f"{name}: no rows of numbers")
    width = lines[0][1].count(",") + 1
    for number, line in lines:
        if line.count(",") + 1 != width or not _is_numeric_row(line):
            raise DiffkitError(f"{name}:{number}: not a row of {width} numbers like the first: {line[:40]!r}")
    array = np.loadtxt(io.StringIO("\n".join(line for _, line in lines)), delimiter=",", ndmin=2, dtype=np.float64)
    if not np.isfinite(array).all():
        raise DiffkitError(f"{name}: contains NaN or infinite values")
    return torch.from_numpy(array).float()


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
        return True
    except ValueError:
        return False


def to_csv(points: torch.Tensor) -> bytes:
    out = io.StringIO()
    np.savetxt(out, points.detach().cpu().double().numpy(), delimiter=",", fmt="%.6g")
    return out.getvalue().encode()


def load(source: str, n: int, seed: int) -> torch.Tensor:
    """A data set as a tensor [N, D]: `builtin:NAME` draws n points deterministically from `seed`."""
    if source.startswith("builtin:"):
        return builtin(source.split(":", 1)[1]).sample(n, torch.Generator().manual_seed(seed))[0].float()
    return read_csv(source)
