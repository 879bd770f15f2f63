"""Conversion between classes: the bridge (DDIB, `style --from-class`) against SDEdit (`style --class`).
Prints tables and writes JSON.

1. Shapes: the model `make demo` trains (class-conditional builtin:shapes, 32x32; bench/restore.py's run
   is reused). --per-class held-out images of each class go to each other class at every --strengths by
   both methods. Target accuracy: a logistic regression on EfficientNet-lite0 features, fitted on other
   real images, calls the result the target class. Content kept: the shape's colour (mean RGB of its
   pixels, told from the background by hue) and position (centroid, pixels), against the input's.
   Round trip: the bridge from a class to itself, PSNR against the input at 20, 50 and 100 model calls.
2. Tones: builtin:tones (sine, organ, pluck; bench/restore.py's class-conditional run): every clip to
   each other timbre. Target accuracy: a logistic regression on mean log-mel features of real clips.
   Content kept: the clip's pitch (CREPE, median over voiced frames) within 50 cents of the input's.

A conversion keeps content at no cost if it never changes class, so each method's content figures are
read beside its target accuracy; the floor of each classifier (its accuracy on held-out real examples)
is printed with it.

    python bench/convert.py [--parts shapes,tones] [--per-class 10] [--strengths 0.5,0.75,1]
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffkit.options import Common, Sampling

RESULTS = Path("bench/results")
COMMON = Common(quiet=True)


def logistic(features: torch.Tensor, labels: torch.Tensor):
    """A scaled logistic regression (scikit-learn) fitted on real examples: predict(features) -> labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    model.fit(features.numpy(), labels.numpy())
    return lambda f: torch.as_tensor(model.predict(f.numpy()))


def shape_content(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean RGB of the shape [N, 3], its centroid [N, 2]) of uint8 images [N, 3, H, W]: the shapes are
    drawn in hues 0.55-0.75 on backgrounds of 0.08-0.25, so a pixel's hue tells which it is."""
    from PIL import Image

    colours, centres = [], []
    for image in images:
        hsv = Image.fromarray(image.permute(1, 2, 0).numpy()).convert("HSV")
        hue = torch.tensor(np.array(hsv)[..., 0], dtype=torch.float32) / 255
        shape = (hue > 0.45) & (hue < 0.85)
        if not shape.any():  # no shape at all: the whole image stands for it
            shape = torch.ones_like(shape)
        colours.append(image[:, shape].float().mean(1))
        ys, xs = torch.nonzero(shape, as_tuple=True)
        centres.append(torch.stack([ys.float().mean(), xs.float().mean()]))
    return torch.stack(colours), torch.stack(centres)


def converted(generate, inputs, source: int, target: int, method: str, strength: float):
    labels = torch.full((len(inputs),), target, dtype=torch.long)
    sources = torch.full((len(inputs),), source, dtype=torch.long) if method == "bridge" else None
    return generate(len(inputs), labels=labels, start=inputs, strength=strength, source_labels=sources)


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0)


def shapes(args) -> dict:
    from diffkit.image.commands import _images, _load
    from diffkit.image.data import open_data
    from diffkit.metrics.image import feature_network, features

    run = _load(str(args.demo_run), COMMON)
    spec = run.config["data"]
    classes, size = spec["classes"], tuple(spec["image_size"])
    network = feature_network()
    fit_images, fit_labels = open_data("builtin:shapes", size, None, seed=10**8).batch(
        torch.arange(100 * len(classes)), torch.Generator().manual_seed(0))
    classify = logistic(features(fit_images, network), fit_labels)
    pool, pool_labels = open_data("builtin:shapes", size, None, seed=10**9).batch(
        torch.arange(40 * args.per_class), torch.Generator().manual_seed(0))
    floor = (classify(features(pool, network)) == pool_labels).double().mean().item()
    inputs = {k: pool[pool_labels == k][: args.per_class] for k in range(len(classes))}
    print(f"shapes: classifier accuracy on held-out real images {floor:.3f}", flush=True)

    def generate(n, **edit):
        sampling = Sampling(sampler=args.sampler, steps=args.steps, seed=args.seed)
        return _images(run, n, sampling, COMMON, **edit)

    rows = []
    for method in ("bridge", "sdedit"):
        for strength in args.strengths:
            hits, colour, place, start = [], [], [], time.perf_counter()
            for source, images in inputs.items():
                colour_in, place_in = shape_content(images)
                for target in range(len(classes)):
                    if target == source:
                        continue
                    out = converted(generate, images, source, target, method, strength)
                    hits += (classify(features(out, network)) == target).double().tolist()
                    colour_out, place_out = shape_content(out)
                    colour += (colour_out - colour_in).norm(dim=1).tolist()
                    place += (place_out - place_in).norm(dim=1).tolist()
            row = {"method": method, "strength": strength, "target_accuracy": mean_se(hits),
                   "colour_distance": mean_se(colour), "centroid_distance": mean_se(place),
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"{method:>7} strength {strength:4.2f}  target class {row['target_accuracy'][0]:.3f} ± "
                  f"{row['target_accuracy'][1]:.3f}  colour moved {row['colour_distance'][0]:5.1f} ± "
                  f"{row['colour_distance'][1]:.1f} (of 255)  centroid moved {row['centroid_distance'][0]:4.2f} ± "
                  f"{row['centroid_distance'][1]:.2f} px", flush=True)
    trips = []
    for steps in (20, 50, 100):
        sampling = Sampling(sampler=args.sampler, steps=steps, seed=args.seed)
        differences = []
        for source, images in inputs.items():
            labels = torch.full((len(images),), source, dtype=torch.long)
            back = _images(run, len(images), sampling, COMMON, labels=labels, start=images, strength=1.0,
                           source_labels=labels)
            differences.append((back.float() - images.float()).flatten())
        # One PSNR over every value: 8-bit results often come back exact, which a per-image mean cannot hold.
        difference = torch.cat(differences)
        psnr = (10 * torch.log10(255**2 / difference.square().mean())).item()
        trips.append({"steps": steps, "model_calls": 2 * steps, "psnr": psnr,
                      "mean_abs_difference": difference.abs().mean().item(),
                      "exact_share": (difference == 0).double().mean().item()})
        print(f"round trip, {steps} steps each way: PSNR {psnr:.2f} dB, mean |difference| "
              f"{trips[-1]['mean_abs_difference']:.3f} of 255, {trips[-1]['exact_share']:.1%} of values exact", flush=True)
    return {"classifier_accuracy_on_real": floor, "rows": rows, "round_trip": trips, "per_class": args.per_class}


