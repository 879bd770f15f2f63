"""A training corpus of any size: tokenised once, a chunk at a time, into memory-mapped rows (as nanoGPT
keeps its tokens), with the tokenizer trained on a bounded random sample of the corpus.

A folder of rows holds tokens.bin ([N, seq_len] token ids, each row "ids </s> <pad>..."), and for a
class-conditional corpus labels.bin (int32 [N]), for pairs sources.bin (int32 [N]: how many leading
tokens of each row are the source and its separator). Training reads the rows a batch names, so neither
memory nor start-up time grows with the corpus.
"""

from __future__ import annotations

import json
import random
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from diffkit.console import warn
from diffkit.data.shards import MANIFEST
from diffkit.errors import DiffkitError
from diffkit.text.tokenizer import SEP

SAMPLE = 200_000  # examples the tokenizer is trained on, drawn uniformly from the corpus
CHUNK = 4096      # examples tokenised and written at a time
TOKENS, LABELS, SOURCES = "tokens.bin", "labels.bin", "sources.bin"
FORMAT = "diffkit-tokens"              # the manifest of a folder `diffkit prepare text` wrote


def token_dtype(vocab: int):
    return np.uint16 if vocab <= 2**16 else np.int32


@dataclass(frozen=True)
class Survey:
    sample: list[str]   # the tokenizer's training text: a uniform sample of at most SAMPLE examples
    count: int          # examples in the corpus
    labels: list[str]   # the class names met, sorted


def survey(examples: Iterable, kind: str, seed: int) -> Survey:
    """One pass over the corpus keeping a reservoir sample (Vitter's algorithm R): bounded memory for
    any corpus, and a corpus smaller than SAMPLE is kept whole and in order."""
    rng, sample, labels, count = random.Random(seed), [], set(), 0
    for count, example in enumerate(examples, 1):
        if kind == "classes":
            label, example = example
            labels.add(label)
        texts = example if kind == "pairs" else (example,)
        if count <= SAMPLE:
            sample.append(texts)
        elif (slot := rng.randrange(count)) < SAMPLE:
            sample[slot] = texts
    return Survey([text for texts in sample for text in texts], count, sorted(labels))


def line_ids(tokenizer, line: str, length: int) -> tuple[list[int], int]:
    """A line's ids cut to fit `length` with its end of sequence, and how many it had."""
    ids = tokenizer.encode(line)
    return ids[:length - 1], len(ids)


def pair_ids(tokenizer, source: str, target: str, length: int, where: str) -> tuple[list[int], int, int]:
    """"source <sep> target" cut to fit `length` with its end of sequence, the source's share (with the
    separator), and the target's whole length. A source must leave room for a target."""
    ids = tokenizer.encode(source) + [SEP]
    room = length - len(ids) - 1
    if room < 1:
        raise DiffkitError(f"{where}: source of {len(ids) - 1} tokens leaves no room for a target in --seq-len {length}")
    target_ids = tokenizer.encode(target) if target else []
    return ids + target_ids[:room], len(ids), len(target_ids)


