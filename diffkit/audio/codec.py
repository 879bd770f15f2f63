"""Waveforms to and from what users hold: 16-bit WAV bytes, and spectrogram pictures for previews.

Model space is float [-1, 1]; files are 16-bit PCM, so every written sample sits on the 16-bit grid that
the likelihood's discretised decoder scores.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import Tensor

LEVELS = 2**16 - 1  # 16-bit PCM: the grid of the discretised decoder (bits=16)


def quantise(wave: Tensor) -> Tensor:
    """Onto the 16-bit grid of [-1, 1] (65,535 steps, like an 8-bit image's 255)."""
    return ((wave.clamp(-1, 1) + 1) * (LEVELS / 2)).round() / (LEVELS / 2) - 1


def wav(wave: Tensor, sample_rate: int) -> bytes:
    """float [L] (or [1, L]) in [-1, 1] -> 16-bit mono WAV bytes."""
    import soundfile

    buffer = io.BytesIO()
    # x 32768, the inverse of how 16-bit files read as float (v / 32768): a sample read and written back
    # keeps its exact value, at full scale too.
    pcm = (wave.reshape(-1).float() * 32768).round().clamp(-32768, 32767).to(torch.int16).cpu().numpy()
    soundfile.write(buffer, pcm, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def join(waves: Tensor, sample_rate: int, gap: float = 0.25) -> Tensor:
    """Clips [N, 1, L] one after another with `gap` seconds of silence between: one listenable file."""
    silence = torch.zeros(int(gap * sample_rate))
    parts = []
    for i, wave in enumerate(waves):
        parts += ([silence] if i else []) + [wave.reshape(-1)]
    return torch.cat(parts)


def _levels(wave: Tensor, sample_rate: int) -> np.ndarray:
    """A clip's log-mel spectrogram as uint8 [mels, frames], low frequencies at the bottom, its loudest
    80 dB spread over 0 .. 255."""
    from diffkit.metrics.audio import FLOOR, log_mel

    mel = log_mel(wave.reshape(-1).float().cpu(), sample_rate).T.flip(0)
    level = (1 + (mel - mel.max()) / -math.log(FLOOR)).clamp(0, 1)
    return (level * 255).to(torch.uint8).numpy()


def _spaced(parts: list[np.ndarray], axis: int) -> np.ndarray:
    """Pictures joined along `axis` (0: top to bottom, 1: left to right) with 2 black pixels between."""
    gap = np.zeros((2, parts[0].shape[1]) if axis == 0 else (parts[0].shape[0], 2), dtype=np.uint8)
    return np.concatenate([p for part in parts for p in (part, gap)][:-1], axis=axis)


def _picture(rows: list[list[np.ndarray]]) -> bytes:
    """Spectrograms in rows (each row left to right, rows top to bottom) as a PNG; a short clip's time
    axis is stretched to a viewable width (~64 frames a second)."""
    from PIL import Image

    lines = [_spaced(row, 1) for row in rows]
    width = max(line.shape[1] for line in lines)
    picture = Image.fromarray(_spaced([np.pad(line, ((0, 0), (0, width - line.shape[1]))) for line in lines], 0))
    if picture.width < 256:
        picture = picture.resize((256, picture.height), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def spectrogram_png(waves: Tensor, sample_rate: int) -> bytes:
    """Log-mel spectrograms of clips [N, 1, L], stacked top to bottom: what a preview shows at a glance."""
    return _picture([[_levels(wave, sample_rate)] for wave in waves])


def trajectory_files(rows: list[Tensor], sample_rate: int) -> tuple[bytes, list[bytes]]:
    """x̂_0 at every step, rows [steps, 1, L]: a PNG of spectrograms with a row per sample (steps left to
    right), and per sample a WAV of its steps one after another."""
    picture = _picture([[_levels(step, sample_rate) for step in row] for row in rows])
    return picture, [wav(join(row, sample_rate), sample_rate) for row in rows]
