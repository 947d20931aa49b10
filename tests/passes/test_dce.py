"""dce: the same nodes go as with torch.fx's Graph.eliminate_dead_code, impure ones stay, and it is
idempotent and pure."""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import assume, given, settings

from qfx.ir import lift, print_program
from qfx.lowering.codegen import codegen
from qfx.passes import Pipeline
from qfx.passes.dce import eliminate_dead_code, node_is_impure
from tests.support.snapshot import assert_program_unchanged, assert_same_outputs, assert_unchanged, snapshot, snapshot_program
from qfx.testing.strategies import examples, model_specs, observed_models, trace_spec

DCE = Pipeline.parse("dce")


def torch_dce(gm: fx.GraphModule) -> fx.GraphModule:
    """torch's own dead-code elimination, on a copy."""
    out = copy.deepcopy(gm)
    out.graph.eliminate_dead_code()
    out.recompile()
    return out


def check_matches_torch(gm: fx.GraphModule, *, observed: bool = False) -> fx.GraphModule:
    """Run dce through the pipeline (verifier and purity instrument on) and compare with torch."""
    before = snapshot(gm)
    program = lift(gm, observed=observed)
    program_before = snapshot_program(program)
    result = DCE.run(program)
    assert_program_unchanged(program_before, program)
    ours = codegen(result)
    expected = torch_dce(gm)
    assert ours.code == expected.code
    assert [n.name for n in ours.graph.nodes] == [n.name for n in expected.graph.nodes]
    # erased names stay taken, as in FX
    assert result.namespace == program.namespace
    assert ours.graph._graph_namespace._used_names == expected.graph._graph_namespace._used_names
    assert_unchanged(before, gm)
    return ours


@settings(max_examples=examples(80))
@given(model_specs(dead_branches=True))
def test_dce_equals_torch_on_traced_models(spec):
    gm, inputs = trace_spec(spec)
    program = lift(gm, observed=False)
    assume(len(eliminate_dead_code(program).graph) < len(program.graph))  # models with dead branches
    ours = check_matches_torch(gm)
    assert_same_outputs(gm, ours, *inputs)


@settings(max_examples=examples(30))
@given(model_specs(dead_branches=False))
def test_dce_keeps_models_without_dead_code(spec):
    gm, _ = trace_spec(spec)
    program = lift(gm, observed=False)
    # every produced value feeds the output, but ops like `x.size(0)` can still be dead
    result = eliminate_dead_code(program)
    assert (result is program) == (len(result.graph) == len(program.graph))
    check_matches_torch(gm)


@settings(max_examples=examples(15))
@given(observed_models())
def test_dce_equals_torch_on_observed_models(model_and_inputs):
    gm, _ = model_and_inputs
    check_matches_torch(gm, observed=True)


@settings(max_examples=examples(40))
@given(model_specs(dead_branches=True))
def test_dce_is_idempotent(spec):
    gm, _ = trace_spec(spec)
    once = DCE.run(lift(gm, observed=False))
    twice = DCE.run(once)
    assert twice == once
    assert eliminate_dead_code(once) is once  # nothing left to remove: the same value comes back
    assert print_program(twice) == print_program(once)


# --------------------------------------------------------------------------------------------------
# impurity, node by node


class Impure(nn.Module):
    """A module torch.fx must never remove, even when nobody reads its result."""

    _is_impure = True

    def forward(self, x):
        return x + 1


class Pure(nn.Module):
    def forward(self, x):
        return x + 1


def _graph_module(build) -> fx.GraphModule:
    root = nn.Module()
    root.impure = Impure()
    root.pure = Pure()
    root.register_buffer("buf", torch.ones(3))
    graph = fx.Graph()
    x = graph.placeholder("x")
    unused_input = graph.placeholder("unused_input")  # noqa: F841 - placeholders always stay
    result = build(graph, x)
    graph.output(result)
    return fx.GraphModule(root, graph)


def _kept_and_removed(gm: fx.GraphModule) -> tuple[set[str], set[str]]:
    program = lift(gm, observed=False)
    result = DCE.run(program)
    names = {n.name for n in program.graph.nodes}
    kept = {n.name for n in result.graph.nodes}
    return kept, names - kept


def test_impure_nodes_stay_and_pure_ones_go():
    def build(graph, x):
        graph.call_function(torch.ops.aten.add_.Tensor, (x, x))  # in-place op: mutable schema
        graph.call_function(operator.setitem, (x, 0, 1.0))
        graph.call_function(torch._assert, (True, "checked"))
        graph.call_function(torch.randn, (3,))  # random ops change the RNG state
        graph.call_function(torch.rand_like, (x,))
        graph.call_module("impure", (x,))
        graph.call_module("pure", (x,))
        graph.call_function(torch.ops.aten.add.Tensor, (x, x))  # functional op
        graph.get_attr("buf")
        graph.call_method("add_", (x, x))  # FX treats call_method as pure, in-place or not
        dead = graph.call_function(torch.sigmoid, (x,))
        graph.call_function(torch.relu, (dead,))  # a dead chain goes entirely
        return graph.call_function(operator.mul, (x, 2))

    gm = _graph_module(build)
    kept, removed = _kept_and_removed(gm)
    assert {"x", "unused_input", "add__tensor", "setitem", "_assert", "randn", "rand_like", "impure"} <= kept
    assert {"pure", "add_tensor", "buf", "add_", "sigmoid", "relu"} == removed
    check_matches_torch(gm)


def test_node_is_impure_mirrors_torch():
    gm = _graph_module(lambda g, x: g.call_function(operator.add, (
        g.call_module("impure", (x,)), g.call_function(torch.ops.aten.add_.Tensor, (x, x)))))
    program = lift(gm, observed=False)
    for node in gm.graph.nodes:
        assert node_is_impure(program.graph[node.name], program) == node.is_impure(), node.name


def test_dead_impure_nodes_keep_their_inputs_alive():
    def build(graph, x):
        y = graph.call_function(torch.sigmoid, (x,))
        graph.call_function(torch._assert, (graph.call_function(operator.gt, (graph.call_method("sum", (y,)), -1.0)),
                                             "positive"))
        return x

    gm = _graph_module(build)
    kept, removed = _kept_and_removed(gm)
    assert {"sigmoid", "sum_1", "gt", "_assert"} <= kept and removed == set()
    check_matches_torch(gm)


def test_dce_without_dead_code_returns_its_input():
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    program = lift(gm, observed=False)
    assert eliminate_dead_code(program) is program


def test_dce_keeps_module_table_and_names():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            self.unused(x)
            return self.used(x)

    gm = fx.symbolic_trace(M())
    program = lift(gm, observed=False)
    result = eliminate_dead_code(program)
    assert "unused" not in result.graph and "unused" in result.namespace.used
    assert result.modules is program.modules  # dropping unused modules is cleanup's job
    out = codegen(result)
    assert not hasattr(out, "unused")  # codegen only lays out what the graph uses
    assert_same_outputs(gm, out, torch.randn(3, 2))
