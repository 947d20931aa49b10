"""lift then codegen reproduces the model: same code, state, module tree, outputs; the input untouched."""

from __future__ import annotations

import collections
import copy
import operator
import re

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from torch.ao.quantization import QConfigMapping, default_qconfig, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_fx

from qfx.ir import NotObservedModelError, lift, print_program, verify
from qfx.ir.args import Ref
from qfx.ir.program import Program
from qfx.ir.errors import LiftError, QfxError
from qfx.ir.lift import OBSERVED_ATTRS_KEY
from qfx.lowering.codegen import codegen
from tests.support.snapshot import assert_same_model, assert_same_outputs, assert_unchanged, diff_values, freeze_value, snapshot
from qfx.testing.strategies import examples, observed_models, traced_models


def check_roundtrip(gm: fx.GraphModule, inputs: tuple, *, observed: bool, run: bool = True) -> fx.GraphModule:
    """Assert codegen(lift(gm)) reproduces gm exactly and leaves gm untouched; return the new module.
    With `run`, also run both on `inputs` and compare the outputs bitwise."""
    before = snapshot(gm)
    program = verify(lift(gm, observed=observed))
    out = codegen(program)
    assert_unchanged(before, gm)
    assert out is not gm and out.graph is not gm.graph
    assert_same_model(gm, out)
    assert list(out.meta) == list(gm.meta)
    # the quant facts come back with every table in prepare's order
    meta_problems = diff_values(freeze_value(dict(gm.meta)), freeze_value(dict(out.meta)), "meta")
    assert not meta_problems, "\n".join(meta_problems)
    # the regenerated graph hands out new names exactly as the original would
    ns_a, ns_b = gm.graph._graph_namespace, out.graph._graph_namespace
    assert ns_a._used_names == ns_b._used_names
    assert ns_a._base_count == ns_b._base_count
    assert type(gm.graph._codegen) is type(out.graph._codegen)
    # lifting the result gives the same program text: codegen loses nothing lift can see
    assert print_program(lift(out, observed=observed)) == print_program(program)
    if run:
        assert_same_outputs(gm, out, *inputs)
        assert_unchanged(before, gm)
    return out


@settings(max_examples=examples(250))
@given(traced_models())
def test_roundtrip_traced_models(model_and_inputs):
    gm, inputs = model_and_inputs
    check_roundtrip(gm, inputs, observed=False)


@settings(max_examples=examples(150))
@given(observed_models())
def test_roundtrip_observed_models(model_and_inputs):
    gm, inputs = model_and_inputs
    program = lift(gm)
    assert program.quant is not None
    names = set(program.graph.by_name)
    assert set(program.quant.node_name_to_qconfig) <= names
    back = check_roundtrip(gm, inputs, observed=True).meta[OBSERVED_ATTRS_KEY]
    facts = gm.meta[OBSERVED_ATTRS_KEY]
    for table in ("node_name_to_qconfig", "node_name_to_scope"):  # prepare's order, not a hash order
        assert list(getattr(back, table)) == list(getattr(facts, table))


# --------------------------------------------------------------------------------------------------
# Arguments of any shape

Pair = collections.namedtuple("Pair", "first second")


@fx.wrap
def combine(mapping, items, pair, index):
    """A leaf function reading nested containers (FX records a call_function with the raw structure)."""
    total = mapping["k"][0] + items[0] + pair.first * pair.second
    return total[index]


class Nesting(nn.Module):
    def forward(self, x, y):
        n = x.size(0)
        a = x[..., 1:n]
        b = x[:, None, 0:2:1]
        c = torch.cat([a, a], dim=-1)
        d = x.to(torch.float64).to(dtype=torch.float32, device=torch.device("cpu"))
        e = y.contiguous(memory_format=torch.channels_last)
        f = torch.stack((x, x), 0).sum(dim=(0,), keepdim=False)
        g = combine({"k": [x, (y, None)], "s": [1, 2.5, "t"]}, [f, d], Pair(x, d), slice(0, n, None))
        h = torch.zeros(2, dtype=torch.int64, layout=torch.strided)
        i = x.new_full((2,), 1.5, requires_grad=False)
        return c, {"b": [b, (e, None)], "g": g, "n": n, "h": h}, i


def test_roundtrip_nested_args():
    gm = fx.symbolic_trace(Nesting())
    x = torch.randn(3, 4)
    y = torch.randn(2, 3, 4, 5)
    out = check_roundtrip(gm, (x, y), observed=False)
    assert "memory_format = torch.channels_last" in out.code
    assert "slice(0, size, None)" in out.code


