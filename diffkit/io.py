"""Where bytes go: "-" is stdin/stdout, files are written atomically, people read stderr."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from diffkit.errors import DiffkitError


def _new_file_mode() -> int:
    """What open() gives a new file, 0666 less the umask: a file written through a temporary one gets
    this, not mkstemp's private 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _mode_for(path: Path) -> int:
    """A replaced file keeps its own permissions; a new one gets the usual ones."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return _new_file_mode()


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
        os.fchmod(fd, _mode_for(path))
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
        os.fchmod(fd, _new_file_mode())
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


def display_name(source: str) -> str:
    """How messages name an input: its path, or <stdin> for "-"."""
    return "<stdin>" if source == "-" else source


# sha256 of each input this process read, by its source: what an edit's provenance names (stdin can be
# read only once, so the digest is taken as it is read).
_digests: dict[str, str] = {}


def read_input(source: str) -> bytes:
    """Bytes from stdin for "-", else from the file, with a one-line error naming it."""
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise DiffkitError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise DiffkitError(f"{source}: is a folder, expected a file") from None
    _digests[source] = hashlib.sha256(data).hexdigest()
    return data


def input_digest(source: str) -> str | None:
    """The sha256 of what read_input last read from `source`, None if it read nothing there."""
    return _digests.get(source)


def decode_utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DiffkitError(f"{name}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at byte offset {e.start})") from None


def read_json(path: Path, missing: str):
    """A JSON file's content, with one error line if it is absent (`missing` says what that means) or is
    not JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DiffkitError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DiffkitError(f"{path}: not valid JSON ({e})") from None


def data_folder(source: str, holding: str) -> Path:
    """The folder that --data names, or an error saying what was found instead."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise DiffkitError(f"{source}: a file; --data takes a folder of {holding}")
    raise DiffkitError(f"{source}: no such folder")


def json_line(record: dict) -> None:
    """One JSON object per line on stdout, for machines."""
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def result_stem(source: str, edit: str) -> str:
    """The name an edit of `source` takes in an output folder: photo.png inpainted -> photo-inpainted."""
    return f"{'stdin' if source == '-' else Path(source).stem}-{edit}"  # a file name: no <>


@dataclass(frozen=True)
class Destination:
    """Where a command's results go, checked before any (long) work so that a mistake costs nothing:
    "-" is stdout, a name ending in `suffix` one file (replaced atomically: the user named it), anything
    else a folder (created if missing) where each result takes a name not yet used, so concurrent runs
    into one folder never overwrite each other."""
    target: str
    suffix: str
    kind: str  # stdout, file or folder
    provenance: dict | None = None  # what every result carries (diffkit.provenance): inside, or beside it
    credentials: tuple[bytes, bytes] | None = None  # C2PA certificate chain and key, for PNG and WAV

    def stamped(self, provenance: dict) -> Destination:
        """This destination with every result marked by `provenance`."""
        return dataclasses.replace(self, provenance=provenance)

    @classmethod
    def of(cls, output: str, suffix: str, credentials: tuple[bytes, bytes] | None = None) -> Destination:
        """`credentials`: a C2PA certificate chain and key that sign every PNG and WAV written."""
        if output == "-":
            return cls(output, suffix, "stdout", credentials=credentials)
        path = Path(output)
        if output.lower().endswith(suffix):
            if not path.parent.is_dir():
                raise DiffkitError(f"{output}: folder {path.parent} does not exist")
            return cls(output, suffix, "file", credentials=credentials)
        if path.exists() and not path.is_dir():
            raise DiffkitError(f"{output}: exists and is not a folder (a single file must end in {suffix})")
        if path.suffix and not path.exists():
            raise DiffkitError(f"{output}: results are {suffix} files; name one ending in {suffix}, or a folder")
        return cls(output, suffix, "folder", credentials=credentials)

    def write(self, data: bytes, stem: str, as_json: bool, *, binary: bool = True, **record) -> None:
        """One result: to stdout (refusing a terminal for binary data), to the file, or under a new name in
        the folder. A written file is reported on stdout: its path, or with `as_json` a JSON line. PNG and
        WAV carry the provenance inside; other files get a sidecar, and stdout's text only `--json`'s."""
        from diffkit import provenance

        beside = False  # the provenance goes in a sidecar: the format has no place for it
        if self.provenance is not None:
            stamped = provenance.embed(data, self.provenance)
            beside, data = stamped is data, stamped
            if self.credentials is not None:
                data = provenance.sign_c2pa(data, self.provenance, *self.credentials)
        if self.kind == "stdout":
            if binary and sys.stdout.isatty():
                raise DiffkitError("refusing to write binary data to the terminal; use -o FILE or a pipe")
            write_output("-", data)
            return
        if self.kind == "file":
            write_output(self.target, data)
            path = Path(self.target)
        else:
            Path(self.target).mkdir(parents=True, exist_ok=True)
            path = write_new(Path(self.target), stem, self.suffix, data)
        if beside:
            write_output(str(provenance.sidecar(path)), json.dumps(self.provenance, indent=1).encode() + b"\n")
        if as_json:
            json_line({"path": str(path), **record})
        elif self.kind == "folder":
            print(path, flush=True)

    def write_rows(self, data: bytes, records: list[dict], stem: str, as_json: bool) -> None:
        """Results that are rows of text (lines, CSV rows): `data` goes to the file or folder, or to stdout;
        with `as_json`, stdout gets one JSON object per row instead (after the file's path)."""
        if self.kind != "stdout" or not as_json:
            self.write(data, stem, as_json, binary=False)
        if as_json:
            for record in records:
                json_line({**record, "provenance": self.provenance} if self.provenance else record)

    def write_each(self, blobs, stem: str, as_json: bool, **record) -> None:
        """Each result to its own new file in the folder: stem-0000, stem-0001, ..."""
        for i, data in enumerate(blobs):
            self.write(data, f"{stem}-{i:04d}", as_json, index=i, **record)
