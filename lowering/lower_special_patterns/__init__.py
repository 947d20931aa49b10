"""lower-special-patterns: `dequantize -> op -> quantize` for ops that run on quantized tensors directly.

torch's `special_pattern_replacement`, step for step on a GraphEditor; the op families and the module and
operator tables are in `tables.py`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.ao.quantization.quantization_mappings import get_quantized_operator

from qfx.ir.args import ListArg, Ref, TupleArg
from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAssertionError, ConvertAttributeError
from qfx.ir.graph import Node
from qfx.ir.program import Program
from qfx.passes.manager import register

from ..support.engine import quantized_from_reference
from ..support.patterns import attribute_value, is_dequantize, module_of, preserved_meta
from .tables import DEFAULT, FIXED_QPARAMS, QUANTIZED_MODULE, SKIPPED_KWARGS, SPECIAL


@register("lower-special-patterns")
def lower_special_patterns(program: Program) -> Program:
    """Lower the copy, fixed-qparams, tensor-shape, cat and default ops that sit between dequantize and
    quantize (or a `.to(torch.float16)`).

    Needs: the reference graph after insert-qdq. Guarantees, for every `quantize_per_tensor(op(dq(x)...))`
    (or `op(dq(x)...).to(torch.float16)` when op is neither fixed-qparams nor default) where op is one of
    the families in `tables.py` and its first input is a dequantize node (or a list / tuple of them): op
    reads the quantized inputs, the quantize node is gone (its users read op) and so are its scale and
    zero-point nodes; a default module becomes its quantized module (`from_reference` with the quantize
    node's scale and zero point); a default function becomes its quantized operator, inserted after the
    zero-point node, which it reads as `output_scale` / `output_zero_point`. Names and order as torch's.
    """
    editor = GraphEditor(program)
    swaps: dict[str, Any] = {}
    # (the walk lowers at quantize and `.to(torch.float16)` nodes; its edits make none, and add nodes only
    # before the one it stands on)
    ends = [node.name for node in program.graph.nodes
            if node.target is torch.quantize_per_tensor or (node.op == "call_method" and _is_to_fp16(node))]
    for node in editor.walk_selected(ends):
        _lower_one(editor, node, swaps)
    if not swaps:
        return editor.finish()
    return editor.finish(modules=program.with_modules(swaps).modules)


def _is_to_fp16(node: Node) -> bool:
    return (node.op == "call_method" and node.target == "to"
            and len(node.args) == 2 and node.args[1] == torch.float16)


def _lower_one(editor: GraphEditor, q_node: Node, swaps: dict[str, Any]) -> None:
    """Lower the pattern that ends in `q_node`, if it is one (torch's loop body)."""
    program = editor.program
    is_quantize = q_node.target is torch.quantize_per_tensor
    if not is_quantize and not _is_to_fp16(q_node):
        return
    ref = editor.node(q_node.args[0]) if q_node.args else None
    if ref is None:
        return
    # only the copy and shape ops have an fp16 form that needs no lowering beyond the rerouting
    if not is_quantize and (FIXED_QPARAMS.holds(program, ref) or DEFAULT.holds(program, ref)):
        return
    if not SPECIAL.holds(program, ref):
        return
    dequantizes = _dequantized_inputs(editor, ref)
    if dequantizes is None:
        return

    if ref.op == "call_module" and is_quantize:
        module = module_of(program, ref)
        quantized_cls = QUANTIZED_MODULE.get(type(module))
        if quantized_cls is not None:
            scale = attribute_value(editor, q_node.args[1], ConvertAttributeError)
            zero_point = attribute_value(editor, q_node.args[2], ConvertAttributeError)
            swaps[ref.target] = quantized_from_reference(quantized_cls, module, scale, zero_point,
                                                         where=f"node '{ref.name}' (module '{ref.target}')")

    editor.replace_inputs(ref.name, [(dq.name, dq.args[0]) for dq in dequantizes])
    qparams = q_node.args[1:]
    editor.replace_all_uses(q_node.name, q_node.args[0])
    editor.erase(q_node.name)

    if ref.op == "call_function" and DEFAULT.holds(program, ref):
        _to_quantized_operator(editor, editor[ref.name], qparams)
    else:
        for param in qparams:
            if isinstance(param, Ref):
                editor.erase(param.name)


def _dequantized_inputs(editor: GraphEditor, ref: Node) -> list[Node] | None:
    """The dequantize nodes `ref` reads first (its first argument, or its first keyword argument when it
    has no positional ones): one node, or every item of a list or tuple. None when that is not all
    dequantize nodes."""
    if not ref.args and not ref.kwargs:
        raise ConvertAssertionError(f"node '{ref.name}' ({ref.target}) has no arguments to lower")
    first = ref.args[0] if ref.args else ref.kwargs[0][1]
    if isinstance(first, Ref):
        node = editor.node(first)
        return [node] if is_dequantize(node) else None
    if isinstance(first, (ListArg, TupleArg)):
        items = first.items
    elif isinstance(first, tuple):
        items = first
    else:
        raise ConvertAssertionError(
            f"node '{ref.name}' ({ref.target}): expected its first input to be a node, a list or a tuple, "
            f"got {first!r}")
    # torch tests the items in order (`all(x.op == ... for x in items)`): the first that is not a dequantize
    # ends the test, and a constant met before that fails on its `.op` (an AttributeError)
    nodes = []
    for item in items:
        node = editor.node(item)
        if node is None:
            raise ConvertAttributeError(
                f"node '{ref.name}' ({ref.target}): item {item!r} of its first input is not a node; pass "
                "tensors only, or give this op a None qconfig")
        if not is_dequantize(node):
            return None
        nodes.append(node)
    return nodes


def _to_quantized_operator(editor: GraphEditor, ref: Node, qparams: tuple) -> None:
    """Replace the default function call `ref` by its quantized operator, which takes the output scale and
    zero point (`qparams`) as keyword arguments and is inserted after the zero-point node."""
    try:
        qop = get_quantized_operator(ref.target)
    except AssertionError as exc:
        raise ConvertAssertionError(f"node '{ref.name}': {exc}") from None
    skipped = SKIPPED_KWARGS.get(qop, frozenset())
    kwargs = tuple((k, v) for k, v in ref.kwargs if k not in skipped)
    kwargs += (("output_scale", qparams[0]), ("output_zero_point", qparams[1]))
    anchor = qparams[1]
    if not isinstance(anchor, Ref):  # (torch inserts after it: an AttributeError)
        raise ConvertAttributeError(f"node '{ref.name}': the quantize node after it takes the constant zero "
                                    f"point {anchor!r}, not a node to insert the quantized op after")
    qop_node = editor.insert_after(anchor.name, "call_function", qop, ref.args, kwargs, meta=preserved_meta(ref))
    editor.replace_all_uses(ref.name, qop_node)
    editor.erase(ref.name)
