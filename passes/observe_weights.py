"""observe-weights: (being written)."""

from __future__ import annotations

from ir.errors import UnsupportedError
from ir.program import Program

from .manager import register


@register("observe-weights")
def observe_weights(program: Program) -> Program:
    """Not written yet."""
    raise UnsupportedError("pass 'observe-weights' is not implemented yet")
