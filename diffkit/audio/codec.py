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


def spectrogram_png(waves: Tensor, sample_rate: int) -> bytes:
    """Log-mel spectrograms of clips [N, 1, L], stacked top to bottom (low frequencies at the bottom of
    each), as a PNG: what a preview shows at a glance."""
    from PIL import Image

    from diffkit.metrics.audio import FLOOR, log_mel

    rows = []
    for wave in waves:
        mel = log_mel(wave.reshape(-1).float().cpu(), sample_rate).T.flip(0)  # [mels, frames], low at the bottom
        level = (1 + (mel - mel.max()) / -math.log(FLOOR)).clamp(0, 1)      # the loudest 80 dB to 0 .. 1
        rows += [(level * 255).to(torch.uint8).numpy(), np.zeros((2, mel.shape[1]), dtype=np.uint8)]
    picture = Image.fromarray(np.concatenate(rows[:-1]))
    if picture.width < 256:  # ~64 frames a second: stretch short clips' time axis to a viewable width
        picture = picture.resize((256, picture.height), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
