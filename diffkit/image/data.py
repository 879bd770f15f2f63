"""Image data: folders of image files, or built-in sets the package draws itself.

Every data set answers `batch(indices, generator) -> (uint8 [B, C, H, W], labels [B])`. A source's
images (a folder, tar shards, a Hugging Face dataset) are decoded, resized and cropped when a batch names
them; built-in images are drawn on demand, each a pure function of (seed, index), so they are endless and
need no storage.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from diffkit.data import open_source, readable
from diffkit.errors import DiffkitError

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Random crops are taken from images kept this much larger than the training size.
CROP_MARGIN = 1.125


def parse_size(text: str | int | list | tuple) -> tuple[int, int]:
    """"32" or "32x48" (height x width) -> (32, 48)."""
    if isinstance(text, (list, tuple)):
        return int(text[0]), int(text[1])
    parts = str(text).lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise DiffkitError(f"--image-size: expected H or HxW, got {text!r}") from None
    if h < 1 or w < 1 or len(parts) > 2:
        raise DiffkitError(f"--image-size: expected H or HxW, got {text!r}")
    return h, w


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    if channels not in MODES:
        raise DiffkitError(f"--channels must be 1, 3 or 4, got {channels}")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # keep a palette image's transparency when converting
    return image.convert(MODES[channels])


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to cover `size` (H, W), keeping the aspect ratio, then crop the centre."""
    h, w = size
    scale = max(h / image.height, w / image.width)
    rh, rw = max(h, round(image.height * scale)), max(w, round(image.width * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    top, left = (rh - h) // 2, (rw - w) // 2
    return image.crop((left, top, left + w, top + h))


def to_tensor(image: Image.Image) -> Tensor:
    """PIL image -> uint8 [C, H, W]."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def augment(images: Tensor, size: tuple[int, int], flip: bool, generator: torch.Generator) -> Tensor:
    """A random crop to `size` of each image and, with `flip`, a random left-right flip."""
    h, w = size
    out = []
    for image in images:
        top = int(torch.randint(0, image.shape[1] - h + 1, (), generator=generator))
        left = int(torch.randint(0, image.shape[2] - w + 1, (), generator=generator))
        image = image[:, top:top + h, left:left + w]
        if flip and torch.rand((), generator=generator) < 0.5:
            image = image.flip(-1)
        out.append(image)
    return torch.stack(out)


def decode_image(file, channels: int, size: tuple[int, int]) -> Tensor:
    """An encoded image -> uint8 [C, H, W] covering `size`, centre-cropped."""
    try:
        with Image.open(file) as image:
            image.draft(None, (size[1], size[0]))  # JPEG: decode at the smallest scale that still covers it
            image.load()
            return to_tensor(fit(to_channels(image, channels), size))
    except Image.DecompressionBombError as e:
        raise ValueError(str(e)) from None


class SourceImages:
    """The images of a source (a folder, shards, a Hugging Face dataset), each decoded when a batch names
    it, at (slightly above, for random crops) the training size."""

    def __init__(self, source, size: tuple[int, int], channels: int, crop: str, flip: bool):
        self.source, self.size, self.channels, self.flip = source, size, channels, flip
        self.classes = source.classes
        self.stored = size if crop == "center" else tuple(math.ceil(s * CROP_MARGIN) for s in size)
        self.example(0)  # a source with no readable image fails now, not at the first step

    def __len__(self) -> int:
        return len(self.source)

    def example(self, index: int) -> tuple[Tensor, int]:
        return readable(self.source, index, lambda file, name: decode_image(file, self.channels, self.stored), "image")

    def batch(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        images, labels = zip(*(self.example(int(i)) for i in indices))
        return augment(torch.stack(images), self.size, self.flip, generator), torch.tensor(labels)


# ---------------------------------------------------------------- built-in sets

SUPERSAMPLE = 4  # draw at 4x and shrink: anti-aliased edges without an anti-aliasing renderer


def _hue_colour(rng: np.random.Generator, lightness: tuple[float, float]) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hls_to_rgb(rng.random(), rng.uniform(*lightness), rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(cx: float, cy: float, radius: float, corners: int, angle: float, inner: float = 1.0) -> list:
    """A regular polygon, or a star when `inner` < 1 (every other corner pulled in)."""
    points = []
    count = corners * (2 if inner < 1 else 1)
    for k in range(count):
        r = radius * (inner if k % 2 else 1.0) if inner < 1 else radius
        a = angle + 2 * math.pi * k / count
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def draw_shape(rng: np.random.Generator, label: int, size: tuple[int, int]) -> Image.Image:
    h, w = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    image = Image.new("RGB", (w, h), _hue_colour(rng, (0.08, 0.25)))
    draw = ImageDraw.Draw(image)
    # Large upright shapes near the centre, varying in size, place, tilt and colour: little enough
    # variety that a small network draws them recognisably after a few CPU minutes.
    radius = rng.uniform(0.26, 0.36) * min(h, w)
    cx, cy = w / 2 + rng.uniform(-0.12, 0.12) * w, h / 2 + rng.uniform(-0.12, 0.12) * h
    tilt, colour = math.radians(rng.uniform(-10, 10)), _hue_colour(rng, (0.55, 0.75))
    if label == 0:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    else:
        # Corner angles that stand squares on an edge and point triangles and stars up.
        corners, inner, angle = {1: (4, 1.0, math.pi / 4), 2: (3, 1.0, -math.pi / 2), 3: (5, 0.45, -math.pi / 2)}[label]
        draw.polygon(_polygon(cx, cy, radius, corners, angle + tilt, inner), fill=colour)
    return image.resize((size[1], size[0]), Image.Resampling.BOX)


def draw_digit(rng: np.random.Generator, label: int, size: tuple[int, int]) -> Image.Image:
    h, w = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    font = _font(int(0.8 * min(h, w)))
    glyph = Image.new("L", (w, h), 0)
    ImageDraw.Draw(glyph).text((w / 2, h / 2), str(label), fill=255, font=font, anchor="mm",
                               stroke_width=int(rng.integers(0, 3)) * SUPERSAMPLE // 2, stroke_fill=255)
    # A random affine map: rotation, scale, shear and shift, as handwriting would vary them.
    angle, scale = math.radians(rng.uniform(-15, 15)), rng.uniform(0.75, 1.05)
    shear = rng.uniform(-0.25, 0.25)
    shift = rng.uniform(-0.08, 0.08, 2) * (w, h)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    a, b, d, e = cos, sin + shear * cos, -sin, cos - shear * sin
    cx, cy = w / 2, h / 2
    coeffs = (a, b, cx - a * (cx + shift[0]) - b * (cy + shift[1]), d, e, cy - d * (cx + shift[0]) - e * (cy + shift[1]))
    glyph = glyph.transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return glyph.resize((size[1], size[0]), Image.Resampling.BOX)


_FONTS: dict[int, ImageFont.FreeTypeFont] = {}


def _font(pixels: int):
    if pixels not in _FONTS:
        _FONTS[pixels] = ImageFont.load_default(size=pixels)  # Pillow's bundled font: no system font needed
    return _FONTS[pixels]


BUILTINS = {
    # name: (draw function, class names, natural channel count)
    "shapes": (draw_shape, ["circle", "square", "triangle", "star"], 3),
    "digits": (draw_digit, [str(d) for d in range(10)], 1),
}


class BuiltinImages:
    """An endless labelled set: image i is drawn from a generator seeded by (seed, i)."""

    endless = True

    def __init__(self, name: str, size: tuple[int, int], channels: int | None, seed: int, flip: bool):
        if name not in BUILTINS:
            raise DiffkitError(f"unknown built-in data 'builtin:{name}'; choose one of: "
                               + ", ".join(f"builtin:{n}" for n in BUILTINS))
        self.draw, self.classes, natural = BUILTINS[name]
        self.size, self.channels, self.seed, self.flip = size, channels or natural, seed, flip
        to_channels(Image.new("L", (1, 1)), self.channels)  # checks the channel count

    def image(self, index: int) -> tuple[Tensor, int]:
        rng = np.random.default_rng([self.seed, index])
        label = int(rng.integers(len(self.classes)))
        return to_tensor(to_channels(self.draw(rng, label, self.size), self.channels)), label

    def batch(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        images, labels = zip(*(self.image(int(i)) for i in indices))
        return augment(torch.stack(images), self.size, self.flip, generator), torch.tensor(labels)


def open_data(source: str, size: tuple[int, int], channels: int | None, *, seed: int = 0, crop: str = "center",
              flip: bool = False, class_cond: bool = False, column: str | None = None, label_column: str | None = None):
    """`builtin:NAME`, or any source diffkit.data opens; `channels` None means the built-in's own (3
    otherwise)."""
    if crop not in ("center", "random"):
        raise DiffkitError(f"--crop must be center or random, got {crop!r}")
    if source.startswith("builtin:"):
        return BuiltinImages(source.split(":", 1)[1], size, channels, seed, flip)
    to_channels(Image.new("L", (1, 1)), channels or 3)  # checks the channel count before any file is read
    found = open_source(source, "image", SUFFIXES, class_cond, "images", column=column, label_column=label_column)
    return SourceImages(found, size, channels or 3, crop, flip)
