"""`diffkit train|sample|inpaint|style|eval text`: the text modality's commands (Diffusion-LM).

Sequences of `--seq-len` tokens (end of sequence, then padding) are embedded, diffused and rounded back
(see diffkit.text.model). Every command reads and writes one text per line, so they work in pipes.

Only typer at import time; torch, sentencepiece and the core load inside the commands.
"""

from typing import Annotated, Optional

import typer

from diffkit.io import Destination, display_name, result_stem
from diffkit.options import (Column, Common, FromClass, Guidance, InversionIterations, Label, LabelColumn, Preset,
                             Sampling, Strength, StyleMethod, TrajectoryPath, class_labels, or_sampler, style_plan,
                             with_options)
from diffkit.text import pipeline
from diffkit.text.options import (ClassCond, Clamp, Data, Input, Mbr, Model, Output, Pairs, SeqLen, Split,
                                  StyleSampling, TextSampling, TextTraining, TokenizerType, VocabSize)
from diffkit.text.templates import marker_template, parse_positions, span_template

@with_options(TextTraining, Common)
def train(
    data: Data = "builtin:weather",
    pairs: Pairs = None,
    split: Split = "line",
    seq_len: SeqLen = 64,
    vocab_size: VocabSize = None,
    tokenizer: TokenizerType = "bpe",
    preset: Preset = "small",
    embed_dim: Annotated[Optional[int], typer.Option(help="Size of the token embeddings that are diffused; default: the preset's.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Transformer width; default: the preset's.")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Transformer layers; default: the preset's.")] = None,
    heads: Annotated[Optional[int], typer.Option(help="Attention heads; default: the preset's.")] = None,
    dropout: Annotated[float, typer.Option(help="Dropout in the Transformer.")] = 0.0,
    class_cond: ClassCond = False,
    column: Column = None,
    label_column: LabelColumn = None,
    label_dropout: Annotated[float, typer.Option(help="Share of labels dropped for classifier-free guidance.")] = 0.1,
    mse_weight: Annotated[float, typer.Option(help="Weight of the diffusion loss (the squared error of the predicted embeddings) beside the rounding cross-entropy, which teaches the token distribution.")] = 0.2,
    *, training: TextTraining, common: Common,
):
    """Train a Diffusion-LM: a sentencepiece tokenizer, token embeddings and a Transformer denoiser; writes
    config.json, tokenizer.model, model.safetensors, state/, metrics.jsonl, previews/."""
    pipeline.train(training, data=data, pairs=pairs, split=split, seq_len=seq_len, vocab_size=vocab_size,
                   tokenizer=tokenizer, preset=preset, embed_dim=embed_dim, width=width, depth=depth, heads=heads,
                   dropout=dropout, class_cond=class_cond, column=column, label_column=label_column,
                   label_dropout=label_dropout, mse_weight=mse_weight, device=common.device, quiet=common.quiet,
                   json_out=common.json)


def emit(lines: list[str], destination: Destination, stem: str, common: Common,
         records: list[dict] | None = None) -> None:
    """Results one per line; with --json, one {"text": ...} object per result (plus `records`) on stdout."""
    records = [{"text": line, **record} for line, record in zip(lines, records or [{} for _ in lines])]
    destination.write_rows("".join(line + "\n" for line in lines).encode(), records, stem, common.json)


def _read_lines(source: str) -> list[str]:
    """The lines of --input (a file or -), blank ones included: one result per input line."""
    from diffkit.errors import DiffkitError
    from diffkit.io import decode_utf8, read_input

    name = display_name(source)
    lines = decode_utf8(read_input(source), name).splitlines()
    if not lines:
        raise DiffkitError(f"{name}: no lines")
    return lines


@with_options(Common, TextSampling)
def sample(run: Model, n: Annotated[int, typer.Option("-n", help="How many texts (per --prompt).")] = 8,
           prompt: Annotated[Optional[str], typer.Option(help="Source text for a model trained with --pairs.")] = None,
           input: Annotated[Optional[str], typer.Option("--input", "-i", help="Sources, one per line (file or -), for a model trained with --pairs: one text each.")] = None,
           label: Label = None, guidance: Guidance = 1.0, mbr: Mbr = 1,
           clamp: Clamp = True, output: Output = "-", trajectory_path: TrajectoryPath = None,
           *, common: Common, sampling: Sampling):
    """Generate texts, one per line; the same seed gives the same texts. --json adds seed and the NLL
    estimate (bits per token) of each."""
    from diffkit.errors import DiffkitError
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target

    if n < 1 or mbr < 1:
        raise DiffkitError(f"-n and --mbr must be at least 1, got {n} and {mbr}")
    if prompt is not None and input is not None:
        raise DiffkitError("give the sources with --prompt or --input, not both")
    destination = Destination.of(output, ".txt")
    trajectory = trajectory_target(trajectory_path, ".jsonl")
    loaded, tok = pipeline.load(run, common.device)
    spec = loaded.config.data
    if spec.pairs != (prompt is not None or input is not None):
        raise DiffkitError(f"{run} was trained with --pairs: give a source with --prompt or --input" if spec.pairs
                           else f"{run} was not trained with --pairs; --prompt and --input do not apply")
    sources = None
    if spec.pairs:
        texts = [prompt] * n if prompt is not None else _read_lines(input)
        name = "--prompt" if prompt is not None else input
        sources = pipeline.encode_pairs(tok, [(text, "") for text in texts], spec.seq_len, name, strict=True)
        n = len(texts)
    if mbr > 1 and not spec.pairs:
        raise DiffkitError("--mbr chooses among samples for one source: it applies to a model trained with --pairs")
    labels = class_labels(loaded, label, n, guidance)
    lines = pipeline.texts(loaded, tok, n, sampling, quiet=common.quiet, sources=sources, clamp=clamp, mbr=mbr, labels=labels,
                   guidance=guidance, trajectory=trajectory)
    records = [{"seed": sampling.seed, "index": i} for i in range(n)]
    if labels is not None:
        records = [{**r, "class": spec.classes[k]} for r, k in zip(records, labels.tolist())]
    if common.json and not spec.pairs:
        nll = pipeline.nll(loaded, pipeline.encode_lines(tok, lines, spec.seq_len, "sample", strict=False))
        records = [{**r, "nll_bits_per_token": round(v, 4)} for r, v in zip(records, nll)]
    stamp = provenance_of(loaded, "sample text", sampling, input, label=label, guidance=guidance, prompt=prompt,
                          mbr=mbr)
    if trajectory is not None:
        pipeline.write_trajectory(trajectory_path, trajectory, loaded, tok, stamp)
    emit(lines, destination.stamped(stamp), f"seed{sampling.seed}", common, records)


@with_options(Common, TextSampling)
def inpaint(run: Model, input: Input,
            mask_token: Annotated[str, typer.Option(help="The marker of a gap in the input lines.")] = "[MASK]",
            span_length: Annotated[int, typer.Option(help="Tokens generated for each marker.")] = 1,
            mask: Annotated[Optional[str], typer.Option(help="Instead of markers: token positions to regenerate in every line, 0-based, like 3-5,8.")] = None,
            jump: Annotated[int, typer.Option(help="RePaint jump length in steps.")] = 10,
            resample: Annotated[int, typer.Option(help="RePaint repeats of each jump (1 = none).")] = 3,
            clamp: Clamp = True, output: Output = "-", trajectory_path: TrajectoryPath = None,
            *, common: Common, sampling: Sampling):
    """Fill the gaps of each input line; the rest of the line comes back verbatim, one output line per
    input line."""
    from diffkit.errors import DiffkitError
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target

    if span_length < 1:
        raise DiffkitError(f"--span-length must be at least 1, got {span_length}")
    destination = Destination.of(output, ".txt")
    trajectory = trajectory_target(trajectory_path, ".jsonl")
    loaded, tok = pipeline.load(run, common.device)
    if loaded.config.data.pairs:
        raise DiffkitError(f"{run} was trained with --pairs; inpaint needs a model of plain text")
    length = loaded.config.data.seq_len
    name = display_name(input)
    positions = parse_positions(mask) if mask is not None else None
    templates = [span_template(line, positions, length, tok, f"{name}:{i}") if positions is not None
                 else marker_template(line, mask_token, span_length, length, tok, f"{name}:{i}")
                 for i, line in enumerate(_read_lines(input), 1)]
    lines = pipeline.fill_templates(loaded, tok, templates, sampling, quiet=common.quiet, clamp=clamp, jump=jump, resample=resample,
                           trajectory=trajectory)
    stamp = provenance_of(loaded, "inpaint text", sampling, input, mask=mask, mask_token=None if mask else mask_token)
    if trajectory is not None:
        pipeline.write_trajectory(trajectory_path, trajectory, loaded, tok, stamp)
    emit(lines, destination.stamped(stamp), result_stem(input, "inpainted"), common)


@with_options(Common, StyleSampling)
def style(run: Model, input: Input, strength: Strength = None, label: Label = None, guidance: Guidance = 1.0,
          from_class: FromClass = None, method: StyleMethod = None, inversion_iterations: InversionIterations = 0,
          clamp: Annotated[Optional[bool], typer.Option("--clamp/--no-clamp", help="Snap the predicted x0 to the nearest token embeddings at every step; default: for SDEdit, not for the bridge (snapping makes the ODE's walk to noise impossible to retrace).")] = None,
          output: Output = "-", trajectory_path: TrajectoryPath = None, *, common: Common, sampling: Sampling):
    """Rewrite each input line: toward the training corpus by partial noising of its embeddings (SDEdit,
    strength 0.5, ddpm, unless told), or from --from-class to --class by the bridge (dpm++2m unless
    another deterministic --sampler is given; unclamped), one output line per input line."""
    from diffkit.errors import DiffkitError
    from diffkit.runs import provenance_of, style_start
    from diffkit.trajectory import trajectory_target

    destination = Destination.of(output, ".txt")
    trajectory = trajectory_target(trajectory_path, ".jsonl")
    loaded, tok = pipeline.load(run, common.device)
    if loaded.config.data.pairs:
        raise DiffkitError(f"{run} was trained with --pairs; style needs a model of plain text")
    strength, source = style_plan(loaded, method, from_class, label, strength, 0.5, guidance)
    sampling = or_sampler(sampling, "dpm++2m" if source else "ddpm")
    clamp = source is None if clamp is None else clamp
    lines = _read_lines(input)
    if strength > 0:
        tokens = pipeline.encode_lines(tok, lines, loaded.config.data.seq_len, display_name(input),
                              strict=True)
        start = loaded.model.embed(tokens.to(loaded.device))
        n = len(lines)
        ids = pipeline.generate(loaded, n, sampling, quiet=common.quiet, clamp=clamp,
                                start=style_start(start, strength, source, inversion_iterations),
                                labels=class_labels(loaded, label, n, guidance), guidance=guidance,
                                source_labels=class_labels(loaded, source, n, guidance), trajectory=trajectory)
        lines = [tok.decode(row) for row in ids]
    stamp = provenance_of(loaded, "style text", sampling, input, label=label, guidance=guidance, strength=strength,
                          from_class=from_class)
    if trajectory is not None and trajectory.runs:  # strength 0 takes no steps
        pipeline.write_trajectory(trajectory_path, trajectory, loaded, tok, stamp)
    emit(lines, destination.stamped(stamp), result_stem(input, "styled"), common)


def describe(run: str, config) -> dict:
    """`diffkit info` for a text run."""
    from diffkit.runs import summary
    from diffkit.text.tokenizer import Tokenizer

    spec, embed_dim = config.data, config.model["embed_dim"]
    return summary(run, config, pipeline.build, (embed_dim, spec.seq_len), seq_len=spec.seq_len,
                   vocab=len(Tokenizer.load(run)), embed_dim=embed_dim, pairs=spec.pairs,
                   classes=", ".join(spec.classes) or "none")


from diffkit.text.evaluate import evaluate  # noqa: E402  (typer only at import, like this module)
from diffkit.text.prepare import prepare  # noqa: E402

COMMANDS = {"prepare": prepare, "train": train, "sample": sample, "inpaint": inpaint, "style": style, "eval": evaluate}
