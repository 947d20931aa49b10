"""The pass manager: text pipelines, instruments, failures, and the purity of every registered pass."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import given, settings

from tests.conftest import INPUT_UNCHANGED, PassMutatedInputError
from qfx.ir import PassError, PipelineSpecError, QfxError, VerificationError, lift
from qfx.passes import REGISTRY, DumpIR, Pass, Pipeline, PrintIR, Timing, get_pass, register
from qfx.passes.pipelines import REFERENCE_PIPELINE
from qfx.api import convert_options
from tests.support.snapshot import (
    assert_program_unchanged, assert_same_model, assert_unchanged, diff_values, freeze_value, snapshot,
    snapshot_program,
)
from qfx.testing.strategies import examples, observed_models


class DeadEnds(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        unused = torch.sigmoid(x)  # noqa: F841 - dead on purpose
        y = self.lin(x)
        also_unused = y * 2  # noqa: F841
        return y.relu()


@pytest.fixture
def program():
    return lift(fx.symbolic_trace(DeadEnds()), observed=False)


def _identity(name: str = "identity") -> Pass:
    return Pass(name, lambda p: p)


# --------------------------------------------------------------------------------------------------
# text pipelines


def test_parse_builds_pipeline_of_registered_passes():
    pipeline = Pipeline.parse(" dce ,dce")
    assert pipeline.names == ("dce", "dce")
    assert pipeline.passes[0] is REGISTRY["dce"] is get_pass("dce")


def test_reference_pipeline_names_only_registered_passes():
    assert Pipeline.parse(REFERENCE_PIPELINE).names == tuple(REFERENCE_PIPELINE.split(","))


def test_unknown_pass_names_it_and_lists_known_ones():
    with pytest.raises(PipelineSpecError, match="unknown pass 'no-such-pass'") as info:
        Pipeline.parse("dce,no-such-pass")
    assert isinstance(info.value, ValueError)
    assert "dce" in str(info.value).split("known passes:")[1]


@pytest.mark.parametrize("spec", ["", "  ", "dce,", ",dce", "dce,,dce"])
def test_malformed_spec(spec):
    with pytest.raises(PipelineSpecError, match="malformed pipeline spec"):
        Pipeline.parse(spec)


def test_register_refuses_duplicate_names():
    with pytest.raises(QfxError, match="'dce' is already registered"):
        register("dce")(lambda p: p)


def test_pipelines_compose(program):
    extra = Pipeline.parse("dce") + [_identity()]
    assert extra.names == ("dce", "identity")
    assert (Pipeline.parse("dce") + Pipeline.parse("dce")).names == ("dce", "dce")
    assert len(extra.run(program).graph) < len(program.graph)


# --------------------------------------------------------------------------------------------------
# instruments


def test_timing_records_every_pass(program):
    timing = Timing()
    result = (Pipeline.parse("dce") + [_identity()]).run(program, [timing])
    assert [r.name for r in timing.records] == ["dce", "identity"]
    assert timing.records[0].nodes_before == len(program.graph)
    assert timing.records[0].nodes_after == len(result.graph) == timing.records[1].nodes_before
    assert all(r.seconds >= 0 for r in timing.records)
    table = timing.table()
    assert "dce" in table and "identity" in table and "total" in table


def test_print_ir_after_each_pass(program):
    stream = io.StringIO()
    (Pipeline.parse("dce") + [_identity()]).run(program, [PrintIR(stream)])
    text = stream.getvalue()
    assert text.count("// ----- IR after") == 2
    assert "IR after dce" in text and "IR after identity" in text
    assert "sigmoid" not in text  # printed after dce removed it


def test_print_ir_only_changes(program):
    stream = io.StringIO()
    (Pipeline.parse("dce") + [_identity()]).run(program, [PrintIR(stream, only_changes=True)])
    assert "IR after dce" in stream.getvalue() and "IR after identity" not in stream.getvalue()


def test_print_ir_only_changes_sees_a_swapped_module():
    traced = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    swap = Pass("relu6", lambda p: p.with_modules({"1": nn.ReLU6()}))
    stream = io.StringIO()
    Pipeline([swap]).run(lift(traced, observed=False), [PrintIR(stream, only_changes=True)])
    assert "IR after relu6" in stream.getvalue() and "ReLU6" in stream.getvalue()


def test_a_users_pass_failing_at_a_node_is_named_with_it(program):
    def index_args(p):
        for node in p.graph.nodes:
            if node.op == "call_function":
                node.args[7]  # (no call here has 8 arguments)
        return p

    with pytest.raises(PassError) as info:
        Pipeline([Pass("index-args", index_args)]).run(program)
    first_call = next(n.name for n in program.graph.nodes if n.op == "call_function")
    assert info.value.node == first_call and f"failed at node '{first_call}'" in str(info.value)


def test_dump_ir_writes_numbered_files(program, tmp_path):
    out = tmp_path / "dumps"
    (Pipeline.parse("dce") + [_identity()]).run(program, [DumpIR(out)])
    files = sorted(p.name for p in out.iterdir())
    assert files == ["00-input.ir", "01-dce.ir", "02-identity.ir"]
    assert "sigmoid" in (out / "00-input.ir").read_text()
    assert "sigmoid" not in (out / "01-dce.ir").read_text()


def test_dump_ir_records_failures(program, tmp_path):
    def boom(p):
        raise ValueError("kaboom")

    with pytest.raises(PassError):
        (Pipeline.parse("dce") + [Pass("boom", boom)]).run(program, [DumpIR(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00-input.ir", "01-dce.ir", "02-boom.FAILED.txt"]
    assert "kaboom" in (tmp_path / "02-boom.FAILED.txt").read_text()


# --------------------------------------------------------------------------------------------------
# failures


def test_failing_pass_names_itself_and_keeps_last_good(program):
    def boom(p):
        raise KeyError("the-missing-thing")

    pipeline = Pipeline.parse("dce") + [_identity(), Pass("boom", boom), _identity("never")]
    with pytest.raises(PassError) as info:
        pipeline.run(program)
    err = info.value
    assert err.pass_name == "boom"
    assert err.ran == ("dce", "identity")
    assert "pass 'boom' failed" in str(err) and "the-missing-thing" in str(err)
    assert "passes already run: dce, identity" in str(err)
    assert str(err).endswith("; the pass 'boom' is not one of qfx's: fix it, or leave it out of the pipeline")
    assert isinstance(err.__cause__, KeyError)
    assert err.last_good == Pipeline.parse("dce").run(program)
    assert "sigmoid" not in err.last_good.graph.by_name


@pytest.mark.parametrize("cause", [KeyError("gone"), ValueError("bad"), OSError("disk"), QfxError("own words")])
def test_pass_errors_pickle_without_the_last_good_program(program, cause):
    """A PassError sent back from a worker process arrives as the same kind of error, with its message,
    pass, node and the passes that ran; the last good program stays behind."""
    def boom(p):
        raise cause

    with pytest.raises(PassError) as info:
        (Pipeline.parse("dce") + [Pass("boom", boom)]).run(program)
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is type(info.value)
    assert isinstance(clone, type(cause)) == isinstance(info.value, type(cause))  # mirrored builtin types
    assert (str(clone), clone.pass_name, clone.ran, clone.node, clone.module) == (
        str(info.value), "boom", ("dce",), info.value.node, info.value.module)
    assert clone.last_good is None


def test_verification_errors_pickle_with_their_problems():
    error = VerificationError(["node 'a' reads 'b', defined nowhere", "two outputs"], "after pass 'x'")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is VerificationError and str(clone) == str(error) and clone.problems == error.problems


def test_first_pass_failure_lists_none(program):
    with pytest.raises(PassError, match=r"passes already run: none") as info:
        Pipeline([Pass("boom", lambda p: 1 / 0)]).run(program)
    assert info.value.last_good is program and info.value.ran == ()


def test_a_pass_error_in_qfx_own_words_gives_no_further_advice(program):
    def refuse(p):
        raise QfxError("the node 'x' cannot be converted; do this instead")

    with pytest.raises(PassError) as info:
        Pipeline([Pass("refuse", refuse)]).run(program)
    assert str(info.value).endswith("do this instead (passes already run: none)") and info.value.advice == ""


def test_pass_returning_something_else(program):
    with pytest.raises(PassError, match="pass 'bad' failed: returned dict, not a Program"):
        Pipeline([Pass("bad", lambda p: {})]).run(program)


def test_verifier_runs_after_every_pass(program):
    def duplicate(p):
        nodes = list(p.graph.nodes)
        return p.with_nodes(nodes[:1] + nodes)

    with pytest.raises(PassError, match="duplicate name") as info:
        Pipeline([_identity(), Pass("duplicate", duplicate)]).run(program)
    assert isinstance(info.value.__cause__, VerificationError)
    assert "after pass 'duplicate'" in str(info.value)


def test_verifier_checks_the_first_input(program):
    broken = program.with_nodes(list(program.graph.nodes)[1:])  # the placeholder is gone
    with pytest.raises(PassError, match="before pass 'identity'"):
        Pipeline([_identity()]).run(broken)


# --------------------------------------------------------------------------------------------------
# the purity instrument (installed for every test by conftest)


def _mutating(name, mutate):
    def run(p):
        mutate(p)
        return p.evolve()

    return Pass(name, run)


def test_purity_instrument_catches_weight_edit(program):
    weight = program.modules["lin"].weight
    original = weight.detach().clone()
    try:
        with pytest.raises(PassError, match=r"input of pass 'scale-weight' was modified") as info:
            Pipeline([_mutating("scale-weight", lambda p: p.modules["lin"].weight.data.mul_(2))]).run(program)
        assert "module 'lin'" in str(info.value) and "weight" in str(info.value)
        assert isinstance(info.value.__cause__, PassMutatedInputError)
    finally:
        weight.data.copy_(original)


def test_purity_instrument_catches_setattr_on_module(program):
    lin = program.modules["lin"]
    with pytest.raises(PassError, match="was modified"):
        Pipeline([_mutating("swap-child", lambda p: setattr(p.modules["lin"], "qconfig", object()))]).run(program)
    del lin.qconfig


def test_purity_instrument_catches_observer_state_and_attribute_edits():
    from torch.ao.quantization import default_qconfig, QConfigMapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    x = torch.randn(2, 3)
    observed = prepare_fx(DeadEnds().eval(), QConfigMapping().set_global(default_qconfig), (x,))
    observed(x)
    program = lift(observed)
    name = next(k for k in program.modules if k.startswith("activation_post_process"))

    def run_observer(p):
        p.modules[name](torch.full((2, 3), 100.0))  # running an observer moves its max_val

    with pytest.raises(PassError, match=rf"module '{name}'.*max_val"):
        Pipeline([_mutating("calibrate", run_observer)]).run(program)

    def edit_mapping(p):
        p.quant.qconfig_mapping.object_type_qconfigs[nn.Linear] = None

    with pytest.raises(PassError, match="quant facts/options"):
        Pipeline([_mutating("edit-mapping", edit_mapping)]).run(program)

    def edit_preserved(p):
        p.root.meta["_user_preserved_attributes"]["sneaky"] = 1

    with pytest.raises(PassError, match="root meta"):
        Pipeline([_mutating("edit-meta", edit_preserved)]).run(program)


def test_purity_instrument_catches_table_and_graph_edits(program):
    def swap_table_entry(p):
        object.__setattr__(p, "modules", {**p.modules, "lin": nn.Linear(3, 3)})

    with pytest.raises(PassError, match="module table changed"):
        Pipeline([_mutating("sneaky", swap_table_entry)]).run(program.evolve())

    def attribute_edit(p):
        p.attributes["_tensor_constant0"].add_(1)

    gm = fx.symbolic_trace(_WithConstant())
    constant = lift(gm, observed=False)
    with pytest.raises(PassError, match="attribute '_tensor_constant0'"):
        Pipeline([_mutating("bump", attribute_edit)]).run(constant)


CONSTANT = torch.tensor([1.0, 2.0])


class _WithConstant(nn.Module):
    def forward(self, x):
        return x + CONSTANT


def test_purity_instrument_counts_checks(program):
    before = INPUT_UNCHANGED.checked
    Pipeline.parse("dce,dce").run(program)
    assert INPUT_UNCHANGED.checked == before + 2


@settings(max_examples=examples(6))
@given(observed_models())
def test_every_registered_pass_leaves_its_input_unchanged(model_and_inputs):
    """Run each registered pass on its own, and the reference pipeline, on observed programs.

    A pass may refuse the input (a qfx error, e.g. not implemented yet or needs an earlier pass); it must
    still leave it unchanged. The conftest instrument checks each run, on success and on failure."""
    observed, _ = model_and_inputs
    before = snapshot(observed)
    options = convert_options(is_reference=True, convert_custom_config=None)
    program = lift(observed, options=options)
    program_before = snapshot_program(program)
    for name in sorted(REGISTRY):
        checked = INPUT_UNCHANGED.checked
        try:
            Pipeline.parse(name).run(program)
        except PassError as exc:
            assert isinstance(exc.__cause__, QfxError), f"pass '{name}' crashed: {exc!r}"
        assert INPUT_UNCHANGED.checked == checked + 1
    try:
        Pipeline.parse(REFERENCE_PIPELINE).run(program)
    except PassError as exc:
        assert isinstance(exc.__cause__, QfxError), f"pass '{exc.pass_name}' crashed: {exc!r}"
    assert_program_unchanged(program_before, program)
    assert_unchanged(before, observed)


# --------------------------------------------------------------------------------------------------
# the snapshot helpers themselves


@pytest.mark.parametrize("mutate, expected", [
    (lambda m: m[0].weight.data.add_(1e-7), r"state_dict\['0.weight'\]"),
    (lambda m: m[1].running_mean.add_(1), "running_mean"),
    (lambda m: setattr(m[1], "momentum", 0.5), "momentum"),
    (lambda m: m[0].register_buffer("extra", torch.zeros(1)), "extra"),
    (lambda m: m[0].weight.requires_grad_(False), "requires_grad"),
    (lambda m: m.train(False), "training"),
    (lambda m: m.add_module("2", nn.ReLU()), "module tree"),
    (lambda m: m[1].register_forward_hook(lambda *a: None), "_forward_hooks"),
])
def test_snapshot_detects_changes(mutate, expected):
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    snap = snapshot(model)
    assert_unchanged(snap, model)
    mutate(model)
    with pytest.raises(AssertionError, match=expected):
        assert_unchanged(snap, model)


def test_snapshot_detects_graph_edits_without_recompile():
    gm = fx.symbolic_trace(DeadEnds())
    snap = snapshot(gm)
    node = next(n for n in gm.graph.nodes if n.op == "call_method")
    node.target = "sigmoid"  # the code is stale but the graph changed
    with pytest.raises(AssertionError, match="graph differs"):
        assert_unchanged(snap, gm)


def test_value_comparison_is_bitwise():
    nan = torch.tensor([float("nan"), 1.0])
    assert diff_values(nan, nan.clone()) == []
    assert diff_values(torch.tensor([0.0]), torch.tensor([-0.0])) != []
    assert diff_values(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64)) != []
    assert diff_values(0.1, 0.1) == [] and diff_values(0.0, -0.0) != [] and diff_values(1, True) != []
    q1 = torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.1, 2, torch.quint8)
    q2 = torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.1, 3, torch.quint8)
    assert diff_values(q1, q1.clone()) == []
    assert any("q_zero_point" in p for p in diff_values(q1, q2))
    pc = torch.quantize_per_channel(torch.ones(2, 2), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.qint8)
    pc2 = torch.quantize_per_channel(torch.ones(2, 2), torch.tensor([0.1, 0.3]), torch.tensor([0, 1]), 0, torch.qint8)
    assert diff_values(pc, pc.clone()) == [] and any("scales" in p for p in diff_values(pc, pc2))
    assert diff_values({"a": 1, "b": 2}, {"b": 2, "a": 1}) != []  # order matters
    assert diff_values((1, [2, {"k": nan}]), (1, [2, {"k": nan.clone()}])) == []


def test_script_objects_compare_by_state():
    w = torch.quantize_per_tensor(torch.randn(2, 2), 0.1, 0, torch.qint8)
    one = torch.ops.quantized.linear_prepack(w, None)
    two = torch.ops.quantized.linear_prepack(w.clone(), None)
    other = torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(torch.randn(2, 2), 0.2, 0, torch.qint8), None)
    assert diff_values(one, two) == []
    assert diff_values(one, other) != []
    frozen = freeze_value(one)
    assert diff_values(frozen, freeze_value(two)) == []


def test_assert_same_model_reports_differences():
    a = fx.symbolic_trace(DeadEnds())
    b = fx.symbolic_trace(DeadEnds())
    with pytest.raises(AssertionError, match=r"state_dict\['lin.weight'\]: values differ"):
        assert_same_model(a, b)
    b.load_state_dict(a.state_dict())
    assert_same_model(a, b)
    b.lin.register_buffer("extra", torch.zeros(1))
    with pytest.raises(AssertionError, match="state_dict keys"):
        assert_same_model(a, b)
    c = fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(AssertionError, match="code differs"):
        assert_same_model(a, c)


def test_assert_same_outputs_is_bitwise_and_isolated():
    from tests.support.snapshot import assert_same_outputs

    a = nn.Linear(2, 2)
    b = nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 2)
    assert_same_outputs(a, b, x)
    with torch.no_grad():
        b.bias[0] += 1e-6
    with pytest.raises(AssertionError, match="output: values differ"):
        assert_same_outputs(a, b, x)
    bn = nn.BatchNorm1d(2).train()
    before = bn.running_mean.clone()
    assert_same_outputs(bn, bn, x)  # each run starts from the same state, on a copy
    assert torch.equal(bn.running_mean, before)
    tuple_out = fx.symbolic_trace(_Pairs())
    assert_same_outputs(tuple_out, tuple_out, x)


class _Pairs(nn.Module):
    def forward(self, x):
        return x, {"k": [x * 2, (x.sum(), None)]}


# --------------------------------------------------------------------------------------------------
# misuse of the pass API: typed errors, nothing registered or half-run


@pytest.mark.parametrize("name", [None, 5, "", " padded", "with,comma", "new\nline", "a b", "tab\t",
                                  "dce#2", "dir/name", "bell\x07"])
def test_register_refuses_names_text_pipelines_cannot_spell(name):
    before = dict(REGISTRY)
    with pytest.raises(QfxError, match="cannot register a pass named"):
        register(name)(lambda p: p)
    assert REGISTRY == before
    with pytest.raises(PipelineSpecError, match="unknown pass 'no-such'"):
        get_pass("no-such")


def test_register_replaces_a_pass_only_when_asked():
    first = register("replaceable-pass")(lambda p: p)
    try:
        with pytest.raises(QfxError, match=r"already registered \(register\(name, replace=True\) replaces it\)"):
            register("replaceable-pass")(lambda p: p)
        second = register("replaceable-pass", replace=True)(lambda p: p.evolve())
        assert get_pass("replaceable-pass") is second and second is not first
    finally:
        REGISTRY.pop("replaceable-pass", None)


def test_register_refuses_what_is_not_a_function():
    with pytest.raises(QfxError, match="a pass is a function Program -> Program"):
        register("not-callable-pass")(42)
    assert "not-callable-pass" not in REGISTRY


@pytest.mark.parametrize("make", [
    lambda: Pipeline.parse(None),
    lambda: Pipeline.parse(["dce"]),
    lambda: Pipeline(["dce"]),
    lambda: Pipeline.parse("dce") + "cleanup",
    lambda: Pipeline.parse("dce") + [lambda p: p],
])
def test_pipelines_hold_passes_only(make):
    with pytest.raises(PipelineSpecError):
        make()


def test_a_failing_instrument_is_named_and_not_blamed_on_the_pass(program, tmp_path):
    from qfx.passes.manager import InstrumentError

    with pytest.raises(InstrumentError, match=r"instrument PrintIR failed after pass 'identity': TypeError"):
        Pipeline([_identity()]).run(program, [PrintIR(io.BytesIO())])
    with pytest.raises(QfxError, match="Pipeline.run takes a Program"):
        Pipeline([_identity()]).run(fx.symbolic_trace(DeadEnds()))
    with pytest.raises(QfxError, match="instruments must be a list or tuple"):
        Pipeline([_identity()]).run(program, 5)


def test_an_instrument_failing_on_a_failure_leaves_the_pass_error_in_charge(program, tmp_path):
    class Broken(Timing):
        def after_failure(self, index, p, program, error):
            raise OSError("disk full")

    def boom(p):
        raise ValueError("the pass's own failure")

    with pytest.raises(PassError, match=r"the pass's own failure \(and instrument Broken failed on it: OSError"):
        Pipeline([Pass("boom", boom)]).run(program, [Broken()])


def test_dump_ir_writes_any_pass_name_into_its_directory(program, tmp_path):
    Pipeline([_identity("mine/v2")]).run(program, [DumpIR(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00-input.ir", "01-mine_v2.ir"]
    with pytest.raises(QfxError, match="DumpIR takes a directory path"):
        DumpIR(None)


def test_copies_of_a_pass_error_keep_the_last_good_program(program):
    import copy

    with pytest.raises(PassError) as info:
        Pipeline([Pass("boom", lambda p: {}["missing"])]).run(program)
    for clone in (copy.copy(info.value), copy.deepcopy(info.value)):
        assert type(clone) is type(info.value) and str(clone) == str(info.value)
        assert clone.last_good is not None and clone.last_good.graph == info.value.last_good.graph
