"""Restoration task strings ("upscale:2,denoise:0.05"): what happened to an input, in order, each task
with its argument checked, as every modality's restoration reads them."""

from __future__ import annotations

from diffkit.console import setting
from diffkit.errors import DiffkitError


def task_list(text: str, tasks: dict[str, str | None]) -> list[tuple[str, str | None]]:
    """A task string as (name, argument) pairs in the order given: "upscale:2,denoise:0.05" ->
    [("upscale", "2"), ("denoise", "0.05")]. `tasks` maps each name to its argument's placeholder (None: takes none); an
    unknown, repeated or misused name is an error that lists the choices."""
    listing = ", ".join(name + (f":{arg}" if arg else "") for name, arg in tasks.items())
    pairs = []
    for part in text.split(","):
        name, _, arg = part.strip().partition(":")
        if name not in tasks:
            raise DiffkitError(f"{setting('task')}: unknown task {name!r}; choose from {listing} "
                               "(comma-separated to combine)")
        if bool(arg) != bool(tasks[name]):
            written = name + (f":{tasks[name]}" if tasks[name] else "")
            raise DiffkitError(f"{setting('task')} {part.strip()!r}: write it as {written}")
        if name in (seen for seen, _ in pairs):
            raise DiffkitError(f"{setting('task')}: {name} is given twice")
        pairs.append((name, arg or None))
    return pairs


def task_number(task: str, arg: str, low: float, high: float, *, integer: bool = False) -> float:
    """A task's numeric argument in [low, high] (integers only if `integer`), or an error naming it."""
    kind = "an integer" if integer else "a number"
    try:
        value = int(arg) if integer else float(arg)
    except ValueError:
        raise DiffkitError(f"{setting('task')} {task}:{arg}: expected {kind} in [{low:g}, {high:g}]") from None
    if not low <= value <= high:
        raise DiffkitError(f"{setting('task')} {task}:{arg}: expected {kind} in [{low:g}, {high:g}]")
    return value
