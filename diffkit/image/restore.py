"""`diffkit restore image`: the options of image restoration (diffkit.image.restoration) and the command
over it."""

from typing import Annotated

import typer

from diffkit.core.spec import DEFAULT_METHOD
from diffkit.image.restoration import check_size, parse_task, restore_images
from diffkit.options import (Common, Guidance, Label, Method, RestoreSampling, Signing, TrajectoryPath, class_labels,
                             with_options)

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train image`.")]
Input = Annotated[str, typer.Option("--input", "-i", help="The degraded image (PNG, JPEG, WebP, BMP) at its own size, or - for stdin.")]
Output = Annotated[str, typer.Option("--output", "-o", help="PNG file, a folder (each result under a new name), or - for stdout.")]
Task = Annotated[str, typer.Option(help="What happened to the image, in order, comma-separated: upscale:FACTOR, colorize, deblur:SIGMA_PX, denoise:SIGMA (0..1 scale).")]


@with_options(Common, RestoreSampling, Signing)
def restore(run: Model, input: Input, task: Task, method: Method = DEFAULT_METHOD,
            jump: Annotated[int, typer.Option(help="RePaint jump length in steps (with --resample).")] = 5,
            resample: Annotated[int, typer.Option(help="Repeats of each jump (RePaint's time travel; 1 = none).")] = 1,
            batch_size: Annotated[int, typer.Option(help="Tiles per network call.")] = 16,
            label: Label = None, guidance: Guidance = 1.0, output: Output = "-", trajectory_path: TrajectoryPath = None,
            *, common: Common, sampling: RestoreSampling, signing: Signing):
    """Restore a degraded image: super-resolution, colourisation, deblurring, denoising, or a combination.
    Images larger than the model are restored in overlapping tiles."""
    from diffkit.core.observe import METHODS
    from diffkit.errors import DiffkitError, choose
    from diffkit.image import codec
    from diffkit.image import pipeline
    from diffkit.io import Destination, result_stem
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target, write_trajectory

    choose("restoration method", method, METHODS)
    if batch_size < 1 or jump < 1 or resample < 1:
        raise DiffkitError("--batch-size, --jump and --resample must be at least 1")
    destination = Destination.of(output, ".png", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    spec = loaded.config.data
    degradation = parse_task(task, spec)
    degraded = codec.read_image(input, 1 if degradation.grey else spec.channels)
    check_size(degraded, degradation, spec.image_size, input)
    labels = class_labels(loaded, label, 1, guidance)
    restored, error, rms = restore_images(loaded, degraded, degradation, sampling, quiet=common.quiet, method=method,
                                          labels=labels, guidance=guidance, jump=jump, resample=resample,
                                          batch_size=batch_size, trajectory=trajectory)
    stamp = provenance_of(loaded, "restore image", sampling, input, label=label, guidance=guidance, task=task,
                          method=method)
    if trajectory is not None:
        write_trajectory(trajectory_path, codec.trajectory_png(trajectory.rows()), stamp)
    destination.stamped(stamp).write(codec.png(restored), result_stem(input, "restored"), common.json,
                                     input=input, task=task, method=method, consistency_error=error,
                                     consistency_rms=rms)
