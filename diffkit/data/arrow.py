"""Hugging Face datasets and parquet files as a source, memory-mapped (pyarrow, the `data` extra).

`hf:PATH` is a folder `Dataset.save_to_disk` wrote (state.json and Arrow stream files), a parquet file,
or a folder of them. A saved dataset is memory-mapped as it is; parquet, which cannot be read at random
without decoding a whole row group, is rewritten once, batch by batch, into an Arrow stream in the cache
(what `datasets` itself does). Either way an example costs one row's bytes, and memory stays flat.
Image and audio columns hold Hugging Face's {bytes, path} structs or plain binary; text columns strings.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
from pathlib import Path

import torch

from diffkit.data.cache import cache_dir, cached
from diffkit.errors import DiffkitError

HF_PREFIX = "hf:"  # --data hf:PATH

COLUMNS = {"image": ("image", "img", "png", "jpg"), "audio": ("audio", "wav", "flac"), "text": ("text", "sentence")}
LABEL_COLUMNS = ("label", "labels", "class")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DiffkitError("hf: data needs pyarrow: pip install 'diffkit[data]'") from None
    return pyarrow


def _saved_dataset(folder: Path) -> tuple[list[Path], dict]:
    """The Arrow files and features of a folder Dataset.save_to_disk wrote."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        raise DiffkitError(f"{folder}: a DatasetDict; name one split, e.g. {HF_PREFIX}{folder / (splits or ['train'])[0]}")
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DiffkitError(f"{folder}/state.json: not a saved Hugging Face dataset ({e})") from None
    try:
        features = json.loads((folder / "dataset_info.json").read_text()).get("features", {})
    except (OSError, ValueError):
        features = {}
    return files, features


def _parquet_as_arrow(path: Path) -> Path:
    """The cached Arrow stream copy of a parquet file (rebuilt when the file changes)."""
    pa = _pyarrow()
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    target = cache_dir() / "parquet" / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".arrow")

    def convert() -> dict:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            parquet = pa.parquet.ParquetFile(path)
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, parquet.schema_arrow) as writer:
                for batch in parquet.iter_batches(batch_size=1024):
                    writer.write_batch(batch)
        except (pa.ArrowException, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise DiffkitError(f"{path}: not a readable parquet file ({e})") from None
        tmp.replace(target)
        return {"arrow": str(target)}

    return Path(cached("parquet", key, lambda record: Path(record["arrow"]).is_file(), convert)["arrow"])


def _features(schema) -> dict:
    """Hugging Face's feature descriptions, which parquet files carry in their schema's metadata."""
    try:
        return json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return {}


class ArrowSource:
    def __init__(self, path: str, kind: str, class_cond: bool, *, column: str | None, label_column: str | None):
        pa = _pyarrow()
        self.spec, folder = HF_PREFIX + path, Path(path)
        if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
            files, features = _saved_dataset(folder)
        elif folder.is_dir() or folder.suffix == ".parquet":
            parquets = sorted(folder.glob("*.parquet")) if folder.is_dir() else [folder]
            if not parquets or not all(p.is_file() for p in parquets):
                raise DiffkitError(f"{self.spec}: neither a saved Hugging Face dataset nor parquet files")
            features = _features(pa.parquet.read_schema(parquets[0]))
            files = [_parquet_as_arrow(p) for p in parquets]
        else:
            raise DiffkitError(f"{self.spec}: no such dataset folder or parquet file")
        try:
            tables = [pa.ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files]
            table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        except (pa.ArrowException, OSError) as e:
            raise DiffkitError(f"{self.spec}: unreadable Arrow data ({e})") from None
        self.column = _pick(table.column_names, column, COLUMNS[kind], "--column", self.spec)
        self.values = table.column(self.column)
        self.starts = [0]
        for chunk in self.values.chunks:
            self.starts.append(self.starts[-1] + len(chunk))
        self.classes, self.labels = [], torch.zeros(len(table), dtype=torch.long)
        if class_cond:
            name = _pick(table.column_names, label_column, LABEL_COLUMNS, "--label-column", self.spec)
            values = table.column(name).to_pylist()
            names = features.get(name, {}).get("names")
            if names:
                self.classes, self.labels = list(names), torch.tensor(values)
            else:
                self.classes = sorted({str(v) for v in values})
                position = {c: i for i, c in enumerate(self.classes)}
                self.labels = torch.tensor([position[str(v)] for v in values])
        elif label_column is not None:
            raise DiffkitError("--label-column needs --class-cond")
        if len(table) == 0:
            raise DiffkitError(f"{self.spec}: holds no rows")

    def __len__(self) -> int:
        return self.starts[-1]

    def name(self, index: int) -> str:
        return f"{self.spec}[{index}]"

    def value(self, index: int):
        chunk = bisect.bisect_right(self.starts, index) - 1
        return self.values.chunks[chunk][index - self.starts[chunk]].as_py()

    def open(self, index: int):
        value = self.value(index)
        if isinstance(value, dict):  # Hugging Face's Image / Audio storage
            if value.get("bytes") is not None:
                return io.BytesIO(value["bytes"])
            if value.get("path"):
                return open(value["path"], "rb")
            raise OSError("the row holds neither bytes nor a path")
        if isinstance(value, (bytes, bytearray)):
            return io.BytesIO(value)
        if isinstance(value, str):
            return io.BytesIO(value.encode())
        raise OSError(f"column {self.column!r} holds {type(value).__name__}, not encoded data")

    def present(self) -> bool:
        return True  # memory-mapped: the pages stay readable while the source is open


def _pick(columns: list[str], wanted: str | None, usual: tuple[str, ...], option: str, spec: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DiffkitError(f"{spec}: no column {wanted!r} ({option}); it has {', '.join(columns)}")
        return wanted
    found = next((c for c in usual if c in columns), None)
    if found is None:
        raise DiffkitError(f"{spec}: none of the usual columns ({', '.join(usual)}); name one with {option} "
                           f"(it has {', '.join(columns)})")
    return found
