"""`--trajectory`: x̂_0 at every model call of a sampling, collected from core.sample's on_denoised
callback (no second sampling loop), and the file each modality draws it into."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from diffkit.errors import DiffkitError


class Trajectory:
    """What `--trajectory` keeps: x̂_0 at every model call of each sampling, on the CPU in the model's
    space. Each generate() call adds its rows (a command working in windows or tiles: a row per window)."""

    def __init__(self):
        self.runs: list[list[tuple[int, torch.Tensor]]] = []

    def recorder(self) -> Callable[[torch.Tensor, int], None]:
        """core.sample's on_denoised for one more sampling run."""
        calls: list[tuple[int, torch.Tensor]] = []
        self.runs.append(calls)
        return lambda x0, t: calls.append((t, x0.detach().float().cpu()))

    def rows(self) -> list[torch.Tensor]:
        """One tensor [calls, *example] per row, in the order sampled."""
        return [row for calls in self.runs for row in torch.stack([x0 for _, x0 in calls], 1)]

    def timesteps(self) -> list[int]:
        return [t for t, _ in self.runs[0]]


def trajectory_target(path: str | None, suffix: str) -> Trajectory | None:
    """`--trajectory`'s file checked before any work (it must end in `suffix`, in a folder that exists),
    and the collector for it; None without the option."""
    if path is None:
        return None
    if not path.lower().endswith(suffix) or not Path(path).parent.is_dir():
        raise DiffkitError(f"--trajectory {path}: expected a {suffix} file in a folder that exists")
    return Trajectory()


def write_trajectory(path: str, data: bytes, stamp: dict) -> None:
    """A trajectory's file (checked by trajectory_target), carrying the result's provenance."""
    from diffkit.io import Destination

    Destination.of(path, Path(path).suffix.lower()).stamped(stamp).write(data, Path(path).stem, False)
