"""lower-dynamic-modules: dynamic reference modules -> dynamically quantized modules.

torch's `_lower_dynamic_weighted_ref_module`: a reference Linear, RNN cell, LSTM or GRU (or a LinearReLU
around a reference Linear) whose input is `quantize_per_tensor_dynamic -> dequantize` becomes torch's
dynamically quantized module (`from_reference`), reading the float input directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.nn.quantized.reference as nnqr

from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAttributeError, ConvertIndexError
from qfx.ir.program import Program
from qfx.lowering.support.engine import quantized_from_reference
from qfx.lowering.support.patterns import first_input, is_dequantize
from qfx.passes.manager import register

# reference (or fused) class -> (dynamically quantized class, the class a fused module's first child must
# have; None for an unfused reference module)
DYNAMIC_LOWERING: Mapping[type, tuple[type, type | None]] = {
    nnqr.Linear: (nnqd.Linear, None),
    nnqr.GRUCell: (nnqd.GRUCell, None),
    nnqr.LSTMCell: (nnqd.LSTMCell, None),
    nnqr.RNNCell: (nnqd.RNNCell, None),
    nnqr.LSTM: (nnqd.LSTM, None),
    nnqr.GRU: (nnqd.GRU, None),
    nni.LinearReLU: (nniqd.LinearReLU, nnqr.Linear),
}

# activation dtypes torch lowers dynamically: int8 (quint8 / qint8) and float16
DYNAMIC_ACTIVATION_DTYPES = (torch.quint8, torch.qint8, torch.float16)


@register("lower-dynamic-modules")
def lower_dynamic_modules(program: Program) -> Program:
    """Lower every dynamic reference module fed by `quantize_per_tensor_dynamic -> dequantize`.

    Needs: the reference graph (insert-qdq has run). Guarantees: each matched module is replaced at its
    path by `from_reference(ref_module)` of torch's dynamic class, and its node reads the input of the
    dynamic quantize in place of the dequantize (the now unread quantize / dequantize are left for dce).
    Module lookups read the table as it was when the pass began (as torch's named_modules dict), so a
    module called twice is lowered for each call and the last result wins. Other activation dtypes and
    fused modules whose inner module is not a reference Linear are left as they are.
    """
    editor = GraphEditor(program)
    lowered: dict[str, Any] = {}
    for node in editor.walk():
        if node.op != "call_module":
            continue
        ref_module = program.modules[node.target]
        entry = DYNAMIC_LOWERING.get(type(ref_module))
        if entry is None:
            continue
        dequantize = first_input(editor, node, "dynamic reference module", ConvertAttributeError)
        if not is_dequantize(dequantize) or not dequantize.args:
            continue
        quantize = editor.node(dequantize.args[0])
        if quantize is None or quantize.op != "call_function" or quantize.target is not torch.quantize_per_tensor_dynamic:
            continue
        if len(quantize.args) < 2:
            raise ConvertIndexError(
                f"dynamic quantize node '{quantize.name}' before '{node.name}' should take the activation "
                f"dtype as its second positional argument, it has args {quantize.args!r}")
        if not any(quantize.args[1] == dtype for dtype in DYNAMIC_ACTIVATION_DTYPES):
            continue
        q_class, inner_class = entry
        if inner_class is not None and type(ref_module[0]) is not inner_class:
            continue
        lowered[node.target] = quantized_from_reference(
            q_class, ref_module, where=f"node '{node.name}' (module '{node.target}')")
        editor.replace_input(node.name, dequantize.name, quantize.args[0])
    if not lowered:
        return program
    return editor.finish(modules=program.with_modules(lowered).modules)
