"""`diffkit train|sample|inpaint|style|eval points`: the CLI of the points modality.

Only typer at import time; torch and the core load inside the commands.
"""

from typing import Annotated, Any, List, NamedTuple, Optional

import typer

from diffkit.options import Common, Sampling, with_options

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train points`.")]
Output = Annotated[str, typer.Option("--output", "-o", help="CSV file, or - for stdout.")]
Input = Annotated[str, typer.Option("--input", "-i", help="CSV file of points, or - for stdin.")]


class Loaded(NamedTuple):
    """A trained points run, ready to sample: mean and std map standardised units back to the data's."""

    config: Any
    model: Any
    schedule: Any
    mean: Any
    std: Any


def register(groups) -> None:
    groups["train"].command("points")(train)
    groups["sample"].command("points")(sample)
    groups["inpaint"].command("points")(inpaint)
    groups["style"].command("points")(style)
    groups["eval"].command("points")(evaluate)


@with_options(Common)
def train(
    out: Annotated[str, typer.Option("--out", help="Run directory to create.")],
    data: Annotated[str, typer.Option(help="CSV file, - for stdin, or builtin:ring / builtin:mixture.")] = "builtin:ring",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 3000,
    batch_size: Annotated[int, typer.Option(help="Points per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="Noise schedule: linear, cosine, sigmoid or sqrt.")] = "linear",
    timesteps: Annotated[int, typer.Option(help="Diffusion steps T.")] = 1000,
    prediction: Annotated[str, typer.Option(help="What the network predicts: eps, x0 or v.")] = "eps",
    variance: Annotated[str, typer.Option(help="fixed_small, fixed_large or learned.")] = "fixed_small",
    hidden: Annotated[int, typer.Option(help="Width of the MLP.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, data and noise.")] = 0,
    *, common: Common,
):
    """Train an MLP denoiser on points."""
    import json
    from pathlib import Path

    import torch

    from diffkit.console import log, progress_bar
    from diffkit.core import make_schedule
    from diffkit.core.checkpoint import save_run
    from diffkit.core.diffusion import PREDICTIONS, VARIANCES
    from diffkit.core.trainer import TrainSettings, train as train_loop
    from diffkit.errors import DiffkitError, choose
    from diffkit.points import data as points_data
    from diffkit.points.model import PointsConfig, PointsDenoiser

    choose("prediction", prediction, PREDICTIONS)
    choose("variance", variance, VARIANCES)
    if steps < 1 or batch_size < 1:
        raise DiffkitError("--steps and --batch-size must be at least 1")
    sched = make_schedule(schedule, timesteps)
    if Path(out).exists() and not Path(out).is_dir():
        raise DiffkitError(f"{out}: exists and is not a folder")
    points = points_data.load(data, 20_000, seed)
    mean, std = points.mean(0), points.std(0).clamp(min=1e-6)
    config = PointsConfig(dim=points.shape[1], hidden=hidden, schedule=schedule, timesteps=timesteps,
                          prediction=prediction, variance=variance, data=data,
                          mean=tuple(mean.tolist()), std=tuple(std.tolist()))
    torch.manual_seed(seed)
    device = common.torch_device()
    model = PointsDenoiser(config).to(device)
    Path(out).mkdir(parents=True, exist_ok=True)
    log(f"training {sum(p.numel() for p in model.parameters()):,} parameters on {len(points):,} points "
        f"of dimension {config.dim} ({data}) on {device}", common.quiet)
    with open(Path(out) / "metrics.jsonl", "w") as metrics, progress_bar("train points", common.quiet) as update:
        def on_step(record):
            update(record["step"], steps, loss=record["loss"], it_s=record["it_s"])
            if record["step"] % 100 == 0 or record["step"] == steps:
                metrics.write(json.dumps(record) + "\n")

        ema = train_loop(model, points_data.batches((points - mean) / std, batch_size, seed), sched,
                         TrainSettings(steps=steps, lr=lr, seed=seed), prediction=prediction, variance=variance,
                         on_step=on_step)
    save_run(out, config.to_json(), ema)
    if common.json:
        from diffkit.io import json_line

        json_line({"run": out, "steps": steps})
    log(f"saved {out}", common.quiet)


def _load(run: str, common: Common) -> Loaded:
    import torch

    from diffkit.core import make_schedule
    from diffkit.core.checkpoint import load_config, load_weights
    from diffkit.errors import DiffkitError
    from diffkit.points.model import PointsConfig, PointsDenoiser

    raw = load_config(run)
    if raw["modality"] != "points":
        raise DiffkitError(f"{run}: a {raw['modality']} run, not a points run")
    try:
        config = PointsConfig(**{k: v for k, v in raw.items() if k not in ("modality", "format_version")})
    except TypeError as e:
        raise DiffkitError(f"{run}/config.json: {e}") from None
    device = common.torch_device()
    model = load_weights(run, PointsDenoiser(config)).to(device).eval()
    mean, std = torch.tensor(config.mean, device=device), torch.tensor(config.std, device=device)
    return Loaded(config, model, make_schedule(config.schedule, config.timesteps), mean, std)


def _generate(run: Loaded, n, sampling: Sampling, common: Common, **edit):
    """Sample in standardised units and map back; `edit` carries known/mask or start/strength in data units."""
    from diffkit.console import progress_bar
    from diffkit.core import sample as core_sample

    config, model, sched, mean, std = run
    options = sampling.kwargs()
    for key in ("known", "start"):
        if key in edit:
            edit[key] = (edit[key].to(mean.device) - mean) / std
    with progress_bar(f"sample {sampling.sampler}", common.quiet) as update:
        x = core_sample(model, (n, config.dim), sched, prediction=config.prediction, variance=config.variance,
                        progress=update, **options, **edit)
    return x * std + mean


def _write(points, output: str, common: Common) -> None:
    from diffkit.io import json_line, write_output
    from diffkit.points.data import to_csv

    if common.json:
        for row in points.tolist():
            json_line({"point": row})
    else:
        write_output(output, to_csv(points))


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

    if n < 1:
        raise DiffkitError(f"-n must be at least 1, got {n}")
    _write(_generate(_load(run, common), n, sampling, common), output, common)


@with_options(Common, Sampling)
def style(run: Model, input: Input,
          strength: Annotated[float, typer.Option(help="0 returns the input, 1 ignores it.")] = 0.5,
          output: Output = "-", *, common: Common, sampling: Sampling):
    """Pull each input point toward the model's distribution by partial noising (SDEdit)."""
    loaded = _load(run, common)
    start = _read_points(input, loaded.config.dim)
    _write(_generate(loaded, len(start), sampling, common, start=start, strength=strength), output, common)


@with_options(Common, Sampling)
def inpaint(run: Model, input: Input,
            keep: Annotated[str, typer.Option(help="Columns to keep, e.g. 0 or 0,2; the rest are generated.")],
            jump: Annotated[int, typer.Option(help="RePaint jump length in steps.")] = 5,
            resample: Annotated[int, typer.Option(help="RePaint repeats of each jump (1 = none).")] = 10,
            output: Output = "-", *, common: Common, sampling: Sampling):
    """Generate the other columns of each input point given the kept ones."""
    import torch

    from diffkit.errors import DiffkitError

    loaded = _load(run, common)
    dim = loaded.config.dim
    known = _read_points(input, dim)
    try:
        columns = sorted({int(c) for c in keep.split(",")})
    except ValueError:
        raise DiffkitError(f"--keep: expected column numbers like 0,2, got {keep!r}") from None
    if not columns or columns[0] < 0 or columns[-1] >= dim:
        raise DiffkitError(f"--keep: columns must lie in 0..{dim - 1}, got {keep!r}")
    mask = torch.zeros(dim)
    mask[columns] = 1
    _write(_generate(loaded, len(known), sampling, common, known=known, mask=mask, jump=jump, resample=resample),
           output, common)


@with_options(Common)
def evaluate(run: Model,
             data: Annotated[Optional[str], typer.Option(help="Held-out CSV; default: fresh draws of the built-in data.")] = None,
             n: Annotated[int, typer.Option("-n", help="Points for the bound.")] = 2000,
             samples: Annotated[Optional[List[str]], typer.Option(help="CSV of generated points to score (repeatable).")] = None,
             plot: Annotated[Optional[str], typer.Option(help="Write a PNG scatter of data and samples.")] = None,
             *, common: Common):
    """NLL in bits/dim through the variational bound, and sliced W2 of sample files against the data."""
    import math

    import torch

    from diffkit.console import log
    from diffkit.core import variational_bound
    from diffkit.errors import DiffkitError
    from diffkit.io import json_line, write_output
    from diffkit.metrics import sliced_wasserstein
    from diffkit.points import data as points_data
    from diffkit.points.plot import bounds_of, scatter_png

    config, model, sched, mean, std = _load(run, common)
    source = data or config.data
    if not source.startswith("builtin:") and data is None:
        raise DiffkitError(f"{run} was trained on {source}; pass held-out points with --data")
    held_out = _check_columns(points_data.load(source, n, seed=10_000)[:n], config.dim, source)
    bound = variational_bound(sched, model, (held_out.to(mean.device) - mean) / std, prediction=config.prediction,
                              variance=config.variance, generator=torch.Generator().manual_seed(0))
    # Standardising divided by std; the density in data units pays back log std per dimension.
    bits = bound.total.mean().item() + std.log().mean().item() / math.log(2)
    results = [{"metric": "nll_bits_per_dim", "value": bits, "data": source, "n": len(held_out)}]
    panels = [(f"data ({source})", held_out)]
    for path in samples or []:
        generated = _read_points(path, config.dim)
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


def describe(run: str, config: dict) -> dict:
    from diffkit.core.checkpoint import load_weights
    from diffkit.points.model import PointsConfig, PointsDenoiser

    fields = {k: v for k, v in config.items() if k not in ("modality", "format_version")}
    model = load_weights(run, PointsDenoiser(PointsConfig(**fields)))
    keep = ("dim", "hidden", "blocks", "schedule", "timesteps", "prediction", "variance", "data")
    return {"modality": "points", "parameters": sum(p.numel() for p in model.parameters()),
            **{k: config[k] for k in keep}}
