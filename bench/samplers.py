"""Sampler quality and per-step overhead on the exact Gaussian-mixture oracle (no training involved).

For each sampler and model-call budget (NFE) it prints sliced W2 against fresh true samples (mean over
seeds), the mean log-likelihood of the samples under the true density, and the time per step; then the
per-step overhead (all sampler work besides the model) on a [16, 3, 32, 32] batch. Writes JSON.

    python bench/samplers.py [--quick] [--threads 2] [--out bench/results/samplers.json]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from diffkit.core import SAMPLERS, GaussianMixture, SamplingSpec, make_schedule, sample
from diffkit.core.samplers import model_calls
from diffkit.core.schedule import make_grid
from diffkit.metrics import sliced_wasserstein

PEERS_SW2 = {10: 0.085, 20: 0.040}  # best of diffusers 0.42.1 on the ring oracle, measured on this machine
PEER_OVERHEAD_US = {"ddpm": 448, "ddim": 128, "dpm++2m": 253}  # diffusers, [16,3,32,32], 2 threads
FLOOR_PAIRS = 100


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
    pairs = [sliced_wasserstein(data.sample(n, torch.Generator().manual_seed(1000 + 2 * i))[0],
                                data.sample(n, torch.Generator().manual_seed(1001 + 2 * i))[0]) for i in range(FLOOR_PAIRS)]
    floor = statistics.mean(pairs)
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
    return floor, statistics.stdev(pairs) / FLOOR_PAIRS**0.5, rows


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points, seeds and budgets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spacing", default="squeezed")
    parser.add_argument("--seeds", type=int, default=20, help="noise seeds per cell (the figure is their mean)")
    parser.add_argument("--nfes", default="5,10,20,50,100,1000", help="model-call budgets, comma-separated")
    parser.add_argument("--out", default="bench/results/samplers.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
