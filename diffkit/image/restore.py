"""`diffkit restore image` and `diffkit eval image --restore`: super-resolution, colourisation,
deblurring and denoising with a trained model, through the core's observations (core.observe).

A task names what happened to the image, in order: `upscale:4` (averaged over 4x4 blocks), `colorize`
(turned grey), `deblur:SIGMA_PX` (a Gaussian blur), `denoise:SIGMA` (noise of that standard deviation on
the 0..1 intensity scale). Inputs come at their degraded size; an image larger than the model is restored
in overlapping tiles cross-faded together.
"""

from typing import Annotated, NamedTuple

import typer

from diffkit.core.spec import SamplingSpec
from diffkit.image.config import ImageData
from diffkit.options import (Common, DEFAULT_METHOD, Guidance, Label, Method, RestoreSampling, Signing, TrajectoryPath,
                             class_labels, task_list, task_number, with_options)

TASKS = {"upscale": "FACTOR", "colorize": None, "deblur": "SIGMA_PX", "denoise": "SIGMA"}
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")
# 8-bit files round every value: noise of a uniform rounding error, 1/255/√12 of the 0..1 scale, in model units
# (which span 2). Modelling it keeps the inverse of a blur from amplifying the rounding without bound.
QUANTISATION = 2 / 255 / 12**0.5

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train image`.")]
Input = Annotated[str, typer.Option("--input", "-i", help="The degraded image (PNG, JPEG, WebP, BMP) at its own size, or - for stdin.")]
Output = Annotated[str, typer.Option("--output", "-o", help="PNG file, a folder (each result under a new name), or - for stdout.")]
Task = Annotated[str, typer.Option(help="What happened to the image, in order, comma-separated: upscale:FACTOR, colorize, deblur:SIGMA_PX, denoise:SIGMA (0..1 scale).")]


class Degradation(NamedTuple):
    operators: list  # core.observe operators, applied in order
    noise: float  # the noise on y that --task names, in model units
    factor: int  # output side / input side
    grey: bool  # the input has one channel

    @property
    def sigma(self) -> float:
        """The noise on y that restoration assumes: the task's, and for a blur at least the file's rounding,
        which its inverse would otherwise amplify without bound (the other operators' pseudo-inverses are
        bounded, so their projection meets y to within the rounding)."""
        from diffkit.core.operators import GaussianBlur

        if any(isinstance(op, GaussianBlur) for op in self.operators):
            return max(self.noise, QUANTISATION)
        return self.noise

    def operator(self):
        from diffkit.core.operators import compose

        return compose(self.operators)


def parse_task(text: str, spec: ImageData) -> Degradation:
    """The degradation a --task names, checked against the model (its size, its channels)."""
    from diffkit.core.operators import AveragePool, ChannelMix, GaussianBlur
    from diffkit.errors import DiffkitError

    size, channels = spec.image_size, spec.channels
    operators, sigma, factor, grey = [], 0.0, 1, False
    for name, arg in task_list(text, TASKS):
        if name == "upscale":
            factor = int(task_number(name, arg, 2, min(size), integer=True))
            if any(side % factor for side in size):
                raise DiffkitError(f"--task upscale:{factor}: the model's {size[0]}x{size[1]} is not a multiple of {factor}")
            operators.append(AveragePool((factor, factor)))
        elif name == "colorize":
            if channels != 3:
                raise DiffkitError(f"--task colorize needs an RGB model; this one has {channels} channel(s)")
            operators.append(ChannelMix(LUMA))
            grey = True
        elif name == "deblur":
            operators.append(GaussianBlur(task_number(name, arg, 0.1, min(size) / 4), axes=2))
        else:
            sigma = 2 * task_number(name, arg, 1e-3, 1.0)
    return Degradation(operators, sigma, factor, grey)


def restore_images(run, degraded, task: Degradation, sampling: SamplingSpec, *, quiet: bool = True, method: str,
                   labels=None, guidance: float = 1.0, jump: int = 5, resample: int = 1, batch_size: int = 16,
                   trajectory=None):
    """Restore one degraded image (uint8 [C_in, h, w], at least the model's size once up-scaled) to uint8
    [C, h·f, w·f] in tiles of the model's size; returns it with the consistency ‖A(x) − y‖ of the result."""
    from diffkit.core.editing import Restore
    from diffkit.core.observe import Observation
    from diffkit.image import codec
    from diffkit.image import pipeline
    from diffkit.windows import overlap_process

    size = run.config.data.image_size
    op = task.operator()
    window = tuple(s // task.factor for s in size)

    def tiles(y):
        tile_labels = None if labels is None else labels[:1].expand(len(y))
        obs = Observation(op, y.to(run.device), task.sigma)
        return codec.to_model(pipeline.images(run, len(y), sampling, quiet=quiet, labels=tile_labels, guidance=guidance,
                                              condition=Restore(obs, method, jump=jump, resample=resample),
                                              trajectory=trajectory))

    y = codec.to_model(degraded)
    restored = codec.to_uint8(overlap_process(y, window, tiles, scale=task.factor, batch=batch_size))
    gap = op(codec.to_model(restored)[None]) - y[None]
    return restored, gap.norm().item(), (gap.square().mean().sqrt()).item()


def _check_size(degraded, task: Degradation, size, source: str) -> None:
    from diffkit.errors import DiffkitError
    from diffkit.io import display_name

    h, w = degraded.shape[1:]
    if h * task.factor < size[0] or w * task.factor < size[1]:
        raise DiffkitError(f"{display_name(source)}: {w}x{h} is smaller than the model's {size[1]}x{size[0]} "
                           f"{'after up-scaling by ' + str(task.factor) if task.factor > 1 else ''}".rstrip())


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
    _check_size(degraded, degradation, spec.image_size, input)
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


def _baselines(degraded, task: Degradation, size, channels: int) -> dict:
    """The classical answers on the same items, uint8 [N, C, H, W]: A⁺y, and the degraded input itself at
    the model's size (bicubic and Lanczos when it is smaller)."""
    import torch
    from PIL import Image

    from diffkit.image import codec
    from diffkit.image.data import to_tensor

    sets = {"A⁺y": codec.to_uint8(task.operator().pinv(codec.to_model(degraded)))}
    if task.factor == 1:
        sets["degraded input"] = degraded
    else:
        for name, method in (("bicubic", Image.Resampling.BICUBIC), ("lanczos", Image.Resampling.LANCZOS)):
            sets[name] = torch.stack([to_tensor(codec.to_pil(image).resize((size[1], size[0]), method))
                                      for image in degraded])
    # a grey input (colorize) is shown in every channel
    return {name: images.expand(-1, channels, -1, -1) if images.shape[1] < channels else images
            for name, images in sets.items()}


def evaluate_restoration(run, text: str, images, labels, *, method: str, sampling: SamplingSpec, common: Common,
                         guidance: float, jump: int, resample: int, batch_size: int, count: int) -> None:
    """Degrade `count` held-out images (uint8, the model's size) as --task says (noise drawn from seed 0,
    then rounded to 8 bits as a file would be), restore them, and report PSNR, SSIM and FD against the
    originals for diffkit and the classical baselines; FD of a second held-out set is the floor."""
    from diffkit.core.editing import Restore
    import torch

    from diffkit.console import log
    from diffkit.core.observe import Observation
    from diffkit.errors import DiffkitError
    from diffkit.image import codec
    from diffkit.image import pipeline
    from diffkit.metrics import frechet_distance
    from diffkit.metrics.image import feature_network, features, fidelity
    from diffkit.reports import mean_stderr, report, restoration_label

    spec = run.config.data
    size, channels = spec.image_size, spec.channels
    task = parse_task(text, spec)
    originals, floor_set = images[:count], images[count:2 * count]
    op = task.operator()
    y = op(codec.to_model(originals))
    y = y + task.noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    degraded = codec.to_uint8(y)  # as a file holds it
    restored, consistency = [], []
    for first in range(0, count, batch_size):
        part = codec.to_model(degraded[first:first + batch_size])
        obs = Observation(op, part.to(run.device), task.sigma)
        part_labels = None if labels is None else labels[first:first + batch_size]
        out = pipeline.images(run, len(part), sampling, quiet=common.quiet, labels=part_labels, guidance=guidance,
                              condition=Restore(obs, method, jump=jump, resample=resample))
        restored.append(out)
        consistency.append(obs.to("cpu", torch.float32).residual(codec.to_model(out)) / part[0].numel() ** 0.5)
    sets = {restoration_label(method, sampling, resample): torch.cat(restored),
            **_baselines(degraded, task, size, channels)}
    value, spread = mean_stderr(torch.cat(consistency))
    report({"metric": "consistency_rms", "value": value, "stderr": spread,
            "of": f"‖A(x) − y‖ per value, diffkit, {text}, {count} images"}, common)
    try:
        network = feature_network()
        real = features(originals, network)
    except DiffkitError as e:
        log(f"FD skipped: {e}", common.quiet)
        network = None
    for name, result in sets.items():
        of = f"{name}, {text}, {count} held-out images"
        for metric, values in zip(("psnr", "ssim"), fidelity(result, originals)):
            value, spread = mean_stderr(values)
            report({"metric": metric, "value": value, "stderr": spread, "of": of, "set": name}, common)
        if network is not None:
            report({"metric": "fd", "value": frechet_distance(real, features(result, network)), "stderr": 0.0,
                    "of": of, "set": name}, common)
    if network is not None and len(floor_set) == count:
        report({"metric": "fd", "value": frechet_distance(real, features(floor_set, network)), "stderr": 0.0,
                "of": f"floor: {count} other held-out images", "set": "held-out"}, common)
