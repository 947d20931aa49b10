"""cleanup: (being written)."""

from __future__ import annotations

from ir.errors import UnsupportedError
from ir.program import Program

from .manager import register


@register("cleanup")
def cleanup(program: Program) -> Program:
    """Not written yet."""
    raise UnsupportedError("pass 'cleanup' is not implemented yet")
