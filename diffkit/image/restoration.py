"""Image restoration, the library under `diffkit restore image` and `diffkit eval image --restore`:
super-resolution, colourisation, deblurring and denoising with a trained model, through the core's
observations (core.observe).

A task names what happened to the image, in order: `upscale:4` (averaged over 4x4 blocks), `colorize`
(turned grey), `deblur:SIGMA_PX` (a Gaussian blur), `denoise:SIGMA` (noise of that standard deviation on
the 0..1 intensity scale). Inputs come at their degraded size; an image larger than the model is restored
in overlapping tiles cross-faded together.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

from diffkit.console import setting
from diffkit.core.spec import SamplingSpec
from diffkit.image.config import ImageData
from diffkit.tasks import task_list, task_number

TASKS = {"upscale": "FACTOR", "colorize": None, "deblur": "SIGMA_PX", "denoise": "SIGMA"}
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")
# 8-bit files round every value: noise of a uniform rounding error, 1/255/√12 of the 0..1 scale, in model units
# (which span 2). Modelling it keeps the inverse of a blur from amplifying the rounding without bound.
QUANTISATION = 2 / 255 / 12**0.5


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
    """The degradation a task string names, checked against the model (its size, its channels)."""
    from diffkit.core.operators import AveragePool, ChannelMix, GaussianBlur
    from diffkit.errors import DiffkitError

    size, channels = spec.image_size, spec.channels
    operators, sigma, factor, grey = [], 0.0, 1, False
    for name, arg in task_list(text, TASKS):
        if name == "upscale":
            factor = int(task_number(name, arg, 2, min(size), integer=True))
            if any(side % factor for side in size):
                raise DiffkitError(f"{setting('task')} upscale:{factor}: the model's {size[0]}x{size[1]} is not a multiple of {factor}")
            operators.append(AveragePool((factor, factor)))
        elif name == "colorize":
            if channels != 3:
                raise DiffkitError(f"{setting('task')} colorize needs an RGB model; this one has {channels} channel(s)")
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
    [C, h·f, w·f] in tiles of the model's size, when noiseless moved onto the whole image's observation within
    the pixel range; returns it with the consistency ‖A(x) − y‖ of the result (norm and RMS)."""
    from diffkit.core.editing import Restore
    from diffkit.core.observe import Observation, within_range
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
    restored = overlap_process(y, window, tiles, scale=task.factor, batch=batch_size)[None]
    if task.sigma == 0:
        # Each tile met its own observation; their cross-fade need not meet the image's. So the image's
        # observation and the pixel range are imposed last, over all of it.
        restored = within_range(Observation(op, y[None]), restored, 1.0)
    restored = codec.to_uint8(restored[0])
    gap = op(codec.to_model(restored)[None]) - y[None]
    return restored, gap.norm().item(), (gap.square().mean().sqrt()).item()


def check_size(degraded, task: Degradation, size, source: str) -> None:
    """An input too small for the model, once up-scaled, is an error naming it."""
    from diffkit.errors import DiffkitError
    from diffkit.io import display_name

    h, w = degraded.shape[1:]
    if h * task.factor < size[0] or w * task.factor < size[1]:
        raise DiffkitError(f"{display_name(source)}: {w}x{h} is smaller than the model's {size[1]}x{size[0]} "
                           f"{'after up-scaling by ' + str(task.factor) if task.factor > 1 else ''}".rstrip())


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


def evaluate_restoration(run, text: str, images, labels, *, method: str, sampling: SamplingSpec, guidance: float,
                         jump: int, resample: int, batch_size: int, count: int, quiet: bool = True) -> Iterator[dict]:
    """Degrade `count` held-out images (uint8, the model's size) as the task `text` says (noise drawn from
    seed 0, then rounded to 8 bits as a file would be), restore them, and yield records of PSNR, SSIM and
    FD against the originals for diffkit and the classical baselines; FD of a second held-out set is the
    floor."""
    from diffkit.core.editing import Restore
    import torch

    from diffkit.console import log
    from diffkit.core.observe import Observation
    from diffkit.errors import DiffkitError
    from diffkit.image import codec
    from diffkit.image import pipeline
    from diffkit.metrics import frechet_distance
    from diffkit.metrics.image import feature_network, features, fidelity
    from diffkit.reports import mean_stderr, restoration_label

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
        out = pipeline.images(run, len(part), sampling, quiet=quiet, labels=part_labels, guidance=guidance,
                              condition=Restore(obs, method, jump=jump, resample=resample))
        restored.append(out)
        consistency.append(obs.to("cpu", torch.float32).residual(codec.to_model(out)) / part[0].numel() ** 0.5)
    sets = {restoration_label(method, sampling, resample): torch.cat(restored),
            **_baselines(degraded, task, size, channels)}
    value, spread = mean_stderr(torch.cat(consistency))
    yield {"metric": "consistency_rms", "value": value, "stderr": spread,
           "of": f"‖A(x) − y‖ per value, diffkit, {text}, {count} images"}
    try:
        network = feature_network()
        real = features(originals, network)
    except DiffkitError as e:
        log(f"FD skipped: {e}", quiet)
        network = None
    for name, result in sets.items():
        of = f"{name}, {text}, {count} held-out images"
        for metric, values in zip(("psnr", "ssim"), fidelity(result, originals)):
            value, spread = mean_stderr(values)
            yield {"metric": metric, "value": value, "stderr": spread, "of": of, "set": name}
        if network is not None:
            yield {"metric": "fd", "value": frechet_distance(real, features(result, network)), "stderr": 0.0,
                   "of": of, "set": name}
    if network is not None and len(floor_set) == count:
        yield {"metric": "fd", "value": frechet_distance(real, features(floor_set, network)), "stderr": 0.0,
               "of": f"floor: {count} other held-out images", "set": "held-out"}
