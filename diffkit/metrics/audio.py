"""Audio sample quality without a trained network: log-mel statistics, pitch, spectral flatness.

- Fréchet distance between the Gaussians fitted to log-mel frames of two clip sets (every frame of every
  clip is one observation, so a few dozen clips already give thousands of 64-d observations).
- Dominant pitch of a clip by harmonic summation over its spectrum, and the share of clips whose pitch
  lies within 25 cents of a given pitch set (builtin:tones' scale).
- With the optional torchcrepe package (CREPE's weights ship inside its wheel): the pitch of every voiced
  10 ms frame, for the distance between real and generated pitch distributions and the voiced share.
- Spectral flatness (Wiener entropy): geometric over arithmetic mean of the power spectrum, ~0 for a
  pure tone and ~0.56 for white noise, averaged over frames weighted by their energy so that silence
  does not count.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.metrics import frechet_distance

MELS = 64
HARMONICS = 5
PITCH_RANGE = (50.0, 2000.0)  # Hz searched for the dominant pitch
FLOOR = 1e-8                  # mel power floor: -80 dB


def _fft_size(sample_rate: int) -> int:
    """~64 ms frames at any rate (1024 at 16 kHz)."""
    return 2 ** round(math.log2(sample_rate * 0.064))


@functools.lru_cache(maxsize=4)
def _mel_transform(sample_rate: int):
    import torchaudio

    n_fft = _fft_size(sample_rate)
    # normalized: power relative to the window's energy, so unit-variance white noise has power ~1 per bin.
    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=MELS,
                                                f_min=20.0, f_max=sample_rate / 2, power=2.0, normalized=True)


def log_mel(wave: Tensor, sample_rate: int) -> Tensor:
    """float [L] -> natural-log mel power [frames, MELS], floored 80 dB below unit white noise: silence
    is one value, not a spread of rounding noise that would dominate the statistics."""
    return _mel_transform(sample_rate)(wave.float()).clamp(min=FLOOR).log().T


def mel_frechet(a: Tensor, b: Tensor, sample_rate: int) -> float:
    """Fréchet distance between the log-mel frames of clip sets a and b ([N, 1, L] or [N, L])."""
    frames = [torch.cat([log_mel(w.reshape(-1), sample_rate) for w in clips]).double() for clips in (a, b)]
    return frechet_distance(*frames)


def clip_features(clips: Tensor, sample_rate: int) -> Tensor:
    """One vector per clip in the log-mel space the Fréchet distance uses: its frames' mean and standard
    deviation [N, 2·MELS] (a copy shifted in time still lands on the same point)."""
    out = []
    for wave in clips:
        frames = log_mel(wave.reshape(-1), sample_rate).double()
        out.append(torch.cat([frames.mean(0), frames.std(0, unbiased=False)]))
    return torch.stack(out)


def _power_frames(wave: Tensor, sample_rate: int) -> Tensor:
    n_fft = _fft_size(sample_rate)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spectrum = torch.stft(wave.double(), n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    return spectrum.abs().square().T  # [frames, bins]


def spectral_flatness(wave: Tensor, sample_rate: int) -> float:
    """Energy-weighted mean over frames of geometric / arithmetic mean of the power spectrum; 1.0 for a
    silent clip (nothing tonal in it)."""
    power = _power_frames(wave.reshape(-1), sample_rate)[:, 1:] + 1e-20  # without the DC bin
    energy = power.sum(1)
    if energy.max() <= 1e-12:
        return 1.0
    flatness = power.log().mean(1).exp() / power.mean(1)
    return ((flatness * energy).sum() / energy.sum()).item()


def dominant_pitch(wave: Tensor, sample_rate: int) -> float:
    """The f0 in PITCH_RANGE whose first HARMONICS partials (weighted 1/k) carry the most spectral
    magnitude: the fundamental of a harmonic sound, the strongest note of a chord. NaN for silence."""
    wave = wave.reshape(-1).double()
    if wave.abs().max() == 0:
        return math.nan
    n = 1 << (max(len(wave), 4 * sample_rate) - 1).bit_length()  # zero-padding: bins of <= 0.25 Hz
    magnitude = torch.fft.rfft(wave * torch.hann_window(len(wave), dtype=torch.float64), n).abs()
    hz_per_bin = sample_rate / n
    low, high = PITCH_RANGE[0], min(PITCH_RANGE[1], sample_rate / 2)
    candidates = low * 2 ** (torch.arange(0, 1200 * math.log2(high / low), 2.0, dtype=torch.float64) / 1200)
    score = torch.zeros_like(candidates)
    for k in range(1, HARMONICS + 1):
        bins = (k * candidates / hz_per_bin).round().long()
        inside = bins < len(magnitude)
        score += torch.where(inside, magnitude[bins.clamp(max=len(magnitude) - 1)], 0.0) / k
    return candidates[score.argmax()].item()


def cents_off(frequency: float, pitches: tuple[float, ...]) -> float:
    """Distance in cents from `frequency` to the nearest of `pitches` (inf for NaN)."""
    if not math.isfinite(frequency) or frequency <= 0:
        return math.inf
    return min(abs(1200 * math.log2(frequency / p)) for p in pitches)


def on_pitch_share(clips: Tensor, sample_rate: int, pitches: tuple[float, ...], cents: float = 25.0) -> float:
    """Share of clips whose dominant pitch lies within `cents` of the pitch set."""
    return sum(cents_off(dominant_pitch(c, sample_rate), pitches) <= cents for c in clips) / len(clips)


def crepe_pitches(clips: Tensor, sample_rate: int, threshold: float = 0.5) -> tuple[Tensor, float]:
    """CREPE (tiny) pitch of every voiced 10 ms frame of the clips in cents from A4, and the share of
    frames that are voiced (periodicity >= threshold)."""
    try:
        import torchcrepe
    except ImportError:
        raise DiffkitError("pitch statistics need the optional package torchcrepe: pip install 'diffkit[eval]'") from None
    cents, voiced, frames = [], 0, 0
    for clip in clips:
        f0, periodicity = torchcrepe.predict(clip.reshape(1, -1).float().cpu(), sample_rate, sample_rate // 100,
                                             PITCH_RANGE[0], PITCH_RANGE[1], "tiny", torchcrepe.decode.weighted_argmax,
                                             return_periodicity=True, batch_size=256, device="cpu")
        keep = periodicity[0] >= threshold
        cents.append(1200 * torch.log2(f0[0][keep].double() / 440))
        voiced, frames = voiced + int(keep.sum()), frames + keep.numel()
    return torch.cat(cents), voiced / max(frames, 1)


def pitch_distance(a: Tensor, b: Tensor) -> float:
    """The 1-D Fréchet distance between two sets of pitches in cents, √((μa-μb)² + (σa-σb)²): in cents,
    inf when either set has no voiced frame."""
    if len(a) < 2 or len(b) < 2:
        return math.inf
    return math.hypot(a.mean() - b.mean(), a.std() - b.std())


def log_spectral_distance(restored: Tensor, original: Tensor, sample_rate: int) -> Tensor:
    """LSD per clip [N, 1, L]: the mean over ~32 ms frames of the RMS over frequency of the difference of
    log10 power spectra (the measure of AudioSR and NU-Wave; 0 for the same clip, ~1-3 for a band-limited
    one against full band)."""
    n_fft = _fft_size(sample_rate) // 2
    window = torch.hann_window(n_fft)

    def log_power(x: Tensor) -> Tensor:
        spectrum = torch.stft(x.reshape(len(x), -1).float(), n_fft, n_fft // 4, window=window, return_complex=True)
        return torch.log10(spectrum.abs().square().clamp(min=1e-10))

    difference = (log_power(restored) - log_power(original)).square()
    return difference.mean(1).sqrt().mean(1)


def si_sdr(restored: Tensor, original: Tensor) -> Tensor:
    """Scale-invariant signal-to-distortion ratio in dB per clip [N, 1, L] (Le Roux et al. 2019), from
    torchmetrics (the optional extra `diffkit[eval]`)."""
    try:
        from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio
    except ImportError:
        raise DiffkitError("SI-SDR needs the optional extra: pip install 'diffkit[eval]'") from None
    return scale_invariant_signal_distortion_ratio(restored.reshape(len(restored), -1).float(),
                                                   original.reshape(len(original), -1).float(), zero_mean=True)
