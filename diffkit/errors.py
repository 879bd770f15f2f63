"""Errors a person can act on.

A `DiffkitError` is a user mistake (bad option, bad file): the CLI prints its message as one line and
exits 2. Anything else that escapes is a runtime failure: exit 1.
"""


class DiffkitError(Exception):
    """A user mistake, reported as one line `error: <message>` and exit code 2."""


def choose(kind: str, name: str, choices) -> None:
    """Raise a DiffkitError naming the valid choices unless `name` is one of them."""
    if name not in choices:
        raise DiffkitError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}")


class Interrupted(Exception):
    """A signal stopped a command after it saved its work; the CLI exits 128 + the signal's number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum
