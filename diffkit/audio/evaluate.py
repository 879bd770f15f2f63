"""`diffkit eval audio`: the bound on held-out clips and the spectral quality of samples, or with
--restore the quality of restoration."""

from typing import Annotated, Optional

import typer

from diffkit.options import (DEFAULT_METHOD, Common, EvalSampling, Guidance, Memorization, Method, Strata, TrainData,
                             or_sampler, with_options)

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train audio`.")]


@with_options(Common, EvalSampling)
def evaluate(run: Model,
             data: Annotated[Optional[str], typer.Option(help="Held-out sound folder; default: fresh clips of the built-in set.")] = None,
             n: Annotated[int, typer.Option("-n", help="Held-out clips for the bound.")] = 16,
             strata: Strata = 50,
             samples: Annotated[int, typer.Option(help="Generated clips scored against as many held-out ones (0: skip).")] = 32,
             reference: Annotated[bool, typer.Option("--reference", help="Also score white noise and a second held-out set: the two ends of each scale.")] = False,
             batch_size: Annotated[int, typer.Option(help="Clips per network call.")] = 16,
             guidance: Guidance = 1.0,
             restore: Annotated[Optional[str], typer.Option(help="Instead: degrade --samples held-out clips as this task says (see `restore audio`), restore them and score SI-SDR and log-spectral distance beside the degraded input.")] = None,
             method: Method = DEFAULT_METHOD,
             resample: Annotated[int, typer.Option(help="With --restore: RePaint repeats of each jump of 5 steps (1 = none).")] = 1,
             memorization: Memorization = False, train_data: TrainData = None,
             *, common: Common, sampling: EvalSampling):
    """NLL in bits per sample on held-out clips (variational bound, 16-bit decoder), and spectral quality
    of samples: log-mel Fréchet distance, spectral flatness, on builtin:tones the on-pitch share, and with
    torchcrepe installed the distance between real and generated pitch distributions; with --restore
    restoration quality, with --memorization whether samples copy training clips, instead."""
    import torch

    from diffkit.audio import codec
    from diffkit.audio.data import TONE_HZ, open_data
    from diffkit.errors import DiffkitError
    from diffkit.console import log
    from diffkit.metrics.audio import crepe_pitches, mel_frechet, on_pitch_share, pitch_distance, spectral_flatness
    from diffkit.audio import pipeline
    from diffkit.reports import bound, mean_stderr, report

    sampling = or_sampler(sampling, "ddpm" if restore is not None else "dpm++2m")
    loaded = pipeline.load(run, common.device)
    spec = loaded.config.data
    source = data or spec.source
    if data is None and not source.startswith("builtin:"):
        raise DiffkitError(f"{run} was trained on {source}; pass held-out sound files with --data")
    if n < 1 or strata < 1 or batch_size < 1 or samples < 0:
        raise DiffkitError("-n, --strata and --batch-size must be at least 1, --samples at least 0")
    conditional = bool(spec.classes) and data is None
    if guidance != 1 and not conditional:
        raise DiffkitError("--guidance needs a class-conditional model scored on its built-in data (held-out labels)")
    rate, window = spec.sample_rate, spec.window
    if memorization and (restore is not None or samples < 2):
        raise DiffkitError("--memorization needs --samples of at least 2, and no --restore")
    if restore is not None:
        from diffkit.audio.restore import evaluate_restoration, parse_task

        parse_task(restore, rate)  # a bad task fails before any data is read
        if samples < 1 or resample < 1:
            raise DiffkitError("--samples (the clips to restore) and --resample must be at least 1 with --restore")
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
        return evaluate_restoration(loaded, restore, clips, labels if conditional else None, method=method,
                                    sampling=sampling, common=common, guidance=guidance, batch_size=batch_size,
                                    resample=resample)

    if memorization:
        return _memorization(loaded, clips[:samples], labels[:samples] if conditional else None, train_data,
                             sampling, common, guidance=guidance, reference=reference)
    bits, stderr = bound(loaded, clips[:min(n, count)], labels[:n] if conditional else None, bits=16,
                         strata=strata, batch_size=batch_size, common=common)
    report({"metric": "nll_bits_per_sample", "value": bits, "stderr": stderr,
            "of": f"{min(n, count)} clips of {source}, {min(strata, loaded.schedule.T - 1)} strata"}, common)
    if samples == 0:
        return
    real = clips[:samples]
    sets = [(f"{sampling.sampler}-{sampling.steps}",
             pipeline.waves(loaded, len(real), spec.length, sampling, quiet=common.quiet,
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
        log(f"pitch statistics skipped: {e}", common.quiet)
        real_pitches = None
    real_flatness = mean_stderr(torch.tensor([spectral_flatness(w, rate) for w in real]))[0]
    for name, fake in sets:
        of = f"{name}, {len(fake)} clips vs {len(real)} held-out"
        report({"metric": "mel_frechet", "value": mel_frechet(real, fake, rate), "stderr": 0.0, "of": of}, common)
        flatness, spread = mean_stderr(torch.tensor([spectral_flatness(w, rate) for w in fake]))
        report({"metric": "spectral_flatness", "value": flatness, "stderr": spread,
                "of": f"{name} (held-out: {real_flatness:.4f})"}, common)
        if tones:
            share = on_pitch_share(fake, rate, TONE_HZ)
            report({"metric": "on_pitch_share", "value": share, "stderr": (share * (1 - share) / len(fake)) ** 0.5,
                    "of": f"{name}, within 25 cents of the scale"}, common)
        if real_pitches is not None:
            pitches, voiced = crepe_pitches(fake, rate)
            report({"metric": "crepe_pitch_distance", "value": pitch_distance(real_pitches, pitches), "stderr": 0.0,
                    "of": f"{name}, cents, {voiced:.0%} of frames voiced"}, common)


# A built-in set is drawn afresh, without end: the check compares against this many of its draws.
BUILTIN_TRAINING_DRAWS = 1000


def _memorization(run, held_out, labels, train_data: str | None, sampling, common: Common, *, guidance: float,
                  reference: bool) -> None:
    """Samples, held-out clips and (with --reference) white noise against the training clips, in the
    log-mel space of the Fréchet distance (diffkit.metrics.memorization)."""
    import torch

    from diffkit.audio import codec
    from diffkit.audio import pipeline
    from diffkit.audio.data import open_data
    from diffkit.metrics.audio import clip_features
    from diffkit.reports import check_memorization

    spec = run.config.data
    rate, length = spec.sample_rate, spec.length
    source = train_data or spec.source
    training = open_data(source, rate, spec.window, seed=0, how=spec.normalise,
                         column=spec.column if source == spec.source else None)
    count = BUILTIN_TRAINING_DRAWS if getattr(training, "endless", False) else len(training)
    train_clips, _ = training.batch(torch.arange(count), torch.Generator().manual_seed(0))
    held_out = held_out[..., :length]
    sets = {f"{sampling.sampler}-{sampling.steps} samples": pipeline.waves(run, len(held_out), length, sampling, quiet=common.quiet,
                                                                    labels=labels, guidance=guidance)}
    if reference:
        noise = torch.randn(held_out.shape, generator=torch.Generator().manual_seed(0)) * held_out.std()
        sets["white noise"] = codec.quantise(noise)
    check_memorization({name: clip_features(clips, rate) for name, clips in sets.items()},
                       clip_features(held_out, rate), clip_features(codec.quantise(train_clips[..., :length]), rate),
                       common, f"{count} training clips of {source}, {len(held_out)} held-out")

