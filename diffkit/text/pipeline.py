"""The text modality's library: training a run (its tokenizer, token rows and network), its network,
loading a run with its tokenizer, encoding lines and pairs to packed token rows, drawing token ids or
texts from a run (plain sampling, a pair's target, inpainting templates, or any edit of
diffkit.core.sample), each sequence's bits per token, and writing a denoising trajectory; evaluation.py
holds the rest. The commands in commands.py and evaluate.py are written over these.

Only the standard library (and diffkit.config) at import time; torch, sentencepiece and the core load
inside the functions.
"""

import functools

from diffkit import config


PREVIEW_COUNT = 8
# Self-conditioning, warped timesteps and batch 96 by default: each won on builtin:weather in grammar
# and bound over training seeds (docs/measurements/text.md). The warp moves training from where x̂_0 is
# already the token to where tokens are decided.
TRAINING = {"steps": 3000, "batch_size": 96, "lr": 1e-3, "lr_decay": "cosine", "schedule": "sqrt", "prediction": "x0",
            "ema_decay": 0.995, "checkpoint_every": 500, "self_cond": True, "timestep_sampling": "warped"}
# Ancestral sampling by default: its fresh noise at every step lets later steps undo an early choice of
# token, which deterministic solvers keep. Levels evenly spaced in log σ, not squeezed above σ = 5:
# tokens are still being decided up there (docs/measurements/samplers.md).
SAMPLING = {"sampler": "ddpm", "spacing": "logsnr"}
# --preset: token embedding size, Transformer width, layers and heads. Text's small is narrower than a
# power of two so that its default batch of 96 costs a step no longer than width 256 at batch 64 did
# (docs/measurements/text.md).
PRESETS = {"tiny": {"embed_dim": 32, "width": 128, "depth": 2, "heads": 2},
           "small": {"embed_dim": 64, "width": 224, "depth": 4, "heads": 4},
           "base": {"embed_dim": 128, "width": 512, "depth": 6, "heads": 8}}


# train_spec(out, **settings): a diffkit.config.TrainSpec into `out` with the text defaults
# (those `diffkit train text` starts from), `settings` in their place.
train_spec = functools.partial(config.train_spec, TRAINING)


