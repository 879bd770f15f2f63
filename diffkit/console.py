"""Logs and progress for people, on stderr, so stdout stays clean for data."""

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = Console(stderr=True)


def log(message: str, quiet: bool = False) -> None:
    if not quiet:
        stderr.print(message, highlight=False)


def _as_named(setting: str) -> str:
    return setting


_naming = [_as_named]


def name_settings(naming) -> None:
    """Name settings in messages by `naming(setting)`: the CLI names them by their flags."""
    _naming[0] = naming


def setting(name: str) -> str:
    """A setting (a field of a library dataclass) as messages name it: as is, or the CLI's flag."""
    return _naming[0](name)


_shown: set[str] = set()
_capture: list[list[str]] = []


def warn(message: str) -> None:
    """A problem the command works around: always shown, even with --quiet, and once (a file found
    unreadable again, by another batch, says nothing new)."""
    if _capture:
        _capture[-1].append(message)
    elif message not in _shown:
        _shown.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


@contextmanager
def captured():
    """Collect warnings instead of showing them (a data worker's, which its parent process shows)."""
    messages: list[str] = []
    _capture.append(messages)
    try:
        yield messages
    finally:
        _capture.pop()


@contextmanager
def progress_bar(description: str, quiet: bool = False):
    """Yields `update(done, total, **fields)`; shows a bar with ETA and any fields (loss, it/s).

    The bar appears at the first update, so a command that fails while validating its input prints
    only its error line.
    """
    if quiet:
        yield lambda done, total, **fields: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    bar = Progress(*columns, console=stderr, transient=False)
    task = None

    def update(done, total, **fields):
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=total, info="")
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        bar.update(task, completed=done, total=total, info=info)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()
