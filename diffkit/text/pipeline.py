"""The text modality's library: a run's network, loading a run with its tokenizer, encoding lines and
pairs to packed token rows, drawing token ids or texts from a run (plain sampling, a pair's target,
inpainting templates, or any edit of diffkit.core.sample), each sequence's bits per token, and writing a
denoising trajectory. The commands in commands.py and evaluate.py are written over these.

Only the standard library at import time; torch, sentencepiece and the core load inside the functions.
"""


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
