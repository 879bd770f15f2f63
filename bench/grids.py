"""The grid fitted to a trained model against the fixed spacings, on that model: KID of its samples (several
noise seeds) at each sampler and number of steps, and what the fit costs.

    python bench/grids.py [--run runs/demo] [--samplers unipc] [--steps 10] [--threads 2] [--seeds 3]
                          [--samples 200] [--out bench/results/grids.json]

Beside them "ode", the sampler's converged solution (REFERENCE_STEPS levels), which every grid approaches
as its steps grow. The run is an image run with classes (`make demo` makes runs/demo); its samples are drawn per held-out
label at guidance 2, as `make demo`'s eval does, and scored against as many held-out images (KID on
EfficientNet-lite0 features; uniform noise scores beside them). The fit is made once per sampler and
budget and kept in the run (grids.json), as `--spacing fitted` does; its seconds are printed.
"""

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from diffkit.core import SamplingSpec
from diffkit.core.fitting import REFERENCE_STEPS
from diffkit.image import pipeline
from diffkit.image.evaluation import evaluate
from diffkit.runs import GRIDS, read_grids, weights_digest

SPACINGS = ("squeezed", "logsnr", "karras", "fitted")


def kid(run, sampling: SamplingSpec, samples: int, guidance: float, reference: bool = False) -> dict:
    """KID records of `samples` samples (and of uniform noise with `reference`) by name."""
    records = evaluate(run, sampling, n=1, strata=1, samples=samples, reference=reference, guidance=guidance)
    return {r["of"].split(" vs ")[0]: r for r in records if r["metric"] == "kid"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--samplers", default="unipc")
    parser.add_argument("--steps", default="10")
    parser.add_argument("--out", default="bench/results/grids.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = pipeline.load(args.run)
    (Path(args.run) / GRIDS).unlink(missing_ok=True)  # fit afresh, timed
    noise = kid(run, SamplingSpec("unipc", 1, "logsnr"), args.samples, args.guidance, reference=True)["uniform noise"]
    print(f"{args.run}: KID of {args.samples} samples at guidance {args.guidance} vs as many held-out images, mean "
          f"over {args.seeds} noise seeds ± their sd; uniform noise {noise['value']:.4f}; {args.threads} threads")
    rows = []
    for sampler in args.samplers.split(","):
        for steps in map(int, args.steps.split(",")):
            start = time.perf_counter()  # the fit, and one sample with its grid
            pipeline.images(run, 1, SamplingSpec(sampler, steps, "fitted"), labels=torch.zeros(1, dtype=torch.long),
                            guidance=args.guidance)
            fit_seconds = time.perf_counter() - start
            timesteps = next(ts for key, ts in read_grids(run.path, weights_digest(run.path)).items()
                             if key.startswith(f"{sampler} steps={steps} "))
            cells = {}
            for spacing in SPACINGS + ("ode",):  # ode: the sampler's converged solution, what a grid approaches
                spec = (SamplingSpec(sampler, REFERENCE_STEPS, "logsnr") if spacing == "ode" else
                        SamplingSpec(sampler, steps, spacing))
                values = [next(iter(kid(run, dataclasses.replace(spec, seed=seed), args.samples,
                                        args.guidance).values()))["value"] for seed in range(args.seeds)]
                cells[spacing] = {"kid": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
            rows.append({"sampler": sampler, "steps": steps, "timesteps": list(timesteps), "fit_seconds": fit_seconds,
                         "cells": cells})
            print(f"{sampler:>8} {steps:>3} steps  " + "  ".join(f"{k} {v['kid']:.4f} ± {v['sd']:.4f}" for k, v in cells.items())
                  + f"   (fit {fit_seconds:.0f} s: {list(timesteps)})", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": args.run, "threads": args.threads, "seeds": args.seeds, "samples": args.samples,
                               "guidance": args.guidance, "noise_kid": noise["value"], "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
