"""The `diffkit` command: verbs prepare / train / sample / inpaint / style / restore / eval, each taking a modality.

This module stays light (no torch at import) so that `diffkit --help` is fast; modalities import
their heavy pieces inside their commands.
"""

from typing import Annotated

import typer

from diffkit.options import Common, with_options

# Plain help (click's): Typer's rich panels label every flag with a <bool> type it takes no value of.
HELP = {"no_args_is_help": True, "rich_markup_mode": None}
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, **HELP,
                  help="Gaussian diffusion for images, audio, text and points. Data goes to stdout, logs to stderr.")

VERBS = {
    "prepare": "Convert data once into shards (images resized, audio resampled, text tokenised) that train reads fast.",
    "train": "Train a model into a run directory.",
    "sample": "Draw new samples from a trained model.",
    "inpaint": "Regenerate masked parts of an input, keeping the rest exactly.",
    "style": "Redraw an input: noise it part way and regenerate it toward the model's data (SDEdit), or "
             "convert it from its class to another (the bridge: --from-class A --class B).",
    "restore": "Restore a degraded input: super-resolution, colourisation, deblurring, denoising (images); "
               "bandwidth extension, denoising, declipping (audio).",
    "eval": "Likelihood (variational bound) and sample quality of a trained model.",
}
GROUPS = {verb: typer.Typer(help=text, **HELP) for verb, text in VERBS.items()}
for verb, group in GROUPS.items():
    app.add_typer(group, name=verb)
importer = typer.Typer(help="Bring a model made elsewhere in as a diffkit run.", **HELP)
app.add_typer(importer, name="import")


def _version(shown: bool) -> None:
    if not shown:
        return
    import torch

    from diffkit import __version__

    device = "cuda (" + torch.cuda.get_device_name() + ")" if torch.cuda.is_available() else "cpu"
    print(f"diffkit {__version__}, torch {torch.__version__}, device {device}")
    raise typer.Exit()


@app.callback()
def options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                  help="diffkit's version, torch's, and the device it would use.")] = False):
    """Gaussian diffusion for images, audio, text and points. Data goes to stdout, logs to stderr."""


@importer.command("diffusers")
@with_options(Common)
def import_diffusers(folder: Annotated[str, typer.Argument(help="A diffusers UNet2DModel folder (config.json, diffusion_pytorch_model.safetensors), or a DDPMPipeline / DDIMPipeline folder with unet/ and scheduler/.")],
                     out: Annotated[str, typer.Option("--out", help="The run directory to create.")], common: Common):
    """A diffusers UNet2DModel as an image run that sample, inpaint, style, restore and eval use with
    diffkit's samplers (needs diffkit[diffusers]; weights through safetensors only)."""
    from diffkit.console import log
    from diffkit.image.diffusers import import_run
    from diffkit.io import json_line

    config = import_run(folder, out)
    diffusion = config.diffusion
    if common.json:
        json_line({"run": out, "timesteps": diffusion.timesteps, "prediction": diffusion.prediction,
                   "variance": diffusion.variance})
    log(f"imported {folder} into {out}: {'x'.join(map(str, config.data.image_size))} images, "
        f"T = {diffusion.timesteps}, {diffusion.prediction} prediction, {diffusion.variance} variance",
        common.quiet)


@app.command()
@with_options(Common)
def info(path: Annotated[str, typer.Argument(help="A run directory, or a file diffkit generated.")], common: Common):
    """What a run is (modality, configuration and size), or where a generated file came from: the
    provenance diffkit writes into every PNG and WAV it makes and beside every text or CSV file."""
    import json
    from pathlib import Path

    from diffkit.errors import DiffkitError

    if Path(path).is_file():
        from diffkit import provenance

        try:
            summary = provenance.read(path)
        except OSError as e:
            raise DiffkitError(f"{path}: cannot read ({e.strerror})") from None
        if summary is None:
            if common.json:
                print(json.dumps({"path": path, "provenance": None}))
            else:
                print(f"{path}: no provenance (not made by diffkit, or saved again without its metadata)")
            return
        credentials = provenance.c2pa_manifest(Path(path).read_bytes())
        if credentials is not None:
            summary["c2pa"] = f"signed by {credentials['issuer']}, validation {credentials['validation_state']}"
    elif Path(path).is_dir():
        from diffkit.config import read_config
        from diffkit.modalities import get

        config = read_config(path)
        summary = get(config.modality).describe(path, config)
    else:
        raise DiffkitError(f"{path}: no such file or run directory")
    if common.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>19}  {value}")


def main() -> None:
    from diffkit.modalities import register_all

    register_all(GROUPS)
    app()
