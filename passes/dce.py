"""dce: remove nodes whose results nobody reads, with torch.fx's notion of impurity."""

from __future__ import annotations

from torch._library.utils import is_impure

from qfx.ir.args import thaw
from qfx.ir.graph import Node
from qfx.ir.program import Program

from .manager import register


def node_is_impure(node: Node, program: Program) -> bool:
    """Mirror of torch.fx.Node.is_impure: placeholders, outputs, impure modules and side-effecting calls."""
    if node.op in ("placeholder", "output"):
        return True
    if node.op == "call_module":
        return bool(getattr(program.modules.get(node.target), "_is_impure", False))
    if node.op == "call_function":
        args = thaw(node.args, lambda name: name)
        kwargs = {k: thaw(v, lambda name: name) for k, v in node.kwargs}
        return is_impure(node.target, args=args, kwargs=kwargs, impure_random=True)
    return False


def eliminate_dead_code(program: Program) -> Program:
    """Drop every pure node with no readers, repeatedly (as torch.fx.Graph.eliminate_dead_code does by
    walking backwards). Names stay taken in the namespace, as in FX."""
    nodes = program.graph.nodes
    readers: dict[str, int] = dict.fromkeys([n.name for n in nodes], 0)
    for n in nodes:
        names = n.input_name_tuple()
        for name in (names if len(names) < 2 else set(names)):
            readers[name] += 1
    dead: set[str] = set()
    for n in reversed(nodes):
        if readers[n.name] == 0 and not node_is_impure(n, program):
            dead.add(n.name)
            for name in set(n.input_name_tuple()):
                readers[name] -= 1
    if not dead:
        return program
    return program.with_nodes(n for n in program.graph.nodes if n.name not in dead)


dce = register("dce")(eliminate_dead_code)
