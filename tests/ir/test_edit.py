"""GraphEditor makes the edits FX makes: the same node order, names and arguments after any sequence of
FX-style edits (insert before/after, replace an input, redirect all uses, erase, move), including edits made
while walking the graph, and its input Program stays as it was."""

from __future__ import annotations

import copy
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qfx.ir import lift, print_program, verify
from qfx.ir.args import Ref, thaw
from qfx.ir.edit import GraphEditError, GraphEditor
from qfx.testing.strategies import examples, traced_models


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _norm(v)) for k, v in value.items())
    return value


def fx_state(graph: torch.fx.Graph) -> list:
    return [(n.name, n.op, n.target, _norm(torch.fx.node.map_arg(n.args, lambda a: ("%", a.name))),
             _norm(torch.fx.node.map_arg(dict(n.kwargs), lambda a: ("%", a.name)))) for n in graph.nodes]


def editor_state(editor: GraphEditor) -> list:
    named = lambda name: ("%", name)  # noqa: E731
    return [(n.name, n.op, n.target, _norm(thaw(n.args, named)), _norm({k: thaw(v, named) for k, v in n.kwargs}))
            for n in editor.walk()]


@settings(max_examples=examples(60), deadline=None)
@given(traced_models(), st.lists(st.tuples(st.sampled_from(["after", "before", "replace_input", "redirect",
                                                            "erase", "move"]),
                                           st.integers(0, 10**6), st.integers(0, 10**6)), max_size=12))
def test_edits_match_fx(case, edits):
    gm = case[0] if isinstance(case, tuple) else case
    program = lift(gm, observed=False)
    printed = print_program(program)
    graph = copy.deepcopy(gm).graph
    editor = GraphEditor(program)
    for kind, i, j in edits:
        fx_nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
        if not fx_nodes:
            break
        a = fx_nodes[i % len(fx_nodes)]
        b = fx_nodes[j % len(fx_nodes)]
        if kind in ("after", "before"):
            with (graph.inserting_after(a) if kind == "after" else graph.inserting_before(a)):
                graph.call_function(torch.relu, (a,))
            insert = editor.insert_after if kind == "after" else editor.insert_before
            insert(a.name, "call_function", torch.relu, (Ref(a.name),))
        elif kind == "replace_input":
            users = list(a.users)
            if not users or b in users or b is a:
                continue
            user = users[j % len(users)]
            user.replace_input_with(a, b)
            editor.replace_input(user.name, a.name, Ref(b.name))
        elif kind == "redirect":
            if b is a or b in a.users:
                continue
            a.replace_all_uses_with(b)
            editor.replace_all_uses(a.name, Ref(b.name))
        elif kind == "erase":
            if a.users:
                try:
                    editor.erase(a.name)
                except GraphEditError:
                    continue
                raise AssertionError(f"erased '{a.name}', which still has users")
            graph.erase_node(a)
            editor.erase(a.name)
        else:
            if a is b:
                continue
            a.append(b)
            editor.move_after(a.name, b.name)
        assert editor_state(editor) == fx_state(graph)
    assert editor_state(editor) == fx_state(graph)
    assert print_program(program) == printed  # the input is untouched
    finished = editor.finish()
    assert [n.name for n in finished.graph.nodes] == [n.name for n in graph.nodes]
    if not edits:
        assert finished is program


@settings(max_examples=examples(30), deadline=None)
@given(traced_models(), st.booleans())
def test_walk_while_editing_matches_fx(case, forward):
    """Walking (forwards, or backwards as FX's `reversed(graph.nodes)`) while inserting a node next to each
    call and erasing unused nodes visits what FX's loop visits; the first edit comes mid-walk."""
    gm = case[0] if isinstance(case, tuple) else case
    program = lift(gm, observed=False)
    printed = print_program(program)
    graph = copy.deepcopy(gm).graph
    fx_seen, ours_seen = [], []
    for n in graph.nodes if forward else reversed(graph.nodes):
        fx_seen.append(n.name)
        if n.op == "call_function" and n.target is not torch.sigmoid:
            with graph.inserting_after(n) if forward else graph.inserting_before(n):
                graph.call_function(torch.sigmoid, (n,) if forward else (n.args[0],) if n.args else ())
        elif n.op not in ("placeholder", "output") and not n.users:
            graph.erase_node(n)
    editor = GraphEditor(program)
    for node in editor.walk() if forward else editor.walk_reversed():
        ours_seen.append(node.name)
        if node.op == "call_function" and node.target is not torch.sigmoid:
            if forward:
                editor.insert_after(node.name, "call_function", torch.sigmoid, (Ref(node.name),))
            else:
                editor.insert_before(node.name, "call_function", torch.sigmoid,
                                     (node.args[0],) if node.args else ())
        elif node.op not in ("placeholder", "output") and not editor.users(node.name):
            editor.erase(node.name)
    assert ours_seen == fx_seen
    assert editor_state(editor) == fx_state(graph)
    verify(editor.finish())
    assert print_program(program) == printed  # the input is untouched


