"""Audio: training cost and sampling speed against diffusers' UNet1DModel, and quality on builtin:tones.

1. Training step on 16,384-sample clips, batch 4, CPU: diffkit's default audio U-Net (`diffkit train
   audio`'s defaults) against diffusers' UNet1DModel (in/out 1 channel, widths 32/32/64, its Fourier time channels
   as extra inputs: 0.72 M parameters), each in a fresh process, median of --repeats; fp32 for both, and diffkit under bf16
   autocast as `--precision auto` runs it on CPUs with AMX.
2. Real-time factor of sampling 16,384 samples (1.024 s at 16 kHz) in 20 steps: diffkit's DPM-Solver++(2M)
   on its network, and diffusers' DPMSolverMultistepScheduler on a UNet1DModel widened to diffkit's
   parameter count. Seconds of compute per second of audio: below 1 is faster than real time.
3. Quality after --minutes of CPU training on builtin:tones (our CLI, stopped by SIGTERM at the budget):
   `diffkit eval audio --reference` figures for generated clips, a second set of real clips and white
   noise: log-mel Fréchet distance, spectral flatness, share of clips on the scale's pitches.

    python bench/audio.py [--threads 2] [--repeats 3] [--minutes 10] [--skip-speed | --skip-quality]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_speed import have_amx, have_diffusers, isolated, report, time_training

BATCH, LENGTH, RATE = 4, 16384, 16000


def diffkit_network():
    """The network `diffkit train audio` builds with its defaults, found through the command itself."""
    from diffkit.audio.pipeline import build

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "diffkit", "train", "audio", "--out", f"{tmp}/run", "--steps", "1",
                        "--checkpoint-every", "1", "-q"], check=True, capture_output=True)
        config = json.loads(Path(f"{tmp}/run/config.json").read_text())
    return build(config)


def diffusers_network(widths=(32, 32, 64)):
    from diffusers import UNet1DModel

    # The Fourier time embedding enters as 2 x widths[0] extra input channels.
    return UNet1DModel(sample_size=LENGTH, in_channels=1, out_channels=1, extra_in_channels=2 * widths[0],
                       block_out_channels=widths)


def measure(name: str, precision: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = diffkit_network() if name == "diffkit" else diffusers_network()
    call = (lambda x, t: model(x, t)) if name == "diffkit" else (lambda x, t: model(x, t).sample)
    x0 = torch.randn(BATCH, 1, LENGTH)
    return {"name": name, "precision": precision, **time_training(model, call, x0, steps, precision, name == "diffkit")}


def real_time_factors(threads: int) -> list[dict]:
    """Seconds of sampling per second of audio, 20 steps, one clip, fp32."""
    import torch

    from diffkit.core import SamplingSpec, make_schedule, sample

    torch.set_num_threads(threads)
    ours = diffkit_network().eval()
    size = sum(p.numel() for p in ours.parameters())
    rows = []
    with torch.inference_mode():
        start = time.perf_counter()
        sample(ours, (1, 1, LENGTH), make_schedule("cosine", 1000), SamplingSpec("dpm++2m", 20), prediction="v")
        rows.append({"name": "diffkit", "parameters": size, "rtf": (time.perf_counter() - start) / (LENGTH / RATE)})
        if have_diffusers():
            from diffusers import DPMSolverMultistepScheduler

            # The widest UNet1DModel (three levels, widths w, w, 2w) not above our parameter count;
            width = max(w for w in range(16, 512, 16)  # its attention needs 2w divisible by 32
                        if sum(p.numel() for p in diffusers_network((w, w, 2 * w)).parameters()) <= size)
            peer = diffusers_network((width, width, 2 * width)).eval()
            solver = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
            solver.set_timesteps(20)
            x = torch.randn(1, 1, LENGTH, generator=torch.Generator().manual_seed(0))
            start = time.perf_counter()
            for t in solver.timesteps:
                x = solver.step(peer(x, t).sample, t, x).prev_sample
            rows.append({"name": "diffusers", "parameters": sum(p.numel() for p in peer.parameters()),
                         "rtf": (time.perf_counter() - start) / (LENGTH / RATE)})
    return rows


def quality(minutes: float, threads: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tones"
        process = subprocess.Popen([sys.executable, "-m", "diffkit", "train", "audio", "--out", str(out),
                                    "--class-cond", "--steps", "10000000", "--checkpoint-every", "10000000", "-q"],
                                   env=env)
        time.sleep(minutes * 60)
        process.send_signal(signal.SIGTERM)  # checkpoints and exits 143
        process.wait()
        steps = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        result = subprocess.run([sys.executable, "-m", "diffkit", "eval", "audio", "-m", str(out), "-n", "16",
                                 "--samples", "64", "--reference", "--json", "-q"], env=env, check=True,
                                capture_output=True, text=True)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return [{"steps": steps, **r} for r in records]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--skip-speed", action="store_true", help="only the quality part")
    parser.add_argument("--skip-quality", action="store_true", help="only the speed parts")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: NETWORK PRECISION in this process
    parser.add_argument("--out", default="bench/results/audio.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.threads)))
        return
    results = {}
    if not args.skip_speed:
        configs = [("diffkit", "fp32")] + ([("diffusers", "fp32")] if have_diffusers() else []) \
            + ([("diffkit", "bf16")] if have_amx() else [])
        if not have_diffusers():
            print("diffusers is not installed (pip install 'diffkit[bench]'): diffkit only", file=sys.stderr)
        rows = isolated(__file__, configs, args.repeats, args.steps, args.threads)
        report(f"training step, {BATCH}x1x{LENGTH}, AdamW, CPU, {args.threads} threads, median of {args.repeats} runs",
               rows, args.out.replace(".json", "-speed.json"))
        print(f"\nsampling {LENGTH} samples ({LENGTH / RATE:.3f} s at {RATE} Hz), 20 steps, fp32, {args.threads} threads")
        results = {"speed": list(rows.values()), "rtf": real_time_factors(args.threads)}
        for row in results["rtf"]:
            print(f"{row['name']:>10} {row['parameters']:>10,} params  real-time factor {row['rtf']:.3f}")
    if not args.skip_quality:
        print(f"\nbuiltin:tones after {args.minutes:g} CPU minutes, {args.threads} threads")
        results["quality"] = quality(args.minutes, args.threads)
        for r in results["quality"]:
            print(f"{r['metric']:>20} {r['value']:>10.4f}  {r['of']}  (after {r['steps']} steps)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
