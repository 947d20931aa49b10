"""apply-qconfig-mapping: (being written)."""

from __future__ import annotations

from ir.errors import UnsupportedError
from ir.program import Program

from .manager import register


@register("apply-qconfig-mapping")
def convert_qconfig(program: Program) -> Program:
    """Not written yet."""
    raise UnsupportedError("pass 'apply-qconfig-mapping' is not implemented yet")
