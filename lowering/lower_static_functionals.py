"""lower-static-functionals: static functional linear/conv patterns -> a weight prepack + a quantized op
(torch's `_lower_static_weighted_ref_functional`)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from qfx.ir.args import Ref
from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAssertionError, ConvertValueError
from qfx.ir.graph import Node
from qfx.ir.program import Program
from qfx.passes.manager import register

from .support.patterns import match_static_pattern, quantize_nodes
from .support.prepack import (
    CONV_FUNCTIONALS,
    CONV_TRANSPOSE_FUNCTIONALS,
    conv_prepack_args,
    conv_prepack_op,
    linear_prepack_op,
)

_quantized = torch.ops.quantized

# functional -> (its quantized op, the quantized op fused with a following ReLU, or None if there is none)
STATIC_FUNCTIONALS: dict[Callable, tuple[Callable, Callable | None]] = {
    F.linear: (_quantized.linear, _quantized.linear_relu),
    F.conv1d: (_quantized.conv1d, _quantized.conv1d_relu),
    F.conv2d: (_quantized.conv2d, _quantized.conv2d_relu),
    F.conv3d: (_quantized.conv3d, _quantized.conv3d_relu),
    F.conv_transpose1d: (_quantized.conv_transpose1d, None),
    F.conv_transpose2d: (_quantized.conv_transpose2d, None),
    F.conv_transpose3d: (_quantized.conv_transpose3d, None),
}

_WEIGHT_QUANTIZERS = (torch.quantize_per_tensor, torch.quantize_per_channel)


@register("lower-static-functionals")
def lower_static_functionals(program: Program) -> Program:
    """Lower `dequantize(x), dequantize(quantize(w)) -> F.linear/conv* [-> relu] -> quantize_per_tensor`.

    Needs: the reference graph (insert-qdq done). Guarantees, for each match in graph order: a prepack call
    of the quantized weight (and the functional's remaining args and kwargs, linear's `bias` as `B`) right
    before the output-scale node; the functional node becomes the quantized op (the ReLU-fused one when a
    ReLU followed and such an op exists) reading (quantized x, packed weight, scale, zero point), placed
    right after the zero-point node and read by the quantize's users; the quantize, and the fused ReLU,
    are gone. Patterns whose node has a None qconfig, or whose weight is not a quantize call, stay."""
    editor = GraphEditor(program)
    # (the walk's matches are quantize nodes; a match adds and moves nodes before the one it stands on)
    for node in editor.walk_selected(quantize_nodes(program)):
        match = match_static_pattern(editor, node, STATIC_FUNCTIONALS, (0, 1))
        if match is None:
            continue
        _lower_one(editor, match.quantize, match.relu, match.ref)
    return editor.finish()


def _lower_one(editor: GraphEditor, quantize: Node, relu: Node | None, func: Node) -> None:
    """Rewrite one matched pattern (torch's steps, in its order)."""
    if len(quantize.args) != 4:
        raise ConvertValueError(f"quantize node '{quantize.name}' should read (input, scale, zero_point, dtype), "
                                f"got {len(quantize.args)} arguments")
    _, scale, zero_point, _ = quantize.args
    if not isinstance(zero_point, Ref):
        raise ConvertAssertionError(f"quantize node '{quantize.name}': its zero point should be a node")
    if len(func.args) < 2:
        raise ConvertValueError(f"functional node '{func.name}' should take its input and weight positionally")
    input_dq, weight_dq, *rest = func.args
    for what, value in (("input", input_dq), ("weight", weight_dq)):
        if not isinstance(value, Ref):
            raise ConvertAssertionError(f"functional node '{func.name}': its {what} should be a node")
    quantized_weight = editor[weight_dq.name].args[0] if editor[weight_dq.name].args else None
    if not isinstance(quantized_weight, Ref):
        raise ConvertAssertionError(f"dequantize node '{weight_dq.name}' should read a quantized weight node")
    weight_node = editor[quantized_weight.name]
    if weight_node.op != "call_function" or weight_node.target not in _WEIGHT_QUANTIZERS:
        return
    if not isinstance(scale, Ref):
        raise ConvertAssertionError(f"quantize node '{quantize.name}': its scale should be a node")

    prepack, prepack_args = _prepack_call(func, weight_node, [quantized_weight, *rest])
    kwargs = func.kwargs
    if func.target is F.linear and func.kwarg("bias", _MISSING) is not _MISSING:
        # the prepack op calls linear's `bias` `B` (the renamed entry goes last)
        kwargs = tuple(kv for kv in kwargs if kv[0] != "bias") + (("B", func.kwarg("bias")),)
    packed = editor.insert_before(scale.name, "call_function", prepack, tuple(prepack_args), kwargs)

    quantized_op, fused_op = STATIC_FUNCTIONALS[func.target]
    target = fused_op if (fused_op is not None and relu is not None) else quantized_op
    x_q = editor[input_dq.name].args[0]
    editor.update(func.name, target=target, args=(x_q, packed, scale, zero_point), kwargs=())
    editor.replace_all_uses(quantize.name, Ref(func.name))
    editor.move_after(zero_point.name, func.name)
    editor.erase(quantize.name)
    if relu is not None and fused_op is not None:
        editor.erase(relu.name)


_MISSING = object()


def _prepack_call(func: Node, weight_node: Node, args: list) -> tuple[Callable, list]:
    """The prepack op for `func`'s weight and its positional args."""
    if func.target is F.linear:
        return linear_prepack_op(weight_node.args[-1] if weight_node.args else None, func.name), args
    if func.target in CONV_FUNCTIONALS or func.target in CONV_TRANSPOSE_FUNCTIONALS:
        return conv_prepack_op(func.target, func.name), conv_prepack_args(func.target, args)
    raise ConvertValueError(f"node '{func.name}': lowering is not supported for {func.target}")

