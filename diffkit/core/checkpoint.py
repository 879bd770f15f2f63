"""Run directories: config.json (everything needed to rebuild the model), model.safetensors (the EMA
weights used for sampling) and state/trainer.safetensors (everything needed to resume training).

Weights are only ever read through safetensors, never unpickled, so a run directory from a stranger
cannot execute code. Every file is written atomically (temp file + rename), so a crash mid-write leaves
the previous version whole.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from diffkit.core.warp import BINS
from diffkit.errors import DiffkitError
from diffkit.io import atomic_write, read_json

FORMAT_VERSION = 2
CONFIG, WEIGHTS, STATE = "config.json", "model.safetensors", "state/trainer.safetensors"


def _from_format_1(config: dict) -> dict:
    """Format 2 records the options a run was trained with ("train", diffkit.resume; None where unknown)
    and always says whether the network is self-conditioned. A format-1 run predates the record, and
    one made before self-conditioning was not."""
    migrated = {**config, "train": None}
    if isinstance(config.get("diffusion"), dict):  # else the run is refused where its parts are read
        migrated["diffusion"] = {"self_cond": False, **config["diffusion"]}
    return migrated


# A run directory's config of format N is carried to N + 1 by MIGRATIONS[N]; load_config applies them in
# turn, so that a run of any past format loads as one of today's.
MIGRATIONS = {1: _from_format_1}


def write_config(run: str | Path, config: dict) -> None:
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    with atomic_write(run / CONFIG, "w") as f:
        json.dump({"format_version": FORMAT_VERSION, **{k: v for k, v in config.items() if k != "format_version"}},
                  f, indent=2)


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def write_weights(run: str | Path, model: torch.nn.Module, warp: torch.Tensor | None = None) -> None:
    """The weights, and the time warp they were trained with (a small table, in the file's metadata)."""
    metadata = {"time_warp": json.dumps(warp.tolist())} if warp is not None else None
    with atomic_write(Path(run) / WEIGHTS) as f:
        f.write(save(_cpu(model.state_dict()), metadata=metadata))


def read_warp(run: str | Path) -> torch.Tensor | None:
    """The time warp saved beside a run's weights, if it learned one."""
    path = Path(run) / WEIGHTS
    try:
        with safe_open(path, "pt") as f:
            table = (f.metadata() or {}).get("time_warp")
        curve = None if table is None else torch.tensor(json.loads(table), dtype=torch.float64)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise DiffkitError(f"{path}: unreadable time warp ({e})") from None
    if curve is not None and (curve.shape != (2, BINS) or not curve.isfinite().all() or (curve < 0).any()):
        raise DiffkitError(f"{path}: the time warp is not {BINS} bins of errors and counts")
    return curve


def write_state(run: str | Path, tensors: dict, meta: dict) -> None:
    """One file for all trainer state, so that it can never be half old and half new."""
    path = Path(run) / STATE
    path.parent.mkdir(exist_ok=True)
    with atomic_write(path) as f:
        f.write(save(_cpu(tensors), metadata={"trainer": json.dumps(meta)}))


def read_state(run: str | Path) -> tuple[dict, dict]:
    """The trainer's tensors and its metadata (step, optimiser groups, settings)."""
    with _open_state(run) as f:
        return {k: f.get_tensor(k) for k in f.keys()}, _trainer_meta(f)


def read_trainer_meta(run: str | Path) -> dict:
    """The trainer state's metadata alone, without reading its tensors."""
    with _open_state(run) as f:
        return _trainer_meta(f)


@contextmanager
def _open_state(run: str | Path):
    path = Path(run) / STATE
    try:
        with safe_open(path, "pt") as f:
            yield f
    except FileNotFoundError:
        raise DiffkitError(f"{run}: nothing to resume (no {STATE})") from None
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise DiffkitError(f"{path}: not a diffkit trainer state ({e})") from None


def _trainer_meta(f) -> dict:
    return json.loads(f.metadata()["trainer"])


def load_config(run: str | Path) -> dict:
    path = Path(run) / CONFIG
    if not Path(run).is_dir():
        raise DiffkitError(f"{run}: no such run directory")
    config = read_json(path, f"{run}: not a diffkit run (no {CONFIG})")
    if not isinstance(config, dict) or "modality" not in config:
        raise DiffkitError(f"{path}: missing the 'modality' key")
    version = config.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise DiffkitError(f"{path}: written by a newer diffkit (format {version})")
    while version < FORMAT_VERSION:
        config = MIGRATIONS[version](config)
        version += 1
    return {**config, "format_version": version}


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
