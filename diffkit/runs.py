"""What the commands of every modality share: starting or resuming a run directory, training into it
with a progress bar, loading it back, and sampling from it.

config.json holds four parts that rebuild everything: "modality", "model" (the network's config),
"diffusion" (schedule, T, parameterisation, variance) and "data" (the modality's codec: sizes,
channels, class names, ...), plus "train" (the settings it was trained with).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from diffkit.console import log, progress_bar
from diffkit.core import make_schedule, sample
from diffkit.core.checkpoint import CONFIG, STATE, load_config, load_weights, write_config
from diffkit.core.generate import classifier_free
from diffkit.core.schedule import Schedule
from diffkit.core.trainer import METRICS, BatchAt, Trainer
from diffkit.errors import DiffkitError
from diffkit.io import json_line
from diffkit.options import Common, Sampling, Training


class Run(NamedTuple):
    path: Path
    config: dict
    model: nn.Module  # the EMA weights, in eval mode, on the chosen device
    schedule: Schedule
    device: torch.device


def schedule_of(config: dict) -> Schedule:
    return make_schedule(config["diffusion"]["schedule"], config["diffusion"]["timesteps"])


def start_run(training: Training, modality: str, make_config: Callable[[], tuple[dict, Any]],
              open_data: Callable[[dict], Any]) -> tuple[dict, Any]:
    """The run's config and its data: read back and reopened with --resume, else made by `make_config`
    (which loads and checks the data) and written. Nothing is created before the inputs are checked."""
    out = Path(training.out)
    if out.exists() and not out.is_dir():
        raise DiffkitError(f"{out}: exists and is not a folder")
    if training.resume:
        config = load_config(out)
        if config["modality"] != modality:
            raise DiffkitError(f"{out}: a {config['modality']} run, not a {modality} run")
        if not (out / STATE).exists():
            raise DiffkitError(f"{out}: nothing to resume (no {STATE})")
        return config, open_data(config)
    if (out / CONFIG).exists() or (out / STATE).exists():
        raise DiffkitError(f"{out}: already holds a run; continue it with --resume or choose another --out")
    config, data = make_config()
    config = {"modality": modality, **config}
    write_config(out, config)
    return config, data


def train_run(config: dict, build: Callable[[dict], nn.Module], batch_at: BatchAt, training: Training,
              common: Common, *, preview: Callable[[nn.Module, int], None] | None = None, **settings) -> nn.Module:
    """Build the network from its seed and train (or resume) it into --out with a progress bar;
    returns the EMA model."""
    device = common.torch_device()
    torch.manual_seed(training.seed)
    model = build(config)
    diffusion = config["diffusion"]
    trainer = Trainer(model.to(device), schedule_of(config), training.settings(**settings),
                      prediction=diffusion["prediction"], variance=diffusion["variance"], run=training.out)
    if training.resume:
        trainer.restore()
        log(f"resuming {training.out} at step {trainer.step}", common.quiet)
    size = sum(p.numel() for p in model.parameters())
    log(f"training {size:,} parameters on {device} for {training.steps} steps into {training.out}", common.quiet)
    with progress_bar(f"train {config['modality']}", common.quiet) as update:
        ema = trainer.fit(batch_at, preview=preview,
                          on_step=lambda r: update(r["step"], training.steps, loss=r["loss"], it_s=r["it_s"]))
    if common.json:
        json_line({"run": training.out, "step": trainer.step})
    log(f"saved {training.out} at step {trainer.step}", common.quiet)
    return ema


def load_run(path: str, modality: str, build: Callable[[dict], nn.Module], common: Common) -> Run:
    """A run directory's config and EMA weights, checked against each other."""
    config = load_config(path)
    if config["modality"] != modality:
        raise DiffkitError(f"{path}: a {config['modality']} run, not a {modality} run")
    try:
        model = build(config)
        schedule = schedule_of(config)
    except (KeyError, TypeError) as e:
        raise DiffkitError(f"{path}/{CONFIG}: missing or unexpected setting ({e})") from None
    device = common.torch_device()
    model = load_weights(path, model).to(device).eval()
    return Run(Path(path), config, model, schedule, device)


def generate(run: Run, shape: tuple, sampling: Sampling, common: Common, *, cond: dict | None = None,
             uncond: dict | None = None, guidance: float = 1.0, **edit) -> torch.Tensor:
    """core.sample on a loaded run with a progress bar; `cond`/`uncond` are model keyword arguments
    (e.g. class labels) mixed by classifier-free guidance when `guidance` is not 1."""
    diffusion = run.config["diffusion"]
    model, kwargs = run.model, cond
    if cond and guidance != 1:
        model, kwargs = classifier_free(run.model, guidance, cond, uncond, diffusion["variance"]), None
    with progress_bar(f"sample {sampling.sampler}", common.quiet) as update:
        return sample(model, shape, run.schedule, prediction=diffusion["prediction"],
                      variance=diffusion["variance"], device=run.device, model_kwargs=kwargs, progress=update,
                      **sampling.kwargs(), **edit)


def summary(path: str, config: dict, build: Callable[[dict], nn.Module], **fields) -> dict:
    """What `diffkit info` prints: modality, size, data, diffusion settings, the modality's own fields,
    and the last metrics line (step, loss, speed)."""
    model = load_weights(path, build(config))
    result = {"modality": config["modality"], "parameters": sum(p.numel() for p in model.parameters()),
              "data": config["data"]["source"], **fields, **config["diffusion"]}
    metrics = Path(path) / METRICS
    lines = [line for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if lines:
        last = json.loads(lines[-1])
        result |= {"step": last["step"], "loss": round(last["loss"], 5), "it_s": round(last.get("it_s", 0.0), 2)}
    return result
