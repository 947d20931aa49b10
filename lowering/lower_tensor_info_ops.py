"""lower-tensor-info-ops: shape/size reads skip the dequantize (placeholder until its pass lands)."""

from __future__ import annotations

from qfx.ir.program import Program
from qfx.passes.manager import register


@register("lower-tensor-info-ops")
def lower_tensor_info_ops(program: Program) -> Program:
    """Placeholder: returns its input unchanged."""
    return program
