"""lower-special-patterns: copy, fixed-qparams and default ops -> quantized ops and modules (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-special-patterns")
def lower_special_patterns(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
