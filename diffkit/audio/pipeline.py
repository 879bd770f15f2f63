"""The audio modality's library: a run's network, loading a run, drawing clips from it (plain sampling,
or any edit of diffkit.core.sample) as float [n, 1, length], inpainting a clip of any length a model
window at a time, and writing a denoising trajectory. The commands in commands.py, restore.py and
evaluate.py are written over these.

Only the standard library at import time; torch and the core load inside the functions.
"""


def build(config: dict):
    from diffkit.core.nn import UNet, UNetConfig

    return UNet(UNetConfig(**config.model))


def padded(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def load(path: str, device: str = "auto"):
    from diffkit.runs import load_run

    return load_run(path, "audio", build, device)


def waves(run, n: int, length: int, sampling, *, quiet: bool = True, labels=None, guidance: float = 1.0,
          start=None, source_labels=None, condition=None, trajectory=None):
    """n clips of `length` samples from a run, float [n, 1, length] on CPU, from a `start` (core.editing's
    Noised or Bridge, from classes `source_labels`) and under a `condition` (Inpaint, or Restore with its
    observation made on padded windows), their clips [n, 1, length] too, padded like the clips."""
    import dataclasses

    import torch.nn.functional as F

    from diffkit.runs import generate

    window = padded(length, run.model.config.downsampling)

    def pad(x):  # padding is free to generate (mask 0) and starts from silence
        return F.pad(x, (0, window - length)).to(run.device)

    if sampling.clip is None:  # waveforms live in [-1, 1]
        sampling = dataclasses.replace(sampling, clip=1.0)
    x = generate(run, (n, 1, window), sampling, quiet=quiet, labels=labels, guidance=guidance,
                 start=None if start is None else start.map(pad), source_labels=source_labels,
                 condition=None if condition is None else condition.map(pad, pad), trajectory=trajectory)
    return x[..., :length].float().cpu()


def write_trajectory(path: str, trajectory, rate: int, stamp: dict) -> None:
    """`--trajectory`: the spectrogram strip at `path`, and beside it a WAV per sample of its steps."""
    from pathlib import Path

    from diffkit.audio import codec
    from diffkit.trajectory import write_trajectory as write

    picture, waves = codec.trajectory_files(trajectory.rows(), rate)
    write(path, picture, stamp)
    for i, data in enumerate(waves):
        write(f"{Path(path).with_suffix('')}-{i}.wav", data, stamp)


def inpaint_windows(wave, regenerate, window: int, fill):
    """Regenerate the True samples of a clip of any length, a model window at a time.

    `fill(known [W], keep [W]) -> [W]` inpaints one window. Each window starts a quarter window before the
    first sample still to do, so it sees finished audio on its left; unless it reaches the end, only its
    first three quarters are kept, so the next window sees context on both sides of the seam."""
    out, pending = wave.clone(), regenerate.clone()
    length = len(wave)
    while pending.any():
        first = int(pending.nonzero()[0])
        start = max(0, min(first - window // 4, length - window))
        span = slice(start, start + window)
        result = fill(out[span], ~pending[span])
        end = start + window if start + window >= length else start + 3 * window // 4
        done = pending.clone()
        done[:start], done[end:] = False, False
        out[done] = result[done[span]]
        pending &= ~done
    return out
