"""Audio data: sources of sound files, or built-in sets the package synthesises itself.

Every data set answers `batch(indices, generator) -> (float [B, 1, L] in [-1, 1], labels [B])`, with L
the model's window. A source's recordings (a folder, tar shards, a Hugging Face dataset) are read a
window at random at a time, made mono, resampled and normalised when a batch names them. Built-in clips
are synthesised on demand, each a pure function of (seed, index), so they are endless and need no storage.
"""

from __future__ import annotations

import io
import math
import re
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from diffkit.data import open_source, readable
from diffkit.errors import DiffkitError
from diffkit.io import display_name, read_input

SUFFIXES = {".wav", ".flac", ".ogg"}
NORMALISE = ("peak", "rms", "none")
PEAK, RMS = 0.95, 0.1  # targets: just under full scale; -20 dBFS (clipped to [-1, 1] afterwards)


def sound_error(error: Exception) -> str:
    """libsndfile's message without the repr of the file object it was given."""
    return re.sub(r"^Error opening .*?: ", "", str(error).splitlines()[0])


@contextmanager
def sound_file_errors(name: str):
    """libsndfile's failures to open or read a recording (RuntimeErrors, TypeErrors for what is no sound
    file at all) as one error naming it."""
    try:
        yield
    except (RuntimeError, TypeError) as e:
        raise DiffkitError(f"{name}: not a readable sound file ({sound_error(e)})") from None


def decode(data: bytes, sample_rate: int, name: str) -> Tensor:
    """Sound file bytes -> mono float32 [L] at `sample_rate`."""
    import soundfile
    import torchaudio.functional

    try:
        array, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        raise DiffkitError(f"{name}: not a readable sound file ({sound_error(e)})") from None
    if array.shape[0] == 0:
        raise DiffkitError(f"{name}: holds no samples")
    wave = torch.from_numpy(array).mean(dim=1)
    if not torch.isfinite(wave).all():
        raise DiffkitError(f"{name}: holds non-finite samples")
    return torchaudio.functional.resample(wave, rate, sample_rate) if rate != sample_rate else wave


def read_audio(source: str, sample_rate: int) -> Tensor:
    """A file or stdin ("-") as mono float32 [L] at `sample_rate`."""
    return decode(read_input(source), sample_rate, display_name(source))


BLOCK = 1 << 16  # frames read at a time when a whole recording is measured
MARGIN = 64      # extra frames read on each side of a window, so the resampler's edges fall outside it


def _mono(block) -> Tensor:
    wave = torch.from_numpy(block).mean(dim=1)
    if not torch.isfinite(wave).all():
        raise ValueError("holds non-finite samples")
    return wave


def resampled_length(sound, rate: int) -> int:
    return sound.frames * rate // sound.samplerate


def read_resampled(sound, start: int, count: int, rate: int) -> Tensor:
    """Samples start..start+count (fewer at the end) of an open soundfile.SoundFile, mono and resampled
    to `rate`: the same samples as resampling the whole recording, but only a window's worth is read."""
    import torchaudio.functional

    native = sound.samplerate
    # Read from a frame on which the whole recording's resampled grid and its own coincide (a multiple of
    # native / gcd), MARGIN output samples or more before the window, so that the resampler's edge
    # effects fall outside it.
    common = math.gcd(native, rate)
    frames_in, samples_out = native // common, rate // common
    periods = max(0, start - (MARGIN if native != rate else 0)) // samples_out
    offset = start - periods * samples_out
    sound.seek(periods * frames_in)
    wave = _mono(sound.read(-(-(offset + count + MARGIN) * native // rate), dtype="float32", always_2d=True))
    if native != rate:
        wave = torchaudio.functional.resample(wave, native, rate)
    return wave[offset:offset + count]


class SourceAudio:
    """The recordings of a source (a folder, shards, a Hugging Face dataset), read a window at a time:
    soundfile seeks to a random window of a long recording and only that is decoded and resampled, so an
    hour-long file costs the memory of a window. Normalisation uses each recording's level (peak or RMS,
    measured once per process in blocks, when a batch first names it)."""

    def __init__(self, source, sample_rate: int, window: int, how: str):
        if how not in NORMALISE:
            raise DiffkitError(f"--normalise must be one of {', '.join(NORMALISE)}, got {how!r}")
        self.source, self.rate, self.window, self.how = source, sample_rate, window, how
        self.classes = source.classes
        self.levels: dict[str, float] = {}
        self.example(0, None)  # a source with no readable recording fails now, not at the first step

    def __len__(self) -> int:
        return len(self.source)

    def example(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        return readable(self.source, index, lambda file, name: self._window(file, name, generator), "sound file")

    def batch(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        waves, labels = zip(*(self.example(int(i), generator) for i in indices))
        return torch.stack(waves)[:, None], torch.tensor(labels)

    def _window(self, file, name: str, generator: torch.Generator | None) -> Tensor:
        import soundfile

        with sound_file_errors(name), soundfile.SoundFile(file) as sound:
            if sound.frames == 0:
                raise DiffkitError(f"{name}: holds no samples")
            level = self._level(sound, name)
            length = resampled_length(sound, self.rate)
            start = 0 if generator is None or length <= self.window else \
                int(torch.randint(0, length - self.window + 1, (), generator=generator))
            wave = read_resampled(sound, start, self.window, self.rate)
        wave = torch.nn.functional.pad(wave, (0, self.window - len(wave)))
        return _scaled(wave, level, self.how)

    def _level(self, sound, name: str) -> float:
        if self.how == "none":
            return 1.0
        if name not in self.levels:
            peak, squares = 0.0, 0.0
            for block in sound.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):
                wave = _mono(block)
                peak, squares = max(peak, wave.abs().max().item()), squares + wave.double().square().sum().item()
            self.levels[name] = peak if self.how == "peak" else (squares / sound.frames) ** 0.5
            sound.seek(0)
        return self.levels[name]


def _scaled(wave: Tensor, level: float, how: str) -> Tensor:
    if how == "none" or level == 0:
        return wave.clamp(-1, 1)
    return (wave * ((PEAK if how == "peak" else RMS) / level)).clamp(-1, 1)


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
              class_cond: bool = False, column: str | None = None, label_column: str | None = None):
    """`builtin:NAME`, or any source diffkit.data opens, as windows of `window` samples at `sample_rate`."""
    if sample_rate < 1000:
        raise DiffkitError(f"--sample-rate must be at least 1000, got {sample_rate}")
    if source.startswith("builtin:"):
        return BuiltinAudio(source.split(":", 1)[1], sample_rate, window, seed)
    found = open_source(source, "audio", SUFFIXES, class_cond, "sound files", column=column, label_column=label_column)
    return SourceAudio(found, sample_rate, window, how)
