"""Where training examples come from, for every modality: folders, WebDataset tar shards, Hugging Face
datasets and parquet files, and the shards `diffkit prepare` writes.

A source is a random-access list of encoded examples: `len(source)`, `source.open(i)` (a seekable binary
file of example i: a file, a region of a tar shard, or bytes of an Arrow column), `source.name(i)` for
messages, `source.labels` (int64 [N]) with `source.classes` (their names, [] without classes), and
`source.present()` (False once the data has vanished). Opening a source costs a listing, never a
decode: modalities decode example i when a batch names it (see `readable`), so start-up time and memory
do not grow with the number of examples, and under torchrun each process reads only its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from diffkit.console import warn
from diffkit.errors import DiffkitError

T = TypeVar("T")


def open_source(spec: str, kind: str, suffixes: set[str], class_cond: bool, holding: str, *,
                column: str | None = None, label_column: str | None = None):
    """--data as a source of `kind` (image, audio, text) examples: `hf:PATH` (a saved Hugging Face dataset or parquet files), tar shards (a
    path or brace pattern ending in .tar, or a folder `diffkit prepare` wrote), or a folder of files."""
    from diffkit.data.arrow import HF_PREFIX
    from diffkit.data.folder import FolderSource
    from diffkit.data.shards import MANIFEST, TarSource, is_shard_pattern, prepared_shards

    if spec.startswith(HF_PREFIX):
        from diffkit.data.arrow import ArrowSource

        return ArrowSource(spec[len(HF_PREFIX):], kind, class_cond, column=column, label_column=label_column)
    if column is not None or label_column is not None:
        raise DiffkitError("--column and --label-column apply to hf: data")
    if is_shard_pattern(spec):
        return TarSource(spec, suffixes, class_cond)
    path = Path(spec)
    if (path / MANIFEST).is_file():
        shards, classes = prepared_shards(path)
        return TarSource(shards, suffixes, class_cond, classes=classes, name=spec)
    return FolderSource(spec, suffixes, class_cond, holding)


# What reading and decoding one example raises when the example is bad (not when the code is).
UNREADABLE = (DiffkitError, OSError, ValueError, EOFError)


def readable(source, index: int, decode: Callable[[object, str], T], what: str) -> tuple[T, int]:
    """(decode(file, name), label) of example `index`, or, if that one cannot be read, of the next one
    that can: a deterministic replacement, so a run keeps its place and its resume stays exact. Each
    unreadable example is reported once; a source whose data have vanished stops the run."""
    n = len(source)
    for offset in range(n):
        i = (index + offset) % n
        name = source.name(i)
        try:
            with source.open(i) as file:
                return decode(file, name), int(source.labels[i])
        except UNREADABLE as e:
            if not source.present():
                raise DiffkitError(f"{source.spec}: the data has gone (reading {name} failed: "
                                   f"{reason(e, name)})") from None
            warn(f"{name}: unreadable {what}, replaced by another ({reason(e, name)})")
    raise DiffkitError(f"{source.spec}: no readable {what} among its {n}")


def reason(error: Exception, name: str) -> str:
    """An error's first line, without the name it would repeat."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.removeprefix(f"{name}: ")