def train(training, *, data: str = "builtin:weather", pairs: str | None = None, split: str = "line", seq_len: int = 64,
          vocab_size: int | None = None, tokenizer: str = "bpe", preset: str = "small", embed_dim: int | None = None,
          width: int | None = None, depth: int | None = None, heads: int | None = None, dropout: float = 0.0,
          class_cond: bool = False, column: str | None = None, label_column: str | None = None,
          label_dropout: float = 0.1, mse_weight: float = 0.2, device: str = "auto", quiet: bool = True,
          json_out: bool = False):
    """Train a Diffusion-LM as `training` (a diffkit.config.TrainSpec) says, into the run directory
    training.out: a sentencepiece tokenizer (`tokenizer`: bpe or unigram, `vocab_size`) of the corpus
    (`data`, split into examples by line or paragraph, or `pairs`: source<TAB>target lines; `class_cond`:
    its classes), token embeddings and a Transformer denoiser of the `preset`'s sizes, each one given in its
    place, at `seq_len` tokens; `mse_weight` weighs the diffusion loss beside the rounding cross-entropy.
    Writes config.json, tokenizer.model, model.safetensors, state/, metrics.jsonl, previews/; returns the
    EMA network."""
    from pathlib import Path

    import torch

    from diffkit.config import preset_sizes
    from diffkit.console import setting
    from diffkit.core.spec import SamplingSpec
    from diffkit.errors import DiffkitError, SettingError
    from diffkit.io import display_name, write_output
    from diffkit.text.config import TextData
    from diffkit.runs import Run, batch_indices, batches, schedule_of, start_run, train_run
    from diffkit.text.corpus import TOKENS, TokenRows, check_corpus_options, prepared, tokenise
    from diffkit.text.data import corpus_kind, corpus_stream, run_corpus_kind
    from diffkit.text.model import TextConfig, text_objective
    from diffkit.text.tokenizer import FILE, Tokenizer

    if not mse_weight >= 0:
        raise SettingError("mse_weight", f" must be at least 0, got {mse_weight}")
    source = pairs or data
    manifest = None if pairs or data == "-" else prepared(data)
    kind = manifest["kind"] if manifest else corpus_kind(bool(pairs), class_cond)

    def make_config():
        check_corpus_options(seq_len, vocab_size, class_cond, pairs, tokenizer)
        if not 0 <= dropout < 1:
            raise SettingError("dropout", f" must be in [0, 1), got {dropout}")
        if not 0 <= label_dropout < 1:
            raise SettingError("label_dropout", f" must be in [0, 1), got {label_dropout}")
        diffusion = training.diffusion()
        if diffusion.prediction != "x0":
            raise DiffkitError(f"text models predict x0, which rounding and clamping act on: {setting('prediction')} x0")
        out = Path(training.out)  # exists: start_run made it
        if manifest:  # rows and tokenizer of `diffkit prepare text`, read where they are
            if manifest["seq_len"] != seq_len:
                raise DiffkitError(f"{data} was prepared at {setting('seq_len')} {manifest['seq_len']}, not {seq_len}")
            if class_cond != (kind == "classes"):
                raise DiffkitError(f"{data} was prepared {'with' if kind == 'classes' else 'without'} "
                                   f"{setting('class_cond')}")
            model_bytes = (Path(data) / FILE).read_bytes()
            rows_folder, count, classes = str(Path(data).resolve()), manifest["examples"], manifest["classes"]
            rows = TokenRows(rows_folder, seq_len, manifest["dtype"], kind)
        else:
            stream = corpus_stream(kind, source, split, training.seed, column, label_column)
            corpus = tokenise(out, stream, kind, seq_len, vocab_size, tokenizer, training.seed, display_name(source))
            model_bytes, rows, count, classes = corpus.tokenizer_model, corpus.rows, corpus.count, corpus.classes
            rows_folder = "."
        tok = Tokenizer(model_bytes)
        chosen = preset_sizes(preset, PRESETS, embed_dim=embed_dim, width=width, depth=depth, heads=heads)
        model = TextConfig(vocab=len(tok), seq_len=seq_len, **chosen, dropout=dropout,
                           learned_variance=diffusion.variance == "learned", classes=len(classes),
                           self_cond=diffusion.self_cond, readout="linear")
        write_output(str(out / FILE), model_bytes)
        config = {"model": model.to_json(), "diffusion": diffusion,
                  "data": TextData(source, kind == "pairs", split, seq_len, training.seed, count, tuple(classes),
                                   rows.tokens.dtype.name, rows_folder, column, label_column,
                                   label_dropout if class_cond else 0.0)}
        return config, (tok, rows)

    def reopen(config):
        nonlocal kind
        spec = config.data
        kind = run_corpus_kind(spec)
        tok = Tokenizer.load(training.out)
        folder = Path(training.out) / (spec.rows or ".")
        if spec.rows is None or not (folder / TOKENS).exists():  # a run from before token files: write them
            from diffkit.text.corpus import write_rows

            stream = corpus_stream(kind, source, split, training.seed, column, label_column)
            return tok, write_rows(folder, tok, stream(), kind, spec.seq_len, spec.classes,
                                   display_name(source))
        return tok, TokenRows(folder, spec.seq_len, spec.dtype, kind)

    config, (tok, rows) = start_run(training, "text", make_config, reopen)
    classes = config.data.classes
    if classes:
        batch_at = batches(rows, training, lambda t: t, len(classes), config.data.label_dropout)
    else:
        def batch_at(step: int, micro: int):
            index = batch_indices(step, micro, len(rows), training)
            return rows.rows(index), ({"keep": rows.keep(index)} if kind == "pairs" else {})

    previews = Path(training.out) / "previews"

    def preview(ema, step):
        run = Run(Path(training.out), config, ema, schedule_of(config), next(ema.parameters()).device)
        first = torch.arange(min(PREVIEW_COUNT, len(rows)))
        sources = (rows.rows(first), rows.keep(first)) if kind == "pairs" else None
        drawn = texts(run, tok, len(first), SamplingSpec(**SAMPLING), sources=sources)
        previews.mkdir(exist_ok=True)
        write_output(str(previews / f"step-{step:07d}.txt"), "".join(line + "\n" for line in drawn).encode())

    objective = text_objective(schedule_of(config), variance=config.diffusion.variance, weighting=training.weighting,
                               self_cond=config.diffusion.self_cond, mse_weight=mse_weight)
    return train_run(config, build, batch_at, training, device=device, quiet=quiet, json_out=json_out, preview=preview,
                     objective=objective)


def build(config: dict):
    from diffkit.text.model import TextConfig, TextDenoiser

    return TextDenoiser(TextConfig(**config.model))


def encode_lines(tokenizer, lines: list[str], length: int, name: str, *, strict: bool):
    """Packed token ids [N, length]. A line too long is an error naming it when `strict`, else cut with
    one warning that counts them."""
    import torch

    from diffkit.console import setting, warn
    from diffkit.errors import DiffkitError
    from diffkit.text.corpus import line_ids

    rows, cut = [], []
    for number, line in enumerate(lines, 1):
        ids, count = line_ids(tokenizer, line, length)
        if count > length - 1:
            if strict:
                raise DiffkitError(f"{name}:{number}: {count} tokens, more than the model's {length - 1} "
                                   f"({setting('seq_len')} {length} less the end of sequence)")
            cut.append(number)
        rows.append(tokenizer.pack(ids, length))
    if cut:
        warn(f"{name}: {len(cut)} of {len(lines)} examples longer than {length - 1} tokens were cut "
             f"(first: example {cut[0]}); raise {setting('seq_len')} to keep them whole")
    return torch.stack(rows)


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], length: int, name: str, *, strict: bool):
    """Packed pairs "source <sep> target </s> <pad>..." [N, length] and the source mask (source and
    separator) [N, length]. Targets are cut to fit, sources never: a source must leave room for a target."""
    import torch

    from diffkit.console import setting, warn
    from diffkit.errors import DiffkitError
    from diffkit.text.corpus import pair_ids

    rows, keeps, cut = [], [], 0
    for number, (source, target) in enumerate(pairs, 1):
        ids, source_length, target_length = pair_ids(tokenizer, source, target, length, f"{name}:{number}")
        if target_length > length - 1 - source_length:
            if strict:
                raise DiffkitError(f"{name}:{number}: target longer than the {length - 1 - source_length} tokens "
                                   "left after the source")
            cut += 1
        rows.append(tokenizer.pack(ids, length))
        keeps.append(torch.arange(length) < source_length)
    if cut:
        warn(f"{name}: {cut} of {len(pairs)} targets were cut to fit {setting('seq_len')} {length}")
    return torch.stack(rows), torch.stack(keeps)


