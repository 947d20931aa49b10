"""lower-weight-only-modules: weight-only reference modules -> quantized embeddings.

torch's `_lower_weight_only_weighted_ref_module`: every call of a reference Embedding / EmbeddingBag
swaps the module for torch's quantized Embedding / EmbeddingBag (`from_reference`); the graph is unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr

from qfx.ir.program import Program
from qfx.lowering.support.engine import quantized_from_reference
from qfx.passes.manager import register

WEIGHT_ONLY_LOWERING: Mapping[type, type] = {
    nnqr.Embedding: nnq.Embedding,
    nnqr.EmbeddingBag: nnq.EmbeddingBag,
}


@register("lower-weight-only-modules")
def lower_weight_only_modules(program: Program) -> Program:
    """Replace the module of every call_module node that calls a reference Embedding / EmbeddingBag.

    Needs: swap-modules has run (weight-only modules are reference modules). Guarantees: each such path
    holds `from_reference(ref_module)` of torch's quantized class (for a module called twice, the result
    of its last call, each made from the module as it was before the pass); nodes are untouched. Nothing
    is skipped for a None qconfig, as in torch (such modules are never swapped to reference modules).
    """
    lowered: dict[str, Any] = {}
    for node in program.graph.nodes:
        if node.op != "call_module":
            continue
        ref_module = program.modules[node.target]
        q_class = WEIGHT_ONLY_LOWERING.get(type(ref_module))
        if q_class is not None:
            lowered[node.target] = quantized_from_reference(
                q_class, ref_module, where=f"node '{node.name}' (module '{node.target}')")
    return program.with_modules(lowered)
