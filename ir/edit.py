"""GraphEditor: FX-style in-place graph edits on a private copy, frozen into a new Program at the end.

torch's lowering is written as edits on a live FX graph: erase this node, make that node read another
input, insert a node after a third one, move a node, redirect every user. A lowering pass mirrors those
steps one for one on a `GraphEditor`, which holds the program's nodes in a linked order with their users,
so each edit costs O(1) and the result has exactly the node order and names FX's edits would leave. The
editor is mutable but private to one pass run; the input Program is never touched, and `finish` builds
the new Program.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from .args import Arg, Ref, ref_names
from .errors import QfxError
from .graph import Node
from .namespace import NameAllocator
from .program import Program
from .rewrite import candidate_name

_HEAD = "\0head"  # sentinel of the circular node list (no FX name can contain a NUL)


class GraphEditError(QfxError, RuntimeError):
    """An edit that FX would refuse (erasing a node that still has users, editing an unknown node); FX's
    refusals are RuntimeErrors, and so is this (torch's lowering meets them on the same graphs)."""


def _link_erased(order: Iterable[str], live: dict[str, Node], links: dict[str, str]) -> None:
    """Link each name of `order` that is not in `live` to the nearest name after it in `order` that is
    (_HEAD when there is none)."""
    following = _HEAD
    for name in reversed(list(order)):
        if name in live:
            following = name
        else:
            links[name] = following


class GraphEditor:
    """A mutable copy of `program`'s graph with FX's editing operations; nodes are named as FX names them."""

    def __init__(self, program: Program) -> None:
        self.program = program
        # Until the first edit the editor reads the program's own graph: most passes match nothing in
        # most graphs, and then never pay for the private copy (`_own`); the linked order (`_links`) waits
        # for the first insertion or move.
        self._names: NameAllocator | None = None
        self._nodes: dict[str, Node] = program.graph.by_name
        self._next: dict[str, str] | None = None
        self._prev: dict[str, str] | None = None
        # Users are built on first need: most passes match nothing in most graphs and never ask.
        self._users: dict[str, dict[str, None]] | None = None
        self.changed = False

    @property
    def names(self) -> NameAllocator:
        """The allocator new nodes are named by (made on first use)."""
        if self._names is None:
            self._names = self.program.namespace.allocator()
        return self._names

    def _own(self) -> dict[str, Node]:
        """The private node table edits work on, made at the first edit."""
        if self._nodes is self.program.graph.by_name:
            self._nodes = dict(self._nodes)
        return self._nodes

    def _links(self) -> tuple[dict[str, str], dict[str, str]]:
        """The circular list of the current nodes, made at the first insertion or move: until then the
        order is the program's without the erased nodes, and edits that keep it never pay for the list."""
        if self._next is None or self._prev is None:
            nodes = self._own()
            order = [node.name for node in self.program.graph.nodes]
            live = order if len(nodes) == len(order) else [name for name in order if name in nodes]
            # the circular list: _HEAD -> first -> ... -> last -> _HEAD
            self._next = dict(zip([_HEAD, *live], [*live, _HEAD]))
            self._prev = dict(zip([*live, _HEAD], [_HEAD, *live]))
            if live is not order:
                # an erased node leads on to the nearest node still there, as a walk standing on it goes on
                _link_erased(order, nodes, self._next)
                _link_erased(reversed(order), nodes, self._prev)
        return self._next, self._prev

    # -- reading -------------------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __getitem__(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise GraphEditError(f"no node named '{name}' in the graph being edited") from None

    def node(self, value: Arg) -> Node | None:
        """The node a `Ref` (or name) refers to; None for any other argument value."""
        if isinstance(value, Ref):
            return self._nodes.get(value.name)
        if isinstance(value, str):
            return self._nodes.get(value)
        return None

    def users(self, name: str) -> list[str]:
        """Names of the nodes that read `name` (FX's `node.users`): in graph order as of the first question,
        then in the order later uses were made."""
        self[name]  # (a GraphEditError for an unknown node)
        return list(self._user_table()[name])

    def _user_table(self) -> dict[str, dict[str, None]]:
        if self._users is None:
            table: dict[str, dict[str, None]] = {name: {} for name in self._nodes}
            # (before any insertion or move the table holds the nodes in graph order)
            for node in self._nodes.values() if self._next is None else self.walk():
                for name in node.input_name_tuple():
                    table[name][node.name] = None
            self._users = table
        return self._users

    def walk(self) -> Iterator[Node]:
        """The nodes in order, as FX's `for n in graph.nodes` sees them while the loop body edits the graph:
        after yielding a node it continues from that node's successor as of then (an erased node keeps the
        successor it had when it was erased)."""
        return self._walk(forward=True)

    def walk_reversed(self) -> Iterator[Node]:
        """The nodes in reverse order (FX's `reversed(graph.nodes)`), with the same rule as `walk`."""
        return self._walk(forward=False)

    def _walk(self, forward: bool) -> Iterator[Node]:
        links = self._next if forward else self._prev
        if links is None:  # no insertion or move so far: the program's order, without the erased nodes
            nodes = self.program.graph.nodes
            for node in nodes if forward else reversed(nodes):
                current = self._nodes.get(node.name)
                if current is None:
                    continue
                yield current
                links = self._next if forward else self._prev
                if links is not None:
                    name = links[node.name]
                    break
            else:
                return
        else:
            name = links[_HEAD]
        while name != _HEAD:
            found = self._nodes.get(name)
            if found is not None:
                yield found
            name = links[name]

    def walk_selected(self, names: Iterable[str]) -> Iterator[Node]:
        """The current nodes of `names` (given in graph order), skipping the erased ones: what `walk` yields
        of those nodes, for a pass that selects them up front by a fact its edits never change (a target)
        and that never inserts or moves a node it would select, nor moves one ahead of the walk. Such a
        pass pays for its few candidates instead of a step per node."""
        for name in names:
            node = self._nodes.get(name)
            if node is not None:
                yield node

    def nodes(self) -> list[Node]:
        """The current nodes, in order."""
        return list(self.walk())

    # -- editing -------------------------------------------------------------------------------------

    def update(self, name: str, **changes: Any) -> Node:
        """Change fields of node `name` (target, args, kwargs, ...) in place; users are kept in step."""
        old = self[name]
        new = old.evolve(**changes)
        if "args" in changes or "kwargs" in changes:
            self._check_reads(name, new.input_name_tuple())
        self._own()
        if "args" in changes or "kwargs" in changes:
            self._drop_uses(old)
            self._add_uses(new)
        self._nodes[name] = new
        self.changed = True
        return new

    def replace_input(self, name: str, old: str, new: Arg) -> Node:
        """Make node `name` read `new` wherever it read node `old` (FX's `replace_input_with`)."""
        return self._replace_inputs(name, {old: new})

    def replace_inputs(self, name: str, replacements: Iterable[tuple[str, Arg]]) -> Node:
        """`replace_input(name, old, new)` for each (old, new) in turn, rebuilding the node once (a node
        reading k dequantized values is lowered in O(k), not O(k^2))."""
        pairs = list(replacements)
        olds = {old for old, _ in pairs}
        if any(isinstance(new, Ref) and new.name in olds for _, new in pairs):
            # a replacement brings in a node another one replaces: in turn, as FX's calls would do it
            node = self[name]
            for old, new in pairs:
                node = self._replace_inputs(name, {old: new})
            return node
        mapping: dict[str, Arg] = {}
        for old, new in pairs:
            mapping.setdefault(old, new)  # (a repeated old is no longer read by the time it repeats)
        return self._replace_inputs(name, mapping)

    def _replace_inputs(self, name: str, mapping: dict[str, Arg]) -> Node:
        node = self[name]
        changed = node.with_inputs_replaced(mapping)
        if changed is node:
            return node
        self._check_reads(name, changed.input_name_tuple())
        self._own()
        self._drop_uses(node)
        self._add_uses(changed)
        self._nodes[name] = changed
        self.changed = True
        return changed

    def replace_all_uses(self, old: str, new: Arg) -> list[str]:
        """Make every user of node `old` read `new` instead (FX's `replace_all_uses_with`); returns them."""
        users = self.users(old)
        if isinstance(new, Ref) and new.name not in self._nodes:
            raise GraphEditError(f"cannot redirect the users of '{old}' to '%{new.name}', which is not in the graph")
        for user in users:
            if user != (new.name if isinstance(new, Ref) else None):
                self.replace_input(user, old, new)
        return users

    def erase(self, name: str) -> None:
        """Remove node `name`, which must have no users (FX's `erase_node`). Its name stays taken."""
        node = self[name]
        table = self._user_table()
        if table[name]:
            users = ", ".join(table[name])
            raise GraphEditError(f"cannot erase node '{name}': it still has users ({users})")
        nodes = self._own()
        self._drop_uses(node)
        del nodes[name]
        del table[name]
        if self._next is not None and self._prev is not None:
            prev, nxt = self._prev[name], self._next[name]
            self._next[prev] = nxt
            self._prev[nxt] = prev
            # (self._next[name] is kept, so a walk standing on the erased node goes on from its old successor)
        self.changed = True

    def insert_after(self, anchor: str, op: str, target: Any, args: tuple = (),
                     kwargs: Iterable[tuple[str, Arg]] = (), *, name: str | None = None,
                     meta: Any = None, type_expr: Any = None) -> Ref:
        """A new node right after `anchor` (FX's `inserting_after(anchor)` + `create_node`)."""
        self[anchor]  # (a GraphEditError for an unknown anchor, before a name is taken)
        node = self._new_node(op, target, args, kwargs, name, meta, type_expr)
        self._link_after(anchor, node.name)
        return Ref(node.name)

    def insert_before(self, anchor: str, op: str, target: Any, args: tuple = (),
                      kwargs: Iterable[tuple[str, Arg]] = (), *, name: str | None = None,
                      meta: Any = None, type_expr: Any = None) -> Ref:
        """A new node right before `anchor` (FX's `inserting_before(anchor)` + `create_node`)."""
        anchor = self[anchor].name
        node = self._new_node(op, target, args, kwargs, name, meta, type_expr)
        _, predecessors = self._links()
        self._link_after(predecessors[anchor], node.name)
        return Ref(node.name)

    def move_after(self, anchor: str, name: str) -> None:
        """Move node `name` to right after `anchor` (FX's `anchor.append(node)`)."""
        self[anchor], self[name]
        successors, predecessors = self._links()
        if anchor == name or successors[anchor] == name:
            return
        prev, nxt = predecessors[name], successors[name]
        successors[prev] = nxt
        predecessors[nxt] = prev
        self._link_after(anchor, name)

    def _link_after(self, anchor: str, name: str) -> None:
        successors, predecessors = self._links()
        nxt = successors[anchor]
        successors[anchor] = name
        predecessors[name] = anchor
        successors[name] = nxt
        predecessors[nxt] = name
        self.changed = True

    def _new_node(self, op: str, target: Any, args: tuple, kwargs: Iterable, name: str | None,
                  meta: Any, type_expr: Any) -> Node:
        args, kwargs = tuple(args), tuple(kwargs)
        reads = ref_names(args)
        for _, value in kwargs:
            ref_names(value, reads)
        self._check_reads(None, reads)  # before a name is taken
        node_name = self.names.fresh(name if name is not None else candidate_name(target))
        node = Node(node_name, op, target, args, kwargs, type_expr, meta)
        self._links()  # (from the nodes as they are before this one)
        self._nodes[node_name] = node
        if self._users is not None:
            self._users[node_name] = {}
        self._add_uses(node)
        return node

    def _check_reads(self, reader: str | None, reads: Iterable[str]) -> None:
        """A GraphEditError (nothing changed yet) when node `reader` (None: a node being made) reads a node
        that is not in the graph."""
        for name in reads:
            if name not in self._nodes:
                who = "a new node" if reader is None else f"node '{reader}'"
                raise GraphEditError(f"{who} reads '%{name}', which is not in the graph")

    def _add_uses(self, node: Node) -> None:
        if self._users is not None:
            for name in node.input_name_tuple():
                self._users[name][node.name] = None

    def _drop_uses(self, node: Node) -> None:
        if self._users is None:
            return
        for name in set(node.input_name_tuple()):
            users = self._users.get(name)
            if users is not None:
                users.pop(node.name, None)

    # -- result --------------------------------------------------------------------------------------

    def finish(self, **changes: Any) -> Program:
        """The new program: the edited nodes in order, the new name state, and any other field changes.
        The input program itself when nothing was edited and nothing else changes."""
        if not self.changed and not changes:
            return self.program
        namespace = self._names.freeze() if self._names is not None else self.program.namespace
        # (without an insertion or move the node table holds the nodes in graph order, and is read whole)
        nodes = self._nodes.values() if self._next is None else self.walk()
        return self.program.evolve(graph=self.program.graph.with_nodes(nodes), namespace=namespace, **changes)
