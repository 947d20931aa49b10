"""lower-dynamic-functionals: dynamic functional linear/conv -> prepack + dynamic quantized ops (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-dynamic-functionals")
def lower_dynamic_functionals(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
