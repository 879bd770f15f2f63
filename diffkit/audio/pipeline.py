"""The audio modality's library: training a run, its network, loading it, drawing clips from it (plain
sampling, or any edit of diffkit.core.sample) as float [n, 1, length], inpainting a clip of any length a
model window at a time, and writing a denoising trajectory; restoration.py and evaluation.py hold the
rest. The commands in commands.py, restore.py and evaluate.py are written over these.

Only the standard library (and diffkit.config) at import time; torch and the core load inside the
functions.
"""

import functools

from diffkit import config


PREVIEW_COUNT = 4
TRAINING = {"steps": 3000, "batch_size": 8, "lr": 1e-3, "lr_decay": "cosine", "prediction": "v",
            "weighting": "min_snr", "ema_decay": 0.995, "checkpoint_every": 500}
# --preset: U-Net widths at full rate, multipliers per level and blocks per level.
PRESETS = {"tiny": {"width": 8, "mults": "1,2,4,8", "blocks": 1}, "small": {"width": 16, "mults": "1,2,4,8,8", "blocks": 2},
           "base": {"width": 32, "mults": "1,2,4,8,8", "blocks": 3}}


# train_spec(out, **settings): a diffkit.config.TrainSpec into `out` with the audio defaults
# (those `diffkit train audio` starts from), `settings` in their place.
train_spec = functools.partial(config.train_spec, TRAINING)


def train(training, *, data: str = "builtin:tones", sample_rate: int = 16000, seconds: float = 1.0,
          normalise: str = "peak", class_cond: bool = False, column: str | None = None, label_column: str | None = None,
          label_dropout: float = 0.1, preset: str = "small", width: int | None = None, mults: str | None = None,
          factor: int = 4, blocks: int | None = None, dilations: str = "1,3", attention: int = 1, dropout: float = 0.0,
          device: str = "auto", quiet: bool = True, json_out: bool = False):
    """Train a 1-D U-Net on waveforms as `training` (a diffkit.config.TrainSpec) says, into the run
    directory training.out: config.json, model.safetensors, state/, metrics.jsonl, previews/. `data`: a
    sound folder (sub-folders are classes), hf:PATH or builtin:tones / drums, read at `sample_rate` in clips
    of `seconds`, each file's loudness by `normalise` (peak, rms or none); the network's sizes are the
    `preset`'s, each one given in its place (`mults` and `dilations` like "1,3"; `attention`: how many of
    the coarsest levels have it). Returns the EMA network."""
    import dataclasses
    from pathlib import Path

    from diffkit.audio import codec
    from diffkit.audio.data import NORMALISE, open_data
    from diffkit.core.nn import UNetConfig
    from diffkit.audio.config import AudioData
    from diffkit.config import int_list, preset_sizes
    from diffkit.core.spec import SamplingSpec
    from diffkit.errors import SettingError, choose
    from diffkit.io import write_output
    from diffkit.runs import Run, batches, schedule_of, start_run, train_run

    def make_config():
        chosen = preset_sizes(preset, PRESETS, width=width, mults=mults, blocks=blocks)
        levels = int_list("mults", chosen["mults"])
        if not 0 <= label_dropout < 1:
            raise SettingError("label_dropout", f" must be in [0, 1), got {label_dropout}")
        if not 0 < seconds <= 600:
            raise SettingError("seconds", f" must be in (0, 600], got {seconds}")
        if not 0 <= attention <= len(levels):
            raise SettingError("attention", f" must be in 0..{len(levels)} (levels with attention), got {attention}")
        choose("normalisation", normalise, NORMALISE)
        diffusion = training.diffusion()
        model = UNetConfig(dims=1, in_channels=1, out_channels=2 if diffusion.variance == "learned" else 1,
                           channels=chosen["width"], mults=levels, blocks=chosen["blocks"], factor=factor,
                           dilations=int_list("dilations", dilations),
                           attention=tuple(range(len(levels) - attention, len(levels))), dropout=dropout,
                           self_cond=diffusion.self_cond)
        length = round(seconds * sample_rate)
        window = padded(length, model.downsampling)
        dataset = open_data(data, sample_rate, window, seed=training.seed, how=normalise, class_cond=class_cond,
                            column=column, label_column=label_column)
        classes = dataset.classes if class_cond else []
        model = dataclasses.replace(model, classes=len(classes))
        return {"model": model.to_json(), "diffusion": diffusion,
                "data": AudioData(data, sample_rate, length, window, normalise, tuple(classes), column, label_column,
                                  label_dropout if class_cond else 0.0)}, dataset

    def reopen(config):
        spec = config.data
        return open_data(spec.source, spec.sample_rate, spec.window, seed=training.seed,
                         how=spec.normalise, class_cond=bool(spec.classes), column=spec.column,
                         label_column=spec.label_column)

    config, dataset = start_run(training, "audio", make_config, reopen)
    spec = config.data
    classes = len(spec.classes)
    batch_at = batches(dataset, training, lambda waves: waves, classes, spec.label_dropout)
    previews = Path(training.out) / "previews"

    def preview(ema, step):
        import torch

        run = Run(Path(training.out), config, ema, schedule_of(config), next(ema.parameters()).device)
        labels = torch.arange(PREVIEW_COUNT) % classes if classes else None
        clips = waves(run, PREVIEW_COUNT, spec.length, SamplingSpec(), labels=labels)
        previews.mkdir(exist_ok=True)
        for i, wave in enumerate(clips):
            write_output(str(previews / f"step-{step:07d}-{i}.wav"), codec.wav(wave, spec.sample_rate))
        write_output(str(previews / f"step-{step:07d}.png"), codec.spectrogram_png(clips, spec.sample_rate))

    return train_run(config, build, batch_at, training, device=device, quiet=quiet, json_out=json_out, preview=preview,
                     bits=16)


