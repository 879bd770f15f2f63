"""`diffkit eval audio`: the bound on held-out clips and the spectral quality of samples, or with
--restore the quality of restoration."""

from typing import Annotated, Optional

import typer

from diffkit.core.spec import DEFAULT_METHOD, DEFAULT_SAMPLER
from diffkit.options import (Common, EvalSampling, Guidance, Memorization, Method, Strata, TrainData, or_sampler,
                             print_record, with_options)

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
    from diffkit.audio import pipeline
    from diffkit.audio.evaluation import evaluate as evaluation
    from diffkit.reports import check_options

    check_options("clips", n=n, strata=strata, batch_size=batch_size, samples=samples, memorization=memorization,
                  restore=restore, resample=resample)  # before the run is read
    sampling = or_sampler(sampling, "ddpm" if restore is not None else DEFAULT_SAMPLER)
    loaded = pipeline.load(run, common.device)
    for record in evaluation(loaded, sampling, data=data, n=n, strata=strata, samples=samples, reference=reference,
                             batch_size=batch_size, guidance=guidance, restore=restore, method=method,
                             resample=resample, memorization=memorization, train_data=train_data, quiet=common.quiet):
        print_record(record, common)
