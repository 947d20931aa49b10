"""lower-dynamic-functionals: dynamic functional linear/conv patterns -> a weight prepack + a dynamically
quantized op (torch's `_lower_dynamic_weighted_ref_functional`)."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from qfx.ir.args import Ref
from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAttributeError, ConvertIndexError, ConvertValueError
from qfx.ir.graph import Node
from qfx.ir.program import Program
from qfx.passes.manager import register

from .support.patterns import first_argument, first_input, is_dequantize, module_of, skips_lowering
from .support.prepack import CONV_FUNCTIONALS, conv_prepack_args, conv_prepack_op, linear_prepack_op

_quantized = torch.ops.quantized

# functional -> {(activation dtype, weight dtype): (dynamic op, dynamic op fused with ReLU or None)}.
# There is no fused dynamic conv + ReLU; torch then lowers no dynamic conv at all (see `_lower_one`).
DYNAMIC_FUNCTIONALS: dict[Callable, dict[tuple[Any, Any], tuple[Callable, Callable | None]]] = {
    F.linear: {
        (torch.quint8, torch.qint8): (_quantized.linear_dynamic, _quantized.linear_relu_dynamic),
        (torch.float16, torch.float16): (_quantized.linear_dynamic_fp16, _quantized.linear_relu_dynamic_fp16),
    },
    F.conv1d: {(torch.quint8, torch.qint8): (_quantized.conv1d_dynamic, None)},
    F.conv2d: {(torch.quint8, torch.qint8): (_quantized.conv2d_dynamic, None)},
    F.conv3d: {(torch.quint8, torch.qint8): (_quantized.conv3d_dynamic, None)},
}


@register("lower-dynamic-functionals")
def lower_dynamic_functionals(program: Program) -> Program:
    """Lower `quantize_per_tensor_dynamic(x) -> dequantize, dequantize(w_q) -> F.linear/conv* [-> relu]`.

    Needs: the reference graph. Walks the graph backwards (so `linear -> relu` is matched before `linear`
    alone). Guarantees, per match: a prepack call of the quantized weight (with the remaining args; linear's
    `bias` kwarg moves to it as `B`) right before the functional node, which becomes the dynamic op for
    its (activation, weight) dtypes (the ReLU-fused one when a F.relu / nn.ReLU followed, the ReLU then
    erased and its users reading the op) on (x, packed[, reduce_range]). Left alone: nodes with a None
    qconfig, dtype pairs torch has no op for, and every pattern whose functional has no fused-ReLU op
    (dynamic convs: torch skips them even without a ReLU, printing a note; qfx prints nothing)."""
    editor = GraphEditor(program)
    for node in editor.walk_reversed():
        _lower_one(editor, node)
    return editor.finish()


def _is_dynamic_relu(program: Program, node: Node) -> bool:
    # (only F.relu and nn.ReLU here: torch.relu is not recognised by torch's dynamic functional lowering)
    return (node.op == "call_function" and node.target is F.relu) or (
        node.op == "call_module" and type(module_of(program, node)) is torch.nn.ReLU)


def _read_node(editor: GraphEditor, value: Any, func: Node, what: str) -> Node:
    """The node `value` refers to; a constant fails as torch fails reading its `.op`."""
    node = editor.node(value)
    if node is None:
        raise ConvertAttributeError(f"functional node '{func.name}': {what} is the constant {value!r}, not a node; "
                                    "pass tensors, or give this op a None qconfig")
    return node


def _lower_one(editor: GraphEditor, node: Node) -> None:
    """Lower the pattern ending at `node`, if one does."""
    program = editor.program
    relu = None
    func = node
    if _is_dynamic_relu(program, node):
        relu = node
        func = first_input(editor, node, "ReLU", ConvertAttributeError)
    if func.op != "call_function":  # (before the qconfig lookup, which costs more and cannot fail)
        return
    if skips_lowering(program, func):
        return
    if func.target not in DYNAMIC_FUNCTIONALS:
        return
    if len(func.args) < 2:
        raise ConvertValueError(f"functional node '{func.name}' should take its input and weight positionally")
    input_dq, weight_dq, *rest = func.args
    # torch reads each of these as a node, in this order (a constant fails on its `.op`)
    input_dq = _read_node(editor, input_dq, func, "its input")
    if not is_dequantize(input_dq):
        return
    weight_dq = _read_node(editor, weight_dq, func, "its weight")
    if not is_dequantize(weight_dq):
        return
    dynamic_q = _read_node(editor, first_argument(input_dq), func, f"the input of '{input_dq.name}'")
    if dynamic_q.op != "call_function" or dynamic_q.target is not torch.quantize_per_tensor_dynamic:
        return
    if len(dynamic_q.args) != 3:
        raise ConvertValueError(f"node '{dynamic_q.name}' should read (input, dtype, reduce_range)")
    pattern_input, activation_dtype, reduce_range = dynamic_q.args
    is_fp16 = activation_dtype == torch.float16
    is_int8 = activation_dtype in (torch.quint8, torch.qint8)
    if not (is_int8 or is_fp16):
        return
    quantized_weight = first_argument(weight_dq)
    weight_node = _read_node(editor, quantized_weight, func, f"the input of '{weight_dq.name}'")
    if not weight_node.args:  # (torch reads its last argument: an IndexError)
        raise ConvertIndexError(f"node '{weight_node.name}', the quantized weight of '{func.name}', has no arguments")
    weight_dtype = weight_node.args[-1]
    ops = DYNAMIC_FUNCTIONALS[func.target].get((activation_dtype, weight_dtype))
    if ops is None or ops[0] is None or ops[1] is None:
        return
    dynamic_op, fused_op = ops

    args = [quantized_weight, *rest]
    prepack_kwargs: tuple = ()
    if func.target is F.linear:
        prepack = linear_prepack_op(weight_dtype, func.name)
        bias = [kv for kv in func.kwargs if kv[0] == "bias"]
        if bias:
            prepack_kwargs = (("B", bias[0][1]),)
            editor.update(func.name, kwargs=tuple(kv for kv in func.kwargs if kv[0] != "bias"))
    elif func.target in CONV_FUNCTIONALS:
        prepack = conv_prepack_op(func.target, func.name)
        args = conv_prepack_args(func.target, args)
    else:
        raise ConvertValueError(f"node '{func.name}': lowering is not supported for {func.target}")
    packed = editor.insert_before(func.name, "call_function", prepack, tuple(args), prepack_kwargs)

    new_args = (pattern_input, packed, reduce_range) if is_int8 else (pattern_input, packed)
    editor.update(func.name, target=fused_op if relu is not None else dynamic_op, args=new_args)
    if relu is not None:
        editor.replace_all_uses(relu.name, Ref(func.name))
        editor.erase(relu.name)
