"""Matching torch's reference patterns (dequantize -> reference op -> quantize) on a GraphEditor.

These are the shared matchers of torch's native-backend lowering: what counts as a dequantize node, when
a node is left alone because its qconfig is None, and the static pattern `dequantize -> op [-> relu] ->
quantize_per_tensor` that the weighted-module, functional and binary-op passes all start from.
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

import attrs
import torch
import torch.nn.functional as F

from qfx.ir.args import Arg
from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertAssertionError, ConvertAttributeError, ConvertError, ConvertIndexError, ConvertTypeError
from qfx.ir.graph import Node
from qfx.ir.program import Program


def module_of(program: Program, node: Node | None) -> Any:
    """The submodule a call_module node calls (None for any other node)."""
    if node is None or node.op != "call_module":
        return None
    return program.modules.get(node.target)


def is_dequantize(node: Node | None) -> bool:
    """A `x.dequantize()` call (torch's `is_dequantize_node`)."""
    return node is not None and node.op == "call_method" and node.target == "dequantize"


def skips_lowering(program: Program, node: Node) -> bool:
    """True when the user gave node `node` a None qconfig: lowering leaves it as it is."""
    return program.quant is not None and program.quant.has_none_qconfig(node.name)


def is_relu(program: Program, node: Node) -> bool:
    """A ReLU that static lowering folds into the op before it: F.relu, torch.relu or an nn.ReLU module."""
    return (node.op == "call_function" and node.target in (F.relu, torch.relu)) or (
        node.op == "call_module" and type(module_of(program, node)) is torch.nn.ReLU)


@attrs.frozen
class StaticMatch:
    """A matched `dequantize -> ref [-> relu] -> quantize_per_tensor`: the nodes, by their current values."""

    quantize: Node
    relu: Node | None
    ref: Node


def match_static_pattern(
    editor: GraphEditor,
    node: Node,
    matching: Collection[Any],
    dequantize_arg_indices: Sequence[int],
) -> StaticMatch | None:
    """torch's `_match_static_pattern`: `node` is a quantize_per_tensor whose input is a reference node (a
    call_module whose module class is in `matching`, or a call_function whose target is), optionally behind
    a ReLU; the reference node's qconfig is not None; every node among its args at `dequantize_arg_indices`
    is a dequantize, and at least one is. None when any of that fails."""
    program = editor.program
    if node.op != "call_function" or node.target is not torch.quantize_per_tensor:
        return None
    ref = first_input(editor, node, "quantize", ConvertAssertionError)
    relu = None
    if is_relu(program, ref):
        relu = ref
        ref = first_input(editor, relu, "ReLU", ConvertAssertionError)
    first = next(iter(matching), None)
    if isinstance(first, type) and issubclass(first, torch.nn.Module):
        # (the class test first: it cannot fail, and it rejects most nodes before the qconfig lookup)
        if ref.op != "call_module" or type(module_of(program, ref)) not in matching:
            return None
        if skips_lowering(program, ref):
            return None
    elif ref.op != "call_function" or skips_lowering(program, ref) or ref.target not in matching:
        return None
    found = False
    for i in dequantize_arg_indices:
        if i >= len(ref.args):
            raise ConvertAssertionError(
                f"node '{ref.name}': dequantize index {i} exceeds its {len(ref.args)} arguments")
        arg = editor.node(ref.args[i])
        if is_dequantize(arg):
            found = True
        elif arg is not None:
            return None
    return StaticMatch(node, relu, ref) if found else None


def quantize_nodes(program: Program) -> list[str]:
    """The names of the quantize_per_tensor calls, in graph order: the only nodes `match_static_pattern`
    matches (a pass whose edits make none and move none ahead of the one it stands on can walk just these,
    with `GraphEditor.walk_selected`)."""
    quantize = torch.quantize_per_tensor
    return [node.name for node in program.graph.nodes if node.target is quantize and node.op == "call_function"]


def first_input(editor: GraphEditor, node: Node, what: str, not_a_node: type[ConvertError]) -> Node:
    """The node `node`'s first positional argument refers to, read as torch's lowering reads it: torch takes
    `node.args[0]` (an IndexError when there is none, as for a module called with keyword arguments) and
    uses it as a node (its error there when it is a constant is `not_a_node`'s builtin type)."""
    found = editor.node(first_argument(node, what))
    if found is None:
        raise not_a_node(f"{what} node '{node.name}' should read a node as its first argument, it reads "
                         f"{node.args[0]!r}")
    return found


def first_argument(node: Node, what: str = "") -> Arg:
    """`node.args[0]`, which torch reads unchecked (an IndexError when there is none); `what` names the
    node's role in the message."""
    if not node.args:
        raise ConvertIndexError(
            f"{what + ' ' if what else ''}node '{node.name}' has no positional argument, and lowering reads its "
            "first one; call it with its input as a positional argument")
    return node.args[0]


def dequantized_input(editor: GraphEditor, value: Arg) -> Arg:
    """What a dequantize node reads (its first argument)."""
    node = editor.node(value)
    if node is None:
        raise ConvertAssertionError(f"expected a dequantize node, got {value!r}")
    return first_argument(node)


def attribute_value(editor: GraphEditor, value: Arg, not_a_node: type[ConvertError] = ConvertAssertionError) -> Any:
    """The value a get_attr node (given by Ref) reads from the program's tables. A constant fails with
    `not_a_node` (torch's error where it reads the constant's `.target`: an AttributeError, unless it
    asserted a node before)."""
    node = editor.node(value)
    if node is None:
        raise not_a_node(f"expected a get_attr node, got the constant {value!r}; quantize with the scale and "
                         "zero point attributes convert makes, not constants of your own")
    if node.op != "get_attr":  # torch reads the model's attribute named by the node's target
        what = (f"node '{node.name}' ({node.op} {node.target}), not a get_attr node; quantize with the scale and "
                "zero point attributes convert makes")
        if not isinstance(node.target, str):
            raise ConvertTypeError(f"expected a get_attr node, got {what}")
        raise ConvertAttributeError(f"expected a get_attr node, got {what}")
    return editor.program.resolve(node.target)


def preserved_meta(old: Node) -> dict[str, Any]:
    """The meta torch gives a node that replaces `old` (`create_node_from_old_node_preserve_meta`): only
    the stack trace, and that key is set even when `old` has none."""
    return {"stack_trace": old.meta.get("stack_trace")}
