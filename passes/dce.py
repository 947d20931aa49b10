"""dce: remove nodes whose results nobody reads, with torch.fx's notion of impurity."""

from __future__ import annotations

from collections import Counter
from itertools import chain

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
    # Reads counted with repeats (counted in C): a count is zero exactly when no live node reads the name.
    reads = Counter(chain.from_iterable([n.input_name_tuple() for n in nodes]))
    dead: set[str] = set()
    for n in reversed(nodes):
        if not reads.get(n.name) and not node_is_impure(n, program):
            dead.add(n.name)
            for name in n.input_name_tuple():
                reads[name] -= 1
    if not dead:
        return program
    return program.with_nodes(n for n in program.graph.nodes if n.name not in dead)


dce = register("dce")(eliminate_dead_code)
