"""Errors a person can act on.

A `DiffkitError` is a user mistake (bad option, bad file): the CLI prints its message as one line and
exits 2. Anything else that escapes is a runtime failure: exit 1.
"""


class DiffkitError(Exception):
    """A user mistake, reported as one line `error: <message>` and exit code 2."""


class SettingError(DiffkitError):
    """A setting out of its range, said in the library's own words ("steps must be at least 1, got 0");
    the CLI says it of the setting's flag ("--steps must be at least 1, got 0")."""

    def __init__(self, setting: str, rest: str):
        super().__init__(setting + rest)
        self.setting, self.rest = setting, rest


def choose(kind: str, name: str, choices) -> None:
    """Raise a DiffkitError naming the valid choices unless `name` is one of them."""
    if name not in choices:
        raise DiffkitError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}")


class Resumable(DiffkitError):
    """A run stopped by a user's mistake (its data gone, say) after saving a checkpoint: resuming the run
    continues it, which the CLI says with the flag."""


class Interrupted(Exception):
    """A signal stopped a command after it saved its work (a run: a checkpoint it resumes from); the CLI
    exits 128 + the signal's number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum
