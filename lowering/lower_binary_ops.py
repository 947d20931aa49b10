"""lower-binary-ops: add/mul/matmul -> quantized binary ops (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-binary-ops")
def lower_binary_ops(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
