"""FX's order of a node's users, as torch's in-place edits leave it.

FX keeps `node.users` as an insertion-ordered dict. A node enters the users of each of its inputs when it
is created, and whenever its arguments are set again (`replace_input_with`, `replace_all_uses_with` on one
of its inputs) it leaves them and enters them again, at the end. Where torch's convert reads such an order
(the first user of an input observer names that observer's qparams; equalization takes a layer's first
ReLU, observer and equalization observer among its users), qfx reproduces it: lift records the
order of every node whose users FX does not list in execution order (`Program.users_order`), and a pass
that emulates torch's edits tells a `UsersOrder` which nodes torch touched, in torch's order. (insert-qdq
counts the edits of torch's main loop; equalization reads the orders lift recorded, without counting its
own edits, which set layers behind equalization observers again.)
"""

from __future__ import annotations

from typing import Mapping

import torch

from .frozendict import FrozenDict
from .graph import Graph


def recorded_users_order(position: Mapping[torch.fx.Node, int], shared: list[torch.fx.Node]) -> FrozenDict:
    """{node name: its users' names in FX's order} for each of the FX nodes `shared` (those with two or more
    users) whose users among the nodes kept (node -> position in graph order) FX does not list in graph
    order."""
    found = {}
    for node in shared:
        users = [user for user in node.users if user in position]
        if any(position[a] > position[b] for a, b in zip(users, users[1:])):
            found[node.name] = tuple(user.name for user in users)
    return FrozenDict(found)


class UsersOrder:
    """The users of each node of `graph` in the order FX would list them, starting from `recorded` (a
    Program's users_order) and moved by the edits made since. Edits are only noted; orders are worked
    out when asked for (rarely: most passes never ask)."""

    def __init__(self, graph: Graph, recorded: Mapping[str, tuple[str, ...]]) -> None:
        self._graph = graph
        self._recorded = recorded
        self._clock = 0
        self._touched: dict[str, list[int]] = {}  # node name -> when torch set its arguments
        self._replaced: dict[str, int] = {}  # node name -> when torch replaced all its uses

    def touch(self, name: str) -> None:
        """torch set the arguments of node `name` now: it goes to the end of the users of each of its
        inputs."""
        self._clock += 1
        self._touched.setdefault(name, []).append(self._clock)

    def touch_users(self, name: str) -> None:
        """torch replaced every use of node `name` now (replace_all_uses_with, once a node): it set the
        arguments of each user, in the order FX lists them."""
        self._clock += 1
        self._replaced[name] = self._clock

    def users(self, name: str, before: int | None = None) -> list[str]:
        """The users of `name` in FX's order (just before the edit made at clock `before`, if given): those
        the recorded order lists, in that order, then the others in execution order, then the ones whose
        arguments torch set since, in the order it last did."""
        return self._users(name, before, {})

    def _users(self, name: str, before: int | None, places: dict[tuple[str, int], dict[str, int]]) -> list[str]:
        # `places` remembers, for this question, each earlier order worked out on the way: the place of every
        # user of `source` just before clock `c`, under (source, c). k users of one source would otherwise
        # each work out the same order of k users again.
        current = self._graph.users.get(name, ())
        recorded = self._recorded.get(name)
        if recorded is None:
            ordered = list(current)
        else:
            members = set(current)
            ordered = [user for user in recorded if user in members]
            listed = set(ordered)
            ordered += [user for user in current if user not in listed]
        if len(ordered) > 1 and self._clock:
            limit = self._clock + 1 if before is None else before
            # (a stable sort: users never set again keep their order)
            ordered.sort(key=lambda user: self._last_set(user, limit, places))
        return ordered

    def _last_set(self, user: str, before: int, places: dict[tuple[str, int], dict[str, int]]) -> tuple[int, int]:
        """When torch last set the arguments of `user` before clock `before`: (clock, its place among the
        users it set then); (-1, 0) for never."""
        last = (max([clock for clock in self._touched.get(user, ()) if clock < before], default=-1), 0)
        for source in self._graph[user].input_name_tuple():
            clock = self._replaced.get(source)
            if clock is not None and last[0] < clock < before:
                place = places.get((source, clock))
                if place is None:
                    order = self._users(source, clock, places)
                    place = places[(source, clock)] = {u: i for i, u in enumerate(order)}
                last = (clock, place[user])
        return last
