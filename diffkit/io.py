"""Where bytes go: "-" is stdin/stdout, files are written atomically, people read stderr."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from diffkit.errors import DiffkitError


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """Write to a temporary file beside `path` and rename it into place only on success,
    so a crash or a bad input never leaves a half-written file (rename is atomic on POSIX)."""
    path = Path(path)
    if not path.parent.exists():
        raise DiffkitError(f"{path}: folder {path.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise DiffkitError(f"{path}: cannot write here ({e.strerror})") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a quota: the file as it was stays in place
        os.unlink(tmp)
        raise DiffkitError(f"{path}: writing failed ({e.strerror}); any previous version is intact") from None
    except BaseException:
        os.unlink(tmp)
        raise


def write_output(target: str, data: bytes) -> None:
    """Bytes to stdout for "-", else atomically to the file."""
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_write(target) as f:
        f.write(data)


def write_new(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write `data` under a name not yet taken in `folder` (stem, stem-1, stem-2, ...), atomically, so two
    processes writing into one folder never overwrite each other's files: the final hard link fails
    when the name exists, instead of replacing it as a rename would."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for attempt in range(10_000):
            path = Path(folder) / f"{stem}{f'-{attempt}' if attempt else ''}{suffix}"
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
        raise DiffkitError(f"{folder}: no free name for {stem}{suffix}")
    finally:
        os.unlink(tmp)


def read_input(source: str) -> bytes:
    """Bytes from stdin for "-", else from the file, with a one-line error naming it."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise DiffkitError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise DiffkitError(f"{source}: is a folder, expected a file") from None


def json_line(record: dict) -> None:
    """One JSON object per line on stdout, for machines."""
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def destination(output: str, suffix: str) -> str:
    """What `-o` names, checked before any (long) work so that a mistake costs nothing: "stdout" for -,
    "file" for a name ending in `suffix` (its folder must exist), else "folder" (created if missing)."""
    if output == "-":
        return "stdout"
    path = Path(output)
    if output.lower().endswith(suffix):
        if not path.parent.is_dir():
            raise DiffkitError(f"{output}: folder {path.parent} does not exist")
        return "file"
    if path.exists() and not path.is_dir():
        raise DiffkitError(f"{output}: exists and is not a folder (a single file must end in {suffix})")
    return "folder"


def write_one(output: str, data: bytes, as_json: bool, **record) -> None:
    """One binary result to a file or stdout, refusing a terminal; with `as_json`, a line naming the file."""
    if output == "-" and sys.stdout.isatty():
        raise DiffkitError("refusing to write binary data to the terminal; use -o FILE or a pipe")
    write_output(output, data)
    if as_json and output != "-":
        json_line({"path": output, **record})


def write_each(folder: str, stem: str, suffix: str, blobs, as_json: bool, **record) -> None:
    """Each blob to a new file in `folder` (never overwriting), printing its path, or a JSON line."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(blobs):
        path = write_new(Path(folder), f"{stem}-{i:04d}", suffix, data)
        if as_json:
            json_line({"path": str(path), "index": i, **record})
        else:
            print(path, flush=True)