def load(path: str, device: str = "auto"):
    from diffkit.runs import load_run
    from diffkit.text.tokenizer import Tokenizer

    return load_run(path, "text", build, device), Tokenizer.load(path)


def generate(run, n: int, sampling, *, quiet: bool = True, clamp: bool = True, conditions=None, labels=None,
             guidance: float = 1.0, start=None, source_labels=None, condition=None, trajectory=None):
    """Token ids [n, L] sampled from a run, under class `labels` or a pair's `conditions`, from a `start`
    and under a `condition` of core.editing in model space [n, D, L]."""
    from diffkit import runs
    from diffkit.text.model import clamp_hook

    model = run.model
    shape = (n, model.config.embed_dim, model.config.seq_len)
    x = runs.generate(run, shape, sampling, quiet=quiet, labels=labels, guidance=guidance, conditions=conditions,
                      start=start, source_labels=source_labels, condition=condition,
                      hook=clamp_hook(model) if clamp else None, trajectory=trajectory)
    return model.logits(x).argmax(-1).cpu()


def texts(run, tokenizer, n: int, sampling, *, quiet: bool = True, sources=None, clamp: bool = True, mbr: int = 1,
          trajectory=None, labels=None, guidance: float = 1.0) -> list[str]:
    """n texts. For a pair model, `sources` = (tokens [n, L], keep [n, L]) gives each its source, and the
    text after it is returned, with `mbr` = K > 1 the minimum-Bayes-risk choice among K samples for it;
    `labels` (with classifier-free `guidance`) condition a class-conditional one."""
    from diffkit.metrics.text import mbr_choice

    conditions = None
    if sources is not None:
        tokens, keep = (part.repeat_interleave(mbr, 0) for part in sources)
        conditions = {"keep": keep, "clean": run.model.embed(tokens.to(run.device))}
    ids = generate(run, n * (mbr if sources is not None else 1), sampling, quiet=quiet, clamp=clamp,
                   conditions=conditions, trajectory=trajectory, labels=labels, guidance=guidance)
    if sources is None:
        return [tokenizer.decode(row) for row in ids]
    texts = [tokenizer.decode(row[~k]) for row, k in zip(ids, keep)]
    groups = [texts[i * mbr:(i + 1) * mbr] for i in range(n)]
    return [group[mbr_choice(group)] for group in groups]


def write_trajectory(path: str, trajectory, run, tokenizer, stamp: dict) -> None:
    """`--trajectory`: a JSON line per step, each sample's x̂_0 rounded to its nearest tokens (for a pair
    model the source with them), as ids and as text."""
    import json

    import torch

    from diffkit.trajectory import write_trajectory as write

    rows = trajectory.rows()
    lines = []
    for step, t in enumerate(trajectory.timesteps()):
        ids = run.model.logits(torch.stack([row[step] for row in rows]).to(run.device)).argmax(-1).tolist()
        lines.append(json.dumps({"step": step, "t": t, "texts": [tokenizer.decode(row) for row in ids],
                                 "tokens": ids}, separators=(",", ":")) + "\n")
    write(path, "".join(lines).encode(), stamp)


def nll(run, tokens, strata: int = 20) -> list[float]:
    """Bits per token of each packed sequence under the run's bound (a few strata: an estimate)."""
    import torch

    from diffkit.text.model import bits_per_token

    return bits_per_token(run.model, run.schedule, tokens.to(run.device), variance=run.config.diffusion.variance,
                          strata=strata, generator=torch.Generator().manual_seed(0),
                          self_cond=run.config.diffusion.self_cond).tolist()


def fill_templates(run, tokenizer, templates: list, sampling, *, quiet: bool = True,
                   clamp: bool, jump: int, resample: int, trajectory=None) -> list[str]:
    """Generate every template's gaps with the core's known-region conditioning; kept text verbatim."""
    import torch

    from diffkit.core.editing import Inpaint

    tokens = torch.stack([t.tokens for t in templates])
    keep = torch.stack([t.keep for t in templates])
    known = run.model.embed(tokens.to(run.device))
    ids = generate(run, len(templates), sampling, quiet=quiet, clamp=clamp,
                   condition=Inpaint(known, keep[:, None].float(), jump, resample), trajectory=trajectory)
    return [t.fill(row, tokenizer) for t, row in zip(templates, ids)]
