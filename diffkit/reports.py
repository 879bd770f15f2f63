"""What `diffkit eval` reports for every modality, as records (dicts with metric, value, stderr, of): the
variational bound of held-out data, the memorisation check's figures, and how restorations are named.
Each modality's evaluation yields such records; the CLI prints them (diffkit.options.print_record)."""

from __future__ import annotations

from typing import Callable

import torch

from diffkit.console import progress_bar
from diffkit.core import variational_bound
from diffkit.core.spec import SamplingSpec
from diffkit.runs import Run


def bound(run: Run, x0: torch.Tensor, labels: torch.Tensor | None, *, bits: int, strata: int, batch_size: int,
          quiet: bool = True) -> tuple[float, float]:
    """The variational bound of each example of x0 (model space) in bits per dimension with a progress bar
    (unless `quiet`): (mean, standard error of the mean). `labels` condition a class-conditional network."""
    totals, generator = [], torch.Generator().manual_seed(0)
    with progress_bar("bound", quiet) as update:
        for start in range(0, len(x0), batch_size):
            index = torch.arange(start, min(start + batch_size, len(x0)))
            kwargs = {"y": labels[index].to(run.device)} if labels is not None else {}
            result = variational_bound(run.schedule, run.model, x0[index].to(run.device),
                                       **run.config.diffusion.parameterisation(), bits=bits, model_kwargs=kwargs,
                                       generator=generator, strata=strata)
            totals.append(result.total.cpu())
            update(int(index[-1]) + 1, len(x0))
    return mean_stderr(torch.cat(totals))


def check_options(what: str, *, n: int, strata: int, batch_size: int, samples: int, memorization: bool,
                  restore: str | None, resample: int, neighbours: str | None = None) -> None:
    """An evaluation's counts and modes checked, before any run or data is read; `what` names its
    examples ("images")."""
    from pathlib import Path

    from diffkit.console import setting
    from diffkit.errors import DiffkitError

    if n < 1 or strata < 1 or batch_size < 1 or samples < 0:
        raise DiffkitError(f"{setting('n')}, {setting('strata')} and {setting('batch_size')} must be at least 1, "
                           f"{setting('samples')} at least 0")
    if memorization and (restore is not None or samples < 2):
        raise DiffkitError(f"{setting('memorization')} needs {setting('samples')} of at least 2, and no "
                           f"{setting('restore')}")
    if restore is not None and (samples < 1 or resample < 1):
        raise DiffkitError(f"{setting('samples')} (the {what} to restore) and {setting('resample')} must be at "
                           f"least 1 with {setting('restore')}")
    if neighbours is not None and (not memorization or not neighbours.lower().endswith(".png")
                                   or not Path(neighbours).parent.is_dir()):
        raise DiffkitError(f"{setting('neighbours')} names a .png in a folder that exists, and goes with "
                           f"{setting('memorization')}")


def held_out_source(run: Run, data: str | None, what: str) -> str:
    """Where held-out examples come from: `data`, else the run's own built-in set (fresh draws of it)."""
    from diffkit.console import setting
    from diffkit.errors import DiffkitError

    source = data or run.config.data.source
    if data is None and not source.startswith("builtin:"):
        raise DiffkitError(f"{run.path} was trained on {source}; pass held-out {what} with {setting('data')}")
    return source


def mean_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    return values.mean().item(), (values.std() / len(values) ** 0.5).item() if len(values) > 1 else 0.0


def copying(distances: dict[str, torch.Tensor], floor: torch.Tensor, of: str,
            shown: Callable[[float], str] = lambda d: f"distance {d:.4g}", ratio: bool = True) -> list[dict]:
    """The memorisation check's records from each set's distances to the training set and the held-out
    examples' (`floor`): the share of a set closer than the threshold the held-out ones calibrate, and
    (`ratio`, for distances that are lengths) its median distance over the held-out median."""
    from diffkit.metrics.memorization import FALSE_POSITIVE_RATE, copying_threshold, flagged_share

    threshold, records = copying_threshold(floor), []
    for name, d in distances.items():
        share = flagged_share(d, threshold)
        records.append({"metric": "memorized_share", "value": share, "stderr": (share * (1 - share) / len(d)) ** 0.5,
                        "of": f"{name} nearer than {1 - FALSE_POSITIVE_RATE:.0%} of held-out ({shown(threshold)}); {of}"})
        if ratio:
            records.append({"metric": "nearest_distance_ratio", "value": (d.median() / floor.median()).item(),
                            "stderr": 0.0, "of": f"{name}: median distance to training over held-out's"})
    return records


def nearest_copies(sets: dict[str, torch.Tensor], held_out: torch.Tensor, training: torch.Tensor,
                   of: str) -> tuple[list[dict], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """`copying` on features: Euclidean distances of every set's and the held-out examples' to their
    nearest training example. Returns the records and each set's (distances, nearest training index)."""
    from diffkit.metrics.memorization import nearest

    found = {name: nearest(codes, training) for name, codes in sets.items()}
    return copying({name: d for name, (d, _) in found.items()}, nearest(held_out, training)[0], of), found


def restoration_label(method: str, sampling: SamplingSpec, resample: int) -> str:
    """How `eval --restore` names diffkit's restorations: method, sampler, steps and RePaint repeats."""
    return f"diffkit {method} {sampling.sampler}-{sampling.steps}" + (f" ×{resample}" if resample > 1 else "")
