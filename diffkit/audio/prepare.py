"""`diffkit prepare audio`: any sound source once into tar shards of mono FLAC at the training sample
rate, so that training neither resamples nor mixes down; a long recording is converted a block at a
time and stays one member, which training then reads a window at a time."""

from typing import Annotated

import typer

from diffkit.options import Column, Common, LabelColumn, Preparing, with_options

BLOCK_SECONDS = 30  # converted at a time: memory stays flat however long a recording is


@with_options(Preparing, Common)
def prepare(
    data: Annotated[str, typer.Option(help="Folder of sound files (sub-folders = classes), tar shards, or hf:PATH.")],
    sample_rate: Annotated[int, typer.Option(help="Samples per second the model will be trained at.")] = 16000,
    class_cond: Annotated[bool, typer.Option("--class-cond", help="Keep the source's classes (a .cls member per example).")] = False,
    column: Column = None,
    label_column: LabelColumn = None,
    *, preparing: Preparing, common: Common,
):
    """Convert sound files into WebDataset shards (FLAC + .cls) and a manifest.json that `train audio
    --data` reads."""
    import os
    import tempfile
    from pathlib import Path

    import soundfile

    from diffkit.audio.data import SUFFIXES, read_resampled, resampled_length, sound_file_errors
    from diffkit.console import log
    from diffkit.data import open_source
    from diffkit.data.prepare import example_members, new_folder, write_shards
    from diffkit.errors import DiffkitError
    from diffkit.loader import ordered_map

    if sample_rate < 1000:
        raise DiffkitError(f"--sample-rate must be at least 1000, got {sample_rate}")
    workers = preparing.worker_count()
    source = open_source(data, "audio", SUFFIXES, class_cond, "sound files", column=column, label_column=label_column)

    def encode(file, name: str) -> Path:
        """The recording, mono at the sample rate, as 24-bit FLAC in a file of its own (moved into the
        shard), converted BLOCK_SECONDS at a time."""
        fd, converted = tempfile.mkstemp(dir=out, prefix=".converted-", suffix=".flac")
        os.fchmod(fd, 0o644)
        os.close(fd)
        try:
            with sound_file_errors(name), soundfile.SoundFile(file) as sound:
                if sound.frames == 0:
                    raise DiffkitError(f"{name}: holds no samples")
                with soundfile.SoundFile(converted, "w", sample_rate, 1, "PCM_24", format="FLAC") as target:
                    length, block = resampled_length(sound, sample_rate), BLOCK_SECONDS * sample_rate
                    for start in range(0, length, block):
                        target.write(read_resampled(sound, start, min(block, length - start), sample_rate).clamp(-1, 1).numpy())
        except BaseException:
            os.unlink(converted)
            raise
        return Path(converted)

    def members(index: int):
        return example_members(source, index, "flac", encode, "sound file")

    with new_folder(preparing.out) as out:
        manifest = write_shards(out, ordered_map(members, range(len(source)), workers), preparing.shard_size,
                                {"modality": "audio", "source": data, "sample_rate": sample_rate,
                                 "classes": source.classes}, common.quiet)
    log(f"prepared {manifest['examples']} recordings of {len(source)} into {len(manifest['shards'])} shards in "
        f"{preparing.out}", common.quiet)
