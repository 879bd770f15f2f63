"""The README's audio picture: a held-out builtin:tones clip band-limited to --cutoff Hz, diffkit's
restoration of it (`diffkit restore audio --task bandwidth:HZ`, the defaults: ddnm, ddpm in 20 steps) and
the original, as log-mel spectrograms from top to bottom. Trains the run it needs through the CLI (the
audio defaults at the tiny preset for --steps) unless --run holds one already.

    python bench/audio_picture.py [--run DIR] [--steps 1500] [--cutoff 2000] [--threads 2]
    (writes docs/audio-restore.png, and bench/results/audio-picture.json with the restored clip's
    log-spectral distance to the original beside the band-limited input's)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def diffkit(*args, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "diffkit", *map(str, args), "-q"], check=True, env=env, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="bench/results/audio-picture/run")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--cutoff", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--picture", default="docs/audio-restore.png")
    args = parser.parse_args()

    import torch

    from diffkit.audio import codec
    from diffkit.audio.data import decode, open_data
    from diffkit.audio.restoration import parse_task
    from diffkit.metrics.audio import log_spectral_distance

    torch.set_num_threads(args.threads)
    run = ROOT / args.run
    started = time.time()
    if not (run / "model.safetensors").exists():
        diffkit("train", "audio", "--data", "builtin:tones", "--out", run, "--preset", "tiny", "--steps", args.steps,
                threads=args.threads)
    config = json.loads((run / "config.json").read_text())["data"]
    rate, length = config["sample_rate"], config["length"]
    held_out = open_data("builtin:tones", rate, length, seed=1)  # not the training draws (seed 0)
    clean, _ = held_out.batch(torch.arange(1), torch.Generator().manual_seed(1))
    task = f"bandwidth:{args.cutoff}"
    degraded = parse_task(task, rate).degrade(clean, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        source, restored_file = Path(folder) / "band-limited.wav", Path(folder) / "restored.wav"
        source.write_bytes(codec.wav(degraded[0], rate))
        diffkit("restore", "audio", "-m", run, "-i", source, "--task", task, "-o", restored_file, threads=args.threads)
        restored = decode(restored_file.read_bytes(), rate, str(restored_file))[None, None]
    (ROOT / args.picture).write_bytes(codec.spectrogram_png(torch.cat([degraded, restored, clean]), rate))
    scores = {"task": task, "steps": args.steps, "threads": args.threads,
              "lsd_band_limited": float(log_spectral_distance(degraded, clean, rate)),
              "lsd_restored": float(log_spectral_distance(restored, clean, rate)),
              "seconds": round(time.time() - started, 1)}
    out = ROOT / "bench" / "results" / "audio-picture.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(scores, indent=2))
    print(f"{'':>14} {'log-spectral distance to the original':>40}")
    print(f"{'band-limited':>14} {scores['lsd_band_limited']:>40.3f}")
    print(f"{'restored':>14} {scores['lsd_restored']:>40.3f}")
    print(f"wrote {args.picture} ({scores['seconds']} s, {args.threads} threads)")


if __name__ == "__main__":
    main()
