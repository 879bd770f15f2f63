"""Text in: a file, a folder of files or stdin, one example per line or per paragraph; TSV pairs for
sequence-to-sequence training; and the built-in grammar corpus."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkit.errors import DiffkitError, choose
from diffkit.io import decode_utf8, display_name
from diffkit.text import grammar

BUILTIN = {"builtin:weather"}
BUILTIN_LINES = 20_000
SPLITS = ("line", "paragraph")


def read_text(source: str) -> list[tuple[str, str]]:
    """(name, text) of `-` (stdin), a file, or every file under a folder (sorted, hidden ones skipped)."""
    if source == "-":
        return [(display_name(source), decode_utf8(sys.stdin.buffer.read(), display_name(source)))]
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts))
        if not files:
            raise DiffkitError(f"{source}: folder holds no files")
    elif path.is_file():
        files = [path]
    else:
        raise DiffkitError(f"{source}: no such file or folder")
    return [(str(f), decode_utf8(f.read_bytes(), str(f))) for f in files]


def examples(text: str, split: str) -> list[str]:
    """Lines (blank ones dropped) or paragraphs (blocks between blank lines, joined by spaces)."""
    choose("split", split, SPLITS)
    if split == "line":
        return [line.strip() for line in text.splitlines() if line.strip()]
    blocks = [" ".join(line.strip() for line in block.splitlines()) for block in text.replace("\r\n", "\n").split("\n\n")]
    return [block.strip() for block in blocks if block.strip()]


def load_lines(source: str, split: str = "line", seed: int = 0) -> list[str]:
    """Training examples of --data: a built-in corpus (deterministic per seed) or the user's text."""
    if source.startswith("builtin:"):
        choose("built-in text", source, BUILTIN)
        return grammar.lines(BUILTIN_LINES, seed)
    found = [line for _, text in read_text(source) for line in examples(text, split)]
    if not found:
        raise DiffkitError(f"{display_name(source)}: no text (only blank lines)")
    return found


def load_classes(source: str, split: str = "line", seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """(examples, their labels, the class names) of `train text --class-cond --data SOURCE`: the registers
    of builtin:weather; a folder's first-level sub-folders (or, with none, its files) as classes; or a file
    (or -) of label<TAB>text lines."""
    if source.startswith("builtin:"):
        choose("built-in text", source, BUILTIN)
        found, labels = grammar.labelled_lines(BUILTIN_LINES, seed)
        return found, labels, list(grammar.REGISTERS)
    files, named = read_text(source), []
    if source != "-" and Path(source).is_dir():
        depths = [Path(name).relative_to(source).parts for name, _ in files]
        tops = [name for (name, _), parts in zip(files, depths) if len(parts) == 1]
        if tops and len(tops) < len(files):
            raise DiffkitError(f"{tops[0]}: a file beside the class sub-folders of {source} belongs to no class")
        for (name, text), parts in zip(files, depths):
            named += [(parts[0] if len(parts) > 1 else Path(name).stem, line) for line in examples(text, split)]
    else:
        for name, text in files:
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                label, tab, rest = line.partition("\t")
                if not tab or not label.strip() or not rest.strip():
                    raise DiffkitError(f"{name}:{number}: expected label<TAB>text (--class-cond from a file)")
                named.append((label.strip(), rest.strip()))
    if not named:
        raise DiffkitError(f"{display_name(source)}: no text (only blank lines)")
    classes = sorted({label for label, _ in named})
    if len(classes) < 2:
        raise DiffkitError(f"{display_name(source)}: --class-cond needs at least two classes, found {classes}")
    return [text for _, text in named], [classes.index(label) for label, _ in named], classes


@dataclass(frozen=True)
class LabelledTokens:
    """Packed token rows [N, L] and their class labels [N]: the data set that runs.batches turns into the
    trainer's batch_at (with label dropout)."""

    tokens: Any
    labels: Any

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, indices, generator):
        return self.tokens[indices], self.labels[indices]


def load_pairs(source: str, seed: int = 0) -> list[tuple[str, str]]:
    """(source, target) pairs of --pairs: a TSV file (source<TAB>target per line) or builtin:weather
    (a weather record and a sentence that says it)."""
    if source.startswith("builtin:"):
        choose("built-in pairs", source, BUILTIN)
        return grammar.pairs(BUILTIN_LINES, seed)
    found = []
    for name, text in read_text(source):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DiffkitError(f"{name}:{number}: expected source<TAB>target, got {len(parts)} field(s)")
            found.append((parts[0].strip(), parts[1].strip()))
    if not found:
        raise DiffkitError(f"{display_name(source)}: no pairs (only blank lines)")
    return found