def test_roundtrip_namedtuple_and_literal_args_built_by_hand():
    graph = fx.Graph()
    x = graph.placeholder("x")
    s = graph.call_method("size", (x, 0))
    pair = Pair(x, x)
    total = graph.call_function(combine, ({"k": [x]}, [x], pair, slice(None, s, None)))
    typed = graph.call_function(torch.ops.aten.add.Tensor, (total, x), {"alpha": 2})
    flat = graph.call_function(torch.flatten, (typed,), {"start_dim": 0, "end_dim": -1})
    graph.output({"out": flat, "pair": Pair(flat, None), "e": [Ellipsis, None, torch.float16]})
    gm = fx.GraphModule(nn.Module(), graph)
    program = lift(gm, observed=False)
    node = program.graph[total.name]
    assert type(node.args[2]).__name__ == "TupleArg" and node.args[2].kind is Pair
    # FX prints a namedtuple literal by its bare class name, which the generated code cannot resolve, so
    # neither module runs; everything else must still match
    out = check_roundtrip(gm, (), observed=False, run=False)
    assert "Pair(first=flatten, second=None)" in out.code


# --------------------------------------------------------------------------------------------------
# Module tables: shared and duplicate-named modules, nested paths


class SharedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a  # the same module under a second name
        self.inner = nn.Sequential(nn.ReLU(), self.a)

    def forward(self, x):
        return self.inner(self.b(self.a(x)))


def test_roundtrip_duplicate_named_module():
    model = SharedLinear().eval()
    traced = fx.symbolic_trace(model)
    # tracing names every call after the module's first name; make the graph use both names
    graph = copy.deepcopy(traced.graph)
    [n for n in graph.nodes if n.op == "call_module" and n.target == "a"][1].target = "b"
    gm = fx.GraphModule(model, graph)
    assert {n.target for n in gm.graph.nodes if n.op == "call_module"} >= {"a", "b"}
    assert gm.get_submodule("a") is gm.get_submodule("b")
    program = lift(gm, observed=False)
    assert program.modules["a"] is program.modules["b"]
    out = check_roundtrip(gm, (torch.randn(2, 4),), observed=False)
    assert out.get_submodule("a") is out.get_submodule("b")
    assert list(out.state_dict()) == list(gm.state_dict())


def test_roundtrip_same_observer_under_two_names():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)).eval()
    x = torch.randn(2, 4)
    observed = prepare_fx(model, get_default_qconfig_mapping("fbgemm"), (x,))
    observed(x)
    node = [n for n in observed.graph.nodes if n.op == "call_module" and "activation_post_process" in n.target][1]
    observer = node.target
    observed.add_module("alias_of_observer", observed.get_submodule(observer))
    graph = copy.deepcopy(observed.graph)
    output = graph.output_node()
    with graph.inserting_before(output):
        alias = graph.call_module("alias_of_observer", (graph.find_nodes(op="call_module", target=observer)[0].args[0],))
    output.args = ((output.args[0], alias),)
    gm = fx.GraphModule(observed, graph)
    gm.meta.update(observed.meta)
    assert OBSERVED_ATTRS_KEY in gm.meta
    program = lift(gm)
    assert program.modules["alias_of_observer"] is program.modules[observer]
    out = check_roundtrip(gm, (x,), observed=True)
    assert out.get_submodule("alias_of_observer") is out.get_submodule(observer)


def test_roundtrip_shared_modules_from_prepare():
    # an op whose output observer is shared with its input's (prepare registers it under two names)
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return torch.flatten(F.max_pool2d(y, 2), 1), y.transpose(2, 3)

    x = torch.randn(1, 2, 4, 4)
    observed = prepare_fx(M().eval(), get_default_qconfig_mapping("x86"), (x,))
    observed(x)
    every = list(observed.named_modules(remove_duplicate=False))
    assert len(every) > len(list(observed.named_modules())), "expected prepare to share an observer"
    check_roundtrip(observed, (x,), observed=True)


# --------------------------------------------------------------------------------------------------
# Non-module attributes


