"""Text in: a file, a folder of files or stdin, one example per line or per paragraph; TSV pairs for
sequence-to-sequence training; and the built-in grammar corpus. Files are read a line at a time, so
that a corpus streams through (see diffkit.text.corpus) instead of being held whole."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

from diffkit.data.arrow import HF_PREFIX
from diffkit.errors import DiffkitError, choose
from diffkit.io import decode_utf8, display_name
from diffkit.text import grammar

BUILTIN = {"builtin:weather"}
BUILTIN_LINES = 20_000
SPLITS = ("line", "paragraph")


def text_files(source: str) -> list[Path]:
    """The files of --data: the file itself, or every file under a folder (sorted, hidden ones skipped)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts))
        if not files:
            raise DiffkitError(f"{source}: folder holds no files")
        return files
    if path.is_file():
        return [path]
    raise DiffkitError(f"{source}: no such file or folder")


def file_lines(path: Path) -> Iterator[str]:
    """A file's lines, read and decoded one at a time: a corpus of any size streams through."""
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DiffkitError(f"{path}: not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at byte offset "
                                   f"{offset + e.start})") from None
            offset += len(raw)
            yield line.rstrip("\r\n")


def read_text(source: str) -> Iterator[tuple[str, Iterator[str]]]:
    """(name, its lines) of `-` (stdin, read whole: it cannot be read twice), a file, or every file of a folder."""
    if source == "-":
        name = display_name(source)
        yield name, iter(decode_utf8(sys.stdin.buffer.read(), name).splitlines())
        return
    for path in text_files(source):
        yield str(path), file_lines(path)


def examples(lines: Iterable[str], split: str) -> Iterator[str]:
    """Lines (blank ones dropped) or paragraphs (blocks between blank lines, joined by spaces)."""
    choose("split", split, SPLITS)
    block: list[str] = []
    for line in lines:
        line = line.strip()
        if split == "line":
            if line:
                yield line
        elif line:
            block.append(line)
        elif block:
            yield " ".join(block)
            block = []
    if block:
        yield " ".join(block)


def hf_texts(source: str, class_cond: bool, column: str | None, label_column: str | None) -> Iterator:
    """The rows of `hf:PATH` (a saved Hugging Face dataset or parquet), one example each: texts, or
    (class name, text) with `class_cond`."""
    from diffkit.data.arrow import ArrowSource

    table = ArrowSource(source.removeprefix(HF_PREFIX), "text", class_cond, column=column, label_column=label_column)
    for index in range(len(table)):
        text = table.value(index)
        if not isinstance(text, str):
            raise DiffkitError(f"{table.name(index)}: column {table.column!r} holds {type(text).__name__}, not text")
        if text.strip():
            yield (table.classes[int(table.labels[index])], text.strip()) if class_cond else text.strip()


def iter_lines(source: str, split: str = "line", seed: int = 0, column: str | None = None) -> Iterator[str]:
    """Training examples of --data: a built-in corpus (deterministic per seed), hf:PATH, or the user's text."""
    if source.startswith(HF_PREFIX):
        yield from hf_texts(source, False, column, None)
        return
    if source.startswith("builtin:"):
        choose("built-in text", source, BUILTIN)
        yield from grammar.lines(BUILTIN_LINES, seed)
        return
    for _, lines in read_text(source):
        yield from examples(lines, split)


def iter_classes(source: str, split: str = "line", seed: int = 0, column: str | None = None,
                 label_column: str | None = None) -> Iterator[tuple[str, str]]:
    """(class name, example) of `train text --class-cond --data SOURCE`: the registers of builtin:weather;
    hf:PATH's label column; a folder's first-level sub-folders (or, with none, its files) as classes; or
    a file (or -) of label<TAB>text lines."""
    if source.startswith(HF_PREFIX):
        yield from hf_texts(source, True, column, label_column)
        return
    if source.startswith("builtin:"):
        choose("built-in text", source, BUILTIN)
        found, labels = grammar.labelled_lines(BUILTIN_LINES, seed)
        names = list(grammar.REGISTERS)
        yield from ((names[label], line) for line, label in zip(found, labels))
        return
    if source != "-" and Path(source).is_dir():
        files = text_files(source)
        depths = [f.relative_to(source).parts for f in files]
        tops = [f for f, parts in zip(files, depths) if len(parts) == 1]
        if tops and len(tops) < len(files):
            raise DiffkitError(f"{tops[0]}: a file beside the class sub-folders of {source} belongs to no class")
        for path, parts in zip(files, depths):
            label = parts[0] if len(parts) > 1 else path.stem
            yield from ((label, line) for line in examples(file_lines(path), split))
        return
    for name, lines in read_text(source):
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            label, tab, rest = line.partition("\t")
            if not tab or not label.strip() or not rest.strip():
                raise DiffkitError(f"{name}:{number}: expected label<TAB>text (--class-cond from a file)")
            yield label.strip(), rest.strip()


def iter_pairs(source: str, seed: int = 0) -> Iterator[tuple[str, str]]:
    """(source, target) pairs of --pairs: a TSV file (source<TAB>target per line) or builtin:weather
    (a weather record and a sentence that says it)."""
    if source.startswith("builtin:"):
        choose("built-in pairs", source, BUILTIN)
        yield from grammar.pairs(BUILTIN_LINES, seed)
        return
    for name, lines in read_text(source):
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DiffkitError(f"{name}:{number}: expected source<TAB>target, got {len(parts)} field(s)")
            yield parts[0].strip(), parts[1].strip()


def corpus_kind(pairs: bool, class_cond: bool) -> str:
    """What an example of the corpus is: a line, a (class name, line) or a (source, target) pair."""
    return "pairs" if pairs else "classes" if class_cond else "lines"


def run_corpus_kind(spec: dict) -> str:
    """corpus_kind of a run, from its config's data part."""
    return corpus_kind(spec.pairs, bool(spec.classes))


def corpus_stream(kind: str, source: str, split: str, seed: int, column: str | None,
                  label_column: str | None) -> Callable[[], Iterator]:
    """A function that starts a fresh pass over the corpus's examples each time it is called (the
    tokenizer's survey and the tokenising are two passes)."""
    if kind == "pairs":
        return lambda: iter_pairs(source, seed)
    if kind == "classes":
        return lambda: iter_classes(source, split, seed, column, label_column)
    return lambda: iter_lines(source, split, seed, column)


def class_names(labels: Iterable[str], source: str) -> list[str]:
    """The class names of --class-cond data, at least two: sorted, or a built-in corpus's own order."""
    classes = list(grammar.REGISTERS) if source.startswith("builtin:") else sorted(set(labels))
    if len(classes) < 2:
        raise DiffkitError(f"{display_name(source)}: --class-cond needs at least two classes, found {classes}")
    return classes


def nonempty(found: list, source: str, what: str = "text") -> list:
    if not found:
        raise DiffkitError(f"{display_name(source)}: no {what} (only blank lines)")
    return found


def load_lines(source: str, split: str = "line", seed: int = 0) -> list[str]:
    return nonempty(list(iter_lines(source, split, seed)), source)


def load_classes(source: str, split: str = "line", seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """(examples, their labels, the class names): iter_classes, whole."""
    named = nonempty(list(iter_classes(source, split, seed)), source)
    classes = class_names((label for label, _ in named), source)
    position = {name: i for i, name in enumerate(classes)}
    return [text for _, text in named], [position[label] for label, _ in named], classes


def load_pairs(source: str, seed: int = 0) -> list[tuple[str, str]]:
    return nonempty(list(iter_pairs(source, seed)), source, "pairs")
