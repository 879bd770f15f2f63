"""Running the installed CLI as a user would: a fresh process per command."""

import subprocess
import sys

DIFFKIT = [sys.executable, "-m", "diffkit"]


def run(*args, stdin=None, check=True):
    result = subprocess.run([*DIFFKIT, *map(str, args)], input=stdin, capture_output=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result
