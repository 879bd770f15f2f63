"""Conversion between classes: the bridge (DDIB, `style --from-class`) against SDEdit (`style --class`).
Prints tables and writes JSON.

0. Voices: real speech from Debian's espeak-ng, four voices saying the same 20 words at five speaking
   rates; a class-conditional model (classes = voices, 8 kHz, --voice-steps) converts each word, said
   at a sixth rate, from each voice to each other. Target similarity: the converted clip's resemblyzer
   speaker embedding is closer (cosine) to the target voice's centroid than to the source's. Content:
   the nearest word by DTW over MFCCs (librosa) among the target voice's own clips is the word said.
1. Shapes: the model `make demo` trains (class-conditional builtin:shapes, 32x32; bench/restore.py's run
   is reused). --per-class held-out images of each class go to each other class at every --strengths by
   both methods. Target accuracy: a logistic regression on EfficientNet-lite0 features, fitted on other
   real images, calls the result the target class. Content kept: the shape's colour (mean RGB of its
   pixels, told from the background by hue) and position (centroid, pixels), against the input's.
   Round trip (--parts roundtrip): the bridge from a class to itself, PSNR against the input at 20, 50
   and 100 steps each way, with dpm++2m, ddim, and ddim with exact (3 fixed-point iterations) inversion.
2. Tones: builtin:tones (sine, organ, pluck; bench/restore.py's class-conditional run): every clip to
   each other timbre. Target accuracy: a logistic regression on mean log-mel features of real clips.
   Content kept: the clip's pitch (CREPE, median over voiced frames) within 50 cents of the input's.
3. Text: builtin:weather's two registers (report, chatty), trained with --class-cond for --text-steps
   (bench/text.py's budget; kept in bench/results/): 5 x --per-class held-out lines of each register to
   the other. Target accuracy: the target register's grammar accepts the line; content kept: its slots
   (day, city, sky, temperature) are the input's, all of them and each on its own. The floor: the share of the model's own samples of
   each class that their register accepts.

A conversion keeps content at no cost if it never changes class, so each method's content figures are
read beside its target accuracy; the floor of each classifier (its accuracy on held-out real examples)
is printed with it.

    python bench/convert.py [--parts voices,shapes,roundtrip,tones,text] [--per-class 10] [--strengths 0.5,0.75,1]
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

from diffkit.core.editing import Bridge, Noised
from diffkit.core.spec import SamplingSpec

RESULTS = Path("bench/results")


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


def converted(generate, inputs, source: int, target: int, method: str, strength: float, args):
    labels = torch.full((len(inputs),), target, dtype=torch.long)
    if method == "bridge":
        return generate(len(inputs), labels=labels, guidance=args.guidance,
                        start=Bridge(inputs, strength, inversion_iterations=args.inversion_iterations),
                        source_labels=torch.full((len(inputs),), source, dtype=torch.long))
    return generate(len(inputs), labels=labels, guidance=args.guidance, start=Noised(inputs, strength))


def clips_of(run, window: int, args):
    """generate(n, **edit) -> n clips [n, 1, window] of an audio run, as `style audio` draws them."""
    from diffkit.audio.pipeline import waves

    sampling = SamplingSpec(sampler=args.sampler, steps=args.steps, seed=args.seed)
    return lambda n, **edit: waves(run, n, window, sampling, **edit)


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0)


def shapes(args) -> dict:
    from diffkit.image import pipeline
    from diffkit.image.data import open_data
    from diffkit.metrics.image import feature_network, features

    run = pipeline.load(str(args.demo_run))
    spec = run.config.data
    classes, size = spec.classes, spec.image_size
    network = feature_network()
    fit_images, fit_labels = open_data("builtin:shapes", size, None, seed=10**8).batch(
        torch.arange(100 * len(classes)), torch.Generator().manual_seed(0))
    classify = logistic(features(fit_images, network), fit_labels)
    pool, pool_labels = held_out_shapes(size, args.per_class)
    floor = (classify(features(pool, network)) == pool_labels).double().mean().item()
    inputs = {k: pool[pool_labels == k][: args.per_class] for k in range(len(classes))}
    print(f"shapes: classifier accuracy on held-out real images {floor:.3f}", flush=True)

    def generate(n, **edit):
        sampling = SamplingSpec(sampler=args.sampler, steps=args.steps, seed=args.seed)
        return pipeline.images(run, n, sampling, **edit)

    rows = []
    for method in ("bridge", "sdedit"):
        for strength in args.strengths:
            hits, colour, place, start = [], [], [], time.perf_counter()
            for source, images in inputs.items():
                colour_in, place_in = shape_content(images)
                for target in range(len(classes)):
                    if target == source:
                        continue
                    out = converted(generate, images, source, target, method, strength, args)
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
    return {"classifier_accuracy_on_real": floor, "rows": rows, "per_class": args.per_class}


def held_out_shapes(size, per_class: int):
    """Images of builtin:shapes from a seed training never used, and their classes (about per_class x 10)."""
    from diffkit.image.data import open_data

    return open_data("builtin:shapes", size, None, seed=10**9).batch(torch.arange(40 * per_class),
                                                                     torch.Generator().manual_seed(0))


def round_trips(args) -> list[dict]:
    """The bridge from a class to itself on held-out shapes: how well inversion and decoding return the
    input, for dpm++2m and ddim, the latter also with exact (fixed-point) inversion."""
    from diffkit.image import pipeline

    run = pipeline.load(str(args.demo_run))
    pool, pool_labels = held_out_shapes(run.config.data.image_size, args.per_class)
    images = torch.cat([pool[pool_labels == k][: args.per_class] for k in range(len(run.config.data.classes))])
    labels = torch.cat([torch.full((args.per_class,), k) for k in range(len(run.config.data.classes))])
    trips = []
    for sampler, iterations in (("dpm++2m", 0), ("ddim", 0), ("ddim", 3)):
        for steps in (20, 50, 100):
            sampling = SamplingSpec(sampler=sampler, steps=steps, seed=args.seed)
            back = pipeline.images(run, len(images), sampling, labels=labels, source_labels=labels,
                                   start=Bridge(images, 1.0, inversion_iterations=iterations))
            # One PSNR over every value: 8-bit results often come back exact, which a per-image mean cannot hold.
            difference = (back.float() - images.float()).flatten(1)
            per_image = difference.abs().mean(1)
            trips.append({"sampler": sampler, "inversion_iterations": iterations, "steps": steps,
                          "model_calls": steps * (2 + iterations),
                          "psnr": (10 * torch.log10(255**2 / difference.square().mean())).item(),
                          "mean_abs_difference": per_image.mean().item(), "worst_image": per_image.max().item(),
                          "exact_share": (difference == 0).double().mean().item()})
            r = trips[-1]
            print(f"round trip, {sampler} {steps} steps, {iterations} inversion iterations ({r['model_calls']} calls): "
                  f"PSNR {r['psnr']:.2f} dB, mean |difference| {r['mean_abs_difference']:.3f} of 255 (worst image "
                  f"{r['worst_image']:.1f}), {r['exact_share']:.1%} of values exact", flush=True)
    return trips


def tones(args) -> dict:
    from diffkit.audio.pipeline import load
    from diffkit.audio.data import open_data
    from diffkit.metrics.audio import crepe_pitches, log_mel

    run = load(str(args.audio_run))
    spec = run.config.data
    rate, window, classes = spec.sample_rate, spec.window, spec.classes

    def mel_features(clips):  # each clip's mean and spread of log-mel power per band
        frames = [log_mel(clip.reshape(-1), rate).double() for clip in clips]
        return torch.stack([torch.cat([f.mean(0), f.std(0)]) for f in frames])

    def pitch(clip):
        cents, _ = crepe_pitches(clip[None], rate)
        return cents.median().item() if len(cents) else float("nan")

    fit, fit_labels = open_data("builtin:tones", rate, window, seed=10**8, how=spec.normalise).batch(
        torch.arange(60 * len(classes)), torch.Generator().manual_seed(0))
    classify = logistic(mel_features(fit), fit_labels)
    pool, pool_labels = open_data("builtin:tones", rate, window, seed=10**9, how=spec.normalise).batch(
        torch.arange(12 * args.per_class), torch.Generator().manual_seed(0))
    floor = (classify(mel_features(pool)) == pool_labels).double().mean().item()
    inputs = {k: pool[pool_labels == k][: args.per_class] for k in range(len(classes))}
    pitches_in = {k: [pitch(c) for c in clips] for k, clips in inputs.items()}
    print(f"tones: classifier accuracy on held-out real clips {floor:.3f}", flush=True)

    generate = clips_of(run, window, args)

    rows = []
    for method in ("bridge", "sdedit"):
        for strength in args.strengths:
            hits, kept, start = [], [], time.perf_counter()
            for source, clips in inputs.items():
                for target in range(len(classes)):
                    if target == source:
                        continue
                    out = converted(generate, clips, source, target, method, strength, args)
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


# Real speech: espeak-ng's voices saying the same words (Debian's espeak-ng; the part is skipped without it).
VOICES = ("en+m1", "en+f2", "en+m3", "en+f4")
WORDS = ("apple", "water", "seven", "yellow", "morning", "garden", "river", "window", "thunder", "pencil",
         "orange", "music", "summer", "doctor", "village", "basket", "silver", "candle", "monkey", "rabbit")
TRAIN_SPEEDS, HELD_OUT_SPEED = (140, 155, 170, 185, 200), 165


def speech(root: Path) -> Path:
    """root/train/<voice>/<word>-<speed>.wav at five speaking rates, root/held-out/... at a sixth."""
    import shutil
    import subprocess

    if not shutil.which("espeak-ng"):
        raise FileNotFoundError("espeak-ng")
    for split, speeds in (("train", TRAIN_SPEEDS), ("held-out", (HELD_OUT_SPEED,))):
        for voice in VOICES:
            folder = root / split / voice
            folder.mkdir(parents=True, exist_ok=True)
            for word in WORDS:
                for speed in speeds:
                    path = folder / f"{word}-{speed}.wav"
                    if not path.exists():
                        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), word], check=True)
    return root


def voices(args) -> dict:
    """Voice conversion between espeak-ng voices: a class-conditional model of their words (classes =
    voices), each held-out word converted from each voice to each other."""
    import subprocess

    import librosa
    import numpy as np
    from resemblyzer import VoiceEncoder, preprocess_wav

    from diffkit.audio.pipeline import load
    from diffkit.audio.data import read_audio

    root = speech(RESULTS / "voices-data")
    run_dir = Path(args.voice_run)
    if not (run_dir / "model.safetensors").exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diffkit", "train", "audio", "--data", str(root / "train"), "--out",
                        str(run_dir), "--class-cond", "--sample-rate", "8000", "--seconds", "1", "--steps",
                        str(args.voice_steps), "--checkpoint-every", str(args.voice_steps), "-q"], check=True)
        print(f"trained {run_dir} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    run = load(str(run_dir))
    spec = run.config.data
    rate, window, names = spec.sample_rate, spec.window, spec.classes
    encoder = VoiceEncoder("cpu", verbose=False)

    def clip(voice: str, word: str, split: str, speed: int) -> torch.Tensor:
        wave = read_audio(str(root / split / voice / f"{word}-{speed}.wav"), rate)[:window]
        return torch.nn.functional.pad(wave, (0, window - len(wave)))

    def embed(wave: torch.Tensor) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(wave.numpy().astype(np.float32), source_sr=rate))

    def mfcc(wave: torch.Tensor) -> np.ndarray:
        trimmed, _ = librosa.effects.trim(wave.numpy().astype(np.float32), top_db=30)
        return librosa.feature.mfcc(y=trimmed if len(trimmed) > 256 else wave.numpy(), sr=rate, n_mfcc=13)

    def nearest_word(wave: torch.Tensor, voice: str) -> str:
        """The word among the voice's own training clips (one speaking rate) closest by DTW over MFCCs."""
        features = mfcc(wave)
        costs = {w: librosa.sequence.dtw(features, references[voice][w])[0][-1, -1] for w in WORDS}
        return min(costs, key=costs.get)

    references = {v: {w: mfcc(clip(v, w, "train", 170)) for w in WORDS} for v in VOICES}
    centroids = {}
    for v in VOICES:
        e = np.stack([embed(clip(v, w, "train", s)) for w in WORDS for s in TRAIN_SPEEDS[:2]]).mean(0)
        centroids[v] = e / np.linalg.norm(e)
    words = WORDS[: args.per_class]
    inputs = {v: torch.stack([clip(v, w, "held-out", HELD_OUT_SPEED) for w in words])[:, None] for v in VOICES}
    real_closer = [float(np.dot(embed(c[0]), centroids[v]) == max(np.dot(embed(c[0]), centroids[u]) for u in VOICES))
                   for v in VOICES for c in inputs[v]]
    real_word = [float(nearest_word(c[0], v) == w) for v in VOICES for c, w in zip(inputs[v], words)]
    print(f"voices: held-out real clips nearest their own voice {statistics.mean(real_closer):.3f}, "
          f"their own word {statistics.mean(real_word):.3f}", flush=True)

    generate = clips_of(run, window, args)

    rows = []
    for method in ("bridge", "sdedit"):
        for strength in args.strengths:
            closer, kept, start = [], [], time.perf_counter()
            for source in VOICES:
                for target in VOICES:
                    if target == source:
                        continue
                    out = converted(generate, inputs[source], names.index(source), names.index(target), method,
                                    strength, args)
                    for wave, word in zip(out, words):
                        e = embed(wave[0])
                        closer.append(float(np.dot(e, centroids[target]) > np.dot(e, centroids[source])))
                        kept.append(float(nearest_word(wave[0], target) == word))
            row = {"method": method, "strength": strength, "closer_to_target": mean_se(closer),
                   "word_kept": mean_se(kept), "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"{method:>7} strength {strength:4.2f}  closer to the target voice {row['closer_to_target'][0]:.3f} ± "
                  f"{row['closer_to_target'][1]:.3f}  word kept {row['word_kept'][0]:.3f} ± {row['word_kept'][1]:.3f}",
                  flush=True)
    return {"real_nearest_own_voice": statistics.mean(real_closer), "real_word_recognised": statistics.mean(real_word),
            "rows": rows, "words": len(words), "voices": list(VOICES)}


