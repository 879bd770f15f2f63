"""The README and docs/ say what the code does: every `diffkit` command in the README runs (at tiny sizes
and steps), its Python runs, it stays a page a newcomer reads in minutes, and docs/cli.md is what the CLI
prints today."""

import importlib.util
import re
import shlex
import wave
from pathlib import Path

import numpy as np
import torch
from cli import run_here
from PIL import Image

from diffkit.text import grammar

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Appended to a README command (the last of an option given twice wins): tiny networks, a few steps,
# few samples, so that the whole README runs in about a minute.
TINY = {
    ("train", "image"): ["--preset", "tiny", "--batch-size", 2, "--steps", 2],
    ("train", "audio"): ["--preset", "tiny", "--batch-size", 2, "--seconds", 0.25, "--steps", 2],
    ("train", "text"): ["--preset", "tiny", "--batch-size", 8, "--steps", 2],
    ("train", "points"): ["--preset", "tiny", "--batch-size", 64, "--steps", 2],
    ("eval", "image"): ["-n", 4, "--strata", 2, "--samples", 4],
    ("eval", "audio"): ["-n", 2, "--strata", 2, "--samples", 2],
    ("eval", "text"): ["-n", 4, "--strata", 2, "--samples", 4],
    ("eval", "points"): ["-n", 100, "--strata", 2],
}
SAMPLING = ["--steps", 2]  # every sample, inpaint, style and restore
REPAINT = ["--resample", 1]  # every inpaint


def readme_commands() -> list[str]:
    """The README's shell lines that run diffkit, in order (continued lines joined, comments dropped)."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("diffkit ", "torchrun ")):
                lines.append(line)
    return lines


def _png(path: Path, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _wav(path: Path, seconds: float, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


def _inputs(folder: Path) -> None:
    """The files the README's commands read, made up."""
    _png(folder / "photo.png", 32, 0)
    _png(folder / "circle.png", 32, 1)
    _png(folder / "small.png", 8, 2)
    (folder / "photos" / "a").mkdir(parents=True)
    for i in range(3):
        _png(folder / "photos" / "a" / f"{i}.png", 40, 10 + i)
    _wav(folder / "take.wav", 1.0)
    (folder / "recordings").mkdir()
    for i in range(2):
        _wav(folder / "recordings" / f"{i}.wav", 0.5)
    weather = grammar.lines(12, seed=1)
    (folder / "lines.txt").write_text("\n".join(weather[:3]) + "\n")
    (folder / "corpus.txt").write_text("\n".join(weather) + "\n")
    first = weather[0].split()
    (folder / "templates.txt").write_text(" ".join([*first[:2], "[MASK]", *first[4:]]) + "\n")
    (folder / "column.csv").write_text("0.7,0\n")


def _tiny(args: list[str]) -> list:
    verb, modality = args[0], args[1] if len(args) > 1 else ""
    extra = list(TINY.get((verb, modality), []))
    if verb in ("sample", "inpaint", "style", "restore"):
        extra += SAMPLING
    if verb == "inpaint":
        extra += REPAINT
    if verb == "train" and "--resume" in args:
        extra = ["--steps", 4]  # the run's own settings, two more steps
    return [*args, *extra]


def test_every_diffkit_command_and_the_python_of_the_readme_run(tmp_path, monkeypatch):
    """In order, as a reader would: the commands train the runs that the Python then loads."""
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    commands = readme_commands()
    assert len(commands) > 25
    for line in commands:
        words = shlex.split(line)
        if words[0] == "torchrun":  # needs several processes: its diffkit command must at least parse
            args = [*words[words.index("diffkit") + 1:], "--help"]
        else:
            args = _tiny(words[1:])
        code, stderr = run_here(*args)
        assert code == 0, f"{line}\n{stderr}"
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["x"].shape == (1000, 2) and namespace["ring"].shape == (1000, 2)
    assert namespace["grid"].shape == (16, 3, 32, 32) and namespace["grid"].dtype == torch.uint8
    assert namespace["clips"].shape[:2] == (4, 1) and len(namespace["lines"]) == 8


def test_the_library_page_runs_and_its_restoration_meets_the_observation():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), re.S)
    namespace = {}
    exec(compile(blocks[0], "docs/library.md", "exec"), namespace)
    x, y = namespace["x"], namespace["y"]
    assert x.shape == (1000, 2) and namespace["steps"]
    assert (namespace["op"](x) - y).abs().max() < 1e-5  # ddnm meets a noiseless observation exactly


def test_the_readme_is_a_short_page():
    assert len(README.read_text().splitlines()) <= 250
    for link in re.findall(r"\]\(([^)#]+)\)", README.read_text()):
        assert (ROOT / link).exists(), link


def test_docs_cli_md_is_what_the_cli_prints_today():
    spec = importlib.util.spec_from_file_location("generate_cli", ROOT / "docs" / "generate_cli.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (ROOT / "docs" / "cli.md").read_text() == generator.page(), \
        "docs/cli.md is stale: run python docs/generate_cli.py"


def test_no_help_text_shows_a_type_label_for_a_flag():
    from diffkit.modalities import MODALITIES

    for modality in MODALITIES:
        code, _ = run_here("train", modality, "--help")
        assert code == 0
    text = (ROOT / "docs" / "cli.md").read_text()
    assert "<bool>" not in text and "BOOLEAN" not in text


def test_version_names_diffkit_torch_and_the_device():
    from typer.testing import CliRunner

    from diffkit import __version__, cli

    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert f"diffkit {__version__}" in result.stdout and "torch " in result.stdout and "device " in result.stdout
