"""Training throughput of diffkit's U-Net against diffusers' UNet2DModel at about the same size.

32x32 RGB, batch 16, CPU: seconds per training step (AdamW, MSE on eps, like a diffusion step), seconds
per forward pass, and peak resident memory. Each side steps its optimiser the way its trainer does:
diffkit's fused AdamW, the plain torch.optim.AdamW of diffusers' training examples. Both run in fp32, and
again under bf16 autocast when the CPU has AMX (diffkit's `--precision auto` turns it on there; diffusers
gets it through accelerate's mixed precision). Each measurement runs in a fresh process (peak RSS is per
process), the networks alternate, and the table reports medians over --repeats runs.

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


def time_training(model, call, x0, steps: int, precision: str, fused: bool) -> dict:
    """Median seconds per training step (MSE on eps) and per forward pass of `call(x, t)`, and peak RSS."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    step_times = []
    for _ in range(steps + 3):  # the first 3 warm the allocator and kernels up
        start = time.perf_counter()
        t = torch.randint(0, 1000, (len(x0),))
        noise = torch.randn_like(x0)
        with autocast:
            prediction = call(x0 + noise, t)
        loss = (prediction.float() - noise).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
    forward_times = []
    with torch.inference_mode(), autocast:
        for _ in range(steps):
            start = time.perf_counter()
            call(x0, torch.randint(0, 1000, (len(x0),)))
            forward_times.append(time.perf_counter() - start)
    return {"parameters": sum(p.numel() for p in model.parameters()), "step_s": statistics.median(step_times[3:]),
            "forward_s": statistics.median(forward_times),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def measure(name: str, precision: str, steps: int, threads: int) -> dict:
    """One process, one network: diffkit steps its fused AdamW, diffusers the plain one of its examples."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name)
    call = (lambda x, t: model(x, t)) if name == "diffkit" else (lambda x, t: model(x, t).sample)
    x0 = torch.randn(BATCH, 3, SIZE, SIZE)
    return {"name": name, "precision": precision, **time_training(model, call, x0, steps, precision, name == "diffkit")}


def isolated(script: str, configs: list[tuple[str, str]], repeats: int, steps: int, threads: int) -> dict:
    """Each (name, precision) measured `repeats` times, each in a fresh process running `script --one`
    (peak RSS is per process), alternating; the median of every figure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    runs = {config: [] for config in configs}
    for _ in range(repeats):
        for name, precision in configs:
            out = subprocess.run([sys.executable, script, "--one", name, precision, "--steps", str(steps),
                                  "--threads", str(threads)], capture_output=True, text=True, env=env, check=True)
            runs[name, precision].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: {field: statistics.median(r[field] for r in results) if isinstance(results[0][field], float)
                  else results[0][field] for field in results[0]} for key, results in runs.items()}


def have_amx() -> bool:
    import torch

    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


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
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: NETWORK PRECISION in this process
    parser.add_argument("--out", default="bench/results/train_speed.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.threads)))
        return
    names = ["diffkit"] + (["diffusers"] if have_diffusers() else [])
    if len(names) == 1:
        print("diffusers is not installed (pip install 'diffkit[bench]'): diffkit only", file=sys.stderr)
    precisions = ["fp32"] + (["bf16"] if have_amx() else [])
    rows = isolated(__file__, [(name, precision) for precision in precisions for name in names], args.repeats,
                    args.steps, args.threads)
    report(f"training step, {BATCH}x3x{SIZE}x{SIZE}, AdamW, CPU, {args.threads} threads, median of {args.repeats} runs",
           rows, args.out)


def report(title: str, rows: dict, out: str) -> None:
    """The table, the speed-up of diffkit over diffusers at each precision, and the JSON record."""
    print(title)
    print(f"{'network':>10} {'precision':>9} {'params':>10} {'s/step':>8} {'s/forward':>10} {'peak RSS GB':>12}")
    for row in rows.values():
        print(f"{row['name']:>10} {row['precision']:>9} {row['parameters']:>10,} {row['step_s']:>8.3f} "
              f"{row['forward_s']:>10.4f} {row['peak_rss_gb']:>12.2f}")
    for precision in sorted({p for _, p in rows}):
        if ("diffusers", precision) in rows:
            ours, peer = rows["diffkit", precision], rows["diffusers", precision]
            print(f"{precision}: speed-up per training step {peer['step_s'] / ours['step_s']:.2f}x, per forward "
                  f"{peer['forward_s'] / ours['forward_s']:.2f}x; peak memory ratio "
                  f"{ours['peak_rss_gb'] / peer['peak_rss_gb']:.2f}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"title": title, "rows": list(rows.values())}, f, indent=2)

if __name__ == "__main__":
    main()
