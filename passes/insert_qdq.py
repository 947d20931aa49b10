"""insert-qdq: (being written)."""

from __future__ import annotations

from ir.errors import UnsupportedError
from ir.program import Program

from .manager import register


@register("insert-qdq")
def insert_qdq(program: Program) -> Program:
    """Not written yet."""
    raise UnsupportedError("pass 'insert-qdq' is not implemented yet")
