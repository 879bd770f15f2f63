"""Text in: a file, a folder of files or stdin, one example per line or per paragraph; TSV pairs for
sequence-to-sequence training; and the built-in grammar corpus."""

from __future__ import annotations

import sys
from pathlib import Path

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

