"""lower-tensor-info-ops: shape and size reads of a dequantized tensor read the quantized tensor instead.

torch's `_lower_getattr_tensor_metadta_op` followed by `_lower_get_tensor_info_op`.
"""

from __future__ import annotations

from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAttributeError
from qfx.ir.graph import Node
from qfx.ir.program import Program
from qfx.passes.manager import register

from .support.patterns import first_input, is_dequantize


def is_shape_getattr(node: Node) -> bool:
    """`getattr(x, "shape")` (torch's `is_getattr_tensor_metadata_node`)."""
    return (node.op == "call_function" and node.target is getattr
            and len(node.args) > 1 and node.args[1] == "shape")


def is_tensor_info_method(node: Node) -> bool:
    """A `x.shape()` or `x.size(...)` method call (torch's `is_get_tensor_info_node`)."""
    return node.op == "call_method" and node.target in ("shape", "size")


@register("lower-tensor-info-ops")
def lower_tensor_info_ops(program: Program) -> Program:
    """Make shape/size reads skip the dequantize before them.

    Needs: nothing beyond a well-formed program. Guarantees: every `getattr(dequantize(x), "shape")`, then
    every `dequantize(x).shape()` / `.size(...)` call reads `x` as its first argument (two sweeps over the
    graph, as torch makes them); the dequantize node stays for dce to judge.
    """
    nodes = program.graph.nodes
    shape_getattrs = [node for node in nodes if is_shape_getattr(node)]
    info_methods = [node for node in nodes if is_tensor_info_method(node)]
    if not shape_getattrs and not info_methods:
        return program
    editor = GraphEditor(program)
    _skip_dequantize(editor, shape_getattrs)
    _skip_dequantize(editor, info_methods)
    return editor.finish()


def _skip_dequantize(editor: GraphEditor, selected: list[Node]) -> None:
    """For each of the `selected` nodes, in order, whose first argument is a dequantize node: read the
    dequantize's input. (The nodes are the program's: the pass edits each at most once, and only its first
    argument, which neither test reads, so the nodes a sweep of the graph would select are these, as they
    are.)"""
    for node in selected:
        # (torch reads the first argument's `.op` unchecked: a constant there is its AttributeError)
        dequantize = first_input(editor, node, "shape or size", ConvertAttributeError)
        if not is_dequantize(dequantize):
            continue
        editor.update(node.name, args=(dequantize.args[0],) + node.args[1:])
