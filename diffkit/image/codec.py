"""Images <-> tensors: uint8 [C, H, W] for files, float in [-1, 1] for the model."""

from __future__ import annotations

import io
import math

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.image.data import MODES, to_channels, to_tensor
from diffkit.io import display_name, read_input


def to_model(images: Tensor) -> Tensor:
    return images.float() / 127.5 - 1


def to_uint8(x: Tensor) -> Tensor:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def to_pil(image: Tensor) -> Image.Image:
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, MODES[array.shape[2]])


def png(image: Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def grid(images: Tensor, columns: int | None = None, pad: int = 2) -> Tensor:
    """uint8 [B, C, H, W] -> one uint8 image [C, H', W'], rows of `columns` images (about square);
    a single image is itself, unframed."""
    b, c, h, w = images.shape
    if b == 1:
        return images[0]
    columns = columns or math.ceil(math.sqrt(b))
    rows = math.ceil(b / columns)
    out = torch.zeros(c, rows * (h + pad) + pad, columns * (w + pad) + pad, dtype=torch.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        out[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = image
    return out


def trajectory_png(rows: list[Tensor]) -> bytes:
    """x̂_0 at every step, rows [steps, C, H, W] in model space: a PNG with a row per sample, left to right."""
    steps = len(rows[0])
    return png(grid(to_uint8(torch.cat(rows)), columns=steps))


def read_image(source: str, channels: int) -> Tensor:
    """A file or stdin ("-") -> uint8 [C, H, W] with the model's channel count."""
    data = read_input(source)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_tensor(to_channels(image, channels))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
                # PIL names our in-memory buffer when it cannot tell the format; say what that means instead.
        reason = "not a format PIL knows, or corrupt" if isinstance(e, UnidentifiedImageError) else str(e)
        raise DiffkitError(f"{display_name(source)}: not a readable image ({reason})") from None


def resize(image: Tensor, size: tuple[int, int], nearest: bool = False) -> Tensor:
    """uint8 [C, H, W] to (H, W), exactly (aspect ratio not kept: the inverse resize restores it)."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    return to_tensor(to_pil(image).resize((size[1], size[0]), method))
