"""lower-static-modules: static weighted reference modules -> quantized modules (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-static-modules")
def lower_static_modules(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
