"""The cache of data indices (folder listings, shard member offsets, parquet files as Arrow streams): JSON
records under $DIFFKIT_CACHE, each valid while the data it describes is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    """Indices of folders and shards live here ($DIFFKIT_CACHE, else the XDG cache), never beside the
    user's data, which may be read-only."""
    root = os.environ.get("DIFFKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffkit"
    return Path(root)


def cached(kind: str, key: str, valid: Callable[[dict], bool], build: Callable[[], dict] | None) -> dict | None:
    """A JSON record kept in cache_dir()/kind/ under `key`'s hash: read back while `valid` says it still
    describes the data, else rebuilt and stored (or None, with no `build`). An unwritable cache only
    costs the rebuild."""
    path = cache_dir() / kind / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".json")
    try:
        record = json.loads(path.read_text())
        if record.get("key") == key and valid(record):
            return record
    except (OSError, ValueError):
        pass
    if build is None:
        return None
    record = {"key": key, **build()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, separators=(",", ":")))
        tmp.replace(path)
    except OSError:
        pass
    return record
