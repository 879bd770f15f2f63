"""GPU training throughput: images per second and model FLOP utilisation (MFU) of the image U-Net.

Trains `diffkit train image`'s default network (64/128/128 channels, 2 blocks per level, attention at
16x16) on random 32x32 batches with the shared Trainer as the CLI runs it: bf16 autocast, channels-last,
fused AdamW, then with --compile. FLOPs per step are counted once by torch's FLOP counter (forward and
backward); MFU = achieved FLOP/s over the GPU's dense bf16 peak (--peak-tflops, or looked up by name).
Without a GPU it says so and exits 0.

    python bench/gpu.py [--batch 256] [--steps 30] [--peak-tflops N]
"""

import argparse
import json
import os
import sys
import time

import torch

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a substring of the name.
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0, "4090": 165.0}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given is not None:
        return given
    return next((peak for key, peak in PEAKS.items() if key in name), None)


def measure(batch: int, steps: int, compile: bool) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from diffkit.core import make_schedule
    from diffkit.core.nn import UNet, UNetConfig
    from diffkit.core.trainer import TrainSettings, Trainer

    torch.manual_seed(0)
    model = UNet(UNetConfig(dims=2, in_channels=3, out_channels=3, channels=64, mults=(1, 2, 2), attention=(1,)))
    trainer = Trainer(model.cuda(), make_schedule("cosine", 1000), TrainSettings(steps=10**9, compile=compile),
                      prediction="eps", variance="fixed_small")
    x0 = torch.randn(batch, 3, 32, 32)
    batch_at = lambda step, micro: (x0, {})  # noqa: E731 (the data are not what is measured)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch_at)
    flops = counter.get_total_flops()
    for _ in range(5):  # warm-up, and compilation with --compile
        trainer.train_step(batch_at)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch_at)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {"compile": compile, "batch": batch, "s_per_step": seconds, "images_per_s": batch / seconds,
            "tflop_per_step": flops / 1e12, "tflops": flops / seconds / 1e12}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", default="bench/results/gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure")
        return
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name, args.peak_tflops)
    print(f"{name}, image U-Net 32x32, batch {args.batch}, bf16 autocast, channels-last, fused AdamW")
    rows = []
    for compile in (False, True):
        row = measure(args.batch, args.steps, compile)
        row["mfu"] = row["tflops"] / peak if peak else None
        rows.append(row)
        mfu = f"{row['mfu']:.1%}" if peak else "n/a (pass --peak-tflops)"
        print(f"  compile={str(compile):<5} {row['images_per_s']:>9,.0f} images/s  {row['tflops']:>7.1f} TFLOP/s  MFU {mfu}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": name, "peak_tflops": peak, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
