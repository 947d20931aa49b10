"""fold-weights: prepack calls whose inputs are all constants run once; their results become root
attributes read by get_attr nodes (torch's `fold_weight`)."""

from __future__ import annotations

from typing import Any

import attrs

from qfx.ir.args import Ref
from qfx.ir.errors import ConvertError, ConvertKeyError
from qfx.ir.graph import Graph, Node
from qfx.ir.program import Program
from qfx.ir.rewrite import candidate_name
from qfx.passes.manager import register
from qfx.passes.support.chain_copies import ChainCopies
from qfx.passes.support.root_attributes import AttributeAllocator

from ..support.prepack import WEIGHT_PREPACK_OPS
from .evaluate import evaluate_chain, original_weights, producer_chain
from .hooks import load_packed_weights, save_packed_weights

ORIGINAL_WEIGHTS_LOOKUP = "original_weights_lookup"


@register("fold-weights")
def fold_weights(program: Program) -> Program:
    """Fold every prepack call (torch's WEIGHT_PREPACK_OPS) whose producer chain reaches no placeholder.

    Needs: the lowered graph (prepack calls in place) and `quant.node_name_to_scope`. Guarantees: each
    folded prepack is evaluated once (bit-identical to running its chain; on copies of what running it
    changes, which then replace their originals: see ChainCopies) and replaced by a get_attr of a
    new root attribute `<module path of its first user>_packed_weight_<n>` (first free n), the rest of its
    chain removed. Like torch, which copies the graph into a brand-new FX Graph, every node is re-named in
    order by a fresh namespace, and the root gets
    the default codegen, no tracer class, an empty meta, the packed-weight state_dict hooks and, with
    `options.keep_original_weights`, the `original_weights_lookup` attribute."""
    graph = program.graph
    chains = {node.name: chain for node in graph.nodes
              if node.op == "call_function" and node.target in WEIGHT_PREPACK_OPS
              and (chain := producer_chain(graph, node)) is not None}
    # (run on copies where running changes something: torch runs the chains on the live model)
    copies = ChainCopies(program, chains.values())
    owner: dict[str, str] = {}  # node name -> the prepack node whose folded chain holds it
    packed: dict[str, Any] = {}
    originals: list[list] = []
    for name, chain in chains.items():
        for member in chain:
            owner[member.name] = name
        packed[name] = evaluate_chain(copies, chain)
        if program.options.keep_original_weights:
            originals.append(original_weights(copies, chain))
    program = copies.applied(program)

    names = program.namespace.fresh_graph()
    allocator = AttributeAllocator(program)
    renamed: dict[str, Ref] = {}
    lookup: dict[str, list] = {}
    nodes: list[Node] = []
    folded = 0
    for node in graph.nodes:
        chain_of = owner.get(node.name)
        if chain_of == node.name:
            attribute = allocator.new_object(_scope_path(program, node) + "_packed_weight_", packed[node.name])
            new = Node(names.fresh(candidate_name(attribute)), "get_attr", attribute)
            if program.options.keep_original_weights:
                lookup[_lookup_key(attribute)] = originals[folded]
            folded += 1
        elif chain_of is not None:
            continue
        else:
            for name in node.input_name_tuple():
                if owner.get(name, name) != name:  # (torch's copy of the graph has no entry for it: a KeyError)
                    raise ConvertKeyError(f"node '{node.name}' reads '{name}', which weight folding removes "
                                          f"with the prepack chain of '{owner[name]}'; give that node its own "
                                          f"copy of the weight, or convert to a reference model")
            new = _renamed(node.with_inputs_replaced(renamed), names.fresh(node.name))
        if new.name != node.name:
            renamed[node.name] = Ref(new.name)
        nodes.append(new)

    plain = dict(program.root.plain_attributes)
    if program.options.keep_original_weights:
        plain[ORIGINAL_WEIGHTS_LOOKUP] = lookup
    root = attrs.evolve(program.root, class_name="GraphModule", codegen=None, tracer_cls=None, tracer_extras={},
                        meta={}, state_dict_hooks=(save_packed_weights,),
                        load_state_dict_pre_hooks=(load_packed_weights,), plain_attributes=plain)
    return program.evolve(graph=Graph(nodes), namespace=names.freeze(), attributes=allocator.table(), root=root)


def _renamed(node: Node, name: str) -> Node:
    """`node` named `name`: the node itself when that is its name already (as it is for most nodes, the
    fresh namespace handing out the names in the order they were taken)."""
    return node if node.name == name else node.evolve(name=name)


def _scope_path(program: Program, prepack: Node) -> str:
    """The module path prepare recorded for the first node that reads `prepack`."""
    users = program.graph.users.get(prepack.name, ())
    if not users:
        raise ConvertError(f"prepack node '{prepack.name}' has no user to name its packed weight after")
    scope = program.quant.node_name_to_scope.get(users[0]) if program.quant is not None else None
    if scope is None:  # (torch looks it up: a KeyError)
        raise ConvertKeyError(f"node '{users[0]}' (reading prepack '{prepack.name}') has no recorded module scope")
    return scope[0]


def _lookup_key(attribute: str) -> str:
    """The key original_weights_lookup files a packed weight's originals under."""
    for char, replacement in ((":", "_"), ("/", "_"), ("|", "_"), (" ", "")):
        attribute = attribute.replace(char, replacement)
    return attribute.lower()
