"""Running the real `qfx` command in a subprocess (for the command-line tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def qfx(*argv: str, cwd: Path | None = None, path: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m qfx.cli argv...` (what the `qfx` script runs), with output captured as text; `path`
    replaces PATH (to hide programs such as Graphviz's dot)."""
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "qfx.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)


def text(result: subprocess.CompletedProcess) -> tuple[str, str]:
    """(stdout, stderr) of a finished run, decoded."""
    return result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