class TokenRows:
    """The memory-mapped rows of a folder (see the module's doc)."""

    def __init__(self, folder: str | Path, seq_len: int, dtype: str, kind: str):
        folder = Path(folder)
        try:
            self.tokens = np.memmap(folder / TOKENS, dtype=dtype, mode="r").reshape(-1, seq_len)
            self.labels = np.memmap(folder / LABELS, dtype=np.int32, mode="r") if kind == "classes" else None
            self.sources = np.memmap(folder / SOURCES, dtype=np.int32, mode="r") if kind == "pairs" else None
        except (OSError, ValueError) as e:
            raise DiffkitError(f"{folder}: its token rows are missing or damaged ({e})") from None
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.tokens)

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.tokens[indices.numpy()].astype(np.int64))

    def keep(self, indices: torch.Tensor) -> torch.Tensor:
        """The source positions (source and separator) of pair rows [B, L]."""
        return torch.arange(self.seq_len) < torch.from_numpy(self.sources[indices.numpy()].astype(np.int64))[:, None]

    def batch(self, indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """For runs.batches: rows and their class labels."""
        return self.rows(indices), torch.from_numpy(self.labels[indices.numpy()].astype(np.int64))


def write_rows(folder: Path, tokenizer, examples: Iterable, kind: str, seq_len: int, classes: list[str],
               name: str) -> TokenRows:
    """Tokenise `examples` into folder's row files, CHUNK examples at a time; each file is written beside
    its place and renamed into it when complete. Lines and targets too long are cut, with one warning."""
    dtype = token_dtype(len(tokenizer))
    names = [TOKENS] + ([LABELS] if kind == "classes" else []) + ([SOURCES] if kind == "pairs" else [])
    position = {label: i for i, label in enumerate(classes)}
    count, cut, first_cut = 0, 0, 0
    with ExitStack() as stack:
        files = {n: stack.enter_context(open(folder / f".{n}.tmp", "wb")) for n in names}
        chunk: dict[str, list] = {n: [] for n in names}
        for count, example in enumerate(examples, 1):
            if kind == "pairs":
                ids, source_length, target_length = pair_ids(tokenizer, *example, seq_len, f"{name}:{count}")
                chunk[SOURCES].append(source_length)
                was_cut = target_length > seq_len - 1 - source_length
            else:
                if kind == "classes":
                    label, example = example
                    chunk[LABELS].append(position[label])
                ids, length = line_ids(tokenizer, example, seq_len)
                was_cut = length > seq_len - 1
            cut, first_cut = cut + was_cut, first_cut or (count if was_cut else 0)
            chunk[TOKENS].append(tokenizer.pack(ids, seq_len).numpy())
            if count % CHUNK == 0:
                _flush(files, chunk, dtype)
        _flush(files, chunk, dtype)
    for n in names:
        (folder / f".{n}.tmp").replace(folder / n)
    if cut:
        what = "targets" if kind == "pairs" else "examples"
        warn(f"{name}: {cut} of {count} {what} longer than --seq-len {seq_len} allows were cut (first: example "
             f"{first_cut}); raise --seq-len to keep them whole")
    return TokenRows(folder, seq_len, np.dtype(dtype).name, kind)


def _flush(files: dict, chunk: dict[str, list], dtype) -> None:
    for n, values in chunk.items():
        if values:
            np.asarray(values, dtype=dtype if n == TOKENS else np.int32).tofile(files[n])
            values.clear()


@dataclass(frozen=True)
class Corpus:
    tokenizer_model: bytes
    rows: TokenRows
    count: int
    classes: list[str]


def tokenise(folder: Path, stream: Callable[[], Iterable], kind: str, seq_len: int, vocab_size: int | None,
             tokenizer_type: str, seed: int, name: str) -> Corpus:
    """What `train text` and `prepare text` share: survey the corpus (a fresh `stream()` per pass), train
    the tokenizer on its sample, write the rows into `folder`."""
    from diffkit.text.data import class_names
    from diffkit.text.tokenizer import Tokenizer, default_vocab_size, train_tokenizer

    found = survey(stream(), kind, seed)
    if not found.count:
        raise DiffkitError(f"{name}: no {'pairs' if kind == 'pairs' else 'text'} (only blank lines)")
    classes = class_names(found.labels, name) if kind == "classes" else []
    model = train_tokenizer(found.sample, vocab_size or default_vocab_size(found.sample), tokenizer_type)
    rows = write_rows(folder, Tokenizer(model), stream(), kind, seq_len, classes, name)
    return Corpus(model, rows, found.count, classes)


def check_corpus_options(seq_len: int, vocab_size: int | None, class_cond: bool, pairs: str | None,
                         tokenizer_type: str) -> None:
    """What `train text` and `prepare text` check before reading any text."""
    from diffkit.errors import choose
    from diffkit.text.tokenizer import MODEL_TYPES

    if seq_len < 4 or seq_len > 4096:
        raise DiffkitError(f"--seq-len must be in 4..4096, got {seq_len}")
    if vocab_size is not None and vocab_size < 16:
        raise DiffkitError(f"--vocab-size must be at least 16, got {vocab_size}")
    if class_cond and pairs:
        raise DiffkitError("--class-cond applies to --data, not to --pairs")
    choose("tokenizer", tokenizer_type, MODEL_TYPES)


def prepared(folder: str | Path) -> dict | None:
    """The manifest of a folder `diffkit prepare text` wrote, or None for any other source."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DiffkitError(f"{path}: unreadable ({e})") from None
    if manifest.get("format") != FORMAT:
        raise DiffkitError(f"{path}: not a text folder of `diffkit prepare text` (format {manifest.get('format')!r})")
    return manifest