@settings(max_examples=examples(30), deadline=None)
@given(traced_models(), st.booleans())
def test_walk_goes_on_from_an_erased_node_after_an_insertion(case, forward):
    """A walk standing on a node it erased goes on as FX's does when the first insertion comes after
    erasures (the editor links its nodes only at the first insertion or move). (The inserted sigmoids
    are kept, or a backward walk would meet and replace them for ever.)"""
    gm = case[0] if isinstance(case, tuple) else case
    program = lift(gm, observed=False)
    graph = copy.deepcopy(gm).graph
    first = next(iter(graph.nodes))
    fx_seen, ours_seen = [], []
    for n in graph.nodes if forward else reversed(graph.nodes):
        fx_seen.append(n.name)
        if n.op not in ("placeholder", "output") and n.target is not torch.sigmoid and not n.users:
            graph.erase_node(n)
            with graph.inserting_after(first):
                graph.call_function(torch.sigmoid, (first,))
    editor = GraphEditor(program)
    for node in editor.walk() if forward else editor.walk_reversed():
        ours_seen.append(node.name)
        if node.op not in ("placeholder", "output") and node.target is not torch.sigmoid \
                and not editor.users(node.name):
            editor.erase(node.name)
            editor.insert_after(first.name, "call_function", torch.sigmoid, (Ref(first.name),))
    assert ours_seen == fx_seen
    assert editor_state(editor) == fx_state(graph)
    verify(editor.finish())


@settings(max_examples=examples(60), deadline=None)
@given(traced_models(), st.integers(0, 10**6),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.booleans()), max_size=8), st.booleans())
def test_replace_inputs_is_replace_input_in_turn(case, pick, picks, users_known):
    """Many replacements at once leave the node, and every node's users in their order, as the same
    replacements one by one (also where a replacement brings in a node a later one replaces, or repeats)."""
    gm = case[0] if isinstance(case, tuple) else case
    program = lift(gm, observed=False)
    names = [n.name for n in program.graph.nodes]
    readers = [n for n in program.graph.nodes if n.input_names()]
    if not readers:
        return
    node = readers[pick % len(readers)]
    reads = node.input_names()
    pairs = [(reads[i % len(reads)] if from_reads else names[i % len(names)], Ref(names[j % len(names)]))
             for i, j, from_reads in picks]
    one, many = GraphEditor(program), GraphEditor(program)
    if users_known:  # (the users table, once built, keeps the order uses are made in)
        one.users(names[0]), many.users(names[0])
    for old, new in pairs:
        one.replace_input(node.name, old, new)
    many.replace_inputs(node.name, pairs)
    assert _editor_state(many) == _editor_state(one)
    assert many.finish() == one.finish()


def test_an_editor_that_edits_nothing_gives_back_its_program():
    """No edit, however much the pass reads (walks, users, lookups): the input program itself comes back."""
    gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    program = lift(gm, observed=False)
    editor = GraphEditor(program)
    names = [node.name for node in editor.walk()]
    assert [node.name for node in editor.walk_reversed()] == names[::-1]
    assert all(editor[name] is program.graph[name] for name in names)
    editor.users(names[1])
    editor.replace_input(names[-1], "no_such_input", Ref(names[0]))  # reads nothing it names: no edit
    assert editor.finish() is program


def _relu_neg_program():
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.neg(torch.relu(x))

    return lift(torch.fx.symbolic_trace(M()), observed=False)


def _editor_state(editor: GraphEditor) -> tuple:
    names = [n.name for n in editor.walk()]
    return names, [editor[n] for n in names], {n: editor.users(n) for n in names}, editor.names.freeze()


def test_a_refused_edit_leaves_the_editor_as_it_was():
    """Each edit FX would refuse raises a GraphEditError before changing anything: nodes, users and the
    names handed out stay as they were, and the editor goes on editing as FX would."""
    program = _relu_neg_program()
    refused = [
        lambda e: e.update("neg", args=(Ref("missing"),)),
        lambda e: e.replace_input("neg", "relu", Ref("missing")),
        lambda e: e.replace_all_uses("relu", Ref("ghost")),
        lambda e: e.insert_after("relu", "call_function", torch.add, (Ref("relu"), Ref("missing"))),
        lambda e: e.insert_after("nope", "call_function", torch.relu, (Ref("x"),)),
        lambda e: e.insert_before("nope", "call_function", torch.relu, (Ref("x"),)),
        lambda e: e.users("nope"),
        lambda e: e.erase("relu"),
    ]
    for edit in refused:
        editor = GraphEditor(program)
        editor.users("x")  # (the users table, once built, is kept in step by every edit)
        before = _editor_state(editor)
        try:
            edit(editor)
        except GraphEditError:
            pass
        else:
            raise AssertionError("the edit was not refused")
        assert _editor_state(editor) == before
        # a legal edit afterwards works as on FX's graph, and names the new node as FX would
        added = editor.insert_after("relu", "call_function", torch.relu, (Ref("relu"),))
        assert added.name == "relu_1"
        editor.replace_all_uses("relu", Ref("x"))
        verify(editor.finish())
