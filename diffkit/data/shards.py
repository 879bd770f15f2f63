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
import mmap
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
    """WebDataset's key and extension: the name up to, and after, the first dot of its last part."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:].lower())


BLOCK = 512


def _headers(path: str):
    """(name, type, data offset, size, link name, the mapped file) of every member of an uncompressed tar,
    read from its 512-byte headers alone (ustar, with pax and GNU long names and sizes) through a memory
    map: several times faster than tarfile, which builds a TarInfo for each, so a first open lists a
    million members in seconds. Small members (`.cls`) are read from the map too."""
    pending: dict[str, str] = {}  # what a pax or GNU header says of the member after it
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as tar:
        offset, end = 0, len(tar)
        while offset + BLOCK <= end:
            header = tar[offset:offset + BLOCK]
            if not header.strip(b"\0"):
                return
            if not _checksum_holds(header):
                raise tarfile.ReadError(f"bad header checksum at byte {offset}")
            kind = header[156:157]
            size = int(pending["size"]) if kind not in (b"x", b"L", b"K") and "size" in pending \
                else _number(header[124:136])
            data = offset + BLOCK
            offset = data + -(-size // BLOCK) * BLOCK
            if kind in (b"x", b"L", b"K"):
                if kind == b"x":
                    pending.update(_pax(tar[data:data + size]))
                else:
                    pending["path" if kind == b"L" else "linkpath"] = _text(tar[data:data + size])
                continue
            name = _text(header[0:100])
            if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
                name = _text(header[345:500]) + "/" + name
            link = pending.get("linkpath", _text(header[157:257])) if kind == b"1" else ""
            yield pending.get("path", name), kind, data, size, link, tar
            if pending:
                pending = {}


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # base-256, for sizes past 8 GiB
        value = int.from_bytes(field[1:], "big")
        return -value if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_holds(header: bytes) -> bool:
    """The header's sum with its checksum field as spaces: unsigned (POSIX), or signed (old tars)."""
    stored, unsigned = _number(header[148:156]), sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for byte in header[:148] + header[156:] if byte > 127)


def _pax(payload: bytes) -> dict[str, str]:
    fields, position = {}, 0
    while position < len(payload):
        length, _, rest = payload[position:].partition(b" ")
        if not length.isdigit():
            break
        record = payload[position + len(length) + 1:position + int(length) - 1]
        key, _, value = record.partition(b"=")
        fields[key.decode()] = value.decode("utf-8", "surrogateescape")
        position += int(length)
    return fields


def _read_members(path: str) -> dict:
    """Every file member's key, extension, data offset and size, and the labels of `.cls` members. A
    hard link (what tar makes of a file linked twice) points at the data of the member it names."""
    members, labels, regions = [], {}, {}
    try:
        for name, kind, offset, size, link, tar in _headers(path):
            if kind in (b"0", b"\0", b"7"):
                regions[name] = (offset, size)
            elif kind == b"1" and link in regions:
                offset, size = regions[link]
            else:
                continue
            key, extension = _split(name)
            if extension == LABEL:
                labels[key] = tar[offset:offset + size].decode().strip()
            else:
                members.append([key, extension, offset, size])
    except (tarfile.TarError, OSError, UnicodeDecodeError, ValueError) as e:
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
