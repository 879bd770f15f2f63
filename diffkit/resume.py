"""What a resumed run continues with: the options it recorded when it started (config.json's "train"),
with those given anew that a run may change. The CLI maps a refused setting to its flag."""

from __future__ import annotations

from pathlib import Path

from diffkit.core.checkpoint import STATE, read_trainer_meta
from diffkit.errors import DiffkitError

# Options a resumed run may take anew: how long it trains, how often it writes, how this machine runs
# it, and where its training timesteps go from now on (a run may move to warped timesteps, whose curve
# starts empty). Any other differs only by mistake, and would silently change what the run learns.
RESUMABLE = {"steps", "checkpoint_every", "preview_every", "log_every", "max_bad_steps", "workers", "compile",
             "precision", "timestep_sampling"}


class ChangedSetting(DiffkitError):
    """A resumed run was given a setting other than the one it was trained with."""

    def __init__(self, name: str, recorded, given):
        super().__init__(f"{name}: the run was trained with {recorded!r}, not {given!r}")
        self.name, self.recorded, self.given = name, recorded, given


def resumed_options(recorded: dict, given: dict) -> dict:
    """The options a resumed run continues with: its `recorded` ones, and of those `given` anew the
    RESUMABLE ones. Any other given one must equal its record (ChangedSetting); one the run has no
    record of (a run made before diffkit recorded it) is taken as given."""
    for name, value in given.items():
        if name in recorded and name not in RESUMABLE and value != recorded[name]:
            raise ChangedSetting(name, recorded[name], value)
    return {**recorded, **{name: value for name, value in given.items() if name in RESUMABLE}}


def recorded_options(out: str | Path, config: dict) -> dict:
    """The options a run records in config.json's "train". A run made before it recorded them has the
    trainer's settings in its last checkpoint and the diffusion's in its config: those it is taken at."""
    if config.train is not None:
        return config.train
    if not (Path(out) / STATE).exists():
        return {}
    settings = read_trainer_meta(out)["settings"]
    diffusion = config.diffusion
    renamed = {"decay": "lr_decay"}
    kept = {renamed.get(k, k): v for k, v in settings.items() if k != "bits"}
    return kept | {"schedule": diffusion.schedule, "timesteps": diffusion.timesteps,
                   "prediction": diffusion.prediction,
                   "variance": "fixed" if diffusion.variance == "fixed_small" else diffusion.variance,
                   "self_cond": diffusion.self_cond}
