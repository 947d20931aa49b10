"""equalize: (being written)."""

from __future__ import annotations

from ir.errors import UnsupportedError
from ir.program import Program

from .manager import register


@register("equalize")
def equalize(program: Program) -> Program:
    """Not written yet."""
    raise UnsupportedError("pass 'equalize' is not implemented yet")
