"""lower-weight-only-modules: weight-only reference modules -> quantized embeddings (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-weight-only-modules")
def lower_weight_only_modules(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
