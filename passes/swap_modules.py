"""swap-modules: (being written)."""

from __future__ import annotations

from ir.errors import UnsupportedError
from ir.program import Program

from .manager import register


@register("swap-modules")
def swap_modules(program: Program) -> Program:
    """Not written yet."""
    raise UnsupportedError("pass 'swap-modules' is not implemented yet")
