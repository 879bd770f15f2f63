"""`diffkit train|sample|inpaint|style|eval points`: the CLI of the points modality.

Only typer at import time; torch and the core load inside the commands.
"""

from typing import Annotated, List, Optional

import typer

from diffkit.io import Destination, result_stem
from diffkit.points import pipeline
from diffkit.options import Common, Preset, Sampling, Strata, Training, with_defaults, with_options

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train points`.")]
Output = Annotated[str, typer.Option("--output", "-o", help="A .csv file, a folder (a new .csv file there), or - for stdout.")]
Input = Annotated[str, typer.Option("--input", "-i", help="CSV file of points, or - for stdin.")]


PointsTraining = with_defaults(Training, **pipeline.TRAINING)


@with_options(PointsTraining, Common)
def train(
    data: Annotated[str, typer.Option(help="CSV file, - for stdin, or builtin:ring / builtin:mixture.")] = "builtin:ring",
    preset: Preset = "small",
    hidden: Annotated[Optional[int], typer.Option(help="Width of the MLP; default: the preset's.")] = None,
    *, training: PointsTraining, common: Common,
):
    """Train an MLP denoiser on points (standardised per column; sampling maps back)."""
    pipeline.train(training, data=data, preset=preset, hidden=hidden, device=common.device, quiet=common.quiet,
                   json_out=common.json)


def _write(points, destination, stem: str, common: Common) -> None:
    from diffkit.points.data import to_csv

    destination.write_rows(to_csv(points), [{"point": row} for row in points.tolist()], stem, common.json)


def _check_columns(points, dim: int, source: str):
    from diffkit.errors import DiffkitError

    if points.shape[1] != dim:
        raise DiffkitError(f"{source}: rows have {points.shape[1]} columns, the model takes {dim}")
    return points


def _read_points(source: str, dim: int):
    from diffkit.points.data import read_csv

    return _check_columns(read_csv(source), dim, source)


@with_options(Common, Sampling)
def sample(run: Model, n: Annotated[int, typer.Option("-n", help="How many points.")] = 1000,
           output: Output = "-", *, common: Common, sampling: Sampling):
    """Draw points from a trained model; CSV on stdout by default."""
    from diffkit.errors import DiffkitError
    from diffkit.runs import provenance_of

    if n < 1:
        raise DiffkitError(f"-n must be at least 1, got {n}")
    destination = Destination.of(output, ".csv")
    loaded = pipeline.load(run, common.device)
    points = pipeline.generate(loaded, n, sampling, quiet=common.quiet)
    _write(points, destination.stamped(provenance_of(loaded, "sample points", sampling)), f"seed{sampling.seed}", common)


@with_options(Common, Sampling)
def style(run: Model, input: Input,
          strength: Annotated[float, typer.Option(help="0 returns the input, 1 ignores it.")] = 0.5,
          output: Output = "-", *, common: Common, sampling: Sampling):
    """Pull each input point toward the model's distribution by partial noising (SDEdit)."""
    from diffkit.core.editing import Noised
    from diffkit.runs import provenance_of

    destination = Destination.of(output, ".csv")
    loaded = pipeline.load(run, common.device)
    start = _read_points(input, loaded.config.data.dim)
    stamp = provenance_of(loaded, "style points", sampling, input, strength=strength)
    _write(pipeline.generate(loaded, len(start), sampling, quiet=common.quiet, start=Noised(start, strength)),
           destination.stamped(stamp), result_stem(input, "styled"), common)


@with_options(Common, Sampling)
def inpaint(run: Model, input: Input,
            keep: Annotated[str, typer.Option(help="Columns to keep, e.g. 0 or 0,2; the rest are generated.")],
            jump: Annotated[int, typer.Option(help="RePaint jump length in steps.")] = 5,
            resample: Annotated[int, typer.Option(help="RePaint repeats of each jump (1 = none).")] = 10,
            output: Output = "-", *, common: Common, sampling: Sampling):
    """Generate the other columns of each input point given the kept ones."""
    from diffkit.core.editing import Inpaint
    import torch

    from diffkit.errors import DiffkitError
    from diffkit.runs import provenance_of

    destination = Destination.of(output, ".csv")
    loaded = pipeline.load(run, common.device)
    dim = loaded.config.data.dim
    known = _read_points(input, dim)
    try:
        columns = sorted({int(c) for c in keep.split(",")})
    except ValueError:
        raise DiffkitError(f"--keep: expected column numbers like 0,2, got {keep!r}") from None
    if not columns or columns[0] < 0 or columns[-1] >= dim:
        raise DiffkitError(f"--keep: columns must lie in 0..{dim - 1}, got {keep!r}")
    mask = torch.zeros(dim)
    mask[columns] = 1
    stamp = provenance_of(loaded, "inpaint points", sampling, input, keep=keep)
    _write(pipeline.generate(loaded, len(known), sampling, quiet=common.quiet, condition=Inpaint(known, mask, jump, resample)),
           destination.stamped(stamp), result_stem(input, "inpainted"), common)


@with_options(Common)
def evaluate(run: Model,
             data: Annotated[Optional[str], typer.Option(help="Held-out CSV; default: fresh draws of the built-in data.")] = None,
             n: Annotated[int, typer.Option("-n", help="Points for the bound.")] = 2000,
             strata: Strata = 1000,
             samples: Annotated[Optional[List[str]], typer.Option(help="CSV of generated points to score (repeatable).")] = None,
             plot: Annotated[Optional[str], typer.Option(help="Write a PNG scatter of data and samples.")] = None,
             *, common: Common):
    """NLL in bits/dim through the variational bound, and sliced W2 of sample files against the data."""
    from diffkit.console import log
    from diffkit.errors import DiffkitError
    from diffkit.io import json_line, write_output
    from diffkit.metrics import sliced_wasserstein
    from diffkit.points import data as points_data
    from diffkit.points.plot import bounds_of, scatter_png
    from diffkit.reports import held_out_source

    if n < 1 or strata < 1:
        raise DiffkitError(f"-n and --strata must be at least 1, got {n} and {strata}")
    loaded = pipeline.load(run, common.device)
    spec = loaded.config.data
    source = held_out_source(loaded, data, "points")
    held_out = _check_columns(points_data.load(source, n, seed=10_000)[:n], spec.dim, source)
    results = [{"metric": "nll_bits_per_dim", "value": pipeline.nll(loaded, held_out, strata), "data": source,
                "n": len(held_out),
                "strata": min(strata, loaded.schedule.T - 1)}]
    panels = [(f"data ({source})", held_out)]
    for path in samples or []:
        generated = _read_points(path, spec.dim)
        results.append({"metric": "sliced_w2", "value": sliced_wasserstein(generated, held_out), "samples": path})
        panels.append((path.rsplit("/", 1)[-1], generated))
    for record in results:
        if common.json:
            json_line(record)
        else:
            print(f"{record['metric']:>18}  {record['value']:.4f}  {record.get('samples', record.get('data'))}")
    if plot:
        write_output(plot, scatter_png(panels, bounds_of(held_out)))
        log(f"wrote {plot}", common.quiet)


def describe(run: str, config) -> dict:
    """`diffkit info` for a points run."""
    from diffkit.runs import summary

    return summary(run, config, pipeline.build, (config.data.dim,), dim=config.data.dim,
                   hidden=config.model["hidden"])


COMMANDS = {"train": train, "sample": sample, "inpaint": inpaint, "style": style, "eval": evaluate}
