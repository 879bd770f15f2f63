"""Restoration: every method against the exact posterior, and on real images and audio against the
classical baselines. Prints tables and writes JSON.

1. Oracle posterior (no training): on the 2-D ring and the 64-D mixture of bench/samplers.py, each
   observation — (i) half the coordinates, (ii) 2x averaging, (iii) (ii) with noise σ_y = 0.1 — has an
   exact Gaussian-mixture posterior (GaussianMixture.observe). For each method x sampler x NFE: sliced W2
   from its samples to an exact posterior sample, mean over --seeds seeds (each a new truth, observation
   and sampler noise) with its standard error, beside the floor between two exact posterior samples.
2. Images: a model trained as `make demo` trains (RGB shapes, 1,200 steps) and one on MNIST digits as
   bench/mnist.py trains it (grey; --digits-steps, about what its 10 minutes reach; 0 skips): `diffkit
   eval image --restore` on 200 held-out images for upscale:4, colorize (RGB only) and denoise:0.2: PSNR,
   SSIM and FD for each method, bicubic, Lanczos, the degraded input and A⁺y. Trained runs are kept in
   bench/results/ and reused.
3. Audio: builtin:tones trained as bench/audio.py trains it for --audio-steps (what its 10 minutes
   reach): `diffkit eval audio --restore` for bandwidth:2000 and denoise:0.1: log-spectral distance and
   SI-SDR against the degraded input and A⁺y.

   With --parts timetravel: RePaint's resampling (1, 5, 10 repeats) for ddnm and repaint; with --parts
   particles: smc in particle systems of 1, 10 and 100 rows. tmpd runs with
   --tmpd-samplers only (ddpm, dpm++2m): its conjugate gradients cost up to 20 backward passes a step.

    python bench/restore.py [--parts oracle,particles,timetravel,images,audio] [--seeds 3] [--threads 2] [--quick]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffkit.core import SAMPLERS, GaussianMixture, Restore, SamplingSpec, make_schedule, sample
from diffkit.core.observe import Observation
from diffkit.core.operators import AveragePool, Mask, as_matrix
from diffkit.metrics import sliced_wasserstein
from samplers import steps_for

RESULTS = Path("bench/results")
METHODS = ("ddnm", "pigdm", "tmpd", "dps", "repaint")


def observations(dim: int) -> dict:
    half = torch.zeros(dim)
    half[: dim // 2] = 1
    return {"half observed": (Mask(half), 0.0), "2x average": (AveragePool((2,)), 0.0),
            "2x average, σ 0.1": (AveragePool((2,)), 0.1)}


ORACLES = {"ring-2d": GaussianMixture.ring(8, 1.0, 0.05), "mixture-64d": GaussianMixture.random(4, 64, seed=1)}


def problems(data: GaussianMixture, op, sigma: float, n: int, seeds: int) -> list:
    """Per seed: a new truth and its observation, an exact posterior sample, and the floor between two."""
    made = []
    for s in range(seeds):
        truth = data.sample(1, torch.Generator().manual_seed(1000 + s))[0]
        y = op(truth)[0]
        y = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(2000 + s), dtype=y.dtype)
        post = data.observe(as_matrix(op, data.dim), y, sigma)
        reference = post.sample(n, torch.Generator().manual_seed(3000 + s))[0]
        floor = sliced_wasserstein(reference, post.sample(n, torch.Generator().manual_seed(4000 + s))[0])
        made.append((Observation(op, y.float().expand(n, *y.shape).clone(), sigma), reference, floor))
    return made


def sw2_over_seeds(model, schedule, made, dim: int, sampler: str, steps: int, method: str,
                   **restore) -> tuple[float, float, float]:
    """Mean and standard error of sliced W2 over the seeds' problems, and seconds per run; `restore`: the
    rest of core.editing.Restore (jump, resample, particles)."""
    sw2, start = [], time.perf_counter()
    for s, (obs, reference, _) in enumerate(made):
        x = sample(model, (len(reference), dim), schedule, SamplingSpec(sampler, steps, seed=s),
                   condition=Restore(obs, method, **restore))
        sw2.append(sliced_wasserstein(x, reference))
    spread = statistics.stdev(sw2) / len(sw2) ** 0.5 if len(sw2) > 1 else 0.0
    return statistics.mean(sw2), spread, (time.perf_counter() - start) / len(made)


SCHEDULE = make_schedule("linear", 1000)


def oracle_problems(sizes: dict, seeds: int):
    """(label, task, exact denoiser, the seeds' problems, their mean floor) for each oracle and observation."""
    for label, data in ORACLES.items():
        model = data.denoiser(SCHEDULE)
        for task, (op, sigma) in observations(data.dim).items():
            made = problems(data, op, sigma, sizes[label], seeds)
            yield label, task, data.dim, model, made, statistics.mean(p[2] for p in made)


def time_travel(sizes: dict, seeds: int) -> dict:
    """RePaint's resampling, which approaches the exact posterior as its repeats grow: DDPM, 50 steps, jump 5
    (ddnm and repaint: tmpd's cost times ten repeats is more than this bench affords)."""
    report = {}
    for label, task, dim, model, made, floor in oracle_problems(sizes, seeds):
        rows = []
        for method in ("ddnm", "repaint"):
            for repeats in (1, 5, 10):
                sw2, spread, seconds = sw2_over_seeds(model, SCHEDULE, made, dim, "ddpm", 50, method, jump=5,
                                                      resample=repeats)
                rows.append({"method": method, "resample": repeats, "nfe": 50 * repeats,
                             "sw2": sw2, "stderr": spread, "seconds": seconds})
        report[f"{label}: {task}"] = {"floor": floor, "rows": rows}
        print(f"\n{label}, {task}, time travel (ddpm 50 steps, jump 5): floor {floor:.3f}", flush=True)
        for r in rows:
            print(f"{r['method']:>8} resample {r['resample']:>2} ({r['nfe']:>3} NFE)  {r['sw2']:.3f} ± {r['stderr']:.3f}"
                  f"  {r['sw2'] / floor:5.2f}x floor", flush=True)
    return report


def particles(sizes: dict, seeds: int, nfes, groups=(1, 10, 100)) -> dict:
    """smc on ddpm's steps with the batch split into particle systems of K rows (K = 1: its proposal
    alone), on the oracle's problems and seeds."""
    report = {}
    for label, task, dim, model, made, floor in oracle_problems(sizes, seeds):
        rows = []
        print(f"\n{label}, {task}, smc (ddpm): floor {floor:.3f}", flush=True)
        for k in groups:
            for nfe in nfes:
                sw2, spread, seconds = sw2_over_seeds(model, SCHEDULE, made, dim, "ddpm", nfe, "smc", particles=k)
                rows.append({"method": "smc", "particles": k, "nfe": nfe, "sw2": sw2, "stderr": spread,
                             "seconds": seconds})
            cells = " ".join(f"{r['sw2']:6.3f} ± {r['stderr']:.3f}" for r in rows[-len(nfes):])
            print(f"{k:>4} particles  {cells}  best {min(r['sw2'] for r in rows[-len(nfes):]) / floor:5.2f}x floor",
                  flush=True)
        report[f"{label}: {task}"] = {"floor": floor, "rows": rows}
    return report


def oracle(sizes: dict, seeds: int, nfes, samplers, tmpd_samplers) -> dict:
    report = {}
    for label, task, dim, model, made, floor in oracle_problems(sizes, seeds):
        rows = []
        for method in METHODS:
            for name in tmpd_samplers if method == "tmpd" else samplers:
                for nfe in nfes:
                    sw2, spread, seconds = sw2_over_seeds(model, SCHEDULE, made, dim, name, steps_for(name, nfe), method)
                    rows.append({"method": method, "sampler": name, "nfe": nfe, "sw2": sw2, "stderr": spread,
                                 "seconds": seconds})
        report[f"{label}: {task}"] = {"floor": floor, "rows": rows}
        print(f"\n{label}, {task}: sliced W2 to an exact posterior sample (floor between two exact posterior "
              f"samples {floor:.3f}), n={sizes[label]}, mean ± s.e. of {seeds} seeds", flush=True)
        print(f"{'method':>8} {'sampler':>8} " + " ".join(f"{'NFE ' + str(k):>13}" for k in nfes) + "  best/floor")
        for method in METHODS:
            for name in tmpd_samplers if method == "tmpd" else samplers:
                mine = [r for r in rows if r["method"] == method and r["sampler"] == name]
                cells = " ".join(f"{r['sw2']:6.3f} ± {r['stderr']:.3f}" for r in mine)
                print(f"{method:>8} {name:>8} {cells}  {min(r['sw2'] for r in mine) / floor:9.2f}", flush=True)
    return report


def cli(*args, env) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "diffkit", *map(str, args), "--json", "-q"], env=env, check=True,
                            capture_output=True, text=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def trained(out: Path, command: list, env) -> Path:
    """A run trained by `command` (a full argument list), unless bench/results/ already holds it."""
    if not (out / "model.safetensors").exists():
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        print(f"trained {out} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return out


DEMO = ["train", "image", "--data", "builtin:shapes", "--image-size", "32", "--class-cond", "--width", "32", "--mults",
        "1,2,2", "--blocks", "1", "--attention", "16", "--batch-size", "16", "--lr", "2e-3", "--lr-decay", "cosine",
        "--ema-decay", "0.995", "--steps", "1200", "--checkpoint-every", "400", "-q"]  # the Makefile's demo run


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


def picture(run: Path, path: Path, count: int = 6) -> None:
    """Held-out shapes, a row each: original | 8x8 input, bicubic, diffkit (upscale:4) | grey, diffkit
    (colorize) | noisy, diffkit (denoise:0.2); written to `path` for the README."""
    from PIL import Image

    from diffkit.image import codec
    from diffkit.image.pipeline import load
    from diffkit.image.data import open_data, to_tensor
    from diffkit.image.restoration import parse_task, restore_images
    from diffkit.core.spec import SamplingSpec

    loaded = load(str(run))
    spec = loaded.config.data
    originals, _ = open_data(spec.source, spec.image_size, spec.channels, seed=10**9).batch(
        torch.arange(count), torch.Generator().manual_seed(0))
    rows = []
    for i, original in enumerate(originals):
        row = [original]
        for text in ("upscale:4", "colorize", "denoise:0.2"):
            task = parse_task(text, spec)
            y = task.operator()(codec.to_model(original)[None])[0]
            degraded = codec.to_uint8(y + task.noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(i)))
            restored, _, _ = restore_images(loaded, degraded, task, SamplingSpec(sampler="ddpm", seed=i),
                                            method="ddnm")
            shown = degraded.expand(3, -1, -1) if degraded.shape[0] == 1 else degraded
            if task.factor > 1:
                size = spec.image_size
                bicubic = to_tensor(codec.to_pil(degraded).resize((size[1], size[0]), Image.Resampling.BICUBIC))
                shown = codec.resize(degraded, size, nearest=True)
                row += [shown, bicubic]
            else:
                row.append(shown)
            row.append(restored)
        rows += row
    grid = codec.grid(torch.stack(rows), columns=len(rows) // count)
    big = codec.to_pil(grid).resize((grid.shape[2] * 3, grid.shape[1] * 3), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    big.save(path)
    print(f"wrote {path}", flush=True)


def measured(modality: str, run: Path, task: str, options: list, args, env) -> list[dict]:
    """`diffkit eval MODALITY --restore TASK` for each method (once), and ddnm with time travel; the
    baselines and the floor, the same for every method, are kept from the first call only."""
    variants = [(m, 1) for m in args.methods.split(",") if m] + [("ddnm", r) for r in (args.time_travel,) if r > 1]
    records = []
    for method, resample in variants:
        found = cli("eval", modality, "-m", run, "--restore", task, *options, "--method", method, "--resample",
                    resample, "--sampler", args.sampler, "--steps", args.steps, env=env)
        records += [r for r in found if r.get("set", "").startswith("diffkit") or r["metric"] == "consistency_rms"
                    or not records]
    return records


def images(args, env) -> dict:
    results = {}
    runs = []
    if "shapes" in args.image_sets:
        demo = Path(args.demo_run) if args.demo_run else RESULTS / "restore-demo"
        demo = trained(demo, [sys.executable, "-m", "diffkit", *DEMO[:2], "--out", str(demo), *DEMO[2:]], env)
        picture(demo, Path(args.picture))
        runs.append(("shapes (make demo)", demo, ("upscale:4", "colorize", "denoise:0.2")))
    if "digits" in args.image_sets and args.digits_steps > 0:
        from mnist import digits, train_command

        root = digits()
        out = trained(RESULTS / "restore-digits", train_command(root, RESULTS / "restore-digits", args.digits_steps), env)
        runs.append(("MNIST digits", out, ("upscale:4", "denoise:0.2"), ["--data", str(root / "reference")]))
    for label, run, tasks, *data in runs:
        for task in tasks:
            records = measured("image", run, task, ["--samples", args.images, *(data[0] if data else [])], args, env)
            results[f"{label}: {task}"] = records
            table(f"{label}, {task}, {args.images} held-out images", records, ("psnr", "ssim", "fd"))
    return results


def audio(args, env) -> dict:
    run = Path(args.audio_run) if args.audio_run else RESULTS / "restore-tones"
    run = trained(run, [sys.executable, "-m", "diffkit", "train", "audio", "--out", str(run), "--class-cond",
                        "--steps", str(args.audio_steps), "--checkpoint-every", str(args.audio_steps), "-q"], env)
    results = {}
    for task in ("bandwidth:2000", "denoise:0.1"):
        records = measured("audio", run, task, ["--samples", args.clips], args, env)
        results[task] = records
        table(f"builtin:tones, {task}, {args.clips} held-out clips", records, ("lsd", "si_sdr"))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="oracle,particles,timetravel,images,audio")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="oracle: fewer samplers, budgets and points")
    # tmpd's conjugate gradients cost up to 20 backward passes a step: two samplers, one ODE, one ancestral
    parser.add_argument("--tmpd-samplers", default="ddpm,dpm++2m")
    # tmpd's conjugate gradients take ~25x ddnm's time on a U-Net: left to the oracle unless asked for
    parser.add_argument("--methods", default="ddnm,pigdm,dps,repaint", help="for the image and audio parts")
    parser.add_argument("--sampler", default="ddpm", help="for the image and audio parts (restore's default)")
    parser.add_argument("--steps", type=int, default=20, help="for the image and audio parts")
    parser.add_argument("--time-travel", type=int, default=3, help="also ddnm with this many RePaint repeats (1: not)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--demo-run", help="a run trained as `make demo` trains (default: train one)")
    parser.add_argument("--digits-steps", type=int, default=2000)
    parser.add_argument("--picture", default="docs/restore.png", help="the README's side-by-side picture")
    parser.add_argument("--image-sets", default="shapes,digits")
    parser.add_argument("--audio-run", help="a builtin:tones run (default: train one)")
    parser.add_argument("--audio-steps", type=int, default=930)
    parser.add_argument("--out", default=str(RESULTS / "restore.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}  # parts run separately add up
    report["threads"] = args.threads
    parts = args.parts.split(",")
    # 2,000 points on the ring, 1,000 in 64-D, where each call of the exact denoiser costs 10x more
    sizes = {"ring-2d": 1000, "mixture-64d": 500} if args.quick else {"ring-2d": 2000, "mixture-64d": 1000}
    if "oracle" in parts:
        nfes, samplers = ((10, 50), ("ddpm", "dpm++2m")) if args.quick else ((10, 20, 50, 100), tuple(SAMPLERS))
        report["oracle"] = oracle(sizes, args.seeds, nfes, samplers, args.tmpd_samplers.split(","))
    if "particles" in parts:
        report["particles"] = particles(sizes, args.seeds, (10, 50) if args.quick else (10, 20, 50, 100))
    if "timetravel" in parts:
        report["time_travel"] = time_travel(sizes, args.seeds)
    if "images" in parts:
        report["images"] = images(args, env)
    if "audio" in parts:
        report["audio"] = audio(args, env)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
