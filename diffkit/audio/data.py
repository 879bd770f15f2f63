"""Audio data: folders of sound files, or built-in sets the package synthesises itself.

Every data set answers `batch(indices, generator) -> (float [B, 1, L] in [-1, 1], labels [B])`, with L
the model's window. Folder files are decoded, made mono, resampled and normalised once at load; windows
are cut at random from them per batch. Built-in clips are synthesised on demand, each a pure function
of (seed, index), so they are endless and need no storage.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import torch
from torch import Tensor

from diffkit.console import warn
from diffkit.errors import DiffkitError
from diffkit.io import data_folder, display_name, read_input

SUFFIXES = {".wav", ".flac", ".ogg"}
NORMALISE = ("peak", "rms", "none")
PEAK, RMS = 0.95, 0.1  # targets: just under full scale; -20 dBFS (clipped to [-1, 1] afterwards)


def decode(data: bytes, sample_rate: int, name: str) -> Tensor:
    """Sound file bytes -> mono float32 [L] at `sample_rate`."""
    import soundfile
    import torchaudio.functional

    try:
        array, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        reason = re.sub(r"^Error opening .*?: ", "", str(e).splitlines()[0])  # drop libsndfile's BytesIO repr
        raise DiffkitError(f"{name}: not a readable sound file ({reason})") from None
    if array.shape[0] == 0:
        raise DiffkitError(f"{name}: holds no samples")
    wave = torch.from_numpy(array).mean(dim=1)
    if not torch.isfinite(wave).all():
        raise DiffkitError(f"{name}: holds non-finite samples")
    return torchaudio.functional.resample(wave, rate, sample_rate) if rate != sample_rate else wave


def read_audio(source: str, sample_rate: int) -> Tensor:
    """A file or stdin ("-") as mono float32 [L] at `sample_rate`."""
    return decode(read_input(source), sample_rate, display_name(source))


def normalise(wave: Tensor, how: str) -> Tensor:
    if how not in NORMALISE:
        raise DiffkitError(f"--normalise must be one of {', '.join(NORMALISE)}, got {how!r}")
    if how == "none":
        return wave.clamp(-1, 1)
    level = wave.abs().max() if how == "peak" else wave.square().mean().sqrt()
    if level == 0:
        return wave
    return (wave * ((PEAK if how == "peak" else RMS) / level)).clamp(-1, 1)


def window_of(wave: Tensor, length: int, generator: torch.Generator | None) -> Tensor:
    """A `length` window of a clip: a random one (the start from `generator`) of a longer clip, or the
    clip zero-padded at the end. Without a generator, the start."""
    if len(wave) <= length:
        return torch.nn.functional.pad(wave, (0, length - len(wave)))
    start = 0 if generator is None else int(torch.randint(0, len(wave) - length + 1, (), generator=generator))
    return wave[start:start + length]


class FolderAudio:
    """All usable sound files under a folder, decoded once. With `class_cond`, each first-level
    sub-folder is a class."""

    def __init__(self, root: str, sample_rate: int, window: int, how: str, class_cond: bool):
        self.window = window
        root_path = data_folder(root, "sound files")
        files = sorted(p for p in root_path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        self.classes = sorted({p.relative_to(root_path).parts[0] for p in files if p.parent != root_path}) \
            if class_cond else []
        self.waves, labels = [], []
        for path in files:
            if class_cond and path.parent == root_path:
                raise DiffkitError(f"{path}: --class-cond needs every file inside a class sub-folder")
            try:
                self.waves.append(normalise(decode(path.read_bytes(), sample_rate, str(path)), how))
            except (DiffkitError, OSError) as e:
                warn(f"{e}, skipped")
                continue
            labels.append(self.classes.index(path.relative_to(root_path).parts[0]) if class_cond else 0)
        if not self.waves:
            raise DiffkitError(f"{root}: no usable sound file ({', '.join(sorted(SUFFIXES))}, searched recursively)")
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.waves)

    def batch(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        waves = [window_of(self.waves[int(i)], self.window, generator) for i in indices]
        return torch.stack(waves)[:, None], self.labels[indices]


# ---------------------------------------------------------------- built-in sets

# builtin:tones plays notes of the A minor pentatonic scale over two octaves (A3 to G5): a sparse set, so
# that a random pitch seldom lands within 25 cents of it and "on pitch" means something.
TONE_MIDI = (57, 60, 62, 64, 67, 69, 72, 74, 76, 79)
TONE_HZ = tuple(440.0 * 2 ** ((m - 69) / 12) for m in TONE_MIDI)


def _envelope(rng: np.random.Generator, n: int, rate: int, decaying: bool) -> np.ndarray:
    """Attack, then a sustain with a release at the end, or (`decaying`) an exponential decay."""
    t = np.arange(n) / rate
    attack = rng.uniform(0.005, 0.03)
    rise = np.clip(t / attack, 0, 1)
    if decaying:
        return rise * np.exp(-np.maximum(t - attack, 0) / rng.uniform(0.15, 0.4))
    release = rng.uniform(0.05, 0.15)
    duration = n / rate
    return rise * np.clip((duration - t) / release, 0, 1) * rng.uniform(0.6, 1.0)


def draw_tone(rng: np.random.Generator, label: int, n: int, rate: int) -> np.ndarray:
    """A note or a chord of 2-3 notes from TONE_HZ; the class is the timbre: sine, organ or pluck."""
    notes = rng.choice(len(TONE_HZ), size=1 if rng.random() < 0.6 else int(rng.integers(2, 4)), replace=False)
    onset = int(rng.uniform(0, 0.15) * n)
    length = n - onset
    t = np.arange(length) / rate
    wave = np.zeros(length)
    for note in notes:
        f, phase = TONE_HZ[note], rng.uniform(0, 2 * math.pi)
        harmonics = [1] if label == 0 else range(1, 7)
        for k in harmonics:
            if k * f >= rate / 2:  # nothing above Nyquist: it would alias to an off-scale pitch
                break
            # Organ: steady 1/k partials; pluck: brighter partials that die faster than the fundamental.
            decay = np.exp(-t * (k - 1) * 3.0) if label == 2 else 1.0
            wave += decay * np.sin(2 * math.pi * k * f * t + k * phase) / k
    wave *= _envelope(rng, length, rate, decaying=label == 2)
    return np.concatenate([np.zeros(onset), wave])


def draw_drum(rng: np.random.Generator, label: int, n: int, rate: int) -> np.ndarray:
    """1-3 hits of one drum at random times; the class is the drum: kick, snare or hihat."""
    wave = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        onset = int(rng.uniform(0, 0.7) * n)
        t = np.arange(n - onset) / rate
        if label == 0:  # a sine falling from ~150 Hz toward 45 Hz
            f0 = rng.uniform(120, 180)
            frequency = 45 + (f0 - 45) * np.exp(-t / 0.04)
            hit = np.sin(2 * math.pi * np.cumsum(frequency) / rate) * np.exp(-t / rng.uniform(0.15, 0.3))
        else:
            noise = rng.standard_normal(len(t))
            if label == 1:  # noise burst over a short 180-220 Hz tone
                tone = np.sin(2 * math.pi * rng.uniform(180, 220) * t) * np.exp(-t / 0.05)
                hit = (0.6 * noise * np.exp(-t / rng.uniform(0.08, 0.15)) + tone) / 1.6
            else:  # high-passed (differenced) noise, short
                hit = np.diff(noise, prepend=0.0) / 2 * np.exp(-t / rng.uniform(0.02, 0.06))
        wave[onset:] += hit * rng.uniform(0.5, 1.0)
    return wave


BUILTINS = {
    # name: (synthesis function, class names)
    "tones": (draw_tone, ["sine", "organ", "pluck"]),
    "drums": (draw_drum, ["kick", "snare", "hihat"]),
}


class BuiltinAudio:
    """An endless labelled set: clip i is synthesised from a generator seeded by (seed, i)."""

    endless = True

    def __init__(self, name: str, sample_rate: int, window: int, seed: int):
        if name not in BUILTINS:
            raise DiffkitError(f"unknown built-in data 'builtin:{name}'; choose one of: "
                               + ", ".join(f"builtin:{n}" for n in BUILTINS))
        self.draw, self.classes = BUILTINS[name]
        self.sample_rate, self.window, self.seed = sample_rate, window, seed

    def clip(self, index: int) -> tuple[Tensor, int]:
        rng = np.random.default_rng([self.seed, index])
        label = int(rng.integers(len(self.classes)))
        wave = self.draw(rng, label, self.window, self.sample_rate)
        # Loudness varies like a collection of recordings would, after peak normalisation.
        wave = wave / max(np.abs(wave).max(), 1e-9) * rng.uniform(0.5, PEAK)
        return torch.from_numpy(wave.astype(np.float32)), label

    def batch(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        waves, labels = zip(*(self.clip(int(i)) for i in indices))
        return torch.stack(waves)[:, None], torch.tensor(labels)


def open_data(source: str, sample_rate: int, window: int, *, seed: int = 0, how: str = "peak",
              class_cond: bool = False):
    """`builtin:NAME` or a folder, as windows of `window` samples at `sample_rate`."""
    if sample_rate < 1000:
        raise DiffkitError(f"--sample-rate must be at least 1000, got {sample_rate}")
    if source.startswith("builtin:"):
        return BuiltinAudio(source.split(":", 1)[1], sample_rate, window, seed)
    return FolderAudio(source, sample_rate, window, how, class_cond)
