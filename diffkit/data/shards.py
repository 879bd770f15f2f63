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
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch

from diffkit.data.cache import cached
from diffkit.errors import DiffkitError

MANIFEST = "manifest.json"  # in a folder `diffkit prepare` wrote: its shards, classes and settings

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
EMPTY = bytes(BLOCK)  # two of these end a tar
# A ustar header's name, size, type, link name, magic and prefix; skipped are the mode, owner, group,
# mtime, checksum (verified apart), version, owner names, device numbers and padding.
HEADER = struct.Struct("100s24x12s20xc100s6s2x80x155s12x")
CHECKED_AT_ONCE = 1024
EXTENDED = (b"x", b"L", b"K")  # pax and GNU records about the member after them
FILE, LINK = (b"0", b"\0", b"7"), b"1"


def _headers(tar: mmap.mmap):
    """(name, type, data offset, size, link name) of every member of an uncompressed tar, read from its
    512-byte headers alone (ustar, with pax and GNU long names and sizes): about 3 µs a member, several
    times faster than tarfile, which builds a TarInfo for each. The headers' checksums are verified a
    batch at a time (numpy sums bytes some fifty times faster than Python), and before any error."""
    pending: dict[str, str] = {}  # what a pax or GNU record says of the member after it
    unchecked: list[tuple[int, bytes]] = []
    offset, end = 0, len(tar)
    while offset + BLOCK <= end:
        header = tar[offset:offset + BLOCK]
        if header == EMPTY:
            break
        unchecked.append((offset, header))
        if len(unchecked) == CHECKED_AT_ONCE:
            _verify_checksums(unchecked)
            unchecked = []
        name, size, kind, link, magic, prefix = HEADER.unpack(header)
        try:
            size = int(pending["size"]) if "size" in pending and kind not in EXTENDED else _number(size)
        except ValueError:
            _verify_checksums(unchecked)
            raise
        data = offset + BLOCK
        offset = data + -(-size // BLOCK) * BLOCK
        if kind in EXTENDED:
            if kind == b"x":
                pending.update(_pax(tar[data:data + size]))
            else:
                pending["path" if kind == b"L" else "linkpath"] = _text(tar[data:data + size])
            continue
        name = _text(name)
        if magic == b"ustar\0" and prefix[0]:  # POSIX splits a long name; GNU uses these bytes otherwise
            name = _text(prefix) + "/" + name
        link = pending.get("linkpath", _text(link)) if kind == LINK else ""
        yield pending.get("path", name), kind, data, size, link
        if pending:
            pending = {}
    _verify_checksums(unchecked)


def _number(field: bytes) -> int:
    try:
        return int(field.rstrip(b"\0") or b"0", 8)  # the usual form: octal digits, a NUL or space
    except ValueError:
        if field[:1] in (b"\x80", b"\xff"):  # base-256, for sizes past 8 GiB
            value = int.from_bytes(field[1:], "big")
            return -value if field[:1] == b"\xff" else value
        text = field.split(b"\0", 1)[0].strip()
        return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _verify_checksums(headers: list[tuple[int, bytes]]) -> None:
    """Each header's byte sum with its checksum field counted as spaces must equal that field (an octal
    number): summed unsigned (POSIX), or signed (old tars)."""
    if not headers:
        return
    blocks = np.frombuffer(b"".join(header for _, header in headers), np.uint8).reshape(-1, BLOCK)
    field = blocks[:, 148:156].astype(np.int64)
    stored = np.zeros(len(blocks), dtype=np.int64)
    for digit in field.T:  # leading spaces and a trailing NUL or space are no digits
        stored = np.where((digit >= 48) & (digit <= 55), stored * 8 + digit - 48, stored)
    unsigned = blocks.sum(1, dtype=np.int64) - field.sum(1) + 8 * 32
    signed = unsigned - 256 * ((blocks > 127).sum(1) - (field > 127).sum(1))
    bad = np.flatnonzero((stored != unsigned) & (stored != signed))
    if len(bad):
        raise tarfile.ReadError(f"bad header checksum at byte {headers[bad[0]][0]}")


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
    """Columns of every file member (key, extension, data offset, size) and the labels of the `.cls`
    members by key. A hard link (what tar makes of a file stored twice) points at the data of the member
    it names. Columns rather than a row a member: a cached index of a million members loads in a blink."""
    record = {"keys": [], "extensions": [], "offsets": [], "sizes": [], "labels": {}}
    keys, extensions, offsets, sizes, labels = record.values()
    regions = {}
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as tar:
            for name, kind, offset, size, link in _headers(tar):
                if kind in FILE:
                    regions[name] = (offset, size)
                elif kind == LINK and link in regions:
                    offset, size = regions[link]
                else:
                    continue
                key, extension = _split(name)
                if extension == LABEL:
                    labels[key] = tar[offset:offset + size].decode().strip()
                else:
                    keys.append(key)
                    extensions.append(extension)
                    offsets.append(offset)
                    sizes.append(size)
    except (tarfile.TarError, OSError, UnicodeDecodeError, ValueError) as e:
        raise DiffkitError(f"{path}: not a readable tar shard ({e})") from None
    return record


def shard_index(path: str, build: bool = True) -> dict | None:
    """_read_members of one shard, cached under its path, size and modification time (None if not yet
    cached and not to be built)."""
    stat = os.stat(path)
    key = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return cached("shards", key, lambda record: "keys" in record, (lambda: _read_members(path)) if build else None)


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

        # A first open reads the headers of each shard not indexed yet: one shard per core at a time.
        indices = [shard_index(path, build=False) for path in self.shards]
        missing = [path for path, index in zip(self.shards, indices) if index is None]
        built = ordered_map(shard_index, missing, min(len(missing), available_cores()) if len(missing) > 1 else 0)
        indices = [next(built) if index is None else index for index in indices]
        shard_of, starts, ends, offsets, sizes, raw_labels, self.names = [], [], [], [], [], [], []
        for number, index in enumerate(indices):
            keys, extensions = index["keys"], index["extensions"]
            kept = np.flatnonzero([extension in wanted for extension in extensions])
            # Each shard's member names in one string, NUL-separated (no tar name holds a NUL): a name per
            # example costs its bytes and two offsets, not a Python object.
            names = "\0".join(f"{keys[i]}.{extensions[i]}" for i in kept).encode("utf-8", "surrogateescape")
            end = np.flatnonzero(np.frombuffer(names + b"\0", np.uint8) == 0).astype(np.int32)
            self.names.append(names)
            starts.append(np.concatenate([[0], end[:-1] + 1]).astype(np.int32)[:len(kept)])
            ends.append(end[:len(kept)])
            shard_of.append(np.full(len(kept), number, dtype=np.int32))
            offsets.append(np.asarray(index["offsets"], dtype=np.int64)[kept])
            sizes.append(np.asarray(index["sizes"], dtype=np.int64)[kept])
            if class_cond:
                raw_labels += [index["labels"].get(keys[i]) for i in kept]
        self.shard_of, self.starts, self.ends, self.offsets, self.sizes = \
            map(np.concatenate, (shard_of, starts, ends, offsets, sizes))
        if not len(self.offsets):
            raise DiffkitError(f"{self.spec}: no member ending in {', '.join(sorted(wanted))} in its "
                               f"{len(self.shards)} shard(s)")
        self.classes, self.labels = _labels(raw_labels, len(self), self.name, class_cond, classes, self.spec)

    def __len__(self) -> int:
        return len(self.offsets)

    def name(self, index: int) -> str:
        shard = self.shard_of[index]
        name = self.names[shard][self.starts[index]:self.ends[index]].decode("utf-8", "surrogateescape")
        return f"{self.shards[shard]}:{name}"

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


def _labels(raw: list[str | None], count: int, name_of, class_cond: bool, classes: list[str] | None,
            spec: str) -> tuple[list[str], torch.Tensor]:
    """Class names and labels from the `.cls` members: indices into `classes` where the manifest names
    them, else each distinct value a class (numbers in numeric order)."""
    if not class_cond:
        return [], torch.zeros(count, dtype=torch.long)
    missing = next((i for i, value in enumerate(raw) if value is None), None)
    if missing is not None:
        raise DiffkitError(f"{spec}: {name_of(missing)} has no .{LABEL} member (--class-cond needs a class for each example)")
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
