"""UsersOrder reproduces FX's order of `node.users`: as lift records it from a graph whose nodes had their
arguments set again in any order, and after FX-style edits (a node's uses all redirected, a node's
arguments set again) that the order is told about as insert-qdq tells it."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qfx.ir import lift
from qfx.ir.users_order import UsersOrder
from qfx.testing.strategies import examples


@st.composite
def edited_graphs(draw: st.DrawFn) -> tuple[torch.fx.GraphModule, list[tuple[str, int]]]:
    """A graph of placeholders and adds/cats reading earlier nodes, whose nodes had their arguments set
    again in a random order (so FX lists users out of execution order), and a list of edits to make after
    lifting it: ("redirect", node index) or ("reset", node index)."""
    graph = torch.fx.Graph()
    nodes = [graph.placeholder(f"x{i}") for i in range(draw(st.integers(1, 3)))]
    for _ in range(draw(st.integers(2, 12))):
        picks = draw(st.lists(st.integers(0, len(nodes) - 1), min_size=1, max_size=4))
        inputs = [nodes[i] for i in picks]
        nodes.append(graph.call_function(torch.cat, (inputs,)) if len(inputs) > 2
                     else graph.call_function(torch.add, (inputs[0], inputs[-1])))
    graph.output(tuple(nodes))
    for i in draw(st.lists(st.integers(0, len(nodes) - 1), max_size=10)):
        nodes[i].args = nodes[i].args  # sets them again: the node goes to the end of its inputs' users
    edits = draw(st.lists(st.tuples(st.sampled_from(["redirect", "reset"]), st.integers(0, len(nodes) - 1)),
                          max_size=10))
    return torch.fx.GraphModule(torch.nn.Module(), graph), edits


@settings(max_examples=examples(200), deadline=None)
@given(edited_graphs())
def test_users_order_follows_fx(case) -> None:
    gm, edits = case
    program = lift(gm, observed=False)
    order = UsersOrder(program.graph, program.users_order)
    fx_nodes = {n.name: n for n in gm.graph.nodes}
    names = list(fx_nodes)
    redirected: set[str] = set()  # (their users are now the new node's: UsersOrder is not asked about them)
    for kind, index in edits:
        node = fx_nodes[names[index]]
        if node.op != "call_function" or node.name in redirected:
            continue
        if kind == "reset":
            node.args = node.args
            order.touch(node.name)
        else:  # what insert-qdq does for an observer: a node after it takes over all its uses
            with gm.graph.inserting_after(node):
                replacement = gm.graph.call_function(torch.neg, (node,))
            node.replace_all_uses_with(replacement, delete_user_cb=lambda user: user is not replacement)
            order.touch_users(node.name)
            redirected.add(node.name)
    for name in names:
        if name not in redirected:
            assert order.users(name) == [user.name for user in fx_nodes[name].users], name


def test_lift_records_only_orders_that_differ_from_execution_order() -> None:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(torch.neg, (x,))
    b = graph.call_function(torch.abs, (x,))
    c = graph.call_function(torch.add, (a, b))
    graph.output((c, a))
    a.args = a.args  # x's users: b, a
    program = lift(torch.fx.GraphModule(torch.nn.Module(), graph), observed=False)
    assert dict(program.users_order) == {"x": ("abs_1", "neg")}


def test_an_order_is_worked_out_once_per_question(monkeypatch) -> None:
    """k users of one node, each also reading a node whose uses were all redirected: the order of those
    users just before the redirect is worked out once, not once per user (O(k^2) on wide graphs)."""
    graph = torch.fx.Graph()
    x, y = graph.placeholder("x"), graph.placeholder("y")
    adds = [graph.call_function(torch.add, (x, y)) for _ in range(50)]
    graph.output(tuple(adds))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    program = lift(gm, observed=False)
    order = UsersOrder(program.graph, program.users_order)
    with gm.graph.inserting_after(y):
        replacement = gm.graph.call_function(torch.neg, (y,))
    y.replace_all_uses_with(replacement, delete_user_cb=lambda user: user is not replacement)
    order.touch_users("y")
    asked: list[tuple[str, int | None]] = []
    users = UsersOrder._users
    monkeypatch.setattr(UsersOrder, "_users", lambda self, name, before, places: asked.append((name, before))
                        or users(self, name, before, places))
    assert order.users("x") == [user.name for user in x.users]
    assert asked == [("x", None), ("y", 1)]