def registers(args) -> dict:
    from diffkit.text import grammar, pipeline

    run_dir = Path(args.text_run)
    if not (run_dir / "model.safetensors").exists():
        import subprocess

        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diffkit", "train", "text", "--class-cond", "--seq-len", "16", "--steps",
                        str(args.text_steps), "--out", str(run_dir), "-q"], check=True)
        print(f"trained {run_dir} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    run, tok = pipeline.load(str(run_dir))
    names = run.config.data.classes
    lines, labels = grammar.labelled_lines(args.per_class * 20, seed=10**9)
    inputs = {k: [line for line, label in zip(lines, labels) if label == k][: args.per_class * 5]
              for k in range(len(names))}

    def generate(labels, sampler="ddpm", clamp=True, start=None, source_labels=None):
        sampling = SamplingSpec(sampler=sampler, steps=args.steps, seed=args.seed)
        ids = pipeline.generate(run, len(labels), sampling, clamp=clamp, labels=labels, guidance=args.guidance,
                                start=start, source_labels=source_labels)
        return [tok.decode(row) for row in ids]

    # The floor of target accuracy: the share of the model's own samples (ddpm, clamped, as `sample text`
    # draws them) of each class that its register accepts.
    sampled = []
    for k, name in enumerate(names):
        texts = generate(torch.full((args.per_class * 5,), k), clamp=True)
        sampled += [grammar.parse(t, name) is not None for t in texts]
    print(f"registers: {statistics.mean(sampled):.3f} of the model's samples accepted by their class's register",
          flush=True)
    rows = []
    for method in ("bridge", "sdedit"):
        for strength in args.strengths:
            accepted, kept, slots = [], [], []
            for source, texts in inputs.items():
                start = run.model.embed(pipeline.encode_lines(tok, texts, 16, "held-out", strict=True).to(run.device))
                for target in range(len(names)):
                    if target == source:
                        continue
                    # each as `style text` runs it: SDEdit with ddpm and clamping, the bridge with --sampler unclamped
                    if method == "bridge":
                        out = generate(torch.full((len(texts),), target), args.sampler, clamp=False,
                                       start=Bridge(start, strength), source_labels=torch.full((len(texts),), source))
                    else:
                        out = generate(torch.full((len(texts),), target), start=Noised(start, strength))
                    for before, after in zip(texts, out):
                        parsed = grammar.parse(after, names[target])
                        accepted.append(parsed is not None)
                        said = grammar.parse(before, names[source])
                        kept.append(parsed is not None and parsed == said)
                        slots += [parsed is not None and parsed[k] == said[k] for k in grammar.SLOTS]
            row = {"method": method, "strength": strength, "target_accepted": mean_se([float(a) for a in accepted]),
                   "slots_kept": mean_se([float(k) for k in kept]), "each_slot_kept": mean_se([float(k) for k in slots])}
            rows.append(row)
            print(f"{method:>7} strength {strength:4.2f}  accepted by the target register {row['target_accepted'][0]:.3f} ± "
                  f"{row['target_accepted'][1]:.3f}  and every slot kept {row['slots_kept'][0]:.3f} ± "
                  f"{row['slots_kept'][1]:.3f}, each slot {row['each_slot_kept'][0]:.3f}", flush=True)
    return {"samples_accepted": statistics.mean(sampled), "rows": rows, "inputs": sum(map(len, inputs.values()))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="voices,shapes,roundtrip,tones,text")
    parser.add_argument("--per-class", type=int, default=10, help="inputs of each class")
    parser.add_argument("--strengths", default="0.5,0.75,1")
    parser.add_argument("--sampler", default="dpm++2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance of both methods")
    parser.add_argument("--inversion-iterations", type=int, default=0, help="the bridge's, with --sampler ddim")
    parser.add_argument("--demo-run", default=str(RESULTS / "restore-demo"), help="made by bench/restore.py")
    parser.add_argument("--audio-run", default=str(RESULTS / "restore-tones"), help="made by bench/restore.py")
    parser.add_argument("--voice-run", default=str(RESULTS / "convert-voices"), help="trained here if missing")
    parser.add_argument("--voice-steps", type=int, default=930, help="bench/audio.py's budget")
    parser.add_argument("--text-run", default=str(RESULTS / "convert-registers"), help="trained here if missing")
    parser.add_argument("--text-steps", type=int, default=2000, help="bench/text.py's budget")
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
    report = {"threads": args.threads, "sampler": args.sampler, "steps": args.steps, "guidance": args.guidance,
              "inversion_iterations": args.inversion_iterations}
    if "voices" in args.parts:
        try:
            report["voices"] = voices(args)
        except (FileNotFoundError, ImportError) as missing:  # no espeak-ng, or no bench extra
            print(f"voices: skipped, {missing} is missing (apt-get install espeak-ng; pip install -e '.[bench]')")
    if "shapes" in args.parts:
        report["shapes"] = shapes(args)
    if "roundtrip" in args.parts:
        report["round_trip"] = round_trips(args)
    if "tones" in args.parts:
        report["tones"] = tones(args)
    if "text" in args.parts:
        report["text"] = registers(args)
    # Parts run separately add up (read again now: another run may have written meanwhile).
    out.write_text(json.dumps({**(json.loads(out.read_text()) if out.exists() else {}), **report}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
