"""`diffkit eval image`: the bound on held-out images and the KID of samples, with --memorization the
check for copied training images, or with --restore the quality of restoration."""

from typing import Annotated, Optional

import typer

from diffkit.core.spec import DEFAULT_METHOD, DEFAULT_SAMPLER
from diffkit.options import (Common, EvalSampling, Guidance, Memorization, Method, Strata, TrainData, or_sampler,
                             print_record, with_options)

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train image`.")]


@with_options(Common, EvalSampling)
def evaluate(run: Model,
             data: Annotated[Optional[str], typer.Option(help="Held-out image folder; default: fresh images of the built-in set.")] = None,
             n: Annotated[int, typer.Option("-n", help="Held-out images for the bound.")] = 64,
             strata: Strata = 100,
             samples: Annotated[int, typer.Option(help="Generated images for KID against as many held-out ones (0: skip).")] = 100,
             reference: Annotated[bool, typer.Option("--reference", help="Also score uniform noise, the far end of the KID scale.")] = False,
             batch_size: Annotated[int, typer.Option(help="Images per network call.")] = 64,
             guidance: Guidance = 1.0,
             restore: Annotated[Optional[str], typer.Option(help="Instead: degrade --samples held-out images as this task says (see `restore image`), restore them and score PSNR, SSIM and FD beside the classical baselines.")] = None,
             method: Method = DEFAULT_METHOD,
             resample: Annotated[int, typer.Option(help="With --restore: RePaint repeats of each jump of 5 steps (1 = none).")] = 1,
             memorization: Memorization = False, train_data: TrainData = None,
             neighbours: Annotated[Optional[str], typer.Option(help="With --memorization: a .png of the samples closest to a training image, each beside it.")] = None,
             *, common: Common, sampling: EvalSampling):
    """NLL in bits/dim on held-out images (variational bound, 8-bit decoder) and KID of samples; with
    --restore, restoration quality instead; with --memorization, whether samples copy training images."""
    from diffkit.image import pipeline
    from diffkit.image.evaluation import evaluate as evaluation
    from diffkit.reports import check_options

    check_options("images", n=n, strata=strata, batch_size=batch_size, samples=samples, memorization=memorization,
                  restore=restore, resample=resample, neighbours=neighbours)  # before the run is read
    sampling = or_sampler(sampling, "ddpm" if restore is not None else DEFAULT_SAMPLER)
    loaded = pipeline.load(run, common.device)
    for record in evaluation(loaded, sampling, data=data, n=n, strata=strata, samples=samples, reference=reference,
                             batch_size=batch_size, guidance=guidance, restore=restore, method=method,
                             resample=resample, memorization=memorization, train_data=train_data,
                             neighbours=neighbours, quiet=common.quiet):
        print_record(record, common)
