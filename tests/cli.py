"""Running the installed CLI as a user would: a fresh process per command."""

import subprocess
import sys

DIFFKIT = [sys.executable, "-m", "diffkit"]


def run(*args, stdin=None, check=True):
    result = subprocess.run([*DIFFKIT, *map(str, args)], input=stdin, capture_output=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


_registered = []


def run_here(*args, stdin=None):
    """The same CLI inside this process, for the many cases that fail before any real work: no fresh
    interpreter and torch import per case. Returns (exit code, stderr text)."""
    from typer.testing import CliRunner

    from diffkit import cli
    from diffkit.modalities import register_all

    if not _registered:
        register_all(cli.GROUPS)
        _registered.append(True)
    result = CliRunner().invoke(cli.app, [str(a) for a in args], input=stdin)
    return result.exit_code, result.stderr


def foreign_run(folder, modality: str):
    """A run directory of another modality (its config is all a command reads before refusing it)."""
    import json

    (folder / modality).mkdir()
    (folder / modality / "config.json").write_text(json.dumps({"modality": modality, "format_version": 1}))
    return folder / modality


def assert_stdin_error_in_a_real_process(modality: str, run_dir, output) -> None:
    """Text on stdin where a file is expected, in a fresh process: exit 2, no traceback, no output."""
    result = run("style", modality, "-m", run_dir, "-i", "-", "-o", output, stdin=b"plain text", check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.startswith("error: <stdin>: ") and "Traceback" not in stderr
    assert not output.exists()


def assert_bad_input(args, stdin: bytes, folder) -> str:
    """The bad-input contract: exit 2, one `error:` line on stderr (after any `warning:` lines, such as
    for the unreadable files skipped in a data folder), and nothing left in `folder` that was not there
    before: no output file, no run folder. Returns the line."""
    before = set(folder.rglob("*"))
    code, stderr = run_here(*args, stdin=stdin)
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert set(folder.rglob("*")) == before, "the failed command left files behind"
    return lines[0]
