"""observe-weights: run the weight observers of dynamic and weight-only functional ops, on copies.

Static ops see their weights during calibration, but for dynamic and weight-only quantization of functional
ops (F.linear with a weight read by get_attr) the weight observer has never run when convert starts; torch
runs, for every call_function node, the little subgraph that produces its weight argument (get_attr ->
observer). We run that subgraph too, but on copies (`support/chain_copies.py`), and put the observed copies in
the tables in place of the originals (under every name the original had).
"""

from __future__ import annotations

from typing import Any

from qfx.ir.args import Arg, Ref, thaw
from qfx.ir.errors import ConvertAssertionError, ConvertAttributeError, ConvertTypeError
from qfx.ir.graph import Graph, Node
from qfx.ir.program import Program

from .manager import register
from .support.chain_copies import ChainCopies


def weight_argument_positions(node: Node) -> list[int]:
    """Positions of node.args that hold its weight (torch's node_arg_is_weight, over positional args)."""
    info = node.meta.get("target_dtype_info") or {}
    index = info.get("weight_index") if hasattr(info, "get") else None
    weight_kwarg = node.kwarg("weight")
    positions = []
    for i, arg in enumerate(node.args):
        if not isinstance(arg, Ref):
            if i == index and _truthy(arg):  # (torch collects its producers: an AttributeError)
                raise ConvertAttributeError(
                    f"node '{node.name}': its weight argument is the constant {arg!r}, not a node; read the "
                    "weight from a parameter or buffer")
            continue
        if (index is not None and index < len(node.args) and node.args[index] == arg) or weight_kwarg == arg:
            positions.append(i)
    return positions


def _truthy(value: Any) -> bool:
    """bool(value), as torch's `if node_arg` tests each argument (False for a value that has none)."""
    try:
        return bool(value)
    except Exception:  # noqa: BLE001 - a tensor of many elements, or any object that refuses
        return False


def producer_chain(graph: Graph, start: str) -> list[str] | None:
    """The nodes that compute `start` back to get_attr constants, in the order torch collects them
    (None when the chain reaches a placeholder: the weight then depends on the model's inputs)."""
    chain = [start]
    frontier = [start]
    while frontier:
        node = graph[frontier.pop()]
        operands = list(node.args) + [v for _, v in node.kwargs]
        for arg in operands:
            if not isinstance(arg, Ref):
                continue
            producer = graph[arg.name]
            if producer.op == "placeholder":
                return None
            chain.append(producer.name)
            if not (producer.op == "call_function" and producer.target is getattr):
                frontier.append(producer.name)
    return chain


@register("observe-weights")
def observe_weights(program: Program) -> Program:
    """Run the weight-producing subgraph of every call_function's weight argument, on copies.

    Guarantees: the graph is unchanged; every module that subgraph calls is replaced by an observed copy,
    and every tensor attribute an op of it changes in place by the changed copy (see ChainCopies); the input
    program and everything it reaches are untouched. Raises ConvertTypeError for an op whose weight is a forward()
    input itself (it cannot be observed ahead of time; torch fails there with a TypeError)."""
    graph = program.graph
    chains = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        for i in weight_argument_positions(node):
            weight = graph[node.args[i].name]
            if weight.op == "placeholder":  # (torch runs the placeholder as its chain: a TypeError)
                raise ConvertTypeError(
                    f"node '{node.name}': its weight is the forward() input '{weight.name}' itself; convert "
                    "observes such weights ahead of time, without the model's inputs; make the weight a "
                    "parameter or buffer of the model")
            chain = producer_chain(graph, weight.name)
            if chain is not None:
                chains.append(chain)
    if not chains:
        return program
    nodes = [[graph[name] for name in reversed(chain)] for chain in chains]
    copies = ChainCopies(program, nodes)
    for chain in nodes:
        _run_chain(chain, copies)
    return copies.applied(program)


def _run_chain(nodes: list[Node], copies: ChainCopies) -> None:
    """Evaluate `nodes` in order (a node listed twice runs twice, as in torch), on `copies`."""
    env: dict[str, Any] = {}

    def value(arg: Arg) -> Any:
        return thaw(arg, env.__getitem__)

    for node in nodes:
        args = value(node.args)
        kwargs = {k: value(v) for k, v in node.kwargs}
        if node.op == "get_attr":
            result = copies.attribute(node.target)
        elif node.op == "call_module":
            result = copies.module(node.target)(*args, **kwargs)
        elif node.op == "call_function":
            result = node.target(*args, **kwargs)
        elif node.op == "call_method":
            result = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:  # pragma: no cover - producer chains hold no placeholders or outputs
            raise ConvertAssertionError(
                f"node '{node.name}' ({node.op}) cannot be part of a weight's producer chain; the graph is malformed")
        env[node.name] = result
