"""Run directories: config.json (everything needed to rebuild the model) + model.safetensors.

Weights are only ever read through safetensors, never unpickled, so a run directory from a stranger
cannot execute code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from diffkit.errors import DiffkitError
from diffkit.io import atomic_write

FORMAT_VERSION = 1
CONFIG, WEIGHTS = "config.json", "model.safetensors"


def save_run(run: str | Path, config: dict, model: torch.nn.Module) -> None:
    """Write weights then config, each atomically; config last, so a run with a config is complete."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(run / WEIGHTS) as f:
        f.write(save(state))
    with atomic_write(run / CONFIG, "w") as f:
        json.dump({"format_version": FORMAT_VERSION, **config}, f, indent=2)


def load_config(run: str | Path) -> dict:
    path = Path(run) / CONFIG
    if not Path(run).is_dir():
        raise DiffkitError(f"{run}: no such run directory")
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise DiffkitError(f"{run}: not a diffkit run (no {CONFIG})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DiffkitError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or "modality" not in config:
        raise DiffkitError(f"{path}: missing the 'modality' key")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise DiffkitError(f"{path}: written by a newer diffkit (format {config['format_version']})")
    return config


def load_weights(run: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    path = Path(run) / WEIGHTS
    try:
        state = load_file(path)
    except FileNotFoundError:
        raise DiffkitError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise DiffkitError(f"{path}: not a safetensors file ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise DiffkitError(f"{path}: weights do not fit the model in {CONFIG} ({first})") from None
    return model
