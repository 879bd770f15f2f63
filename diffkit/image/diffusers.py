"""`diffkit import diffusers DIR --out RUN`: a diffusers UNet2DModel (a model folder, or a DDPMPipeline /
DDIMPipeline folder with its scheduler) as a diffkit image run.

The network stays diffusers' own class (diffusers is the optional extra `diffkit[diffusers]`, needed to
import such a run and to use it); its weights are read through safetensors only, never unpickled, and
written into the run as model.safetensors. The scheduler becomes the run's diffusion settings: its ᾱ
table exactly as diffusers computes it, its prediction type and variance. Sampling, inpainting, style,
restoration and eval then use diffkit's samplers on it like any image run.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from diffkit.config import Diffusion, RunConfig
from diffkit.errors import DiffkitError
from diffkit.image.config import ImageData

WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED = "diffusion_pytorch_model.bin"
PIPELINES = ("DDPMPipeline", "DDIMPipeline")
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "PNDMScheduler")
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
             "fixed_large_log": "fixed_large", "learned_range": "learned"}


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise DiffkitError("diffusers models need the diffusers package: pip install 'diffkit[diffusers]'") from None
    return diffusers


class DiffusersUNet(nn.Module):
    """diffusers' UNet2DModel behind diffkit's network contract: model(x_t, t) -> its prediction."""

    def __init__(self, config: dict):
        super().__init__()
        self.unet = _diffusers().UNet2DModel.from_config(config)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, self_cond: Tensor | None = None) -> Tensor:
        return self.unet(x, t).sample


def _json(path: Path) -> dict:
    from diffkit.io import read_json

    found = read_json(path, f"{path.parent}: not a diffusers model (no {path.name})")
    if not isinstance(found, dict):
        raise DiffkitError(f"{path}: not a diffusers config (a JSON object)")
    return found


def read_folder(folder: Path) -> tuple[dict, Path, dict | None]:
    """(the UNet's config, its safetensors file, the scheduler's config or None) of a model or pipeline
    folder, with one error naming what is wrong."""
    if not folder.is_dir():
        raise DiffkitError(f"{folder}: no such folder")
    scheduler = None
    if (folder / "model_index.json").is_file():
        index = _json(folder / "model_index.json")
        if index.get("_class_name") not in PIPELINES:
            raise DiffkitError(f"{folder}: a {index.get('_class_name')!r} pipeline; diffkit imports "
                               f"{' and '.join(PIPELINES)} folders")
        scheduler = _json(folder / "scheduler" / "scheduler_config.json")
        if scheduler.get("_class_name") not in SCHEDULERS:
            raise DiffkitError(f"{folder}/scheduler: unsupported scheduler {scheduler.get('_class_name')!r}")
        folder = folder / "unet"
    config = _json(folder / "config.json")
    kind = config.get("_class_name")
    if kind != "UNet2DModel":
        raise DiffkitError(f"{folder}: unsupported architecture {kind!r}; diffkit imports UNet2DModel")
    for key, allowed in (("time_embedding_type", "positional"), ("class_embed_type", None), ("num_class_embeds", None)):
        if config.get(key, allowed) != allowed:
            raise DiffkitError(f"{folder}: UNet2DModel with {key} {config[key]!r} is not supported "
                               "(unconditional, positional timestep embeddings only)")
    weights = folder / WEIGHTS
    if not weights.is_file():
        pickled = " (a pickled diffusion_pytorch_model.bin is there; diffkit never unpickles a file)" \
            if (folder / PICKLED).exists() else ""
        raise DiffkitError(f"{folder}: no {WEIGHTS}{pickled}")
    return config, weights, scheduler


def diffusion_settings(scheduler: dict | None) -> Diffusion:
    """The run's "diffusion" part from a scheduler config (none: DDPMScheduler's defaults, as the bare
    UNet folders of DDPM checkpoints assume): ᾱ as diffusers computes it, prediction and variance."""
    diffusers = _diffusers()
    scheduler = dict(scheduler or {"_class_name": "DDPMScheduler"})
    name = scheduler.pop("_class_name")
    prediction = scheduler.get("prediction_type", "epsilon")
    variance = scheduler.get("variance_type", "fixed_small")
    if prediction not in PREDICTIONS:
        raise DiffkitError(f"scheduler: unsupported prediction_type {prediction!r}")
    if variance not in VARIANCES:
        raise DiffkitError(f"scheduler: unsupported variance_type {variance!r}")
    try:
        built = getattr(diffusers, name).from_config(scheduler)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise DiffkitError(f"scheduler: {name} does not accept its config ({e})") from None
    table = built.alphas_cumprod.double()
    return Diffusion("imported", len(table), PREDICTIONS[prediction], VARIANCES[variance], False,
                     alphas_cumprod=table.tolist())


def import_run(source: str, out: str) -> RunConfig:
    """Write the run; returns its config. Everything is read and checked before the run folder appears,
    and it appears whole (written beside, then renamed into place)."""
    import shutil
    import tempfile

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from diffkit.core.checkpoint import write_config, write_weights
    from diffkit.runs import writable_folder

    folder, target = Path(source), Path(out)
    if target.exists():
        raise DiffkitError(f"{out}: already exists; choose a new --out")
    config, weights, scheduler = read_folder(folder)
    diffusion = diffusion_settings(scheduler)
    expected = config.get("in_channels", 3) * (2 if diffusion.variance == "learned" else 1)
    if config.get("out_channels", 3) != expected:
        raise DiffkitError(f"{folder}: out_channels {config.get('out_channels')} do not fit the scheduler's "
                           f"{diffusion.variance} variance ({expected} expected)")
    size = config.get("sample_size") or 32
    size = [size, size] if isinstance(size, int) else list(size)
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise DiffkitError(f"{weights}: not a safetensors file ({e})") from None
    network = DiffusersUNet(config)
    try:
        network.unet.load_state_dict(state)
    except RuntimeError as e:
        raise DiffkitError(f"{weights}: weights do not fit its config.json ({str(e).strip().splitlines()[-1].strip()})") from None
    run_config = RunConfig("image", {"diffusers": config}, diffusion,
                           ImageData(f"diffusers:{folder}", tuple(size), config.get("in_channels", 3)))
    if not target.parent.is_dir():
        raise DiffkitError(f"{out}: folder {target.parent} does not exist")
    writable_folder(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write_config(staging, run_config.to_json())
        write_weights(staging, network)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_config
