"""fold-weights: prepack chains run once, their results become constants (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("fold-weights")
def fold_weights(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
