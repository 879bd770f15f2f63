"""The image modality's library: a run's network, loading a run, and drawing images from it (plain
sampling, or any edit of diffkit.core.sample: inpainting, SDEdit, the bridge, restoration), as uint8
[n, C, H, W]. The commands in commands.py, restore.py and evaluate.py are written over these.

Only the standard library at import time; torch and the core load inside the functions.
"""


def build(config: dict):
    from diffkit.core.nn import UNet, UNetConfig

    if "diffusers" in config["model"]:  # imported by `diffkit import diffusers`
        from diffkit.image.diffusers import DiffusersUNet

        return DiffusersUNet(config["model"]["diffusers"])
    return UNet(UNetConfig(**config["model"]))


def load(path: str, device: str = "auto"):
    from diffkit.runs import load_run

    return load_run(path, "image", build, device)


def images(run, n: int, sampling, *, quiet: bool = True, labels=None, guidance: float = 1.0, **edit):
    """n images from a run as uint8 [n, C, H, W]; `edit` (known/mask or start/strength) in uint8 too."""
    import dataclasses

    from diffkit.image import codec
    from diffkit.runs import generate

    for key in ("known", "start"):
        if key in edit:
            edit[key] = codec.to_model(edit[key]).to(run.device)
    if sampling.clip is None:  # pixel data live in [-1, 1]
        sampling = dataclasses.replace(sampling, clip=1.0)
    shape = (n, run.config["data"]["channels"], *run.config["data"]["image_size"])
    return codec.to_uint8(generate(run, shape, sampling, quiet=quiet, labels=labels, guidance=guidance, **edit))
