"""lower-static-functionals: static functional linear/conv -> prepack + quantized ops (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-static-functionals")
def lower_static_functionals(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
