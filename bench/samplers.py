"""Sampler quality and per-step overhead on the exact Gaussian-mixture oracle (no training involved).

For each sampler and model-call budget (NFE) it prints sliced W2 against fresh true samples (mean over
seeds), the mean log-likelihood of the samples under the true density, and the time per step; then the
per-step overhead (all sampler work besides the model) on a [16, 3, 32, 32] batch. Writes JSON.

    python bench/samplers.py [--quick] [--threads 2] [--out bench/results/samplers.json]

With --suite it scores every timestep spacing with the deterministic samplers on SUITE, the problems the
sampling defaults are chosen on: each cell the mean over noise seeds of sliced W2 over the problem's
floor, then per spacing the mean and worst over the tuning half and over the held-out half, and its
ratio to the best spacing of each problem.

    python bench/samplers.py --suite [--samplers unipc,dpm++2m,dpm++3m] [--threads 2] [--out bench/results/grid-suite.json]
"""

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from diffkit.core import SAMPLERS, GaussianMixture, SamplingSpec, make_schedule, sample
from diffkit.core.fitting import REFERENCE_STEPS, fit_timesteps
from diffkit.core.samplers import model_calls
from diffkit.core.schedule import make_grid
from diffkit.metrics import sliced_wasserstein, sliced_wasserstein_to
from diffkit.runs import fit_batch

PEERS_SW2 = {10: 0.085, 20: 0.040}  # best of diffusers 0.42.1 on the ring oracle, measured on this machine
PEER_OVERHEAD_US = {"ddpm": 448, "ddim": 128, "dpm++2m": 253}  # diffusers, [16,3,32,32], 2 threads
FLOOR_PAIRS = 100


