"""Scatter plots as PNG with Pillow, so the demo needs no plotting library."""

import io

import torch
from PIL import Image, ImageDraw

PANEL, MARGIN = 360, 24


def scatter_png(panels: list[tuple[str, torch.Tensor]], bounds: tuple[float, float, float, float]) -> bytes:
    """Side-by-side panels of 2-D points (first two columns), all on the same axes."""
    x0, x1, y0, y1 = bounds
    image = Image.new("RGB", (PANEL * len(panels), PANEL + MARGIN), "white")
    draw = ImageDraw.Draw(image)
    for i, (title, points) in enumerate(panels):
        left = i * PANEL
        draw.rectangle([left + 4, MARGIN, left + PANEL - 4, PANEL + MARGIN - 4], outline=(200, 200, 200))
        draw.text((left + 8, 6), title, fill="black")
        p = points[:, :2].double()
        u = left + 6 + (p[:, 0] - x0) / (x1 - x0) * (PANEL - 12)
        v = MARGIN + 2 + (y1 - p[:, 1]) / (y1 - y0) * (PANEL - 8)
        for a, b in zip(u.tolist(), v.tolist()):
            draw.point((a, b), fill=(30, 80, 200) if i else (60, 60, 60))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def bounds_of(points: torch.Tensor, pad: float = 0.15) -> tuple[float, float, float, float]:
    lo, hi = points[:, :2].min(0).values, points[:, :2].max(0).values
    span = (hi - lo).max().item() * (1 + 2 * pad)
    centre = (lo + hi) / 2
    return (centre[0].item() - span / 2, centre[0].item() + span / 2, centre[1].item() - span / 2, centre[1].item() + span / 2)
