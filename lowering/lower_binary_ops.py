"""lower-binary-ops: `dequantize -> add/mul/matmul [-> relu] -> quantize_per_tensor` -> one quantized op.

torch's `_lower_quantized_binary_op`, step for step on a GraphEditor.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch

from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAssertionError, ConvertKeyError
from qfx.ir.graph import Node
from qfx.ir.program import Program
from qfx.passes.manager import register

from .support.patterns import dequantized_input, is_dequantize, match_static_pattern, preserved_meta, quantize_nodes

# The float ops this pass lowers (operator.matmul is in the op tables below but not matched, as in torch).
BINARY_OPS: tuple[Callable[..., Any], ...] = (operator.add, torch.add, operator.mul, torch.mul, torch.matmul)

# float op -> quantized op, without and with a fused ReLU after it
QUANTIZED_BINARY_OP: dict[Callable[..., Any], Any] = {
    operator.add: torch.ops.quantized.add,
    torch.add: torch.ops.quantized.add,
    operator.mul: torch.ops.quantized.mul,
    torch.mul: torch.ops.quantized.mul,
    operator.matmul: torch.ops.quantized.matmul,
    torch.matmul: torch.ops.quantized.matmul,
}
QUANTIZED_BINARY_RELU_OP: dict[Callable[..., Any], Any] = {
    operator.add: torch.ops.quantized.add_relu,
    torch.add: torch.ops.quantized.add_relu,
    operator.mul: torch.ops.quantized.mul_relu,
    torch.mul: torch.ops.quantized.mul_relu,
}


@register("lower-binary-ops")
def lower_binary_ops(program: Program) -> Program:
    """Lower each quantized binary-op pattern to its quantized op.

    Needs: the reference graph after insert-qdq (quantize_per_tensor nodes reading their scale and zero
    point from get_attr nodes). Guarantees, for every `quantize_per_tensor(op(dq(a), dq(b) or a scalar)
    [-> relu])` whose op has a non-None qconfig: a `quantized.<op>[_relu](a, b[, scale, zero_point])` node
    right after the quantize node takes over its users (scale and zero point only when both operands are
    dequantized tensors); the quantize node, the ReLU and the float op are erased, the dequantize nodes
    are left for dce. Node names, order and meta (the float op's stack trace) as torch's edits leave them.
    """
    editor = GraphEditor(program)
    # (the walk's matches are quantize nodes; the op node a match adds comes after the one it stands on)
    for node in editor.walk_selected(quantize_nodes(program)):
        match = match_static_pattern(editor, node, BINARY_OPS, (0, 1))
        if match is not None:
            _lower_one(editor, match.quantize, match.relu, match.ref)
    return editor.finish()


def _lower_one(editor: GraphEditor, quantize: Node, relu: Node | None, op: Node) -> None:
    """Rewrite one matched pattern (torch's steps 1 to 3)."""
    _, scale, zero_point, _ = quantize.args
    dequantized = 0
    for arg in op.args:
        if not is_dequantize(editor.node(arg)):
            continue
        editor.replace_input(op.name, arg.name, dequantized_input(editor, arg))
        dequantized += 1
    if dequantized == 0:
        raise ConvertAssertionError(f"binary op node '{op.name}' reads no dequantize node; nothing to lower")
    if op.target not in QUANTIZED_BINARY_OP:
        raise ConvertAssertionError(f"binary op node '{op.name}': {op.target} has no quantized op to lower to")
    table = QUANTIZED_BINARY_OP if relu is None else QUANTIZED_BINARY_RELU_OP
    if op.target not in table:  # (torch looks it up in its table of fused ops: a KeyError)
        raise ConvertKeyError(f"binary op node '{op.name}': {op.target} has no quantized fused-ReLU op to lower "
                              f"to; leave the ReLU out of this pattern in the backend config")
    op = editor[op.name]
    args = op.args + ((scale, zero_point) if dequantized == 2 else ())
    quantized = editor.insert_after(quantize.name, "call_function", table[op.target], args,
                                    meta=preserved_meta(op))
    editor.replace_all_uses(quantize.name, quantized)
    editor.erase(quantize.name)
    if relu is not None:
        editor.erase(relu.name)
    editor.erase(op.name)
