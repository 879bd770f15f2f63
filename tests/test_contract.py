"""What every command of every modality promises. Two tables of bad input, out-of-range options and bad
files, each case giving one `error:` line, exit 2, no traceback and no output file (the modality test files
add the cases only one modality has); and outputs into a shared folder that never overwrite each other."""

import io
import subprocess

import numpy as np
import pytest
import soundfile
from cli import DIFFKIT, assert_bad_input, run_here
from PIL import Image

from test_audio import TINY as AUDIO
from test_image import TINY as IMAGE
from test_text import TINY as TEXT

TRAIN = {
    "image": [*IMAGE, "--data", "builtin:shapes"],
    "audio": AUDIO,
    "text": TEXT,
    "points": ["--data", "builtin:ring", "--hidden", 16, "--batch-size", 16, "--timesteps", 50, "-q"],
}
SUFFIX = {"image": ".png", "audio": ".wav", "text": ".txt", "points": ".csv"}
# What each modality's inpaint needs besides the input to know what to regenerate.
MASK = {"image": ["--mask", "box:0,0,4,4"], "audio": ["--mask", "0.05-0.1"], "text": [], "points": ["--keep", "0"]}


def _good_file(modality: str) -> bytes:
    """A small file the modality reads."""
    if modality == "image":
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()
    if modality == "audio":
        buffer = io.BytesIO()
        soundfile.write(buffer, np.zeros(2000, dtype=np.int16), 8000, format="WAV", subtype="PCM_16")
        return buffer.getvalue()
    if modality == "text":
        return b"oslo , [MASK] : snowy , high -3 .\n"
    return b"0.5,0.5\n"