def build(config: dict):
    from diffkit.core.nn import UNet, UNetConfig

    return UNet(UNetConfig(**config.model))


def padded(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def load(path: str, device: str = "auto"):
    from diffkit.runs import load_run

    return load_run(path, "audio", build, device)


def waves(run, n: int, length: int, sampling, *, quiet: bool = True, labels=None, guidance: float = 1.0,
          start=None, source_labels=None, condition=None, trajectory=None):
    """n clips of `length` samples from a run, float [n, 1, length] on CPU, from a `start` (core.editing's
    Noised or Bridge, from classes `source_labels`) and under a `condition` (Inpaint, or Restore with its
    observation made on padded windows), their clips [n, 1, length] too, padded like the clips."""
    import dataclasses

    import torch.nn.functional as F

    from diffkit.runs import generate

    window = padded(length, run.model.config.downsampling)

    def pad(x):  # padding is free to generate (mask 0) and starts from silence
        return F.pad(x, (0, window - length)).to(run.device)

    if sampling.clip is None:  # waveforms live in [-1, 1]
        sampling = dataclasses.replace(sampling, clip=1.0)
    x = generate(run, (n, 1, window), sampling, quiet=quiet, labels=labels, guidance=guidance,
                 start=None if start is None else start.map(pad), source_labels=source_labels,
                 condition=None if condition is None else condition.map(pad, pad), trajectory=trajectory)
    return x[..., :length].float().cpu()


def write_trajectory(path: str, trajectory, rate: int, stamp: dict) -> None:
    """`--trajectory`: the spectrogram strip at `path`, and beside it a WAV per sample of its steps."""
    from pathlib import Path

    from diffkit.audio import codec
    from diffkit.trajectory import write_trajectory as write

    picture, waves = codec.trajectory_files(trajectory.rows(), rate)
    write(path, picture, stamp)
    for i, data in enumerate(waves):
        write(f"{Path(path).with_suffix('')}-{i}.wav", data, stamp)


def inpaint_windows(wave, regenerate, window: int, fill):
    """Regenerate the True samples of a clip of any length, a model window at a time.

    `fill(known [W], keep [W]) -> [W]` inpaints one window. Each window starts a quarter window before the
    first sample still to do, so it sees finished audio on its left; unless it reaches the end, only its
    first three quarters are kept, so the next window sees context on both sides of the seam."""
    out, pending = wave.clone(), regenerate.clone()
    length = len(wave)
    while pending.any():
        first = int(pending.nonzero()[0])
        start = max(0, min(first - window // 4, length - window))
        span = slice(start, start + window)
        result = fill(out[span], ~pending[span])
        end = start + window if start + window >= length else start + 3 * window // 4
        done = pending.clone()
        done[:start], done[end:] = False, False
        out[done] = result[done[span]]
        pending &= ~done
    return out
