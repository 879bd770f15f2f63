"""Image evaluation, the library under `diffkit eval image`: the bound on held-out images and the KID of
samples, or the check for copied training images, or the quality of restoration; each as records
(diffkit.reports) yielded as they are measured."""

from __future__ import annotations

from typing import Iterator

from diffkit.console import setting
from diffkit.core.spec import DEFAULT_METHOD, SamplingSpec
from diffkit.image.restoration import evaluate_restoration, parse_task


def evaluate(run, sampling: SamplingSpec, *, data: str | None = None, n: int = 64, strata: int = 100,
             samples: int = 100, reference: bool = False, batch_size: int = 64, guidance: float = 1.0,
             restore: str | None = None, method: str = DEFAULT_METHOD, resample: int = 1, memorization: bool = False,
             train_data: str | None = None, neighbours: str | None = None, quiet: bool = True) -> Iterator[dict]:
    """NLL in bits/dim of `n` held-out images (variational bound, 8-bit decoder; `data`, else fresh images
    of the run's built-in set) and KID of `samples` samples against as many held-out ones (`reference`:
    uniform noise too); with `restore` (a task string), `samples` held-out images degraded and restored
    by `method`, scored beside the classical baselines; with `memorization`, whether samples copy training
    images (`train_data`, else the run's; `neighbours`: a .png of the closest pairs)."""
    import torch

    from diffkit.console import log
    from diffkit.errors import DiffkitError
    from diffkit.image import codec
    from diffkit.image.data import open_data
    from diffkit.image import pipeline
    from diffkit.reports import bound, check_options, held_out_source

    check_options("images", n=n, strata=strata, batch_size=batch_size, samples=samples, memorization=memorization,
                  restore=restore, resample=resample, neighbours=neighbours)
    spec = run.config.data
    source = held_out_source(run, data, "images")
    if restore is not None:
        parse_task(restore, spec)  # a bad task fails before any data is read
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
        raise DiffkitError(f"{setting('guidance')} needs a class-conditional model scored on its built-in data "
                           "(held-out labels)")
    if restore is not None:
        restored = min(samples, count)
        yield from evaluate_restoration(run, restore, images, labels[:restored] if conditional else None,
                                        method=method, sampling=sampling, guidance=guidance, jump=5,
                                        resample=resample, batch_size=batch_size, count=restored, quiet=quiet)
        return
    if memorization:
        yield from _memorization(run, images[:samples], labels[:samples] if conditional else None, train_data,
                                 sampling, quiet, guidance=guidance, reference=reference, neighbours=neighbours)
        return
    bits, stderr = bound(run, codec.to_model(images[:min(n, count)]), labels[:n] if conditional else None, bits=8,
                         strata=strata, batch_size=batch_size, quiet=quiet)
    yield {"metric": "nll_bits_per_dim", "value": bits, "stderr": stderr,
           "of": f"{min(n, count)} images of {source}, {min(strata, run.schedule.T - 1)} strata"}
    if samples == 0:
        return
    try:
        from diffkit.metrics import kernel_distance
        from diffkit.metrics.image import feature_network, features

        network = feature_network()
    except DiffkitError as e:
        log(f"KID skipped: {e}", quiet)
        return
    real = features(images[:samples], network)
    # A class-conditional model is scored on the held-out labels: the data's own class distribution.
    generated = pipeline.images(run, len(real), sampling, quiet=quiet, labels=labels[:len(real)] if conditional else None,
                                guidance=guidance)
    sets = [(f"{sampling.sampler}-{sampling.steps}", generated)]
    if reference:
        noise = torch.randint(0, 256, generated.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        sets.append(("uniform noise", noise))
    for name, fake in sets:
        kid, spread = kernel_distance(real, features(fake, network))
        yield {"metric": "kid", "value": kid, "stderr": spread, "of": f"{name} vs {len(real)} held-out images"}


# A built-in set is drawn afresh, without end: the check compares against this many of its draws.
BUILTIN_TRAINING_DRAWS = 2000


def _memorization(run, held_out, labels, train_data: str | None, sampling: SamplingSpec, quiet: bool, *,
                  guidance: float, reference: bool, neighbours: str | None) -> Iterator[dict]:
    """Samples, held-out images and (with --reference) noise against the training images, in
    EfficientNet-lite0's feature space (diffkit.metrics.memorization)."""
    import torch

    from diffkit.image import codec
    from diffkit.image import pipeline
    from diffkit.image.data import open_data
    from diffkit.metrics.image import feature_network, features
    from diffkit.reports import nearest_copies

    spec = run.config.data
    source = train_data or spec.source
    training = open_data(source, spec.image_size, spec.channels, seed=0,
                         column=spec.column if source == spec.source else None)
    count = BUILTIN_TRAINING_DRAWS if getattr(training, "endless", False) else len(training)
    train_images, _ = training.batch(torch.arange(count), torch.Generator().manual_seed(0))
    generated = pipeline.images(run, len(held_out), sampling, quiet=quiet, labels=labels, guidance=guidance)
    network = feature_network()
    keys = features(train_images, network)
    sets = {f"{sampling.sampler}-{sampling.steps} samples": generated}
    if reference:
        sets["uniform noise"] = torch.randint(0, 256, generated.shape, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.uint8)
    records, found = nearest_copies({name: features(images, network) for name, images in sets.items()},
                                    features(held_out, network), keys,
                                    f"{count} training images of {source}, {len(held_out)} held-out")
    yield from records
    if neighbours is not None:
        from diffkit.io import write_output

        distances, index = found[next(iter(sets))]
        closest = distances.argsort()[:8]
        pairs = torch.stack([torch.stack([generated[i], train_images[index[i]]]) for i in closest.tolist()])
        write_output(neighbours, codec.png(codec.grid(pairs.flatten(0, 1), columns=2)))