def tones(args) -> dict:
    from diffkit.audio.commands import _load, _waves
    from diffkit.audio.data import open_data
    from diffkit.metrics.audio import crepe_pitches, log_mel

    run = _load(str(args.audio_run), COMMON)
    spec = run.config["data"]
    rate, window, classes = spec["sample_rate"], spec["window"], spec["classes"]

    def mel_features(clips):  # each clip's mean and spread of log-mel power per band
        frames = [log_mel(clip.reshape(-1), rate).double() for clip in clips]
        return torch.stack([torch.cat([f.mean(0), f.std(0)]) for f in frames])

    def pitch(clip):
        cents, _ = crepe_pitches(clip[None], rate)
        return cents.median().item() if len(cents) else float("nan")

    fit, fit_labels = open_data("builtin:tones", rate, window, seed=10**8, how=spec["normalise"]).batch(
        torch.arange(60 * len(classes)), torch.Generator().manual_seed(0))
    classify = logistic(mel_features(fit), fit_labels)
    pool, pool_labels = open_data("builtin:tones", rate, window, seed=10**9, how=spec["normalise"]).batch(
        torch.arange(12 * args.per_class), torch.Generator().manual_seed(0))
    floor = (classify(mel_features(pool)) == pool_labels).double().mean().item()
    inputs = {k: pool[pool_labels == k][: args.per_class] for k in range(len(classes))}
    pitches_in = {k: [pitch(c) for c in clips] for k, clips in inputs.items()}
    print(f"tones: classifier accuracy on held-out real clips {floor:.3f}", flush=True)

    def generate(n, **edit):
        sampling = Sampling(sampler=args.sampler, steps=args.steps, seed=args.seed)
        return _waves(run, n, window, sampling, COMMON, **edit)

    rows = []
    for method in ("bridge", "sdedit"):
        for strength in args.strengths:
            hits, kept, start = [], [], time.perf_counter()
            for source, clips in inputs.items():
                for target in range(len(classes)):
                    if target == source:
                        continue
                    out = converted(generate, clips, source, target, method, strength)
                    hits += (classify(mel_features(out)) == target).double().tolist()
                    for clip, before in zip(out, pitches_in[source]):
                        kept.append(float(abs(pitch(clip) - before) <= 50))  # nan (unvoiced) counts as lost
            row = {"method": method, "strength": strength, "target_accuracy": mean_se(hits),
                   "pitch_within_50_cents": mean_se(kept), "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"{method:>7} strength {strength:4.2f}  target timbre {row['target_accuracy'][0]:.3f} ± "
                  f"{row['target_accuracy'][1]:.3f}  pitch kept {row['pitch_within_50_cents'][0]:.3f} ± "
                  f"{row['pitch_within_50_cents'][1]:.3f}", flush=True)
    return {"classifier_accuracy_on_real": floor, "rows": rows, "per_class": args.per_class}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="shapes,tones")
    parser.add_argument("--per-class", type=int, default=10, help="inputs of each class")
    parser.add_argument("--strengths", default="0.5,0.75,1")
    parser.add_argument("--sampler", default="dpm++2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-run", default=str(RESULTS / "restore-demo"), help="made by bench/restore.py")
    parser.add_argument("--audio-run", default=str(RESULTS / "restore-tones"), help="made by bench/restore.py")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "convert.json"))
    args = parser.parse_args()
    args.strengths = [float(s) for s in args.strengths.split(",")]
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    for part, run in (("shapes", args.demo_run), ("tones", args.audio_run)):
        if part in args.parts and not (Path(run) / "model.safetensors").exists():
            sys.exit(f"{run} is missing: python bench/restore.py --parts {'images' if part == 'shapes' else 'audio'} "
                     "trains it")
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update(threads=args.threads, sampler=args.sampler, steps=args.steps)
    if "shapes" in args.parts:
        report["shapes"] = shapes(args)
    if "tones" in args.parts:
        report["tones"] = tones(args)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
