"""Restoration: every method against the exact posterior, and on real images and audio against the
classical baselines. Prints tables and writes JSON.

1. Oracle posterior (no training): on the 2-D ring and the 64-D mixture of bench/samplers.py, each
   observation — (i) half the coordinates, (ii) 2x averaging, (iii) (ii) with noise σ_y = 0.1 — has an
   exact Gaussian-mixture posterior (GaussianMixture.observe). For each method x sampler x NFE: sliced W2
   from its samples to an exact posterior sample, mean over --seeds seeds (each a new truth, observation
   and sampler noise) with its standard error, beside the floor between two exact posterior samples.
2. Images: a model trained as `make demo` trains (RGB shapes; --demo-run reuses one) and one on MNIST
   digits as bench/mnist.py trains it (grey; --digits-minutes, 0 skips): `diffkit eval image --restore` on
   200 held-out images for upscale:4, colorize (RGB only) and denoise:0.2: PSNR, SSIM and FD for each
   method, bicubic, Lanczos, the degraded input and A⁺y.
3. Audio: builtin:tones trained for --audio-minutes (or --audio-run): `diffkit eval audio --restore` for
   bandwidth:2000 and denoise:0.1: log-spectral distance and SI-SDR against the degraded input.

    python bench/restore.py [--parts oracle,images,audio] [--seeds 3] [--threads 2] [--quick]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffkit.core import SAMPLERS, GaussianMixture, make_schedule, sample
from diffkit.core.observe import AveragePool, Mask, Observation, as_matrix
from diffkit.metrics import sliced_wasserstein
from samplers import steps_for

RESULTS = Path("bench/results")
METHODS = ("ddnm", "pigdm", "tmpd", "dps", "repaint")


def observations(dim: int) -> dict:
    half = torch.zeros(dim)
    half[: dim // 2] = 1
    return {"half observed": (Mask(half), 0.0), "2x average": (AveragePool((2,)), 0.0),
            "2x average, σ 0.1": (AveragePool((2,)), 0.1)}


def oracle(n: int, seeds: int, nfes, samplers) -> dict:
    schedule = make_schedule("linear", 1000)
    report = {}
    for label, data in (("ring-2d", GaussianMixture.ring(8, 1.0, 0.05)),
                        ("mixture-64d", GaussianMixture.random(4, 64, seed=1))):
        model = data.denoiser(schedule)
        for task, (op, sigma) in observations(data.dim).items():
            problems = []  # per seed: observation, exact posterior sample, floor
            for s in range(seeds):
                truth = data.sample(1, torch.Generator().manual_seed(1000 + s))[0]
                y = op(truth)[0]
                y = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(2000 + s), dtype=y.dtype)
                post = data.observe(as_matrix(op, data.dim), y, sigma)
                reference = post.sample(n, torch.Generator().manual_seed(3000 + s))[0]
                floor = sliced_wasserstein(reference, post.sample(n, torch.Generator().manual_seed(4000 + s))[0])
                problems.append((Observation(op, y.float().expand(n, *y.shape).clone(), sigma), reference, floor))
            floor = statistics.mean(p[2] for p in problems)
            rows = []
            for method in METHODS:
                for name in samplers:
                    for nfe in nfes:
                        sw2, start = [], time.perf_counter()
                        for s, (obs, reference, _) in enumerate(problems):
                            x = sample(model, (n, data.dim), schedule, sampler=name, steps=steps_for(name, nfe),
                                       observation=obs, method=method, generator=torch.Generator().manual_seed(s))
                            sw2.append(sliced_wasserstein(x, reference))
                        rows.append({"method": method, "sampler": name, "nfe": nfe, "sw2": statistics.mean(sw2),
                                     "stderr": statistics.stdev(sw2) / len(sw2) ** 0.5 if len(sw2) > 1 else 0.0,
                                     "seconds": (time.perf_counter() - start) / len(problems)})
            report[f"{label}: {task}"] = {"floor": floor, "rows": rows}
            print(f"\n{label}, {task}: sliced W2 to an exact posterior sample (floor between two exact posterior "
                  f"samples {floor:.3f}), n={n}, mean ± s.e. of {seeds} seeds", flush=True)
            print(f"{'method':>8} {'sampler':>8} " + " ".join(f"{'NFE ' + str(k):>13}" for k in nfes) + "  best/floor")
            for method in METHODS:
                for name in samplers:
                    mine = [r for r in rows if r["method"] == method and r["sampler"] == name]
                    cells = " ".join(f"{r['sw2']:6.3f} ± {r['stderr']:.3f}" for r in mine)
                    print(f"{method:>8} {name:>8} {cells}  {min(r['sw2'] for r in mine) / floor:9.2f}", flush=True)
    return report


def cli(*args, env) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "diffkit", *map(str, args), "--json", "-q"], env=env, check=True,
                            capture_output=True, text=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def train_for(command: list, out: Path, minutes: float, env) -> int:
    """Our CLI, stopped by SIGTERM at the budget (it checkpoints and exits 143)."""
    process = subprocess.Popen([sys.executable, "-m", "diffkit", *command, "--out", str(out), "--steps", "10000000",
                                "--checkpoint-every", "10000000", "-q"], env=env)
    time.sleep(minutes * 60)
    process.send_signal(signal.SIGTERM)
    process.wait()
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]


def demo_run(env) -> Path:
    """The model `make demo` trains, trained here the same way unless it exists."""
    out = RESULTS / "restore-demo"
    if not (out / "model.safetensors").exists():
        subprocess.run([sys.executable, "-m", "diffkit", "train", "image", "--data", "builtin:shapes", "--out", str(out),
                        "--image-size", "32", "--class-cond", "--prediction", "v", "--width", "32", "--mults", "1,2,2",
                        "--blocks", "1", "--attention", "16", "--batch-size", "16", "--lr", "2e-3", "--weighting",
                        "min_snr", "--lr-decay", "cosine", "--ema-decay", "0.995", "--steps", "1200",
                        "--checkpoint-every", "400", "-q"], env=env, check=True)
    return out


def table(title: str, records: list[dict], metrics: tuple) -> None:
    print(f"\n{title}")
    sets = list(dict.fromkeys(r["set"] for r in records if "set" in r and r["metric"] in metrics))
    print(f"{'':>34} " + " ".join(f"{m:>16}" for m in metrics))
    for name in sets:
        cells = []
        for m in metrics:
            r = next((r for r in records if r.get("set") == name and r["metric"] == m), None)
            cells.append(f"{r['value']:8.3f} ± {r['stderr']:.3f}" if r else f"{'':>16}")
        print(f"{name:>34} " + " ".join(f"{c:>16}" for c in cells))
    for r in records:
        if r["metric"] == "consistency_rms":
            print(f"{'':>34} consistency ‖A(x) − y‖ per value {r['value']:.2e} ({r['of'].split(', ')[1]})")


def images(args, env) -> dict:
    results = {}
    runs = [("shapes (make demo)", args.demo_run or demo_run(env), ("upscale:4", "colorize", "denoise:0.2"))]
    if args.digits_minutes > 0:
        from mnist import digits, train_diffkit

        out = RESULTS / "restore-digits"
        root = digits()
        if not (out / "model.safetensors").exists():
            steps = train_diffkit(root, out, args.digits_minutes, env)
            print(f"digits: trained {steps} steps in {args.digits_minutes} min", flush=True)
        runs.append(("MNIST digits", out, ("upscale:4", "denoise:0.2"), ["--data", str(root / "reference")]))
    for label, run, tasks, *data in runs:
        for task in tasks:
            records = []
            for method in args.methods.split(","):
                found = cli("eval", "image", "-m", run, "--restore", task, "--samples", args.images, "--method", method,
                            *(data[0] if data else []), env=env)
                # the baselines and the floor are the same for every method: keep them once
                records += [r for r in found if r.get("set", "").startswith("diffkit") or r["metric"] == "consistency_rms"
                            or method == args.methods.split(",")[0]]
            results[f"{label}: {task}"] = records
            table(f"{label}, {task}, {args.images} held-out images", records, ("psnr", "ssim", "fd"))
    return results


def audio(args, env) -> dict:
    run = Path(args.audio_run) if args.audio_run else RESULTS / "restore-tones"
    if not (run / "model.safetensors").exists():
        steps = train_for(["train", "audio", "--data", "builtin:tones"], run, args.audio_minutes, env)
        print(f"tones: trained {steps} steps in {args.audio_minutes} min", flush=True)
    results = {}
    for task in ("bandwidth:2000", "denoise:0.1"):
        records = []
        for method in args.methods.split(","):
            found = cli("eval", "audio", "-m", run, "--restore", task, "--samples", args.clips, "--method", method, env=env)
            records += [r for r in found if r.get("set", "").startswith("diffkit") or r["metric"] == "consistency_rms"
                        or method == args.methods.split(",")[0]]
        results[task] = records
        table(f"builtin:tones, {task}, {args.clips} held-out clips", records, ("lsd", "si_sdr"))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="oracle,images,audio")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="oracle: fewer samplers, budgets and points")
    parser.add_argument("--methods", default=",".join(METHODS), help="for the image and audio parts")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--demo-run", help="a run trained as `make demo` trains (default: train one)")
    parser.add_argument("--digits-minutes", type=float, default=10.0)
    parser.add_argument("--audio-run", help="a builtin:tones run (default: train one)")
    parser.add_argument("--audio-minutes", type=float, default=10.0)
    parser.add_argument("--out", default=str(RESULTS / "restore.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}  # parts run separately add up
    report["threads"] = args.threads
    parts = args.parts.split(",")
    if "oracle" in parts:
        n, nfes, samplers = (1000, (10, 50), ("ddpm", "dpm++2m")) if args.quick else (2000, (10, 20, 50, 100), tuple(SAMPLERS))
        report["oracle"] = oracle(n, args.seeds, nfes, samplers)
    if "images" in parts:
        report["images"] = images(args, env)
    if "audio" in parts:
        report["audio"] = audio(args, env)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
