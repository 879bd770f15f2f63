"""What `diffkit eval` prints for every modality: the variational bound of held-out data, one metric
per line (or JSON line), the memorisation check's figures, and how restorations are named."""

from __future__ import annotations

from typing import Callable

import torch

from diffkit.console import progress_bar
from diffkit.core import variational_bound
from diffkit.io import json_line
from diffkit.options import Common, Sampling
from diffkit.runs import Run


def bound(run: Run, x0: torch.Tensor, labels: torch.Tensor | None, *, bits: int, strata: int, batch_size: int,
          common: Common) -> tuple[float, float]:
    """The variational bound of each example of x0 (model space) in bits per dimension with a progress bar:
    (mean, standard error of the mean). `labels` condition a class-conditional network."""
    totals, generator = [], torch.Generator().manual_seed(0)
    with progress_bar("bound", common.quiet) as update:
        for start in range(0, len(x0), batch_size):
            index = torch.arange(start, min(start + batch_size, len(x0)))
            kwargs = {"y": labels[index].to(run.device)} if labels is not None else {}
            result = variational_bound(run.schedule, run.model, x0[index].to(run.device), **run.config.diffusion.parameterisation(),
                                       bits=bits, model_kwargs=kwargs, generator=generator, strata=strata)
            totals.append(result.total.cpu())
            update(int(index[-1]) + 1, len(x0))
    return mean_stderr(torch.cat(totals))


def mean_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    return values.mean().item(), (values.std() / len(values) ** 0.5).item() if len(values) > 1 else 0.0


def report(record: dict, common: Common) -> None:
    """One metric of `diffkit eval`: a JSON line, or "metric  value ± stderr  what it was measured on"."""
    if common.json:
        json_line(record)
    else:
        print(f"{record['metric']:>22}  {record['value']:.4f} ± {record['stderr']:.4f}  {record['of']}")


def report_copying(distances: dict[str, torch.Tensor], floor: torch.Tensor, common: Common, of: str,
                   shown: Callable[[float], str] = lambda d: f"distance {d:.4g}", ratio: bool = True) -> None:
    """`eval --memorization`'s figures from each set's distances to the training set and the held-out
    examples' (`floor`): the share of a set closer than the threshold the held-out ones calibrate, and
    (`ratio`, for distances that are lengths) its median distance over the held-out median."""
    from diffkit.metrics.memorization import FALSE_POSITIVE_RATE, copying_threshold, flagged_share

    threshold = copying_threshold(floor)
    for name, d in distances.items():
        share = flagged_share(d, threshold)
        report({"metric": "memorized_share", "value": share, "stderr": (share * (1 - share) / len(d)) ** 0.5,
                "of": f"{name} nearer than {1 - FALSE_POSITIVE_RATE:.0%} of held-out ({shown(threshold)}); {of}"},
               common)
        if ratio:
            report({"metric": "nearest_distance_ratio", "value": (d.median() / floor.median()).item(), "stderr": 0.0,
                    "of": f"{name}: median distance to training over held-out's"}, common)


def check_memorization(sets: dict[str, torch.Tensor], held_out: torch.Tensor, training: torch.Tensor, common: Common,
                       of: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """report_copying on features: Euclidean distances of every set's and the held-out examples' to their
    nearest training example. Returns each set's (distances, nearest training index)."""
    from diffkit.metrics.memorization import nearest

    found = {name: nearest(codes, training) for name, codes in sets.items()}
    report_copying({name: d for name, (d, _) in found.items()}, nearest(held_out, training)[0], common, of)
    return found


def restoration_label(method: str, sampling: Sampling, resample: int) -> str:
    """How `eval --restore` names diffkit's restorations: method, sampler, steps and RePaint repeats."""
    return f"diffkit {method} {sampling.sampler}-{sampling.steps}" + (f" ×{resample}" if resample > 1 else "")
