"""A folder of files as a source: an index of their names (cached, and valid while no folder under the
root has changed), classes from the first-level sub-folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from diffkit.data.cache import cached
from diffkit.errors import DiffkitError
from diffkit.io import data_folder


def _walk(root: Path, suffixes: set[str]) -> dict:
    """Every file under `root` with one of `suffixes` (sorted relative paths), and the modification time
    of every folder walked: adding, removing or renaming an entry changes its folder's."""
    files, folders = [], {}
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        relative = os.path.relpath(folder, root)
        folders[relative] = os.stat(folder).st_mtime_ns
        prefix = "" if relative == "." else relative + os.sep
        files += [prefix + name for name in names if os.path.splitext(name)[1].lower() in suffixes]
    return {"folders": folders, "files": sorted(files)}


def _unchanged(root: Path, record: dict) -> bool:
    try:
        return all(os.stat(root / folder).st_mtime_ns == mtime for folder, mtime in record["folders"].items())
    except OSError:
        return False


def folder_index(root: Path, suffixes: set[str]) -> list[str]:
    """The files of `root` with `suffixes`, from the cache while it is valid: a start-up costs a stat of
    each folder, not a listing of every file (nor a decode of any)."""
    key = f"{root.resolve()}|{','.join(sorted(suffixes))}"
    return cached("folders", key, lambda record: _unchanged(root, record), lambda: _walk(root, suffixes))["files"]


class FolderSource:
    def __init__(self, spec: str, suffixes: set[str], class_cond: bool, holding: str):
        self.spec, self.root = spec, data_folder(spec, holding)
        files = folder_index(self.root, suffixes)
        if not files:
            raise DiffkitError(f"{spec}: no {holding} ({', '.join(sorted(suffixes))}, searched recursively)")
        tops = [Path(f).parts[0] if len(Path(f).parts) > 1 else None for f in files]
        if class_cond:
            loose = next((f for f, top in zip(files, tops) if top is None), None)
            if loose is not None:
                raise DiffkitError(f"{self.root / loose}: --class-cond needs every file inside a class sub-folder")
            self.classes = sorted(set(tops))
            position = {name: i for i, name in enumerate(self.classes)}
            self.labels = torch.tensor([position[top] for top in tops])
        else:
            self.classes, self.labels = [], torch.zeros(len(files), dtype=torch.long)
        # Fixed-width bytes, not a list of str: forked workers share it without copying on reference counts.
        self.files = np.array([f.encode() for f in files])

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.root / self.files[index].decode()

    def name(self, index: int) -> str:
        return str(self.path(index))

    def open(self, index: int):
        return open(self.path(index), "rb")

    def present(self) -> bool:
        return self.root.is_dir()
