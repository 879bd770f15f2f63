"""One table of out-of-range options for every command of every modality: each gives one `error:` line,
exit 2, no traceback and no output file (the modality test files hold the bad files and formats)."""

import io

import numpy as np
import pytest
import soundfile
from cli import assert_bad_input, run_here
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


def _input(modality: str, folder) -> str:
    path = folder / f"input{SUFFIX[modality]}"
    if modality == "image":
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(path)
    elif modality == "audio":
        buffer = io.BytesIO()
        soundfile.write(buffer, np.zeros(2000, dtype=np.int16), 8000, format="WAV", subtype="PCM_16")
        path.write_bytes(buffer.getvalue())
    elif modality == "text":
        path.write_text("oslo , [MASK] : snowy , high -3 .\n")
    else:
        path.write_text("0.5,0.5\n")
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
    "train --steps 0": lambda m, r, i: ["train", m, "--out", r.parent / f"{m}-new", "--steps", 0, *TRAIN[m]],
    "train --batch-size 0": lambda m, r, i: ["train", m, "--out", r.parent / f"{m}-new", "--batch-size", 0, *TRAIN[m]],
    "train --lr 0": lambda m, r, i: ["train", m, "--out", r.parent / f"{m}-new", "--lr", 0, *TRAIN[m]],
    "train into an existing run": lambda m, r, i: ["train", m, "--out", r, "--steps", 1, *TRAIN[m]],
    "sample -n 0": lambda m, r, i: ["sample", m, "-m", r, "-n", 0],
    "sample --steps 0": lambda m, r, i: ["sample", m, "-m", r, "-n", 1, "--steps", 0],
    "sample --sampler nope": lambda m, r, i: ["sample", m, "-m", r, "-n", 1, "--sampler", "nope"],
    "sample --eta with dpm++2m": lambda m, r, i: ["sample", m, "-m", r, "-n", 1, "--sampler", "dpm++2m", "--eta", 1],
    "inpaint --steps 0": lambda m, r, i: ["inpaint", m, "-m", r, "-i", i, *MASK[m], "--steps", 0],
    "inpaint --resample 0": lambda m, r, i: ["inpaint", m, "-m", r, "-i", i, *MASK[m], "--resample", 0],
    "style --strength 1.5": lambda m, r, i: ["style", m, "-m", r, "-i", i, "--strength", 1.5],
    "style --strength -0.1": lambda m, r, i: ["style", m, "-m", r, "-i", i, "--strength", -0.1],
    "style --steps 0": lambda m, r, i: ["style", m, "-m", r, "-i", i, "--steps", 0],
    "eval -n 0": lambda m, r, i: ["eval", m, "-m", r, "-n", 0],
    "a missing run": lambda m, r, i: ["sample", m, "-m", r.parent / "missing", "-n", 1],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("modality", TRAIN)
def test_out_of_range_options_are_one_error_line(runs, modality, case, tmp_path):
    run_dir, given = runs[modality]
    args = CASES[case](modality, run_dir, given)
    if args[0] in ("sample", "inpaint", "style"):
        args = [*args, "-o", tmp_path / f"out{SUFFIX[modality]}"]
    assert_bad_input(args, b"", tmp_path, SUFFIX[modality])