def _input(modality: str, folder) -> str:
    path = folder / f"input{SUFFIX[modality]}"
    path.write_bytes(_good_file(modality))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A one-step run of each modality, trained in this process, and an input file it accepts."""
    folder = tmp_path_factory.mktemp("bad-input")
    made = {}
    for modality, options in TRAIN.items():
        code, stderr = run_here("train", modality, "--out", folder / modality, "--steps", 1, *options)
        assert code == 0, stderr
        made[modality] = (folder / modality, _input(modality, folder))
    return made


CASES = {
    "train --steps 0": lambda m, r, i, new: ["train", m, "--out", new, *TRAIN[m], "--steps", 0],
    "train --batch-size 0": lambda m, r, i, new: ["train", m, "--out", new, *TRAIN[m], "--batch-size", 0],
    "train --lr 0": lambda m, r, i, new: ["train", m, "--out", new, *TRAIN[m], "--lr", 0],
    "train into an existing run": lambda m, r, i, new: ["train", m, "--out", r, "--steps", 1, *TRAIN[m]],
    "sample -n 0": lambda m, r, i, new: ["sample", m, "-m", r, "-n", 0],
    "sample --steps 0": lambda m, r, i, new: ["sample", m, "-m", r, "-n", 1, "--steps", 0],
    "sample --sampler nope": lambda m, r, i, new: ["sample", m, "-m", r, "-n", 1, "--sampler", "nope"],
    "sample --eta with dpm++2m": lambda m, r, i, new: ["sample", m, "-m", r, "-n", 1, "--sampler", "dpm++2m", "--eta", 1],
    "inpaint --steps 0": lambda m, r, i, new: ["inpaint", m, "-m", r, "-i", i, *MASK[m], "--steps", 0],
    "inpaint --resample 0": lambda m, r, i, new: ["inpaint", m, "-m", r, "-i", i, *MASK[m], "--resample", 0],
    "style --strength 1.5": lambda m, r, i, new: ["style", m, "-m", r, "-i", i, "--strength", 1.5],
    "style --strength -0.1": lambda m, r, i, new: ["style", m, "-m", r, "-i", i, "--strength", -0.1],
    "style --steps 0": lambda m, r, i, new: ["style", m, "-m", r, "-i", i, "--steps", 0],
    "eval -n 0": lambda m, r, i, new: ["eval", m, "-m", r, "-n", 0],
    "a missing run": lambda m, r, i, new: ["sample", m, "-m", r.parent / "missing", "-n", 1],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("modality", TRAIN)
def test_out_of_range_options_are_one_error_line(runs, modality, case, tmp_path):
    run_dir, given = runs[modality]
    args = CASES[case](modality, run_dir, given, tmp_path / "new-run")
    if args[0] in ("sample", "inpaint", "style"):
        args = [*args, "-o", tmp_path / f"out{SUFFIX[modality]}"]
    assert_bad_input(args, b"", tmp_path)


# Files a user might hand any command, each made under the name the command is given.
OTHER = {"image": "audio", "audio": "image", "text": "image", "points": "image"}
BAD_FILES = {
    "a missing file": lambda m, folder: folder / f"missing{SUFFIX[m]}",
    "an empty file": lambda m, folder: _made(folder / f"empty{SUFFIX[m]}", b""),
    "a corrupt file": lambda m, folder: _made(folder / f"corrupt{SUFFIX[m]}", bytes(range(256)) * 4),
    "another modality's file": lambda m, folder: _made(folder / f"other{SUFFIX[OTHER[m]]}", _good_file(OTHER[m])),
    "a folder": lambda m, folder: _made(folder / "a-folder", None),
}
# Every option that reads a user's file; train also reads a data folder holding the bad file.
READERS = {
    "train --data": lambda m, r, path, new: ["train", m, "--out", new, *TRAIN[m], "--data", path],
    "train --data FOLDER": lambda m, r, path, new: ["train", m, "--out", new, *TRAIN[m],
                                               "--data", _inside_a_folder(path)],
    "eval --data": lambda m, r, path, new: ["eval", m, "-m", r, "--data", path, "-n", 2, "--samples", 2],
    "style -i": lambda m, r, path, new: ["style", m, "-m", r, "-i", path],
    "inpaint -i": lambda m, r, path, new: ["inpaint", m, "-m", r, "-i", path, *MASK[m]],
}


def _made(path, data: bytes | None):
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    return path


def _inside_a_folder(path):
    """A data folder whose one entry is `path` (a missing path leaves it empty)."""
    folder = path.parent / "data"
    folder.mkdir()
    if path.exists():
        path.rename(folder / path.name)
    return folder


@pytest.mark.parametrize("bad", BAD_FILES)
@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("modality", TRAIN)
def test_bad_files_are_one_error_line_naming_the_file(runs, modality, reader, bad, tmp_path):
    run_dir, _ = runs[modality]
    (tmp_path / "work").mkdir()
    path = BAD_FILES[bad](modality, tmp_path / "work")
    args = READERS[reader](modality, run_dir, path, tmp_path / "new-run")
    if args[0] in ("inpaint", "style"):
        args = [*args, "-o", tmp_path / f"out{SUFFIX[modality]}"]
    line = assert_bad_input(args, b"", tmp_path)
    assert "Traceback" not in line and (path.name in line or "data" in line), line


# ---------------------------------------------------------------- outputs never overwrite each other

def _write_many(folder, worker: int, count: int) -> None:
    from diffkit.io import write_new

    for i in range(count):
        write_new(folder, "same", ".bin", f"{worker}-{i}".encode())


def test_racing_writers_into_one_folder_each_get_a_new_name(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(tmp_path, w, 25)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers)
    written = sorted(p.read_text() for p in tmp_path.glob("same*.bin"))
    assert written == sorted(f"{w}-{i}" for w in range(4) for i in range(25))
    assert not list(tmp_path.glob(".*.tmp"))


# Per modality: how many files one `sample -n 2` puts in a folder (one each, or one file of rows).
FILES_PER_SAMPLE = {"image": 2, "audio": 2, "text": 1, "points": 1}


@pytest.mark.parametrize("modality", TRAIN)
def test_two_processes_sampling_into_one_folder_keep_every_file(runs, modality, tmp_path):
    run_dir, given = runs[modality]
    folder = tmp_path / "shared"
    same = ["sample", modality, "-m", run_dir, "-n", 2, "--steps", 2, "--seed", 0, "-q", "-o", folder]
    processes = [subprocess.Popen([*DIFFKIT, *map(str, same)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
    printed = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
        printed += stdout.decode().split()
    files = sorted(folder.glob(f"*{SUFFIX[modality]}"))
    assert len(files) == 2 * FILES_PER_SAMPLE[modality] and sorted(map(str, files)) == sorted(printed)
    # An edit into a folder takes its input's name, and a new one when that is taken.
    for _ in range(2):
        code, stderr = run_here("style", modality, "-m", run_dir, "-i", given, "--strength", 0.3, "--steps", 2,
                                "-q", "-o", folder)
        assert code == 0, stderr
    # (text and CSV results each have their provenance sidecar beside them)
    assert {p.name for p in folder.glob(f"input-styled*{SUFFIX[modality]}")} == {f"input-styled{SUFFIX[modality]}",
                                                                              f"input-styled-1{SUFFIX[modality]}"}


def test_an_output_name_with_another_suffix_is_refused_before_any_work(runs, tmp_path):
    run_dir, _ = runs["image"]
    line = assert_bad_input(["sample", "image", "-m", run_dir, "-n", 1, "-o", tmp_path / "out.jpg"], b"", tmp_path)
    assert "out.jpg: results are .png files" in line and not (tmp_path / "out.jpg").exists()


def test_written_files_get_the_usual_permissions_not_private_ones(tmp_path):
    import os

    from diffkit.io import atomic_write, write_new

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"a")
        shared = write_new(tmp_path, "out", ".bin", b"b")
        (tmp_path / "mine.bin").write_bytes(b"c")
        (tmp_path / "mine.bin").chmod(0o600)
        with atomic_write(tmp_path / "mine.bin") as f:
            f.write(b"d")
    finally:
        os.umask(umask)
    mode = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "new.bin", shared, tmp_path / "mine.bin")}
    assert mode == {"new.bin": 0o644, "out.bin": 0o644, "mine.bin": 0o600}  # a replaced file keeps its own


def test_a_failed_train_into_an_existing_empty_folder_leaves_it_empty(tmp_path):
    (tmp_path / "run").mkdir()
    for modality in TRAIN:
        line = assert_bad_input(["train", modality, "--out", tmp_path / "run", *TRAIN[modality], "--data",
                                 tmp_path / f"missing{SUFFIX[modality]}"], b"", tmp_path)
        assert "missing" in line and not list((tmp_path / "run").iterdir())