def mixture(dim: int, modes: int, covariance: str, std: float, scale: float = 1.0, seed: int = 0) -> GaussianMixture:
    """`modes` Gaussians in `dim` dimensions with means of unit scale per coordinate, each with an
    isotropic, diagonal (axis stds 0.3-1 of `std`) or full (the same, rotated) covariance, all times
    `scale`, with unequal weights."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(modes, dim, generator=g, dtype=torch.float64)
    stds = std * (torch.ones(modes, dim, dtype=torch.float64) if covariance == "iso"
                  else 0.3 + 0.7 * torch.rand(modes, dim, generator=g, dtype=torch.float64))
    covs = torch.diag_embed(stds**2)
    if covariance == "full":
        rotations, _ = torch.linalg.qr(torch.randn(modes, dim, dim, generator=g, dtype=torch.float64))
        covs = rotations @ covs @ rotations.transpose(1, 2)
    weights = 0.5 + torch.rand(modes, generator=g, dtype=torch.float64)
    return GaussianMixture(weights, scale * means, scale**2 * covs)


# The problems the sampling defaults are chosen on, fixed with their seeds and halves before anything was
# chosen: they differ in dimension (2-256), modes (1-16), separation against the within-mode scale,
# covariance (isotropic, diagonal, full) and data scale (0.5-2). The tuning half chooses; the held-out
# half checks what it chose.
SUITE = {
    "ring-2d": ("tuning", lambda: GaussianMixture.ring(8, 1.0, 0.05)),
    "full-64d-4": ("tuning", lambda: GaussianMixture.random(4, 64, seed=1)),
    "iso-64d-4-tight": ("tuning", lambda: mixture(64, 4, "iso", 0.1, seed=11)),
    "iso-16d-8": ("tuning", lambda: mixture(16, 8, "iso", 0.3, seed=12)),
    "iso-128d-2-wide": ("tuning", lambda: mixture(128, 2, "iso", 0.5, seed=13)),
    "diag-8d-16-scale2": ("tuning", lambda: mixture(8, 16, "diag", 0.2, scale=2.0, seed=14)),
    "full-2d-3-scale0.5": ("held-out", lambda: mixture(2, 3, "full", 0.3, scale=0.5, seed=21)),
    "diag-32d-1-scale2": ("held-out", lambda: mixture(32, 1, "diag", 1.0, scale=2.0, seed=22)),
    "iso-256d-2-tight": ("held-out", lambda: mixture(256, 2, "iso", 0.2, seed=23)),
    "diag-64d-8-tight": ("held-out", lambda: mixture(64, 8, "diag", 0.05, seed=24)),
    "full-4d-16": ("held-out", lambda: mixture(4, 16, "full", 0.1, seed=25)),
    "full-128d-4-scale0.5": ("held-out", lambda: mixture(128, 4, "full", 0.3, scale=0.5, seed=26)),
}
SUITE_SPACINGS = ("squeezed", "logsnr", "karras", "trailing", "fitted")
FIT_SEED = 12345  # the fit's own draws, apart from the seeds it is scored on
SUITE_SAMPLERS = ("unipc", "dpm++2m", "dpm++3m")


def steps_for(sampler: str, nfe: int, schedule, spacing: str) -> int:
    """The most steps whose grid takes at most `nfe` model calls (heun's steps take one or two)."""
    return max(n for n in range(1, nfe + 1) if model_calls(sampler, make_grid(schedule, n, spacing)) <= nfe)


def within_mode_spread(data: GaussianMixture, x: torch.Tensor) -> float:
    """Mean squared distance of the points to the mean of the mode each most likely belongs to: a
    sampler that collapses modes scores low, one that smears them high."""
    assigned = data.responsibilities(x.double()).argmax(1)
    return (x.double() - data.means[assigned]).square().sum(1).mean().item()


def quality(data: GaussianMixture, n: int, seeds: int, nfes, spacing: str):
    schedule = make_schedule("linear", 1000)
    model = data.denoiser(schedule)
    # The floor is the distance between two independent true samples. It moves a lot with the draw (the
    # ring's is mostly the difference between the two sets' mode counts: from 0.027 to 0.040 between
    # sets of 5 pairs), so it is the mean of many pairs, drawn apart from the references below.
    floor, floor_se = floor_of(data, n, FLOOR_PAIRS)
    true_spread = within_mode_spread(data, data.sample(100_000, torch.Generator().manual_seed(300))[0])
    rows = []
    for name in SAMPLERS:
        for nfe in nfes:
            steps = steps_for(name, nfe, schedule, spacing)
            sw2, loglik, spread, seconds = [], [], [], []
            for s in range(seeds):
                reference = data.sample(n, torch.Generator().manual_seed(100 + s))[0]
                start = time.perf_counter()
                x = sample(model, (n, data.dim), schedule, SamplingSpec(name, steps, spacing, seed=s))
                seconds.append(time.perf_counter() - start)
                sw2.append(sliced_wasserstein(x, reference))
                loglik.append(data.log_prob(x).mean().item())
                spread.append(within_mode_spread(data, x) / true_spread)
            rows.append({"sampler": name, "nfe": nfe, "sw2": statistics.mean(sw2), "sw2_sd": statistics.stdev(sw2)
                         if seeds > 1 else 0.0, "over_floor": statistics.mean(sw2) / floor,
                         "spread_ratio": statistics.mean(spread), "loglik": statistics.mean(loglik),
                         "ms_per_step": 1000 * statistics.median(seconds) / steps})
    return floor, floor_se, rows


def overhead(repeats: int = 3, steps: int = 50):
    """Median time per step with a model that costs nothing (returns a fixed tensor)."""
    schedule = make_schedule("linear", 1000)
    fixed = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    free_model = lambda x, t: fixed
    results = {}
    for name in SAMPLERS:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sample(free_model, fixed.shape, schedule, SamplingSpec(name, steps))
            times.append((time.perf_counter() - start) / steps)
        results[name] = 1e6 * statistics.median(times)
    a, b = 0.3, 0.7
    start = time.perf_counter()
    for _ in range(1000):
        a * fixed + b * fixed
    results["a*x+b*e"] = 1e6 * (time.perf_counter() - start) / 1000
    return results


def floor_of(data: GaussianMixture, n: int, pairs: int) -> tuple[float, float]:
    """Mean and standard error of sliced W2 between two independent true samples of n points."""
    values = [sliced_wasserstein(data.sample(n, torch.Generator().manual_seed(1000 + 2 * i))[0],
                                 data.sample(n, torch.Generator().manual_seed(1001 + 2 * i))[0]) for i in range(pairs)]
    return statistics.mean(values), statistics.stdev(values) / pairs**0.5


def suite(n: int, seeds: int, nfes, pairs: int, reference_n: int, samplers=SUITE_SAMPLERS) -> dict:
    """Every spacing of SUITE_SPACINGS with every sampler of `samplers` at every budget, on every
    problem of SUITE: sliced W2 to a large true sample over the problem's floor, the mean over `seeds`
    noise seeds; "fitted" is fitted to each problem's denoiser, sampler and budget on a batch of its own
    seed. Beside them "ode", UniPC's converged solution (REFERENCE_STEPS levels), which no grid can beat
    but by chance."""
    schedule = make_schedule("linear", 1000)
    problems = {}
    for name, (half, build) in SUITE.items():
        data = build()
        model = data.denoiser(schedule)
        # Against one large true sample, the spread of a cell is the n generated points' own; the floor is
        # what n true points score against it.
        to_reference = sliced_wasserstein_to(data.sample(reference_n, torch.Generator().manual_seed(99))[0])
        floor_values = [to_reference(data.sample(n, torch.Generator().manual_seed(1000 + i))[0]) for i in range(pairs)]
        floor, floor_se = statistics.mean(floor_values), statistics.stdev(floor_values) / pairs**0.5
        # The ODE's own solution from each noise seed, which every deterministic sampler approaches as its
        # steps grow: a grid's distance to it, draw by draw, is its discretisation error alone (and bounds
        # W2 between the two output distributions), free of the sample's noise in the distance to the truth.
        solutions = [sample(model, (n, data.dim), schedule, SamplingSpec("unipc", REFERENCE_STEPS, "logsnr", seed=s))
                     for s in range(seeds)]

        def scores(spec: SamplingSpec) -> dict:
            drawn = [sample(model, (n, data.dim), schedule, dataclasses.replace(spec, seed=s)) for s in range(seeds)]
            ratios = [to_reference(x) / floor for x in drawn]
            return {"over_floor": statistics.mean(ratios), "sd": statistics.stdev(ratios) if seeds > 1 else 0.0,
                    "to_ode": statistics.mean((x - o).double().square().mean().sqrt().item()
                                              for x, o in zip(drawn, solutions)),
                    # the typical draw's, apart from the few that one grid carries into another mode
                    "to_ode_median": statistics.mean((x - o).double().square().mean(1).median().sqrt().item()
                                                     for x, o in zip(drawn, solutions))}

        cells, fitted, fit_seconds = [], {}, {}
        for sampler in samplers:
            for nfe in nfes:
                for spacing in SUITE_SPACINGS:
                    spec = SamplingSpec(sampler, steps_for(sampler, nfe, schedule, "logsnr" if spacing == "fitted" else spacing),
                                        spacing)
                    if spacing == "fitted":
                        start = time.perf_counter()
                        ts = fit_timesteps(lambda s: sample(model, (fit_batch((data.dim,)), data.dim), schedule, s), schedule,
                                           dataclasses.replace(spec, seed=FIT_SEED))
                        fit_seconds[f"{sampler}/{nfe}"] = time.perf_counter() - start
                        fitted[f"{sampler}/{nfe}"] = list(ts)
                        spec = dataclasses.replace(spec, timesteps=ts)
                    cells.append({"spacing": spacing, "sampler": sampler, "nfe": nfe, **scores(spec)})
        ode_ratios = [to_reference(x) / floor for x in solutions]
        ode, ode_sd = statistics.mean(ode_ratios), statistics.stdev(ode_ratios) if seeds > 1 else 0.0
        problems[name] = {"half": half, "dim": data.dim, "modes": len(data.weights), "floor": floor,
                          "floor_stderr": floor_se, "cells": cells, "ode": ode, "ode_sd": ode_sd, "fitted": fitted,
                          "fit_seconds": fit_seconds}
        print(f"{name} ({half}, floor {floor:.4f} ± {floor_se:.4f}; the ODE's solution {ode:.2f}x ± {ode_sd:.2f}):", flush=True)
        for sampler in samplers:
            for nfe in nfes:
                row = {c["spacing"]: c for c in cells if c["sampler"] == sampler and c["nfe"] == nfe}
                print(f"  {sampler:>8} NFE {nfe:>3}  " + "  ".join(f"{k} {v['over_floor']:4.2f}x±{v['sd']:.2f} ({v['to_ode']:.4f})"
                                                               for k, v in row.items()), flush=True)
    return problems


def summarise(problems: dict, nfes, samplers=SUITE_SAMPLERS) -> list[dict]:
    """Per spacing, sampler and budget: the mean and worst ratio to the floor over each half, and the worst
    ratio to the best spacing of the same problem (same sampler and budget)."""
    rows = []
    for spacing in SUITE_SPACINGS:
        for sampler in samplers:
            for nfe in nfes:
                row = {"spacing": spacing, "sampler": sampler, "nfe": nfe}
                for half in ("tuning", "held-out"):
                    mine, to_best, ode_to_best = [], [], []
                    for problem in problems.values():
                        if problem["half"] != half:
                            continue
                        same = {c["spacing"]: c["over_floor"] for c in problem["cells"]
                                if c["sampler"] == sampler and c["nfe"] == nfe}
                        mine.append(same[spacing])
                        to_best.append(same[spacing] / min(same[k] for k in SUITE_SPACINGS if k != "fitted"))
                        errors = {c["spacing"]: c["to_ode"] for c in problem["cells"]
                                  if c["sampler"] == sampler and c["nfe"] == nfe}
                        ode_to_best.append(errors[spacing] / min(errors[k] for k in SUITE_SPACINGS if k != "fitted"))
                    row[half] = {"mean": statistics.mean(mine), "worst": max(mine), "worst_to_best": max(to_best),
                                 "to_ode_worst_to_best": max(ode_to_best),
                                 "to_ode_mean_to_best": statistics.mean(ode_to_best)}
                rows.append(row)
    for half in ("tuning", "held-out"):
        odes = [p["ode"] for p in problems.values() if p["half"] == half]
        rows.append({"spacing": "ode", "half": half, "mean": statistics.mean(odes), "worst": max(odes)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points, seeds and budgets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spacing", default="squeezed")
    parser.add_argument("--seeds", type=int, default=20, help="noise seeds per cell (the figure is their mean)")
    parser.add_argument("--nfes", default="5,10,20,50,100,1000", help="model-call budgets, comma-separated")
    parser.add_argument("--suite", action="store_true", help="score the spacings on SUITE instead")
    parser.add_argument("--samplers", default=",".join(SUITE_SAMPLERS), help="with --suite: the samplers, comma-separated")
    parser.add_argument("--out", default=None, help="JSON report (default: bench/results/samplers.json, or "
                                                   "grid-suite.json with --suite)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.suite:
        nfes = (10, 20) if args.nfes == parser.get_default("nfes") else tuple(int(k) for k in args.nfes.split(","))
        n, seeds = (1000, 2) if args.quick else (4000, min(args.seeds, 3))
        samplers = tuple(args.samplers.split(","))
        problems = suite(n, seeds, nfes, pairs=10 if args.quick else 30, reference_n=10 * n, samplers=samplers)
        rows = summarise(problems, nfes, samplers)
        print(f"\nsliced W2 over the floor: mean and worst over each half, worst over the best spacing of a problem "
              f"(n={n}, {seeds} noise seeds, {args.threads} threads)")
        for r in rows:
            if r["spacing"] == "ode":
                print(f"the ODE's solution (unipc, {REFERENCE_STEPS} steps): {r['half']} {r['mean']:5.2f}x (worst {r['worst']:5.2f}x)")
                continue
            t, h = r["tuning"], r["held-out"]
            print(f"{r['spacing']:>9} {r['sampler']:>8} NFE {r['nfe']:>3}  tuning {t['mean']:5.2f}x (worst {t['worst']:5.2f}x,"
                  f" {t['worst_to_best']:4.2f}x best)  held-out {h['mean']:5.2f}x (worst {h['worst']:5.2f}x,"
                  f" {h['worst_to_best']:4.2f}x best)   distance to the ODE over the best fixed grid's: mean "
                  f"{t['to_ode_mean_to_best']:4.2f}x / {h['to_ode_mean_to_best']:4.2f}x, worst {t['to_ode_worst_to_best']:4.2f}x / "
                  f"{h['to_ode_worst_to_best']:4.2f}x")
        out = Path(args.out or "bench/results/grid-suite.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"threads": args.threads, "n": n, "seeds": seeds, "problems": problems,
                                   "summary": rows}, indent=1))
        print(f"\nwrote {out}")
        return
    n, seeds = (2000, 1) if args.quick else (10_000, args.seeds)
    nfes = (10, 20) if args.quick else tuple(int(k) for k in args.nfes.split(","))
    report = {"threads": args.threads, "n": n, "seeds": seeds, "spacing": args.spacing, "oracles": {}}
    for label, data in (("ring-2d", GaussianMixture.ring(8, 1.0, 0.05)), ("mixture-64d", GaussianMixture.random(4, 64, seed=1))):
        floor, floor_se, rows = quality(data, n, seeds, nfes, args.spacing)
        report["oracles"][label] = {"floor": floor, "floor_stderr": floor_se, "rows": rows}
        print(f"\n{label}: sliced W2 to a fresh true sample (floor between two true samples {floor:.4f} ± "
              f"{floor_se:.4f}, {FLOOR_PAIRS} pairs), n={n}, mean of {seeds} seed(s), {args.spacing} spacing, "
              f"{args.threads} threads")
        print("each cell: sliced W2 over the floor, and the within-mode spread over its true value")
        print(f"{'sampler':>11} " + " ".join(f"{'NFE ' + str(k):>12}" for k in nfes) + "   loglik@20  ms/step@20")
        for name in SAMPLERS:
            mine = [r for r in rows if r["sampler"] == name]
            at20 = next((r for r in mine if r["nfe"] == 20), mine[-1])
            print(f"{name:>11} " + " ".join(f"{r['over_floor']:6.2f}x {r['spread_ratio']:4.2f}" for r in mine)
                  + f"   {at20['loglik']:9.3f}  {at20['ms_per_step']:9.2f}")
        true_ll = data.log_prob(data.sample(n, torch.Generator().manual_seed(7))[0]).mean().item()
        report["oracles"][label]["true_loglik"] = true_ll
        print(f"{'true':>9} loglik {true_ll:.3f}" + ("" if label != "ring-2d" else "; diffusers' best: "
              + ", ".join(f"{v} at {k} NFE" for k, v in PEERS_SW2.items())))
    costs = overhead()
    report["overhead_us"] = costs
    print(f"\nper-step overhead besides the model, [16,3,32,32] float32, 50 steps, {args.threads} threads (µs)")
    for name, us in costs.items():
        peer = PEER_OVERHEAD_US.get(name)
        print(f"{name:>9} {us:8.0f}" + (f"   diffusers {peer}  ratio {us / peer:.2f}" if peer else ""))
    out = Path(args.out or "bench/results/samplers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
