"""lower-dynamic-modules: dynamic reference modules -> dynamically quantized modules (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-dynamic-modules")
def lower_dynamic_modules(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
