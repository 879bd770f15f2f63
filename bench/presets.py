"""What each `--preset` costs: parameters, FLOPs and seconds per training step on this machine, from
`diffkit train M --preset P --dry-run` (1 counted and 3 timed steps of the real batches, nothing written),
for every modality at its bench settings; with --quality, also what each preset reaches in the bench's
budget: its modality's steps or --minutes of training, whichever ends first (a bigger network takes
fewer steps in the time; SIGTERM makes the run checkpoint where it is), scored by the eval's headline
figure.

    python bench/presets.py [--threads 2] [--quality] [--minutes 3] [--only image,text]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRESETS = ("tiny", "small", "base")
# The data and shape of each modality's bench, and the budget and figure of --quality.
SETTINGS = {
    "image": {"train": ["--data", "builtin:shapes", "--image-size", "32"], "steps": 1200,
              "eval": ["--samples", "100", "--strata", "20", "-n", "16"], "metric": "kid"},
    "audio": {"train": ["--data", "builtin:tones"], "steps": 1500, "eval": ["--samples", "32", "--strata", "20", "-n", "8"],
              "metric": "mel_frechet"},
    "text": {"train": ["--data", "builtin:weather", "--seq-len", "16"], "steps": 2000,
             "eval": ["--samples", "256", "--strata", "20", "-n", "64"], "metric": "grammar_share"},
    "points": {"train": ["--data", "builtin:ring"], "steps": 3000, "eval": ["--strata", "50"], "metric": "sliced_w2"},
}


def diffkit(*args, env) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "diffkit", *args, "--json", "-q"], env=env, check=True,
                            capture_output=True, text=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def train_within(command: list[str], run: Path, minutes: float, env) -> int:
    """A `diffkit train` command stopped by SIGTERM at the budget if it has not finished (it checkpoints and
    exits 143, which is the point); the steps it reached (0 before its first metrics line)."""
    process = subprocess.Popen(command, env=env)
    try:
        process.wait(timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        process.wait()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", action="store_true", help="also train each preset for the budget and score it")
    parser.add_argument("--minutes", type=float, default=3.0, help="--quality's training time per preset")
    parser.add_argument("--only", default=",".join(SETTINGS), help="comma-separated modalities")
    parser.add_argument("--out", default="bench/results/presets.json")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    print(f"--preset on {args.threads} threads (dry runs: 1 counted and 3 timed steps)")
    print(f"{'modality':>8} {'preset':>6} {'parameters':>11} {'GFLOP/step':>11} {'s/step':>7} {'MiB':>7}"
          + (f" {'steps':>6} {'metric':>14} {'value':>8}" if args.quality else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for modality in args.only.split(","):
            setting = SETTINGS[modality]
            for preset in PRESETS:
                options = [modality, "--preset", preset, *setting["train"]]
                cost = diffkit("train", *options, "--out", str(Path(tmp) / "dry"), "--dry-run", env=env)[-1]
                row = {"modality": modality, "preset": preset, **cost}
                line = (f"{modality:>8} {preset:>6} {cost['parameters']:>11,} {cost['flops_per_step'] / 1e9:>11.2f} "
                        f"{cost['seconds_per_step']:>7.3f} {cost['state_mib'] + cost['activations_mib']:>7.0f}")
                if args.quality:
                    run = Path(tmp) / f"{modality}-{preset}"
                    steps = train_within([sys.executable, "-m", "diffkit", "train", *options, "--steps", str(setting["steps"]),
                                          "--out", str(run), "-q"], run, args.minutes, env)
                    scored = setting["eval"]
                    if modality == "points":  # its eval scores sample files
                        diffkit("sample", "points", "-m", str(run), "-n", "2000", "-o", str(run / "samples.csv"), env=env)
                        scored = [*scored, "--samples", str(run / "samples.csv")]
                    records = diffkit("eval", modality, "-m", str(run), *scored, env=env)
                    found = next(r for r in records if r["metric"] == setting["metric"])
                    row |= {"steps": steps, "minutes": args.minutes, "metric": setting["metric"], "value": found["value"],
                            "of": found.get("of", "")}
                    line += f" {steps:>6} {setting['metric']:>14} {found['value']:>8.4f}"
                rows.append(row)
                print(line, flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"threads": args.threads, "step_budget": {m: SETTINGS[m]["steps"] for m in SETTINGS},
                   "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