class Attributes(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.register_buffer("buf", torch.arange(4.0))
        self.sub = nn.Module()
        self.sub.deeper = nn.Module()
        self.sub.deeper.register_buffer("k", torch.full((4,), 3.0))
        self.sub.p = nn.Parameter(torch.ones(4))
        self.plain = torch.tensor([1.0, -1.0, 2.0, 0.5])  # neither parameter nor buffer

    def forward(self, x):
        y = F.linear(x, self.w) + self.buf
        return y * self.sub.deeper.k - self.sub.p + self.plain + UNNAMED


UNNAMED = torch.tensor([0.5, 0.25, 0.125, 1.0])  # reachable from no module: traced as _tensor_constant0


def test_roundtrip_non_module_attributes():
    gm = fx.symbolic_trace(Attributes())
    targets = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    assert set(targets) == {"w", "buf", "sub.deeper.k", "sub.p", "plain", "_tensor_constant0"}
    program = lift(gm, observed=False)
    assert set(program.attributes) == set(targets)
    assert program.attributes["sub.deeper.k"] is gm.sub.deeper.k
    out = check_roundtrip(gm, (torch.randn(2, 4),), observed=False)
    assert isinstance(out.w, nn.Parameter) and isinstance(out.sub.p, nn.Parameter)
    assert out.sub.deeper.k is gm.sub.deeper.k  # shared, never copied


def test_roundtrip_script_object_and_plain_attributes():
    w = torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(w, torch.zeros(4))
    root = nn.Module()
    root.packed = packed
    root.scale = 0.25
    root.qweight = w
    graph = fx.Graph()
    x = graph.placeholder("x")
    p = graph.get_attr("packed")
    s = graph.get_attr("scale")
    q = graph.get_attr("qweight")
    deq = graph.call_method("dequantize", (q,))
    y = graph.call_function(torch.nn.functional.linear, (x, deq))
    graph.output((graph.call_function(operator.mul, (y, s)), p))
    gm = fx.GraphModule(root, graph)
    program = lift(gm, observed=False)
    assert program.attributes["packed"] is packed and program.attributes["scale"] == 0.25
    # the packed weights are not an output we can compare bitwise; compare the models and the first output
    before = snapshot(gm)
    out = codegen(verify(program))
    assert_unchanged(before, gm)
    assert_same_model(gm, out)
    assert torch.equal(out(torch.ones(1, 4))[0], gm(torch.ones(1, 4))[0])


# --------------------------------------------------------------------------------------------------
# Signatures: defaults, annotations, concrete_args, pytree codegen


class Signature(nn.Module):
    def forward(self, x: torch.Tensor, scale: float = 2.0, *, bias: torch.Tensor | None = None) -> torch.Tensor:
        return x * scale


def test_roundtrip_placeholder_defaults_and_annotations():
    gm = fx.symbolic_trace(Signature())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert placeholders[0].type == "torch.Tensor" and placeholders[1].args == (2.0,)
    program = lift(gm, observed=False)
    assert program.graph[placeholders[1].name].args == (2.0,)
    out = check_roundtrip(gm, (torch.randn(3),), observed=False)
    assert "scale : " in out.code and "= 2.0" in out.code
    assert torch.equal(out(torch.ones(2), 3.0), gm(torch.ones(2), 3.0))


class Branchy(nn.Module):
    def forward(self, x, y=None, flag=True):
        if y is not None:
            x = x + y
        return x * 2 if flag else x


def test_roundtrip_concrete_args():
    gm = fx.symbolic_trace(Branchy(), concrete_args={"y": None, "flag": True})
    out = check_roundtrip(gm, (torch.randn(3),), observed=False)
    assert "_assert_is_none" in out.code


class DictInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, inputs):
        return {"sum": self.lin(inputs["a"]) + inputs["b"][0], "b1": inputs["b"][1]}


def test_roundtrip_pytree_codegen():
    gm = fx.symbolic_trace(DictInput(), concrete_args={"inputs": {"a": fx.PH, "b": [fx.PH, fx.PH]}})
    assert type(gm.graph._codegen).__name__ == "_PyTreeCodeGen"
    batch = {"a": torch.randn(3, 2), "b": [torch.randn(3, 2), torch.randn(1)]}
    out = check_roundtrip(gm, (batch,), observed=False)
    assert out.graph._codegen.pytree_info == gm.graph._codegen.pytree_info


def test_roundtrip_keeps_names_of_erased_nodes_taken():
    gm = fx.symbolic_trace(Attributes())
    relu = gm.graph.call_function(torch.relu, (next(iter(gm.graph.nodes)),))  # dead: erased below
    gm.graph.eliminate_dead_code()
    gm.recompile()
    assert relu.name not in {n.name for n in gm.graph.nodes}
    assert relu.name in gm.graph._graph_namespace._used_names
    out = check_roundtrip(gm, (torch.randn(2, 4),), observed=False)
    # a node added to either graph now gets the same fresh name
    assert out.graph.call_function(torch.relu, ()).name == gm.graph.call_function(torch.relu, ()).name == "relu_1"


def test_roundtrip_preserves_training_flag_and_class_name():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    for training in (True, False):
        gm = fx.symbolic_trace(model.train(training))
        out = codegen(lift(gm, observed=False))
        assert out.training is training
        assert type(out).__name__ == type(gm).__name__ == "Sequential"


def test_roundtrip_program_twice_gives_equal_models():
    gm = fx.symbolic_trace(Attributes())
    program = lift(gm, observed=False)
    one, two = codegen(program), codegen(program)
    assert one is not two
    assert_same_model(one, two)


