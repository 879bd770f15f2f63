"""Training throughput of diffkit's U-Net against diffusers' UNet2DModel at about the same size.

32x32 RGB, batch 16, CPU: seconds per training step (AdamW, MSE on eps, like a diffusion step), seconds
per forward pass, and peak resident memory. Each measurement runs in a fresh process (peak RSS is per
process), the two networks alternate, and the table reports medians over --repeats runs.

    python bench/train_speed.py [--threads 2] [--repeats 3] [--steps 20]

diffusers comes from the optional extra `diffkit[bench]`; without it only diffkit's row is printed.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

BATCH, SIZE = 16, 32


def build(name: str):
    if name == "diffkit":
        from diffkit.core.nn import UNet, UNetConfig

        # Same layout as the diffusers model below: widths 32/64/64, one block per level, attention at 16x16.
        return UNet(UNetConfig(channels=32, mults=(1, 2, 2), blocks=1, attention=(1,)))
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=SIZE, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


def measure(name: str, steps: int, threads: int) -> dict:
    """One process, one network: median seconds per training step and per forward, peak RSS."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name)
    call = (lambda x, t: model(x, t)) if name == "diffkit" else (lambda x, t: model(x, t).sample)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(BATCH, 3, SIZE, SIZE)
    step_times = []
    for _ in range(steps + 3):  # the first 3 warm the allocator and kernels up
        start = time.perf_counter()
        t = torch.randint(0, 1000, (BATCH,))
        noise = torch.randn_like(x0)
        loss = (call(x0 + noise, t) - noise).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
    forward_times = []
    with torch.inference_mode():
        for _ in range(steps):
            start = time.perf_counter()
            call(x0, torch.randint(0, 1000, (BATCH,)))
            forward_times.append(time.perf_counter() - start)
    return {"name": name, "parameters": sum(p.numel() for p in model.parameters()),
            "step_s": statistics.median(step_times[3:]), "forward_s": statistics.median(forward_times),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def have_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401
        return True
    except ImportError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one network in this process
    parser.add_argument("--out", default="bench/results/train_speed.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.threads)))
        return
    names = ["diffkit"] + (["diffusers"] if have_diffusers() else [])
    if len(names) == 1:
        print("diffusers is not installed (pip install 'diffkit[bench]'): diffkit only", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    runs = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            out = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps),
                                  "--threads", str(args.threads)], capture_output=True, text=True, env=env, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = {name: {key: statistics.median(r[key] for r in results) if key != "name" else name
                   for key in results[0]} for name, results in runs.items()}
    print(f"training step, {BATCH}x3x{SIZE}x{SIZE}, AdamW, CPU, {args.threads} threads, median of {args.repeats} runs")
    print(f"{'network':>10} {'params':>10} {'s/step':>8} {'s/forward':>10} {'peak RSS GB':>12}")
    for row in rows.values():
        print(f"{row['name']:>10} {row['parameters']:>10,} {row['step_s']:>8.3f} {row['forward_s']:>10.4f} "
              f"{row['peak_rss_gb']:>12.2f}")
    if "diffusers" in rows:
        ours, peer = rows["diffkit"], rows["diffusers"]
        print(f"speed-up per training step: {peer['step_s'] / ours['step_s']:.2f}x, per forward: "
              f"{peer['forward_s'] / ours['forward_s']:.2f}x; peak memory ratio {ours['peak_rss_gb'] / peer['peak_rss_gb']:.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"threads": args.threads, "repeats": args.repeats, "runs": runs, "medians": rows}, f, indent=2)


if __name__ == "__main__":
    main()
