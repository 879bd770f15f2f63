"""`diffkit eval image`: the bound on held-out images and the KID of samples, with --memorization the
check for copied training images, or with --restore the quality of restoration."""

from typing import Annotated, Optional

import typer

from diffkit.options import (DEFAULT_METHOD, Common, EvalSampling, Guidance, Memorization, Method, Strata, TrainData,
                             or_sampler, with_options)

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
    from pathlib import Path

    import torch

    from diffkit.console import log
    from diffkit.errors import DiffkitError
    from diffkit.image import codec
    from diffkit.image.data import open_data
    from diffkit.image import pipeline
    from diffkit.reports import bound, report

    if memorization and (restore is not None or samples < 2):
        raise DiffkitError("--memorization needs --samples of at least 2, and no --restore")
    if neighbours is not None and (not memorization or not neighbours.lower().endswith(".png")
                                   or not Path(neighbours).parent.is_dir()):
        raise DiffkitError("--neighbours names a .png in a folder that exists, and goes with --memorization")
    sampling = or_sampler(sampling, "ddpm" if restore is not None else "dpm++2m")
    loaded = pipeline.load(run, common.device)
    spec = loaded.config.data
    source = data or spec.source
    if data is None and not source.startswith("builtin:"):
        raise DiffkitError(f"{run} was trained on {source}; pass held-out images with --data")
    if n < 1 or strata < 1 or batch_size < 1 or samples < 0:
        raise DiffkitError("-n, --strata and --batch-size must be at least 1, --samples at least 0")
    if restore is not None:
        from diffkit.image.restore import parse_task

        parse_task(restore, spec)  # a bad task fails before any data is read
        if samples < 1 or resample < 1:
            raise DiffkitError("--samples (the images to restore) and --resample must be at least 1 with --restore")
    # Built-in sets: images from another seed than training's, so none of them was seen.
    held_out = open_data(source, spec.image_size, spec.channels, seed=10**9,
                         column=spec.column if source == spec.source else None)
    wanted = 2 * samples if restore is not None else max(n, samples)  # restoration: a second set for FD's floor
    count = wanted if getattr(held_out, "endless", False) else min(wanted, len(held_out))
    # A folder's files come sorted (by class, for class folders): score a seeded random subset of them.
    chosen = torch.arange(count) if getattr(held_out, "endless", False) else \
        torch.randperm(len(held_out), generator=torch.Generator().manual_seed(0))[:count]
    images, labels = held_out.batch(chosen, torch.Generator().manual_seed(0))
    conditional = bool(spec.classes) and data is None
    if guidance != 1 and not conditional:
        raise DiffkitError("--guidance needs a class-conditional model scored on its built-in data (held-out labels)")
    if restore is not None:
        from diffkit.image.restore import evaluate_restoration

        restored = min(samples, count)
        return evaluate_restoration(loaded, restore, images, labels[:restored] if conditional else None,
                                    method=method, sampling=sampling, common=common, guidance=guidance, jump=5,
                                    resample=resample, batch_size=batch_size, count=restored)
    if memorization:
        return _memorization(loaded, images[:samples], labels[:samples] if conditional else None, train_data,
                             sampling, common, guidance=guidance, reference=reference, neighbours=neighbours)
    bits, stderr = bound(loaded, codec.to_model(images[:min(n, count)]), labels[:n] if conditional else None, bits=8,
                         strata=strata, batch_size=batch_size, common=common)
    report({"metric": "nll_bits_per_dim", "value": bits, "stderr": stderr,
            "of": f"{min(n, count)} images of {source}, {min(strata, loaded.schedule.T - 1)} strata"}, common)
    if samples == 0:
        return
    try:
        from diffkit.metrics import kernel_distance
        from diffkit.metrics.image import feature_network, features

        network = feature_network()
    except DiffkitError as e:
        log(f"KID skipped: {e}", common.quiet)
        return
    real = features(images[:samples], network)
    # A class-conditional model is scored on the held-out labels: the data's own class distribution.
    generated = pipeline.images(loaded, len(real), sampling, quiet=common.quiet, labels=labels[:len(real)] if conditional else None,
                        guidance=guidance)
    sets = [(f"{sampling.sampler}-{sampling.steps}", generated)]
    if reference:
        noise = torch.randint(0, 256, generated.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        sets.append(("uniform noise", noise))
    for name, fake in sets:
        kid, spread = kernel_distance(real, features(fake, network))
        report({"metric": "kid", "value": kid, "stderr": spread, "of": f"{name} vs {len(real)} held-out images"}, common)


# A built-in set is drawn afresh, without end: the check compares against this many of its draws.
BUILTIN_TRAINING_DRAWS = 2000


def _memorization(run, held_out, labels, train_data: str | None, sampling, common: Common, *, guidance: float,
                  reference: bool, neighbours: str | None) -> None:
    """Samples, held-out images and (with --reference) noise against the training images, in
    EfficientNet-lite0's feature space (diffkit.metrics.memorization)."""
    import torch

    from diffkit.image import codec
    from diffkit.image import pipeline
    from diffkit.image.data import open_data
    from diffkit.metrics.image import feature_network, features
    from diffkit.reports import check_memorization

    spec = run.config.data
    source = train_data or spec.source
    training = open_data(source, spec.image_size, spec.channels, seed=0,
                         column=spec.column if source == spec.source else None)
    count = BUILTIN_TRAINING_DRAWS if getattr(training, "endless", False) else len(training)
    train_images, _ = training.batch(torch.arange(count), torch.Generator().manual_seed(0))
    generated = pipeline.images(run, len(held_out), sampling, quiet=common.quiet, labels=labels, guidance=guidance)
    network = feature_network()
    keys = features(train_images, network)
    sets = {f"{sampling.sampler}-{sampling.steps} samples": generated}
    if reference:
        sets["uniform noise"] = torch.randint(0, 256, generated.shape, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.uint8)
    found = check_memorization({name: features(images, network) for name, images in sets.items()},
                               features(held_out, network), keys, common,
                               f"{count} training images of {source}, {len(held_out)} held-out")
    if neighbours is not None:
        from diffkit.io import write_output

        distances, index = found[next(iter(sets))]
        closest = distances.argsort()[:8]
        pairs = torch.stack([torch.stack([generated[i], train_images[index[i]]]) for i in closest.tolist()])
        write_output(neighbours, codec.png(codec.grid(pairs.flatten(0, 1), columns=2)))
