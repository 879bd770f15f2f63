"""`diffkit prepare image`: any image source once into tar shards of PNGs at the training size (with a
margin for random crops), so that training decodes a small PNG per example instead of a full-size
photograph."""

from typing import Annotated

import typer

from diffkit.options import Column, Common, LabelColumn, Preparing, with_options


@with_options(Preparing, Common)
def prepare(
    data: Annotated[str, typer.Option(help="Image folder (sub-folders = classes), tar shards, or hf:PATH.")],
    image_size: Annotated[str, typer.Option(help="H or HxW the images will be trained at; stored a little larger, for random crops.")] = "64",
    channels: Annotated[int, typer.Option(help="1 (grey), 3 (RGB) or 4 (RGBA).")] = 3,
    class_cond: Annotated[bool, typer.Option("--class-cond", help="Keep the source's classes (a .cls member per example).")] = False,
    column: Column = None,
    label_column: LabelColumn = None,
    *, preparing: Preparing, common: Common,
):
    """Convert images into WebDataset shards (PNG + .cls) and a manifest.json that `train image --data`
    reads."""
    import io
    import math

    from diffkit.console import log
    from diffkit.data import open_source
    from diffkit.data.prepare import example_members, new_folder, write_shards
    from diffkit.errors import DiffkitError
    from diffkit.image.data import CROP_MARGIN, MODES, SUFFIXES, decode_image, parse_size
    from diffkit.loader import ordered_map

    size = parse_size(image_size)
    if channels not in MODES:
        raise DiffkitError(f"--channels must be 1, 3 or 4, got {channels}")
    workers = preparing.worker_count()
    source = open_source(data, "image", SUFFIXES, class_cond, "images", column=column, label_column=label_column)
    stored = tuple(math.ceil(s * CROP_MARGIN) for s in size)

    def encode(file, name: str) -> bytes:
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(decode_image(file, channels, stored).permute(1, 2, 0).squeeze(-1).numpy()).save(png, "PNG")
        return png.getvalue()

    def members(index: int):
        return example_members(source, index, "png", encode, "image")

    with new_folder(preparing.out) as out:
        manifest = write_shards(out, ordered_map(members, range(len(source)), workers), preparing.shard_size,
                                {"modality": "image", "source": data, "image_size": list(stored), "channels": channels,
                                 "classes": source.classes}, common.quiet)
    log(f"prepared {manifest['examples']} images of {len(source)} into {len(manifest['shards'])} shards in "
        f"{preparing.out}", common.quiet)
