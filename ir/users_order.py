"""FX's order of a node's users, as torch's in-place edits leave it.

FX keeps `node.users` as an insertion-ordered dict. A node enters the users of each of its inputs when it
is created, and whenever its arguments are set again (`replace_input_with`, `replace_all_uses_with` on one
of its inputs) it leaves them and enters them again, at the end. Where torch's convert reads such an order
(the first user of an input observer names that observer's qparams), qfx reproduces it: lift records the
order of every node whose users FX does not list in execution order (`Program.users_order`), and a pass
that emulates torch's edits tells a `UsersOrder` which nodes torch touched, in torch's order. (Only
insert-qdq asks, and only the edits of torch's main loop are counted; equalization's, before it, set
layers behind equalization observers again, which prepare inserts only where the layer's input feeds no
other quantized op.)
"""

from __future__ import annotations

from typing import Mapping

import torch

from .frozendict import FrozenDict
from .graph import Graph


def recorded_users_order(kept: Mapping[torch.fx.Node, str]) -> FrozenDict:
    """{node name: its users' names in FX's order} for each of the FX nodes `kept` (node -> name, in graph
    order) with two or more users among them that FX does not list in graph order."""
    position = {node: i for i, node in enumerate(kept)}
    found = {}
    for node, name in kept.items():
        if len(node.users) < 2:
            continue
        users = [user for user in node.users if user in position]
        if any(position[a] > position[b] for a, b in zip(users, users[1:])):
            found[name] = tuple(kept[user] for user in users)
    return FrozenDict(found)


class UsersOrder:
    """The users of each node of `graph` in the order FX would list them, starting from `recorded` (a
    Program's users_order) and moved by the touches made since."""

    def __init__(self, graph: Graph, recorded: Mapping[str, tuple[str, ...]]) -> None:
        self._graph = graph
        self._recorded = recorded
        self._touched: dict[str, int] = {}  # node name -> when torch last set its arguments (or created it)
        self._clock = 0

    def touch(self, name: str) -> None:
        """torch set the arguments of node `name` (or created it) now: it goes to the end of the users of
        each of its inputs."""
        self._clock += 1
        self._touched[name] = self._clock

    def touch_users(self, name: str) -> None:
        """torch replaced every use of node `name` (replace_all_uses_with): each user is touched, in the
        order FX lists them."""
        for user in self.users(name):
            self.touch(user)

    def users(self, name: str) -> list[str]:
        """The users of `name` in FX's order: those the recorded order lists, in that order, then the others
        in execution order, then the touched ones in the order they were last touched."""
        current = self._graph.users.get(name, ())
        recorded = self._recorded.get(name)
        if recorded is None:
            ordered = list(current)
        else:
            members = set(current)
            ordered = [user for user in recorded if user in members]
            listed = set(ordered)
            ordered += [user for user in current if user not in listed]
        touched = self._touched
        if touched and len(ordered) > 1:
            ordered.sort(key=lambda user: touched.get(user, -1))  # (a stable sort: untouched keep their order)
        return ordered
