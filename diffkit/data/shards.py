"""WebDataset tar shards as a source, read at random through an index of each shard's members.

A shard is a plain tar whose members sharing a key (the name up to its first dot) make one example:
`000123.jpg` and `000123.cls` (the class index as text), as WebDataset writes them. The webdataset
package reads shards as a stream through a shuffle buffer, which can neither resume exactly nor give
each torchrun process a fixed slice of a step's batch; an index of member offsets (built once per shard
by reading its headers, then cached) gives random access to any example, as `batch_at` needs.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from diffkit.data import MANIFEST, cached
from diffkit.errors import DiffkitError

LABEL = "cls"


def is_shard_pattern(spec: str) -> bool:
    return spec.endswith(".tar") or ("{" in spec and ".tar" in spec)


def shard_paths(pattern: str) -> list[str]:
    """`shards/train-{000000..000099}.tar` (bash brace expansion) -> its existing shards, in order."""
    from braceexpand import braceexpand

    try:
        paths = list(braceexpand(pattern))
    except Exception as e:  # braceexpand raises its own error types on unbalanced braces
        raise DiffkitError(f"{pattern}: not a shard pattern ({e})") from None
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DiffkitError(f"{missing[0]}: no such shard{more} (of {pattern})")
    return paths


def _split(name: str) -> tuple[str, str]:
    folder, base = os.path.split(name)
    stem, _, extension = base.partition(".")
    return os.path.join(folder, stem), extension.lower()


def _read_members(path: str) -> dict:
    """Every file member's key, extension, data offset and size, and the labels of `.cls` members. A
    hard link (what tar makes of a file linked twice) points at the data of the member it names."""
    members, labels, regions = [], {}, {}
    try:
        with tarfile.open(path, "r:") as tar, open(path, "rb") as raw:
            for member in tar:
                if member.isfile():
                    regions[member.name] = (member.offset_data, member.size)
                elif not (member.islnk() and member.linkname in regions):
                    continue
                offset, size = regions[member.linkname if member.islnk() else member.name]
                key, extension = _split(member.name)
                if extension == LABEL:
                    raw.seek(offset)
                    labels[key] = raw.read(size).decode().strip()
                else:
                    members.append([key, extension, offset, size])
    except (tarfile.TarError, OSError, UnicodeDecodeError) as e:
        raise DiffkitError(f"{path}: not a readable tar shard ({e})") from None
    return {"members": members, "labels": labels}


def shard_index(path: str) -> dict:
    """_read_members of one shard, cached under its path, size and modification time."""
    stat = os.stat(path)
    key = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return cached("shards", key, lambda record: True, lambda: _read_members(path))


def prepared_shards(folder: Path) -> tuple[list[str], list[str]]:
    """The shards and class names of a folder `diffkit prepare` wrote."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return [str(folder / name) for name in manifest["shards"]], list(manifest["classes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DiffkitError(f"{folder / MANIFEST}: not a diffkit prepare manifest ({e})") from None


class TarSource:
    """The examples of tar shards whose data member has one of `suffixes` (without their dots)."""

    def __init__(self, shards: str | list[str], suffixes: set[str], class_cond: bool, *,
                 classes: list[str] | None = None, name: str | None = None):
        self.spec = name or (shards if isinstance(shards, str) else str(Path(shards[0]).parent))
        self.shards = shard_paths(shards) if isinstance(shards, str) else shards
        wanted = {s.lstrip(".") for s in suffixes}
        from diffkit.loader import available_cores, ordered_map

        # A first open reads every shard's headers: one shard per core at a time.
        workers = min(len(self.shards), available_cores()) if len(self.shards) > 1 else 0
        keys, shard_of, offsets, sizes, raw_labels = [], [], [], [], []
        for number, index in enumerate(ordered_map(shard_index, self.shards, workers)):
            for key, extension, offset, size in index["members"]:
                if extension in wanted:
                    keys.append(f"{key}.{extension}")
                    shard_of.append(number)
                    offsets.append(offset)
                    sizes.append(size)
                    raw_labels.append(index["labels"].get(key))
        if not keys:
            raise DiffkitError(f"{self.spec}: no member ending in {', '.join(sorted(wanted))} in its "
                               f"{len(self.shards)} shard(s)")
        self.classes, self.labels = _labels(raw_labels, keys, class_cond, classes, self.spec)
        self.keys = np.array([k.encode() for k in keys])
        self.shard_of, self.offsets, self.sizes = np.array(shard_of), np.array(offsets), np.array(sizes)

    def __len__(self) -> int:
        return len(self.keys)

    def name(self, index: int) -> str:
        return f"{self.shards[self.shard_of[index]]}:{self.keys[index].decode()}"

    def open(self, index: int):
        member = Member(self.shards[self.shard_of[index]], int(self.offsets[index]), int(self.sizes[index]))
        return io.BufferedReader(member)

    def present(self) -> bool:
        return any(os.path.isfile(path) for path in self.shards)


class Member(io.RawIOBase):
    """A tar member as a seekable file of its own, so that a reader (PIL, soundfile) reads only what it
    needs of a large one."""

    def __init__(self, path: str, offset: int, size: int):
        super().__init__()
        self.file, self.offset, self.size, self.position = open(path, "rb"), offset, size, 0
        if os.fstat(self.file.fileno()).st_size < offset + size:
            self.file.close()
            raise OSError("the shard ends inside this member")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + position)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self.size - self.position))
        self.file.seek(self.offset + self.position)
        read = self.file.readinto(memoryview(buffer)[:count])
        self.position += read
        return read

    def close(self) -> None:
        self.file.close()
        super().close()


def _labels(raw: list[str | None], keys: list[str], class_cond: bool, classes: list[str] | None,
            spec: str) -> tuple[list[str], torch.Tensor]:
    """Class names and labels from the `.cls` members: indices into `classes` where the manifest names
    them, else each distinct value a class (numbers in numeric order)."""
    if not class_cond:
        return [], torch.zeros(len(raw), dtype=torch.long)
    missing = next((k for k, value in zip(keys, raw) if value is None), None)
    if missing is not None:
        raise DiffkitError(f"{spec}: {missing} has no .{LABEL} member (--class-cond needs a class for each example)")
    if classes:
        try:
            labels = [int(value) for value in raw]
        except ValueError:
            raise DiffkitError(f"{spec}: a .{LABEL} member is not a class index") from None
        if min(labels) < 0 or max(labels) >= len(classes):
            raise DiffkitError(f"{spec}: a .{LABEL} member is outside the manifest's {len(classes)} classes")
        return classes, torch.tensor(labels)
    values = sorted(set(raw), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
    position = {value: i for i, value in enumerate(values)}
    return values, torch.tensor([position[value] for value in raw])
