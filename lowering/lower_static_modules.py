"""lower-static-modules: static weighted reference modules -> quantized modules.

torch's `_lower_static_weighted_ref_module` followed by `_lower_static_weighted_ref_module_with_two_inputs`:
a reference Linear/Conv (or a fused module around one) that sits in `dequantize -> module [-> relu] ->
quantize_per_tensor` (for ConvAdd2d / ConvAddReLU2d: both inputs dequantized, no ReLU) becomes torch's
quantized module, built by its `from_reference` with the quantize's output scale and zero point.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr

from qfx.ir.args import Ref
from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAssertionError, ConvertValueError
from qfx.ir.graph import Node
from qfx.ir.program import Program
from qfx.lowering.support.engine import quantized_from_reference
from qfx.lowering.support.patterns import (
    attribute_value,
    dequantized_input,
    is_dequantize,
    match_static_pattern,
    module_of,
    quantize_nodes,
    skips_lowering,
)
from qfx.passes.manager import register

# reference (or fused) class -> (quantized class, the class a fused module's first child must have; None
# for an unfused reference module)
ONE_INPUT_LOWERING: Mapping[type, tuple[type, type | None]] = {
    nnqr.Linear: (nnq.Linear, None),
    nnqr.Conv1d: (nnq.Conv1d, None),
    nnqr.Conv2d: (nnq.Conv2d, None),
    nnqr.Conv3d: (nnq.Conv3d, None),
    nni.LinearReLU: (nniq.LinearReLU, nnqr.Linear),
    nni.LinearLeakyReLU: (nniq.LinearLeakyReLU, nnqr.Linear),
    nni.LinearTanh: (nniq.LinearTanh, nnqr.Linear),
    nni.ConvReLU1d: (nniq.ConvReLU1d, nnqr.Conv1d),
    nni.ConvReLU2d: (nniq.ConvReLU2d, nnqr.Conv2d),
    nni.ConvReLU3d: (nniq.ConvReLU3d, nnqr.Conv3d),
}

TWO_INPUT_LOWERING: Mapping[type, tuple[type, type | None]] = {
    nni.ConvAdd2d: (nniq.ConvAdd2d, nnqr.Conv2d),
    nni.ConvAddReLU2d: (nniq.ConvAddReLU2d, nnqr.Conv2d),
}


@register("lower-static-modules")
def lower_static_modules(program: Program) -> Program:
    """Lower every static weighted reference module that sits between dequantize and quantize_per_tensor.

    Needs: the reference graph (insert-qdq has run; output scale / zero point are get_attr nodes).
    Guarantees: each matched module is replaced at its path by torch's quantized module; the module node
    reads the quantized tensors the dequantize nodes read, the quantize's users read the module node, and
    the quantize node and its scale / zero-point get_attr nodes are gone — torch's edits in torch's order.
    Modules whose node has a None qconfig, and fused modules whose inner module is not a reference module,
    are left as they are. The one-input walk runs first, then (on the table it leaves) the two-input walk.
    """
    program = _lower_walk(program, two_inputs=False)
    if not _holds_module_of(program, TWO_INPUT_LOWERING):
        # (the walk would match nothing; a quantize node it would reject, the first walk rejected)
        return program
    return _lower_walk(program, two_inputs=True)


def _holds_module_of(program: Program, table: Mapping[type, Any]) -> bool:
    """Whether some module of the program's table (so of every module a call_module node calls) has a class
    in `table`."""
    return not table.keys().isdisjoint(map(type, program.modules.values()))


def _lower_walk(program: Program, two_inputs: bool) -> Program:
    """One of torch's two walks. Module lookups read the table as it was when the walk began (torch reads
    a named_modules dict taken once), so a module called twice is lowered for each call, the last wins."""
    table = TWO_INPUT_LOWERING if two_inputs else ONE_INPUT_LOWERING
    editor = GraphEditor(program)
    lowered: dict[str, Any] = {}
    # (the walk's matches are quantize nodes; its edits add no node and move none)
    for node in editor.walk_selected(quantize_nodes(program)):
        if two_inputs:
            match = _match_two_inputs(editor, node, table)
        else:
            found = match_static_pattern(editor, node, table, (0,))
            match = None if found is None else (found.quantize, found.ref)
        if match is None:
            continue
        quantize, ref = match
        q_module = _quantized_module(editor, quantize, ref, table)
        if q_module is None:
            continue
        lowered[ref.target] = q_module
        _reroute(editor, quantize, ref, 2 if two_inputs else 1)
    if not lowered:
        return editor.finish()
    return editor.finish(modules=program.with_modules(lowered).modules)


def _match_two_inputs(editor: GraphEditor, node: Node, table: Mapping[type, Any]) -> tuple[Node, Node] | None:
    """torch's `_match_static_pattern_with_two_inputs`: `node` is a quantize_per_tensor reading a call of a
    module in `table` (qconfig not None) whose two arguments are both dequantize nodes."""
    if node.op != "call_function" or node.target is not torch.quantize_per_tensor:
        return None
    ref = editor.node(node.args[0]) if node.args else None
    if ref is None:
        raise ConvertAssertionError(f"quantize node '{node.name}' does not read a node")
    if ref.op != "call_module" or type(module_of(editor.program, ref)) not in table:
        return None
    if skips_lowering(editor.program, ref):
        return None
    if len(ref.args) != 2 or not all(is_dequantize(editor.node(a)) for a in ref.args):
        return None
    return node, ref


def _quantized_module(editor: GraphEditor, quantize: Node, ref: Node, table: Mapping[type, Any]) -> Any:
    """torch's quantized module for the reference module `ref` calls, quantizing its output as `quantize`
    does; None for a fused module whose first child is not the expected reference module."""
    if len(quantize.args) != 4 or quantize.kwargs:
        raise ConvertValueError(
            f"quantize node '{quantize.name}' after module '{ref.target}' should take (input, scale, "
            f"zero_point, dtype) as positional arguments, it has args {quantize.args!r}")
    _, scale, zero_point, _ = quantize.args
    for what, value in (("scale", scale), ("zero point", zero_point)):
        if editor.node(value) is None:
            raise ConvertAssertionError(
                f"quantize node '{quantize.name}': its {what} should be a get_attr node, got {value!r}")
    ref_module = module_of(editor.program, ref)
    q_class, inner_class = table[type(ref_module)]
    if inner_class is not None and type(ref_module[0]) is not inner_class:
        return None
    return quantized_from_reference(q_class, ref_module, attribute_value(editor, scale),
                                    attribute_value(editor, zero_point),
                                    where=f"node '{ref.name}' (module '{ref.target}')")


def _reroute(editor: GraphEditor, quantize: Node, ref: Node, arity: int) -> None:
    """Make `ref` read what its dequantize inputs read, its quantize's users read `ref`, and erase the
    quantize node with its scale and zero-point nodes (in that order, as torch does)."""
    if len(ref.args) != arity:
        raise ConvertAssertionError(
            f"reference module node '{ref.name}' should have exactly {arity} argument(s), it has {len(ref.args)}")
    for arg in ref.args:
        dequantize = editor.node(arg)
        if is_dequantize(dequantize):
            editor.replace_input(ref.name, dequantize.name, dequantized_input(editor, arg))
    _, scale, zero_point, _ = quantize.args
    editor.replace_all_uses(quantize.name, Ref(ref.name))
    editor.erase(quantize.name)
    editor.erase(editor.node(scale).name)
    editor.erase(editor.node(zero_point).name)

