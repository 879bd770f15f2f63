"""Audio evaluation, the library under `diffkit eval audio`: the bound on held-out clips and the spectral
quality of samples, or the check for copied training clips, or the quality of restoration; each as
records (diffkit.reports) yielded as they are measured."""

from __future__ import annotations

from typing import Iterator

from diffkit.audio.restoration import evaluate_restoration, parse_task
from diffkit.console import setting
from diffkit.core.spec import DEFAULT_METHOD, SamplingSpec


def evaluate(run, sampling: SamplingSpec, *, data: str | None = None, n: int = 16, strata: int = 50,
             samples: int = 32, reference: bool = False, batch_size: int = 16, guidance: float = 1.0,
             restore: str | None = None, method: str = DEFAULT_METHOD, resample: int = 1, memorization: bool = False,
             train_data: str | None = None, quiet: bool = True) -> Iterator[dict]:
    """NLL in bits per sample of `n` held-out clips (variational bound, 16-bit decoder; `data`, else fresh
    clips of the run's built-in set), and spectral quality of `samples` samples: log-mel Fréchet distance,
    spectral flatness, on builtin:tones the on-pitch share, and with torchcrepe installed the distance
    between real and generated pitch distributions (`reference`: a second held-out set and white noise
    too); with `restore` (a task string) restoration quality, with `memorization` whether samples copy
    training clips (`train_data`, else the run's), instead."""
    import torch

    from diffkit.audio import codec
    from diffkit.audio.data import TONE_HZ, open_data
    from diffkit.errors import DiffkitError
    from diffkit.console import log
    from diffkit.metrics.audio import crepe_pitches, mel_frechet, on_pitch_share, pitch_distance, spectral_flatness
    from diffkit.audio import pipeline
    from diffkit.reports import bound, check_options, held_out_source, mean_stderr

    check_options("clips", n=n, strata=strata, batch_size=batch_size, samples=samples, memorization=memorization,
                  restore=restore, resample=resample)
    spec = run.config.data
    source = held_out_source(run, data, "sound files")
    conditional = bool(spec.classes) and data is None
    if guidance != 1 and not conditional:
        raise DiffkitError(f"{setting('guidance')} needs a class-conditional model scored on its built-in data "
                           "(held-out labels)")
    rate, window = spec.sample_rate, spec.window
    if restore is not None:
        parse_task(restore, rate)  # a bad task fails before any data is read
    # Built-in sets: clips from another seed than training's, so none of them was seen.
    held_out = open_data(source, rate, window, seed=10**9, how=spec.normalise,
                         column=spec.column if source == spec.source else None)
    wanted = samples if restore is not None else max(n, samples * (2 if reference else 1))
    count = wanted if getattr(held_out, "endless", False) else min(wanted, len(held_out))
    # A folder's files come sorted (by class, for class folders): score a seeded random subset of them.
    chosen = torch.arange(count) if getattr(held_out, "endless", False) else \
        torch.randperm(len(held_out), generator=torch.Generator().manual_seed(0))[:count]
    clips, labels = held_out.batch(chosen, torch.Generator().manual_seed(0))
    clips = codec.quantise(clips)
    if restore is not None:
        yield from evaluate_restoration(run, restore, clips, labels if conditional else None, method=method,
                                        sampling=sampling, guidance=guidance, batch_size=batch_size,
                                        resample=resample, quiet=quiet)
        return

    if memorization:
        yield from _memorization(run, clips[:samples], labels[:samples] if conditional else None, train_data,
                                 sampling, quiet, guidance=guidance, reference=reference)
        return
    bits, stderr = bound(run, clips[:min(n, count)], labels[:n] if conditional else None, bits=16,
                         strata=strata, batch_size=batch_size, quiet=quiet)
    yield {"metric": "nll_bits_per_sample", "value": bits, "stderr": stderr,
           "of": f"{min(n, count)} clips of {source}, {min(strata, run.schedule.T - 1)} strata"}
    if samples == 0:
        return
    real = clips[:samples]
    sets = [(f"{sampling.sampler}-{sampling.steps}",
             pipeline.waves(run, len(real), spec.length, sampling, quiet=quiet,
                            labels=labels[:len(real)] if conditional else None, guidance=guidance))]
    real = real[..., :spec.length]
    if reference:
        sets.append(("held-out clips", clips[samples:2 * samples, ..., :spec.length]))
        noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0)) * real.std()
        sets.append(("white noise", codec.quantise(noise)))
    tones = source == "builtin:tones"
    try:
        real_pitches = crepe_pitches(real, rate)[0]
    except DiffkitError as e:
        log(f"pitch statistics skipped: {e}", quiet)
        real_pitches = None
    real_flatness = mean_stderr(torch.tensor([spectral_flatness(w, rate) for w in real]))[0]
    for name, fake in sets:
        of = f"{name}, {len(fake)} clips vs {len(real)} held-out"
        yield {"metric": "mel_frechet", "value": mel_frechet(real, fake, rate), "stderr": 0.0, "of": of}
        flatness, spread = mean_stderr(torch.tensor([spectral_flatness(w, rate) for w in fake]))
        yield {"metric": "spectral_flatness", "value": flatness, "stderr": spread,
               "of": f"{name} (held-out: {real_flatness:.4f})"}
        if tones:
            share = on_pitch_share(fake, rate, TONE_HZ)
            yield {"metric": "on_pitch_share", "value": share, "stderr": (share * (1 - share) / len(fake)) ** 0.5,
                   "of": f"{name}, within 25 cents of the scale"}
        if real_pitches is not None:
            pitches, voiced = crepe_pitches(fake, rate)
            yield {"metric": "crepe_pitch_distance", "value": pitch_distance(real_pitches, pitches), "stderr": 0.0,
                   "of": f"{name}, cents, {voiced:.0%} of frames voiced"}


# A built-in set is drawn afresh, without end: the check compares against this many of its draws.
BUILTIN_TRAINING_DRAWS = 1000


def _memorization(run, held_out, labels, train_data: str | None, sampling: SamplingSpec, quiet: bool, *,
                  guidance: float, reference: bool) -> Iterator[dict]:
    """Samples, held-out clips and (with --reference) white noise against the training clips, in the
    log-mel space of the Fréchet distance (diffkit.metrics.memorization)."""
    import torch

    from diffkit.audio import codec
    from diffkit.audio import pipeline
    from diffkit.audio.data import open_data
    from diffkit.metrics.audio import clip_features
    from diffkit.reports import nearest_copies

    spec = run.config.data
    rate, length = spec.sample_rate, spec.length
    source = train_data or spec.source
    training = open_data(source, rate, spec.window, seed=0, how=spec.normalise,
                         column=spec.column if source == spec.source else None)
    count = BUILTIN_TRAINING_DRAWS if getattr(training, "endless", False) else len(training)
    train_clips, _ = training.batch(torch.arange(count), torch.Generator().manual_seed(0))
    held_out = held_out[..., :length]
    sets = {f"{sampling.sampler}-{sampling.steps} samples": pipeline.waves(run, len(held_out), length, sampling,
                                                                            quiet=quiet, labels=labels,
                                                                            guidance=guidance)}
    if reference:
        noise = torch.randn(held_out.shape, generator=torch.Generator().manual_seed(0)) * held_out.std()
        sets["white noise"] = codec.quantise(noise)
    records, _ = nearest_copies({name: clip_features(clips, rate) for name, clips in sets.items()},
                                clip_features(held_out, rate),
                                clip_features(codec.quantise(train_clips[..., :length]), rate),
                                f"{count} training clips of {source}, {len(held_out)} held-out")
    yield from records

