"""Audio restoration, the library under `diffkit restore audio` and `diffkit eval audio --restore`:
bandwidth extension, denoising and declipping with a trained model, through the core's observations
(core.observe).

A task names what happened to the recording: `bandwidth:HZ` (nothing above HZ survives: a telephone line,
a low sample rate), `denoise:SIGMA` (noise of that standard deviation, full scale 1), `declip:LEVEL`
(samples beyond ±LEVEL were cut to it). The input is read at the model's rate, whatever its own; a
recording longer than the model's window is restored in half-overlapping windows cross-faded together.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

from diffkit.console import setting
from diffkit.core.spec import SamplingSpec
from diffkit.tasks import task_list, task_number

TASKS = {"bandwidth": "HZ", "denoise": "SIGMA", "declip": "LEVEL"}


class Degradation(NamedTuple):
    cutoff: float | None  # the band limit as a fraction of the model's rate
    noise: float  # the noise's standard deviation the task names (16-bit rounding, 1e-5, is left out)
    clip: float | None  # the clipping level

    def clipped(self, degraded):
        """The samples of `degraded` at the clipping level (to within 16-bit rounding)."""
        return degraded.abs() >= self.clip - 1 / 65536

    def operator(self, degraded):
        """A for recordings [..., L] holding `degraded` (declipping keeps only the samples below the level)."""
        from diffkit.core.operators import Identity, LowPass, Mask

        if self.clip is not None:
            return Mask((~self.clipped(degraded)).to(degraded.dtype))
        return LowPass(self.cutoff) if self.cutoff is not None else Identity()

    def observe(self, degraded):
        """The observation that degraded recordings [N, 1, L] make: y = A(degraded), exactly in A's range."""
        from diffkit.core.observe import Observation, beyond_threshold

        op = self.operator(degraded)
        project = beyond_threshold(degraded, self.clip) if self.clip is not None else None
        return Observation(op, op(degraded), self.noise, project)

    def degrade(self, clean, generator):
        """What the task does to clean recordings [N, 1, L], rounded to 16 bits as a file would be."""
        import torch

        from diffkit.audio import codec
        from diffkit.core.operators import LowPass

        x = LowPass(self.cutoff)(clean) if self.cutoff is not None else clean
        x = x + self.noise * torch.randn(x.shape, generator=generator)
        return codec.quantise(x.clamp(-self.clip, self.clip) if self.clip is not None else x)


def parse_task(text: str, sample_rate: int) -> Degradation:
    """The degradation a task string names, its band limit checked against the model's rate."""
    from diffkit.errors import DiffkitError

    tasks = dict(task_list(text, TASKS))
    if "declip" in tasks and "bandwidth" in tasks:
        raise DiffkitError(f"{setting('task')}: declip combines with denoise only (clipping a band-limited signal is "
                           "not a constraint on the signal itself)")
    nyquist = sample_rate / 2
    cutoff = task_number("bandwidth", tasks["bandwidth"], 50, nyquist - 1) / sample_rate if "bandwidth" in tasks else None
    noise = task_number("denoise", tasks["denoise"], 1e-4, 1.0) if "denoise" in tasks else 0.0
    clip = task_number("declip", tasks["declip"], 0.01, 0.99) if "declip" in tasks else None
    return Degradation(cutoff, noise, clip)


def restore_wave(run, wave, task: Degradation, sampling: SamplingSpec, *, quiet: bool = True, method: str, labels=None,
                 guidance: float = 1.0, jump: int = 5, resample: int = 1, trajectory=None):
    """A degraded recording [L] at the model's rate, restored in half-overlapping windows and, when noiseless,
    moved onto the whole recording's observation within ±1; returns it on the 16-bit grid, and the
    consistency ‖A(x) − y‖ (norm, and RMS per sample) of that result over the whole recording."""
    from diffkit.core.editing import Restore
    from diffkit.core.observe import within_range
    from diffkit.audio import codec
    from diffkit.audio import pipeline
    from diffkit.windows import overlap_process

    window = min(run.config.data.window, pipeline.padded(len(wave), run.model.config.downsampling))

    def restore_windows(windows):
        batch_labels = None if labels is None else labels[:1].expand(len(windows))
        observation = task.observe(windows).to(run.device, windows.dtype)
        return pipeline.waves(run, len(windows), window, sampling, quiet=quiet, labels=batch_labels, guidance=guidance,
                              condition=Restore(observation, method, jump=jump, resample=resample), trajectory=trajectory)

    restored = overlap_process(wave[None], (window,), restore_windows)[None]
    whole = task.observe(wave[None, None])
    if whole.sigma == 0:
        # Each window met its own observation; their cross-fade need not meet the recording's. So the
        # recording's observation and the ±1 range are imposed last, over all of it.
        restored = within_range(whole, restored, 1.0)
    restored = codec.quantise(restored)[0, 0]
    gap = whole.operator(restored[None, None]) - whole.y
    return restored, gap.norm().item(), gap.square().mean().sqrt().item()


def evaluate_restoration(run, text: str, clips, labels, *, method: str, sampling: SamplingSpec, guidance: float,
                         batch_size: int, resample: int = 1, quiet: bool = True) -> Iterator[dict]:
    """Degrade held-out clips [N, 1, L] as the task `text` says (noise from seed 0, rounded to 16 bits),
    restore them, and yield records of SI-SDR and log-spectral distance against the originals for diffkit,
    the degraded input and A⁺y."""
    from diffkit.core.editing import Restore
    import torch

    from diffkit.audio import pipeline
    from diffkit.metrics.audio import log_spectral_distance, si_sdr
    from diffkit.reports import mean_stderr, restoration_label

    rate, length = run.config.data.sample_rate, clips.shape[-1]
    task = parse_task(text, rate)
    degraded = task.degrade(clips, torch.Generator().manual_seed(0))
    restored, consistency = [], []
    for first in range(0, len(clips), batch_size):
        part = degraded[first:first + batch_size]
        obs = task.observe(part)
        out = pipeline.waves(run, len(part), length, sampling, quiet=quiet, guidance=guidance,
                             labels=None if labels is None else labels[first:first + batch_size],
                             condition=Restore(obs.to(run.device, part.dtype), method, jump=5, resample=resample))
        restored.append(out)
        consistency.append(obs.residual(out) / length**0.5)
    observed = task.observe(degraded)
    sets = {restoration_label(method, sampling, resample): torch.cat(restored), "degraded input": degraded}
    pinv = observed.operator.pinv(observed.y)
    if not torch.equal(pinv, degraded):
        sets["A⁺y"] = pinv
    value, spread = mean_stderr(torch.cat(consistency))
    yield {"metric": "consistency_rms", "value": value, "stderr": spread,
           "of": f"‖A(x) − y‖ per sample, diffkit, {text}, {len(clips)} clips"}
    for name, result in sets.items():
        of = f"{name}, {text}, {len(clips)} held-out clips"
        for metric, values in (("si_sdr", si_sdr(result, clips)), ("lsd", log_spectral_distance(result, clips, rate))):
            value, spread = mean_stderr(values)
            yield {"metric": metric, "value": value, "stderr": spread, "of": of, "set": name}
