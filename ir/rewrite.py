"""GraphBuilder: the one place passes build new node lists.

A pass walks the old graph in order and, for each node, keeps it, drops it, or emits new nodes in its
place. Like FX's `replace_all_uses_with`, `replace_uses` redirects every later reader of a node. The
builder is mutable but private to one pass run; `finish` freezes the result into a new Program.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from .args import Arg, Ref
from .errors import QfxError
from .graph import Node
from .program import Program


class GraphBuildError(QfxError, KeyError):
    """An edit of a node the builder has not appended (an unknown anchor or node name)."""

    def __str__(self) -> str:  # (KeyError prints the repr of its argument)
        return str(self.args[0]) if self.args else ""


_CANDIDATES: dict[Any, str] = {}


def candidate_name(target: Any) -> str:
    """The base name FX gives a node with this target (snake case of the callable's or string's name)."""
    if isinstance(target, str):
        if target.islower() and not target.startswith("__"):
            return target  # FX's snake-casing only changes upper-case letters and magic names
        return torch.fx.Graph._target_to_str(None, target)  # type: ignore[arg-type]
    try:
        return _CANDIDATES[target]
    except KeyError:
        name = _CANDIDATES[target] = torch.fx.Graph._target_to_str(None, target)  # type: ignore[arg-type]
        return name
    except TypeError:  # unhashable target
        return torch.fx.Graph._target_to_str(None, target)  # type: ignore[arg-type]


class _Redirections(dict):
    """old name -> replacement; a replacement that was itself redirected later resolves to the newest."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        if not dict.__contains__(self, name):
            return default
        value = dict.__getitem__(self, name)
        while isinstance(value, Ref) and dict.__contains__(self, value.name):
            value = dict.__getitem__(self, value.name)
        return value


class GraphBuilder:
    """Builds the node list of a new program from `program`, allocating names as FX would."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.nodes: list[Node] = []
        self.names = program.namespace.allocator()
        self._subst = _Redirections()
        self._emitted: dict[str, Node] = {}

    def fresh(self, candidate: str) -> str:
        """A new node name derived from `candidate`."""
        return self.names.fresh(candidate)

    def substituted(self, node: Node) -> Node:
        """`node` with the redirections made so far applied to its inputs."""
        return node.with_inputs_replaced(self._subst)

    def keep(self, node: Node) -> Node:
        """Append `node` (after redirections); return the appended node."""
        return self.emit(self.substituted(node))

    def emit(self, node: Node) -> Node:
        """Append `node` exactly as given (its inputs already final); return it."""
        self.nodes.append(node)
        self._emitted[node.name] = node
        return node

    def emitted(self, name: str) -> Node | None:
        """The appended node called `name`, if any."""
        return self._emitted.get(name)

    def add(
        self,
        op: str,
        target: Any,
        args: tuple = (),
        kwargs: Iterable[tuple[str, Arg]] = (),
        *,
        name: str | None = None,
        meta: dict | None = None,
        type_expr: Any = None,
    ) -> Ref:
        """Append a new node named from `name` (or its target, as FX does); return a reference to it."""
        node = self._new_node(op, target, args, kwargs, name, meta, type_expr)
        self.nodes.append(node)
        self._emitted[node.name] = node
        return Ref(node.name)

    def insert_after(
        self, anchor: str, op: str, target: Any, args: tuple = (), kwargs: Iterable[tuple[str, Arg]] = (),
        *, name: str | None = None,
    ) -> Ref:
        """Insert a new node right after the appended node `anchor` (FX's `inserting_after`)."""
        position = self.position_of(anchor) + 1  # (before a name is taken)
        node = self._new_node(op, target, args, kwargs, name, None, None)
        self.nodes.insert(position, node)
        self._emitted[node.name] = node
        return Ref(node.name)

    def insert_before(
        self, anchor: str, op: str, target: Any, args: tuple = (), kwargs: Iterable[tuple[str, Arg]] = (),
        *, name: str | None = None,
    ) -> Ref:
        """Insert a new node right before the appended node `anchor` (FX's `inserting_before`)."""
        position = self.position_of(anchor)  # (before a name is taken)
        node = self._new_node(op, target, args, kwargs, name, None, None)
        self.nodes.insert(position, node)
        self._emitted[node.name] = node
        return Ref(node.name)

    def replace_input(self, name: str, old: str, new: Arg) -> None:
        """Make the appended node `name` read `new` wherever it read node `old` (FX's replace_input_with)."""
        i = self.position_of(name)
        changed = self.nodes[i].with_inputs_replaced({old: new})
        self.nodes[i] = changed
        self._emitted[name] = changed

    def _new_node(self, op: str, target: Any, args: tuple, kwargs: Iterable, name: str | None,
                  meta: dict | None, type_expr: Any) -> Node:
        node_name = self.names.fresh(name if name is not None else candidate_name(target))
        return Node(node_name, op, target, tuple(args), tuple(kwargs), type_expr, meta)  # (Node freezes meta)

    def replace_uses(self, old: str, new: Arg) -> None:
        """Every node kept from now on reads `new` where it read node `old`."""
        self._subst[old] = new

    def redirect_emitted(self, old: str, new: Arg, *, skip: Iterable[str] = ()) -> None:
        """Also rewrite nodes already appended (except those named in `skip`) to read `new` for `old`."""
        skip = set(skip)
        mapping = {old: new}
        for i, n in enumerate(self.nodes):
            if n.name not in skip:
                changed = n.with_inputs_replaced(mapping)
                if changed is not n:
                    self.nodes[i] = changed
                    self._emitted[n.name] = changed

    def position_of(self, name: str) -> int:
        """Index of an appended node (linear search: for rare, local edits); GraphBuildError if none."""
        for i in range(len(self.nodes) - 1, -1, -1):
            if self.nodes[i].name == name:
                return i
        raise GraphBuildError(f"no node named '{name}' has been appended to the graph being built")

    def finish(self, **changes: Any) -> Program:
        """The new program: the built nodes, the new name state, and any other field changes."""
        return self.program.evolve(graph=self.program.graph.with_nodes(self.nodes),
                                   namespace=self.names.freeze(), **changes)
