"""The image modality's library: a run's network, loading a run, and drawing images from it (plain
sampling, or any edit of diffkit.core.sample: inpainting, SDEdit, the bridge, restoration), as uint8
[n, C, H, W]. The commands in commands.py, restore.py and evaluate.py are written over these.

Only the standard library at import time; torch and the core load inside the functions.
"""


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