# --------------------------------------------------------------------------------------------------
# lift rejects what prepare did not produce


def test_lift_rejects_traced_but_unobserved_model():
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(NotObservedModelError, match="prepare_fx") as info:
        lift(gm)
    assert isinstance(info.value, QfxError)
    assert OBSERVED_ATTRS_KEY in str(info.value)


@pytest.mark.parametrize("thing", [nn.Linear(2, 2), torch.randn(2), "model", None])
def test_lift_rejects_non_graph_modules(thing):
    with pytest.raises(NotObservedModelError, match="GraphModule") as info:
        lift(thing)
    assert type(thing).__name__ in str(info.value)
    with pytest.raises(NotObservedModelError):
        lift(thing, observed=False)


def test_lift_missing_attribute_is_a_lift_error():
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(operator.add, (x, graph.get_attr("nowhere"))))
    root = nn.Module()
    root.nowhere = torch.ones(1)
    gm = fx.GraphModule(root, graph)
    del gm.nowhere
    with pytest.raises(LiftError, match="nowhere"):
        lift(gm, observed=False)


def test_lift_of_a_module_outside_the_module_tables_is_a_lift_error():
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(operator.add, (x, graph.get_attr("hidden"))))
    gm = fx.GraphModule(nn.Module(), fx.Graph())
    gm.graph = graph
    object.__setattr__(gm, "hidden", nn.ReLU())  # an attribute, not a submodule
    with pytest.raises(LiftError, match="'hidden' is a module missing from named_modules"):
        lift(gm, observed=False)


def test_lift_keeps_observed_facts():
    x = torch.randn(2, 4)
    mapping = QConfigMapping().set_global(default_qconfig).set_module_name("1", None)
    observed = prepare_fx(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)).eval(), mapping, (x,))
    facts = observed.meta[OBSERVED_ATTRS_KEY]
    program = lift(observed)
    assert dict(program.quant.node_name_to_qconfig) == facts.node_name_to_qconfig
    assert set(program.quant.observed_node_names) == facts.observed_node_names
    assert program.quant.has_none_qconfig("_1")
    assert program.quant.is_qat is False


# --------------------------------------------------------------------------------------------------
# programs a pass built wrong: codegen names the problem instead of emitting wrong code


def _broken(edit) -> Program:
    program = lift(fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU())), observed=False)
    return program.with_nodes(edit(list(program.graph.nodes)))


@pytest.mark.parametrize("edit, problem", [
    (lambda nodes: nodes[:2] + nodes[1:], "two nodes are named '_0'"),
    (lambda nodes: nodes[:1] + nodes[2:], "node '_1' reads '_0', which no node before it defines"),
    (lambda nodes: [nodes[0], nodes[1].evolve(name="renamed"),
                    nodes[2].with_inputs_replaced({"_0": Ref("renamed")}), nodes[3]],
     "node names the program's namespace never handed out: renamed"),
])
def test_codegen_refuses_a_malformed_program_naming_the_problem(edit, problem) -> None:
    from qfx.ir.errors import VerificationError

    with pytest.raises(VerificationError, match=re.escape(problem) + ".*run the pipeline with the Verify instrument"):
        codegen(_broken(edit))


def test_rebuilding_keeps_the_roots_state_dict_hooks_and_plain_attributes() -> None:
    """A lowered model that folds F.linear's weights keeps its packed weights in the state_dict through hooks
    on the root; rebuilding it (as saving it does) keeps the hooks, and what was set on the root."""
    import warnings

    import qfx

    class FunctionalLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w, self.b = nn.Parameter(torch.randn(6, 8)), nn.Parameter(torch.randn(6))

        def forward(self, x):
            return F.linear(x, self.w, self.b)

    torch.manual_seed(0)
    x = torch.randn(3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(FunctionalLinear().eval(), get_default_qconfig_mapping("x86"), (x,))
        observed(x)
        lowered = qfx.convert_fx(observed)
    lowered.note = {"owner": "me"}
    lowered.register_state_dict_post_hook(lambda module, state, prefix, local: state.__setitem__("extra", 1))
    seen = []
    lowered._register_load_state_dict_pre_hook(lambda state, prefix, *rest: seen.append(prefix))  # (no module)
    rebuilt = codegen(lift(lowered, observed=False))
    assert list(rebuilt.state_dict()) == list(lowered.state_dict()) and "_packed_weight_0" in rebuilt.state_dict()
    assert rebuilt.state_dict()["extra"] == 1  # (a hook registered through the public API, as torch keeps it)
    assert rebuilt.note == lowered.note and rebuilt.note is not lowered.note
    state = lowered.state_dict()
    del state["extra"]
    rebuilt.load_state_dict(state)
    assert seen == [""]
    assert_same_outputs(rebuilt, lowered, x)
