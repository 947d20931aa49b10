"""lower-tensor-info-ops: shape and size reads of a dequantized tensor read the quantized tensor instead.

torch's `_lower_getattr_tensor_metadta_op` followed by `_lower_get_tensor_info_op`.
"""

from __future__ import annotations

from typing import Callable

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
    editor = GraphEditor(program)
    _skip_dequantize(editor, is_shape_getattr)
    _skip_dequantize(editor, is_tensor_info_method)
    return editor.finish()


def _skip_dequantize(editor: GraphEditor, selects: Callable[[Node], bool]) -> None:
    """For each node `selects` picks whose first argument is a dequantize node: read the dequantize's input."""
    for node in editor.walk():
        if not selects(node):
            continue
        # (torch reads the first argument's `.op` unchecked: a constant there is its AttributeError)
        dequantize = first_input(editor, node, "shape or size", ConvertAttributeError)
        if not is_dequantize(dequantize):
            continue
        editor.update(node.name, args=(dequantize.args[0],) + node.args[1:])
