"""Sequence to sequence on real text: English to German messages from the gettext catalogues installed
on this machine (iso-codes' language, country and script names, and the GNU tools' messages).

Pairs are read with Python's gettext module from /usr/share/locale/de/LC_MESSAGES/*.mo: single-line
messages of at most 40 characters each way without format directives, deduplicated by source; 500 held out at random, the
rest trained on with `train text --pairs`. `eval text` then scores the held-out targets with sacrebleu's
BLEU and chrF, for the model's samples, their minimum-Bayes-risk choice among --mbr candidates, and the
copy-the-source baseline (names such as "Dumfries and Galloway" are often the same in both languages).

    python bench/translate.py [--steps 4000] [--mbr 4] [--threads 2]

Writes bench/results/translate.json. The run is kept in bench/results/translate/run-STEPS: run again
with the same --steps, a finished one is only scored again and an interrupted one resumed (exactly:
its learning-rate schedule is that of the same total).
"""

import argparse
import gettext
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("bench/results/translate")
HELD_OUT = 500


def catalogue_pairs(pattern: str = "/usr/share/locale/de/LC_MESSAGES/*.mo") -> list[tuple[str, str]]:
    found = {}
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, "rb") as f:
                catalogue = gettext.GNUTranslations(f)._catalog  # the parsed .mo: msgid -> msgstr
        except (OSError, UnicodeDecodeError):  # a catalogue in another encoding than UTF-8
            continue
        for source, target in catalogue.items():
            if not isinstance(source, str) or not isinstance(target, str) or not source or not target:
                continue  # plural forms, the header
            if any(c in source + target for c in "%{}\n\t\x04") or source == target or max(len(source), len(target)) > 40:
                continue  # format directives, untranslated, or longer than a model of 32 tokens holds
            found.setdefault(source.strip(), target.strip())
    return sorted(found.items())


def trained_steps(run: Path) -> int:
    """The steps a run's last checkpoint holds, 0 for none."""
    from diffkit.core.checkpoint import STATE, read_state

    return read_state(run)[1]["step"] if (run / STATE).exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--mbr", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/translate.json")
    args = parser.parse_args()
    pairs = catalogue_pairs()
    if len(pairs) < 2 * HELD_OUT:
        print(f"only {len(pairs)} English-German pairs in the installed catalogues; skipped")
        return
    random.Random(0).shuffle(pairs)
    ROOT.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.tsv", pairs[HELD_OUT:]), ("held-out.tsv", pairs[:HELD_OUT])):
        (ROOT / name).write_text("".join(f"{s}\t{t}\n" for s, t in part))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    diffkit = [sys.executable, "-m", "diffkit"]
    run = ROOT / f"run-{args.steps}"
    reused = trained_steps(run)
    if run.exists() and not reused:
        shutil.rmtree(run)  # stopped before its first checkpoint: nothing to resume
    begin = time.perf_counter()
    if reused < args.steps:
        # A model small enough for minutes of CPU: 32 tokens, a 2,000-piece vocabulary (the rounding
        # loss scores every position against every piece), width 128, 3 layers.
        subprocess.run([*diffkit, "train", "text", "--pairs", str(ROOT / "train.tsv"), "--out", str(run),
                        "--seq-len", "32", "--vocab-size", "2000", "--width", "128", "--depth", "3",
                        "--batch-size", "32", "--steps", str(args.steps), "-q", *(["--resume"] if reused else [])],
                       env=env, check=True)
    seconds = time.perf_counter() - begin
    results = {"pairs": len(pairs), "train": len(pairs) - HELD_OUT, "held_out": HELD_OUT, "steps": args.steps,
               "reused_steps": reused, "train_seconds": round(seconds), "threads": args.threads, "scores": []}
    for mbr in (1, args.mbr):
        out = subprocess.run([*diffkit, "eval", "text", "-m", str(run), "--data", str(ROOT / "held-out.tsv"),
                              "--samples", str(HELD_OUT), "--mbr", str(mbr), "--json", "-q"]
                             + (["--reference"] if mbr == 1 else []), env=env, check=True, capture_output=True, text=True)
        for record in map(json.loads, out.stdout.splitlines()):
            if record["metric"] in ("bleu", "chrf", "exact_match"):
                results["scores"].append({"mbr": mbr, **record})
    print(f"{len(pairs)} English-German pairs ({HELD_OUT} held out); {args.steps - reused} of {args.steps} steps "
          f"trained now, in {seconds:.0f} s ({args.threads} threads)")
    for record in results["scores"]:
        print(f"{record['metric']:>12} {record['value']:7.2f}  {record['of']}")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
