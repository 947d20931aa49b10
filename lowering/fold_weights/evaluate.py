"""Running a prepack call's producer chain ahead of time, over the program's tables (what torch does by
building a GraphModule of the chain and calling it)."""

from __future__ import annotations

from typing import Any

import torch

from qfx.ir.args import Ref, thaw
from qfx.ir.errors import (
    ConvertAttributeError,
    ConvertError,
    ConvertIndexError,
    ConvertKeyError,
    ConvertTypeError,
    ConvertValueError,
    QfxError,
)
from qfx.ir.graph import Graph, Node
from qfx.passes.support.chain_copies import ChainCopies

from ..support.weight_quantize import quantize_per_channel


def producer_chain(graph: Graph, prepack: Node) -> list[Node] | None:
    """The nodes `prepack` is computed from, found as torch's `collect_producer_nodes` finds them: a
    depth-first walk from `prepack` over the nodes its top-level args and kwargs name (a `getattr` call
    ends a branch), `prepack` first, a node once per time it is reached. None when a placeholder is
    reached (the chain depends on the model's inputs and cannot be folded)."""
    chain = [prepack]
    frontier = [prepack]
    while frontier:
        node = frontier.pop()
        for arg in (*node.args, *(v for _, v in node.kwargs)):
            if type(arg) is not Ref:
                continue
            producer = graph[arg.name]
            if producer.op == "placeholder":
                return None
            chain.append(producer)
            if not (producer.op == "call_function" and producer.target is getattr):
                frontier.append(producer)
    return chain


def evaluate_chain(copies: ChainCopies, chain: list[Node]) -> Any:
    """The value of `chain[0]`, running the chain's nodes from last to first (repeats run again, as in
    torch's chain module) over the program's modules and attributes, as `copies` gives them."""
    values: dict[str, Any] = {}

    def value_of(name: str) -> Any:
        try:
            return values[name]
        except KeyError:  # (torch's copy of the chain has no entry for it either: a KeyError)
            raise ConvertKeyError(f"weight folding: node '{name}' feeds a prepack chain from inside a nested "
                               "argument; only top-level arguments can be folded") from None

    for node in reversed(chain):
        try:
            values[node.name] = _run(node, value_of, copies)
        except QfxError:
            raise
        except Exception as exc:
            explained = _through_replaced_module(node, exc, copies, chain)
            if explained is None:
                raise
            raise explained from exc
    return values[chain[0].name]


def _run(node: Node, value_of: Any, copies: ChainCopies) -> Any:
    """The value of one node of a chain, its inputs' values given by `value_of`."""
    args = thaw(node.args, value_of)
    kwargs = {k: thaw(v, value_of) for k, v in node.kwargs}
    if node.op == "get_attr":
        return copies.attribute(node.target)
    if node.op == "call_function":
        # torch's per-channel quantize, run by qfx's bit-identical and faster one
        faster = node.target is torch.quantize_per_channel and not kwargs
        return (quantize_per_channel if faster else node.target)(*args, **kwargs)
    if node.op == "call_method":
        receiver, *rest = args
        return getattr(receiver, node.target)(*rest, **kwargs)
    if node.op == "call_module":
        return copies.module(node.target)(*args, **kwargs)
    raise ConvertError(f"weight folding: cannot evaluate node '{node.name}' ({node.op})")


# The convert errors of the builtin types an op of a chain may fail with (torch's convert fails alike).
_CONVERT_ERRORS = ((TypeError, ConvertTypeError), (AttributeError, ConvertAttributeError),
                   (ValueError, ConvertValueError), (KeyError, ConvertKeyError), (IndexError, ConvertIndexError))


def _through_replaced_module(node: Node, exc: Exception, copies: ChainCopies,
                             chain: list[Node]) -> ConvertError | None:
    """The error to raise, of `exc`'s builtin type, for a chain that failed at `node` after reading, through
    a module an earlier pass replaced, an attribute that is no tensor there (a weight shared by a functional
    call and a module that became a quantized one); None for other failures."""
    kind = next((convert for builtin, convert in _CONVERT_ERRORS if isinstance(exc, builtin)), None)
    inputs = {arg.name for arg in (*node.args, *(v for _, v in node.kwargs)) if type(arg) is Ref}
    # (the failing node's own inputs first)
    reads = [(n.target, *copies.replaced_reads[n.target])
             for n in sorted(chain, key=lambda n: n.name not in inputs)
             if n.op == "get_attr" and n.target in copies.replaced_reads]
    target, owner, found = next(((t, o, f) for t, o, f in reads if not isinstance(f, torch.Tensor)), (None,) * 3)
    if kind is None or target is None:
        return None
    return kind(
        f"weight folding: node '{node.name}' failed ({type(exc).__name__}: {exc}) on '{target}', read from "
        f"module '{owner}', which an earlier pass replaced by a {torch.typename(copies.current(owner))} (its "
        f"'{target[len(owner) + 1:]}' is a {type(found).__name__}); torch's convert fails here too. Give the "
        "functional call a weight of its own (a separate parameter) rather than a quantized module's")


def original_weights(copies: ChainCopies, chain: list[Node]) -> list:
    """What torch's `original_weights_lookup` keeps for one folded chain: the state_dict values of the
    module torch builds from the chain (its get_attr/call_module targets, laid out as GraphModule lays
    them out), largest first (stable by numel), with a None appended when there is only one (no bias)."""
    tree = _Tree()
    for node in reversed(chain):
        if node.op in ("get_attr", "call_module"):
            tree.place(node.target, copies.resolve(node.target))
    weights = sorted(tree.state_values(), key=lambda t: t.numel(), reverse=True)
    if len(weights) == 1:
        weights.append(None)
    return weights


class _Tree:
    """The parameters, buffers and children GraphModule(root, chain graph) would hold, in its order."""

    def __init__(self) -> None:
        self.parameters: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.children: dict[str, Any] = {}

    def place(self, target: str, value: Any) -> None:
        *prefix, field = target.split(".")
        here: Any = self
        for item in prefix:
            child = here.children.get(item)
            if child is None:
                child = here.children[item] = _Tree()
            elif isinstance(child, torch.nn.Module):
                return  # (inside a module that is copied whole: its state is listed with it)
            here = child
        if isinstance(value, torch.nn.Module):
            here.children[field] = value
        elif isinstance(value, torch.nn.Parameter):
            here.parameters[field] = value
        elif isinstance(value, torch.Tensor):
            here.buffers[field] = value
        # (any other value is a plain attribute, outside the state_dict)

    def state_values(self) -> list[torch.Tensor]:
        out = [t.detach() for t in self.parameters.values()]
        out += [t.detach() for t in self.buffers.values()]
        for child in self.children.values():
            out += list(child.state_dict().values()) if isinstance(child, torch.nn.Module) else child.state_values()
        return out
