"""`diffkit train|sample|inpaint|style image`: the image modality's commands (eval and restore have modules
of their own).

Only typer at import time; torch, Pillow and the core load inside the commands.
"""

from typing import Annotated, Optional

import typer

from diffkit.image import pipeline
from diffkit.options import (Column, Common, FromClass, Guidance, InversionIterations, Label, LabelColumn, Preset,
                             Sampling, Signing, Strength, StyleMethod, Training, TrajectoryPath, class_labels, style_plan,
                             with_defaults, with_options)


Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train image`.")]
Output = Annotated[str, typer.Option("--output", "-o", help="PNG file, a folder (each result under a new name), or - for stdout.")]
Input = Annotated[str, typer.Option("--input", "-i", help="Image file (PNG, JPEG, WebP, BMP), or - for stdin.")]

ImageTraining = with_defaults(Training, **pipeline.TRAINING)


@with_options(ImageTraining, Common)
def train(
    data: Annotated[str, typer.Option(help="Image folder (sub-folders = classes), or builtin:shapes / builtin:digits.")] = "builtin:shapes",
    image_size: Annotated[str, typer.Option(help="H or HxW; a multiple of the U-Net's down-sampling.")] = "32",
    channels: Annotated[Optional[int], typer.Option(help="1 (grey), 3 (RGB) or 4 (RGBA); default: the data's.")] = None,
    crop: Annotated[str, typer.Option(help="center or random crops after resizing.")] = "center",
    flip: Annotated[bool, typer.Option("--flip", help="Random left-right flips.")] = False,
    class_cond: Annotated[bool, typer.Option("--class-cond", help="Condition on class labels (enables --guidance).")] = False,
    column: Column = None,
    label_column: LabelColumn = None,
    label_dropout: Annotated[float, typer.Option(help="Share of labels dropped for classifier-free guidance.")] = 0.1,
    preset: Preset = "small",
    width: Annotated[Optional[int], typer.Option(help="U-Net channels at full resolution; default: the preset's.")] = None,
    mults: Annotated[Optional[str], typer.Option(help="Channel multiplier per level, comma-separated; default: the preset's.")] = None,
    blocks: Annotated[Optional[int], typer.Option(help="Residual blocks per level; default: the preset's.")] = None,
    attention: Annotated[Optional[str], typer.Option(help="Resolutions with self-attention, comma-separated; default: 16 where the U-Net has that level.")] = None,
    dropout: Annotated[float, typer.Option(help="Dropout in the residual blocks.")] = 0.0,
    *, training: ImageTraining, common: Common,
):
    """Train a U-Net on images; writes config.json, model.safetensors, state/, metrics.jsonl, previews/."""
    pipeline.train(training, data=data, image_size=image_size, channels=channels, crop=crop, flip=flip,
                   class_cond=class_cond, column=column, label_column=label_column, label_dropout=label_dropout,
                   preset=preset, width=width, mults=mults, blocks=blocks, attention=attention, dropout=dropout,
                   device=common.device, quiet=common.quiet, json_out=common.json)


@with_options(Common, Sampling, Signing)
def sample(run: Model, n: Annotated[int, typer.Option("-n", help="How many images.")] = 16,
           label: Label = None, guidance: Guidance = 1.0,
           output: Annotated[str, typer.Option("--output", "-o", help="A folder (one PNG each, paths on stdout), a .png grid, or - (a PNG grid on stdout).")] = "-",
           trajectory_path: TrajectoryPath = None, *, common: Common, sampling: Sampling, signing: Signing):
    """Draw new images; the same seed gives the same images."""
    from diffkit.errors import DiffkitError
    from diffkit.image import codec
    from diffkit.io import Destination
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target, write_trajectory

    if n < 1:
        raise DiffkitError(f"-n must be at least 1, got {n}")
    destination = Destination.of(output, ".png", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    images = pipeline.images(loaded, n, sampling, quiet=common.quiet, labels=class_labels(loaded, label, n, guidance), guidance=guidance,
                     trajectory=trajectory)
    stem = f"seed{sampling.seed}"
    stamp = provenance_of(loaded, "sample image", sampling, label=label, guidance=guidance)
    if trajectory is not None:
        write_trajectory(trajectory_path, codec.trajectory_png(trajectory.rows()), stamp)
    destination = destination.stamped(stamp)
    if destination.kind == "folder":
        destination.write_each(map(codec.png, images), stem, common.json, seed=sampling.seed, label=label)
    else:
        destination.write(codec.png(codec.grid(images)), stem, common.json, n=n, seed=sampling.seed)


def _read_mask(mask: str, size: tuple[int, int], resize_mask: bool):
    """The user's mask as bool [H, W], True = regenerate: a grey image (white = regenerate) or box:x,y,w,h."""
    import torch

    from diffkit.errors import DiffkitError
    from diffkit.image import codec

    h, w = size
    if mask.startswith("box:"):
        try:
            x, y, bw, bh = (int(v) for v in mask[4:].split(","))
        except ValueError:
            raise DiffkitError(f"--mask {mask!r}: expected box:x,y,w,h in pixels") from None
        if bw < 1 or bh < 1 or x < 0 or y < 0 or x + bw > w or y + bh > h:
            raise DiffkitError(f"--mask {mask!r}: the box must lie inside the {w}x{h} input")
        regenerate = torch.zeros(h, w, dtype=torch.bool)
        regenerate[y:y + bh, x:x + bw] = True
        return regenerate
    grey = codec.read_image(mask, 1)
    if tuple(grey.shape[1:]) != (h, w):
        if not resize_mask:
            raise DiffkitError(f"{mask}: mask is {grey.shape[2]}x{grey.shape[1]}, the input {w}x{h} "
                               "(pass --resize-mask to scale it)")
        grey = codec.resize(grey, size, nearest=True)
    return grey[0] >= 128


@with_options(Common, Sampling, Signing)
def inpaint(run: Model, input: Input,
            mask: Annotated[str, typer.Option(help="Grey image of the input's size, white = regenerate, black = keep; or box:x,y,w,h.")],
            resize_mask: Annotated[bool, typer.Option("--resize-mask", help="Scale a mask of another size to the input's.")] = False,
            jump: Annotated[int, typer.Option(help="RePaint jump length in steps.")] = 10,
            resample: Annotated[int, typer.Option(help="RePaint repeats of each jump (1 = none).")] = 10,
            label: Label = None, guidance: Guidance = 1.0, output: Output = "-", trajectory_path: TrajectoryPath = None,
            *, common: Common, sampling: Sampling, signing: Signing):
    """Regenerate the white part of the mask; every black-mask pixel keeps the input's value exactly."""
    from diffkit.core.editing import Inpaint
    import torch

    from diffkit.image import codec
    from diffkit.io import Destination, result_stem
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target, write_trajectory

    destination = Destination.of(output, ".png", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    spec = loaded.config.data
    size = spec.image_size
    image = codec.read_image(input, spec.channels)
    regenerate = _read_mask(mask, tuple(image.shape[1:]), resize_mask)
    # Model size: shrink the mask so a pixel is regenerated where any of its area is.
    small = codec.resize((regenerate[None] * 255).to(torch.uint8), size, nearest=False)[0] > 0
    keep = (~small).float()[None, None]
    result = pipeline.images(loaded, 1, sampling, quiet=common.quiet, labels=class_labels(loaded, label, 1, guidance),
                             guidance=guidance, condition=Inpaint(codec.resize(image, size)[None], keep, jump, resample),
                             trajectory=trajectory)[0]
    result = torch.where(regenerate[None], codec.resize(result, tuple(image.shape[1:])), image)
    stamp = provenance_of(loaded, "inpaint image", sampling, input, label=label, guidance=guidance, mask=mask)
    if trajectory is not None:
        write_trajectory(trajectory_path, codec.trajectory_png(trajectory.rows()), stamp)
    destination.stamped(stamp).write(codec.png(result), result_stem(input, "inpainted"), common.json, input=input)


@with_options(Common, Sampling, Signing)
def style(run: Model, input: Input, strength: Strength = None, label: Label = None, guidance: Guidance = 1.0,
          from_class: FromClass = None, method: StyleMethod = None, inversion_iterations: InversionIterations = 0,
          output: Output = "-", trajectory_path: TrajectoryPath = None,
          *, common: Common, sampling: Sampling, signing: Signing):
    """Redraw the input in the model's style: partially noised and regenerated (SDEdit), or converted from
    --from-class to --class by the bridge (DDIB: what the classes share is kept, what tells them apart
    changes)."""
    from diffkit.image import codec
    from diffkit.io import Destination, result_stem
    from diffkit.runs import provenance_of, style_start
    from diffkit.trajectory import trajectory_target, write_trajectory

    destination = Destination.of(output, ".png", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    strength, source = style_plan(loaded, method, from_class, label, strength, 0.6, guidance)
    spec = loaded.config.data
    image = codec.read_image(input, spec.channels)
    if strength > 0:  # 0 is exactly the input, at its own size
        start = style_start(codec.resize(image, spec.image_size)[None], strength, source, inversion_iterations)
        result = pipeline.images(loaded, 1, sampling, quiet=common.quiet, labels=class_labels(loaded, label, 1, guidance),
                                 guidance=guidance, start=start, source_labels=class_labels(loaded, source, 1, guidance),
                                 trajectory=trajectory)[0]
        image = codec.resize(result, tuple(image.shape[1:]))
    stamp = provenance_of(loaded, "style image", sampling, input, label=label, guidance=guidance, strength=strength,
                          from_class=from_class)
    if trajectory is not None and trajectory.runs:  # strength 0 takes no steps
        write_trajectory(trajectory_path, codec.trajectory_png(trajectory.rows()), stamp)
    destination.stamped(stamp).write(codec.png(image), result_stem(input, "styled"), common.json, input=input)


def describe(run: str, config) -> dict:
    """`diffkit info` for an image run."""
    from diffkit.runs import summary

    spec = config.data
    return summary(run, config, pipeline.build, (spec.channels, *spec.image_size),
                   image_size="x".join(map(str, spec.image_size)),
                   channels=spec.channels, classes=", ".join(spec.classes) or "none")


from diffkit.image.evaluate import evaluate  # noqa: E402  (typer only at import, like this module)
from diffkit.image.prepare import prepare  # noqa: E402
from diffkit.image.restore import restore  # noqa: E402

COMMANDS = {"prepare": prepare, "train": train, "sample": sample, "inpaint": inpaint, "style": style, "restore": restore, "eval": evaluate}
