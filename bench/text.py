"""Text: quality of a Diffusion-LM trained for a few CPU minutes on builtin:weather, and sampling speed.

1. Quality: `diffkit train text --seq-len 16 --steps N` on builtin:weather (timed), then `diffkit eval text
   --samples S --reference`: grammar share, novel share, distinct-2 and infilling accuracy (one slot
   masked) of generated text, of held-out real lines and of a baseline drawing tokens from the corpus's
   unigram distribution; and the NLL bound in bits per token. Then the same for `--pairs builtin:weather`
   (weather records to sentences): the share of sentences that say exactly their record.
2. Sampling speed: tokens per second of DPM-Solver++(2M) in 20 steps with clamping, batch 64, for the
   trained network (16 tokens) and the same network at the default --seq-len 64, fp32.

    python bench/text.py [--threads 2] [--steps 2000] [--samples 256] [--skip-quality] [--skip-pairs]
                         [--train-options=--self-cond]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQ_LEN = 16
PAIR_LEN = 32  # a record (8 tokens), the separator, a sentence (up to 13) and the end


def quality(steps: int, samples: int, threads: int, out: Path, *options: str) -> tuple[list[dict], float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffkit", "train", "text", "--out", str(out), "--steps", str(steps), "-q",
                    *options], env=env, check=True)
    minutes = (time.perf_counter() - start) / 60
    result = subprocess.run([sys.executable, "-m", "diffkit", "eval", "text", "-m", str(out), "--samples", str(samples),
                             "--reference", "--json", "-q"], env=env, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in result.stdout.splitlines()], minutes


def tokens_per_second(run: Path | None, seq_len: int, threads: int, batch: int = 64, repeats: int = 3) -> float:
    """Tokens per second sampling `batch` sequences in 20 steps (median of `repeats`), the trained network's
    weights when `run` is given, else a fresh one of the default size at `seq_len`."""
    import torch

    from diffkit.core import SamplingSpec, make_schedule, sample
    from diffkit.core.checkpoint import load_weights
    from diffkit.text.model import TextConfig, TextDenoiser, clamp_hook

    torch.set_num_threads(threads)
    if run is not None:
        config = json.loads((run / "config.json").read_text())["model"]
        model = load_weights(run, TextDenoiser(TextConfig(**config)))
    else:
        model = TextDenoiser(TextConfig(vocab=360, seq_len=seq_len))
    model.eval()
    schedule = make_schedule("sqrt", 1000)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(model, (batch, model.config.embed_dim, seq_len), schedule, SamplingSpec(steps=20), prediction="x0",
               hook=clamp_hook(model))
        times.append(time.perf_counter() - start)
    return batch * seq_len / sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--skip-quality", action="store_true", help="only the speed part (a fresh network)")
    parser.add_argument("--skip-pairs", action="store_true", help="no --pairs run")
    parser.add_argument("--train-options", default="", help="more options for both trainings, e.g. --self-cond")
    parser.add_argument("--out", default="bench/results/text.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = None
        if not args.skip_quality:
            run = Path(tmp) / "weather"
            cases = [("builtin:weather", ["--seq-len", str(SEQ_LEN)])]
            if not args.skip_pairs:
                cases.append(("--pairs builtin:weather", ["--pairs", "builtin:weather", "--seq-len", str(PAIR_LEN)]))
            for name, options in cases:
                out = run if name == "builtin:weather" else Path(tmp) / "pairs"
                records, minutes = quality(args.steps, args.samples, args.threads, out, *options,
                                           *args.train_options.split())
                print(f"{name} {args.train_options}, {args.steps} steps in {minutes:.1f} min, {args.threads} threads")
                for r in records:
                    print(f"{r['metric']:>20} {r['value']:>8.4f} ± {r['stderr']:.4f}  {r['of']}")
                results[name] = {"steps": args.steps, "minutes": minutes, "options": args.train_options,
                                 "records": records}
        print(f"\nsampling, batch 64, 20 steps, fp32, {args.threads} threads")
        speeds = {}
        for seq_len, weights in ((SEQ_LEN, run), (64, None)):
            speeds[seq_len] = tokens_per_second(weights, seq_len, args.threads)
            print(f"  {seq_len:>3} tokens per sequence: {speeds[seq_len]:>9,.0f} tokens/s")
        results["tokens_per_second"] = speeds
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
