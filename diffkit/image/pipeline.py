"""The image modality's library: training a run, its network, loading it, and drawing images from it
(plain sampling, or any edit of diffkit.core.sample: inpainting, SDEdit, the bridge, restoration), as
uint8 [n, C, H, W]; restoration.py and evaluation.py hold the rest. The commands in commands.py,
restore.py and evaluate.py are written over these.

Only the standard library (and diffkit.config) at import time; torch and the core load inside the
functions.
"""

import functools

from diffkit import config


PREVIEW_COUNT = 16
# v-prediction, min-SNR weighting and self-conditioning by default: each won on MNIST at equal training
# time, self-conditioning on every training seed (docs/measurements/images.md).
TRAINING = {"prediction": "v", "weighting": "min_snr", "self_cond": True}
# --preset: U-Net widths at full resolution, multipliers per level and blocks per level.
PRESETS = {"tiny": {"width": 32, "mults": "1,2,2", "blocks": 1}, "small": {"width": 64, "mults": "1,2,2", "blocks": 2},
           "base": {"width": 128, "mults": "1,2,2,2", "blocks": 2}}


# train_spec(out, **settings): a diffkit.config.TrainSpec into `out` with the image defaults
# (those `diffkit train image` starts from), `settings` in their place.
train_spec = functools.partial(config.train_spec, TRAINING)


def attention_levels(resolutions: str | None, size: tuple[int, int], levels: int, factor: int) -> tuple:
    """The levels whose resolution (shorter side) the user listed; a listed one the U-Net lacks is an error."""
    from diffkit.errors import SettingError

    have = [min(size) // factor**level for level in range(levels)]
    if resolutions is None:
        return tuple(level for level, resolution in enumerate(have) if resolution == 16)
    try:
        wanted = {int(r) for r in resolutions.split(",") if r.strip()}
    except ValueError:
        raise SettingError("attention", f": expected resolutions like 16 or 16,8, got {resolutions!r}") from None
    if not wanted <= set(have):
        raise SettingError("attention", f" {resolutions}: this U-Net's levels have resolutions "
                           f"{', '.join(map(str, have))}")
    return tuple(level for level, resolution in enumerate(have) if resolution in wanted)


def train(training, *, data: str = "builtin:shapes", image_size: str = "32", channels: int | None = None,
          crop: str = "center", flip: bool = False, class_cond: bool = False, column: str | None = None,
          label_column: str | None = None, label_dropout: float = 0.1, preset: str = "small", width: int | None = None,
          mults: str | None = None, blocks: int | None = None, attention: str | None = None, dropout: float = 0.0,
          device: str = "auto", quiet: bool = True, json_out: bool = False):
    """Train a U-Net on images as `training` (a diffkit.config.TrainSpec) says, into the run directory
    training.out (or on in it, training.resume): config.json, model.safetensors, state/, metrics.jsonl,
    previews/. `data`: an image folder (sub-folders are classes), hf:PATH or builtin:shapes / digits;
    `image_size` "H" or "HxW"; the network's sizes are the `preset`'s, each one given in its place
    (`mults` like "1,2,2"; `attention`: resolutions like "16,8"). Returns the EMA network."""
    from pathlib import Path

    import torch

    from diffkit.core.nn import UNetConfig
    from diffkit.config import int_list, preset_sizes
    from diffkit.core.spec import SamplingSpec
    from diffkit.errors import SettingError
    from diffkit.image import codec
    from diffkit.image.config import ImageData
    from diffkit.image.data import open_data, parse_size
    from diffkit.runs import batches, start_run, train_run

    def make_config():
        size = parse_size(image_size)
        chosen = preset_sizes(preset, PRESETS, width=width, mults=mults, blocks=blocks)
        levels = int_list("mults", chosen["mults"])
        if not 0 <= label_dropout < 1:
            raise SettingError("label_dropout", f" must be in [0, 1), got {label_dropout}")
        multiple = 2 ** (len(levels) - 1)
        if any(s % multiple for s in size):
            raise SettingError("image_size", f" {image_size}: each side must be a multiple of {multiple} "
                               f"for {len(levels)} levels")
        diffusion = training.diffusion()
        dataset = open_data(data, size, channels, seed=training.seed, crop=crop, flip=flip, class_cond=class_cond,
                            column=column, label_column=label_column)
        out_channels = dataset.channels * (2 if diffusion.variance == "learned" else 1)
        model = UNetConfig(dims=2, in_channels=dataset.channels, out_channels=out_channels, channels=chosen["width"],
                           mults=tuple(levels), blocks=chosen["blocks"], attention=attention_levels(attention, size, len(levels), 2),
                           dropout=dropout, classes=len(dataset.classes) if class_cond else 0,
                           self_cond=diffusion.self_cond)
        return {"model": model.to_json(), "diffusion": diffusion,
                "data": ImageData(data, tuple(size), dataset.channels, tuple(dataset.classes) if class_cond else (), crop,
                                  flip, column, label_column, label_dropout if class_cond else 0.0)}, dataset

    def reopen(config):
        spec = config.data
        return open_data(spec.source, spec.image_size, spec.channels, seed=training.seed,
                         crop=spec.crop, flip=spec.flip, class_cond=bool(spec.classes),
                         column=spec.column, label_column=spec.label_column)

    config, dataset = start_run(training, "image", make_config, reopen)
    spec = config.data
    classes = len(spec.classes)
    batch_at = batches(dataset, training, codec.to_model, classes, spec.label_dropout)

    previews = Path(training.out) / "previews"

    def preview(ema, step):
        from diffkit.io import write_output
        from diffkit.runs import Run, schedule_of

        run = Run(Path(training.out), config, ema, schedule_of(config), next(ema.parameters()).device)
        labels = torch.arange(PREVIEW_COUNT) % classes if classes else None
        drawn = images(run, PREVIEW_COUNT, SamplingSpec(), labels=labels)
        previews.mkdir(exist_ok=True)
        write_output(str(previews / f"step-{step:07d}.png"), codec.png(codec.grid(drawn)))

    return train_run(config, build, batch_at, training, device=device, quiet=quiet, json_out=json_out, preview=preview,
                     bits=8)


def build(config: dict):
    from diffkit.core.nn import UNet, UNetConfig

    if "diffusers" in config.model:  # imported by `diffkit import diffusers`
        from diffkit.image.diffusers import DiffusersUNet

        return DiffusersUNet(config.model["diffusers"])
    return UNet(UNetConfig(**config.model))


def load(path: str, device: str = "auto"):
    from diffkit.runs import load_run

    return load_run(path, "image", build, device)


def images(run, n: int, sampling, *, quiet: bool = True, labels=None, guidance: float = 1.0, start=None,
           source_labels=None, condition=None, trajectory=None):
    """n images from a run as uint8 [n, C, H, W], from a `start` (core.editing's Noised or Bridge, from
    classes `source_labels`) and under a `condition` (Inpaint, or Restore with its observation in model
    units), their images in uint8 too; a `trajectory` records every step."""
    import dataclasses

    from diffkit.image import codec
    from diffkit.runs import generate

    def to_model(x):
        return codec.to_model(x).to(run.device)

    if sampling.clip is None:  # pixel data live in [-1, 1]
        sampling = dataclasses.replace(sampling, clip=1.0)
    shape = (n, run.config.data.channels, *run.config.data.image_size)
    return codec.to_uint8(generate(run, shape, sampling, quiet=quiet, labels=labels, guidance=guidance,
                                   start=None if start is None else start.map(to_model), source_labels=source_labels,
                                   condition=None if condition is None else condition.map(to_model),
                                   trajectory=trajectory))