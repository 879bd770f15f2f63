"""What every `diffkit prepare` shares: a new output folder that is removed again if preparing fails,
WebDataset tar shards written one at a time (each renamed into place when complete), and the manifest
that makes the folder a source, written last."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from diffkit.console import log, warn
from diffkit.data import UNREADABLE, reason
from diffkit.data.shards import LABEL, MANIFEST
from diffkit.errors import DiffkitError
from diffkit.io import atomic_write

Members = dict[str, "bytes | Path"]  # extension -> data, or a file to move into the shard (then deleted)


@contextmanager
def new_folder(out: str):
    """`out`, created empty; on any failure it is removed with everything written into it."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DiffkitError(f"{out}: exists and is not an empty folder; prepare into a new one")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DiffkitError(f"{out}: cannot create the folder ({e.strerror})") from None
    try:
        yield path
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for child in path.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        raise


def example_members(source, index: int, extension: str, encode: Callable[[object, str], "bytes | Path"],
                    what: str) -> Members | None:
    """Example `index` of a source as shard members: encode(file, name) under `extension`, and its class
    as `.cls` where the source has classes; None, after one warning, if it cannot be read (prepare leaves
    it out rather than write a stand-in)."""
    name = source.name(index)
    try:
        with source.open(index) as file:
            members: Members = {extension: encode(file, name)}
    except UNREADABLE as e:
        warn(f"{name}: unreadable {what}, left out ({reason(e, name)})")
        return None
    if source.classes:
        members[LABEL] = str(int(source.labels[index])).encode()
    return members


def shard_name(number: int) -> str:
    return f"train-{number:06d}.tar"


def write_shards(out: Path, examples: Iterable[Members | None], shard_size: int, manifest: dict,
                 quiet: bool = False) -> dict:
    """Examples (None: an unreadable one, already reported) into shards of `shard_size`, then the
    manifest (with the shard list and example count added). Returns the manifest."""
    if shard_size < 1:
        raise DiffkitError(f"--shard-size must be at least 1, got {shard_size}")
    shards, count, tar, partial = [], 0, None, None
    for members in examples:
        if members is None:
            continue
        if count % shard_size == 0:
            if tar is not None:
                shards.append(_close(tar, partial))
            partial = out / f".{shard_name(len(shards))}.tmp"
            tar = tarfile.open(partial, "w", format=tarfile.PAX_FORMAT)
        for extension, data in members.items():
            _add(tar, f"{count:09d}.{extension}", data)
        count += 1
        if count % 1000 == 0:
            log(f"prepared {count} examples", quiet)
    if tar is not None:
        shards.append(_close(tar, partial))
    if not count:
        raise DiffkitError("no readable example to prepare")
    manifest = {"format": "diffkit-shards", **manifest, "examples": count, "shards": shards}
    with atomic_write(out / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path) -> None:
    if isinstance(data, Path):
        tar.add(data, arcname=name)
        data.unlink()
    else:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _close(tar: tarfile.TarFile, partial: Path) -> str:
    tar.close()
    name = partial.name[1:-len(".tmp")]
    partial.rename(partial.with_name(name))
    return name
