"""Infilling templates: an input line with gaps (markers, or token positions) as packed token ids, which
positions are kept, and the user's own text around the gaps, so that kept text comes back verbatim."""

import re
from typing import Any, NamedTuple

from diffkit.errors import DiffkitError


class Template(NamedTuple):
    """An input line to fill: packed token ids with the gaps as padding, which positions are kept, the
    positions of each gap, and the user's own text around the gaps (so kept text comes back verbatim)."""

    tokens: Any          # [L] token ids
    keep: Any            # [L] bool
    gaps: list[list[int]]
    texts: list[str]     # one more than the gaps

    def fill(self, ids, tokenizer) -> str:
        fills = [tokenizer.decode(ids[gap]) for gap in self.gaps]
        return self.texts[0] + "".join(f + t for f, t in zip(fills, self.texts[1:]))


def _template(parts: list[tuple[str, int]], length: int, tokenizer, where: str) -> Template:
    """A template from (text, gap tokens after it) parts."""
    import torch  # here, not at the top: the commands import this module before they need torch

    from diffkit.text.tokenizer import PAD

    ids, keep, gaps = [], [], []
    for text, gap in parts:
        piece = tokenizer.encode(text.strip()) if text.strip() else []
        ids, keep = ids + piece, keep + [True] * len(piece)
        if gap:
            gaps.append(list(range(len(ids), len(ids) + gap)))
            ids, keep = ids + [PAD] * gap, keep + [False] * gap
    if len(ids) > length - 1:
        raise DiffkitError(f"{where}: {len(ids)} tokens with the gaps filled in, more than the model's {length - 1}")
    packed = tokenizer.pack(ids, length)
    mask = torch.ones(length, dtype=torch.bool)
    mask[:len(keep)] = torch.tensor(keep, dtype=torch.bool)
    return Template(packed, mask, gaps, [text for text, _ in parts])


def marker_template(line: str, marker: str, span: int, length: int, tokenizer, where: str) -> Template:
    """Each `marker` in the line stands for `span` tokens to generate."""
    parts = line.split(marker)
    if len(parts) == 1:
        raise DiffkitError(f"{where}: no {marker} in the line (or use --mask with token positions)")
    return _template([(p, span if i < len(parts) - 1 else 0) for i, p in enumerate(parts)], length, tokenizer, where)


def span_template(line: str, positions: set[int], length: int, tokenizer, where: str) -> Template:
    """The line's tokens at `positions` (0-based) regenerated; the text of the other tokens kept."""
    pieces = tokenizer.pieces(line)
    if max(positions) >= len(pieces):
        raise DiffkitError(f"{where}: token position {max(positions)} is past the line's {len(pieces)} tokens")
    surfaces = [piece.replace("\u2581", " ") for piece in pieces]
    if surfaces and not line.startswith(" "):  # sentencepiece's dummy prefix
        surfaces[0] = surfaces[0][1:] if surfaces[0].startswith(" ") else surfaces[0]
    parts, text = [], ""
    i = 0
    while i < len(pieces):
        if i in positions:
            run = i
            while run < len(pieces) and run in positions:
                run += 1
            # The gap's own leading space stays with the text before it.
            text += " " if surfaces[i].startswith(" ") else ""
            parts.append((text, run - i))
            text, i = "", run
        else:
            text, i = text + surfaces[i], i + 1
    parts.append((text, 0))
    return _template(parts, length, tokenizer, where)


def parse_positions(spec: str) -> set[int]:
    """"3-5,8" -> {3, 4, 5, 8}: token positions, 0-based, ranges inclusive."""
    if not re.fullmatch(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*", spec):
        raise DiffkitError(f"--mask: expected token positions like 3-5,8 (0-based, inclusive), got {spec!r}")
    positions = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if last and int(last) < int(first):
            raise DiffkitError(f"--mask: range {part.strip()} ends before it starts")
        positions |= set(range(int(first), int(last or first) + 1))
    return positions
