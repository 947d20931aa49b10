"""Nodes and graphs: first-order, immutable, referring to each other by name."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Iterable, Iterator, Mapping

import attrs
from pyrsistent import PVector, pvector

from .args import Arg, Ref, map_refs, ref_names
from .frozendict import FrozenDict

OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")

NO_META: Mapping[str, Any] = FrozenDict()


class _NodeSlots:
    """A Node's storage: its fields' slots, on a class without Node's frozen `__setattr__`."""

    __slots__ = ("name", "op", "target", "args", "kwargs", "type", "meta", "_input_names", "__weakref__")


class _NodeUnderConstruction(_NodeSlots):
    """A Node while `Node.__new__` fills it in, then made a Node (the two classes have one layout)."""

    __slots__ = ()


@attrs.frozen(slots=True, eq=True, hash=False, repr=False, init=False)
class Node(_NodeSlots):
    """One FX node: `op` and `target` as in torch.fx, args and kwargs with `Ref`s for nodes.

    `kwargs` is a tuple of (key, value) pairs so its order (which shows in generated code) is kept.
    `type` is the FX type annotation; `meta` the node's meta entries (values are treated as immutable).
    """

    name: str
    op: str
    target: Any
    args: tuple = ()
    kwargs: tuple = ()
    type: Any = None
    meta: Mapping[str, Any] = NO_META  # made a FrozenDict by __init__
    # the names input_names returns, computed on first use (nodes are immutable, and most of them pass
    # through many passes unchanged)
    _input_names: tuple[str, ...] | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def __new__(cls, name: str, op: str, target: Any, args: tuple = (), kwargs: tuple = (), type: Any = None,
                meta: Mapping[str, Any] | None = NO_META) -> "Node":
        # Nodes are made by the thousand per pass: plain attribute stores into an object of a class without
        # the frozen __setattr__ (then given Node's class) cost about half as much as calls of the slots'
        # setters would.
        node = _new_object(_NodeUnderConstruction)
        node.name = name
        node.op = op
        node.target = target
        node.args = args
        node.kwargs = kwargs
        node.type = type
        # (most nodes pass a FrozenDict on; lifted ones bring FX's dict, copied)
        node.meta = meta if meta.__class__ is FrozenDict else FrozenDict(meta) if meta else NO_META
        node._input_names = None
        node.__class__ = Node
        return node  # type: ignore[return-value]

    def __reduce__(self) -> tuple:
        # (copies and pickles are rebuilt through the constructor, which __new__ is)
        return (Node, tuple(getattr(self, field) for field in _FIELDS))

    def kwarg(self, key: str, default: Any = None) -> Any:
        """The value of keyword argument `key`, or `default`."""
        for k, v in self.kwargs:
            if k == key:
                return v
        return default

    def inputs(self) -> Iterator[str]:
        """Names of the nodes this node reads, in argument order (with repeats)."""
        return iter(self.input_name_tuple())

    def input_names(self) -> list[str]:
        """Names of the nodes this node reads, in argument order (with repeats), as a new list."""
        return list(self.input_name_tuple())

    def input_name_tuple(self) -> tuple[str, ...]:
        """Names of the nodes this node reads, in argument order (with repeats)."""
        names = self._input_names
        if names is None:
            out = ref_names(self.args)
            for _, v in self.kwargs:
                ref_names(v, out)
            names = tuple(out)
            _set_input_names(self, names)
        return names

    def with_inputs_replaced(self, mapping: dict[str, Arg]) -> "Node":
        """This node with each reference to a key of `mapping` replaced by its value."""
        if mapping.keys().isdisjoint(self.input_name_tuple()):
            return self
        fn = lambda r: mapping.get(r.name, r)  # noqa: E731  (mapping.get may resolve chains)
        kwargs = tuple([(k, map_refs(v, fn)) for k, v in self.kwargs]) if self.kwargs else ()
        # (the constructor directly: attrs.evolve re-reads the class's fields on every call)
        return Node(self.name, self.op, self.target, map_refs(self.args, fn), kwargs, self.type, self.meta)

    def evolve(self, **changes: Any) -> "Node":
        """A copy with the given fields changed (a TypeError for a name that is not a field)."""
        # (the constructor directly: attrs.evolve re-reads the class's fields on every call, and a pass
        # may evolve every node of a graph)
        values = [changes.pop(field) if field in changes else getattr(self, field) for field in _FIELDS]
        if changes:
            raise TypeError(f"Node has no field(s) {', '.join(sorted(changes))}")
        return Node(*values)

    def __repr__(self) -> str:
        return f"Node({self.name}: {self.op} {self.target!r})"


_new_object = object.__new__
_set_input_names = _NodeSlots.__dict__["_input_names"].__set__  # (the slot's own setter: no frozen check)
_FIELDS = ("name", "op", "target", "args", "kwargs", "type", "meta")  # the constructor's, in its order


@attrs.frozen(slots=False, eq=True, hash=False, repr=False)
class Graph:
    """Nodes in execution order. Derived views are computed on first use and cached."""

    nodes: PVector = attrs.field(factory=pvector, converter=pvector)

    @cached_property
    def by_name(self) -> dict[str, Node]:
        """Node by name."""
        return {n.name: n for n in self.nodes}

    @cached_property
    def position(self) -> dict[str, int]:
        """Index of each node in execution order."""
        return {n.name: i for i, n in enumerate(self.nodes)}

    @cached_property
    def users(self) -> dict[str, tuple[str, ...]]:
        """For each node, the names of the nodes that read it, in execution order, without repeats."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            seen = set()
            for name in n.input_name_tuple():
                if name not in seen and name in out:
                    seen.add(name)
                    out[name].append(n.name)
        return {k: tuple(v) for k, v in out.items()}

    def __getitem__(self, name: str) -> Node:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def placeholders(self) -> list[Node]:
        """The placeholder nodes, in order."""
        return [n for n in self.nodes if n.op == "placeholder"]

    def output(self) -> Node:
        """The output node (the verifier guarantees there is exactly one, last)."""
        return self.nodes[-1]

    def with_nodes(self, nodes: Iterable[Node]) -> "Graph":
        """A graph of the given nodes."""
        return Graph(pvector(nodes))

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes)"


def ref(node_or_name: Node | str) -> Ref:
    """A reference to a node."""
    return Ref(node_or_name if isinstance(node_or_name, str) else node_or_name.name)
