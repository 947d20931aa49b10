"""qfx.testing: the checks catch what they claim to (impure, non-idempotent, different from torch), and a
user's own pass file, property-tested with qfx.testing strategies, runs under pytest (subprocess)."""

from __future__ import annotations

import contextlib
import copy
import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings

import qfx
from qfx.api import convert_options
from qfx.demo_model import example_inputs, observed_demo_model
from qfx.ir.lift import lift
from qfx.ir.program import Program
from qfx.passes.manager import get_pass
from qfx.testing import assert_idempotent, assert_pure, assert_same_as_torch, examples, programs

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def program() -> Program:
    return lift(observed_demo_model(), options=convert_options(is_reference=True, convert_custom_config=None))


def test_assert_pure_accepts_a_pure_pass_and_returns_its_result(program: Program) -> None:
    result = assert_pure(get_pass("dce"), program)
    assert isinstance(result, Program)


def test_assert_pure_catches_a_pass_that_mutates_a_module(program: Program) -> None:
    def bump_bias(p: Program) -> Program:
        with torch.no_grad():
            p.module("query").bias.add_(1.0)
        return p

    fresh = lift(observed_demo_model(), options=program.options)
    with pytest.raises(AssertionError, match="mutated its input program: module/tensor state"):
        assert_pure(bump_bias, fresh)


def _set(path: str, name: str, value: object):
    return lambda p: setattr(p.module(path), name, value)


MUTATIONS = {
    "observer-dtype": (_set("activation_post_process_0", "dtype", torch.qint32), "module/tensor state"),
    "observer-quant-max": (_set("activation_post_process_0", "quant_max", 7), "module/tensor state"),
    "qconfig": (_set("query", "qconfig", None), "module/tensor state"),
    "training": (lambda p: p.module("query").train(not p.module("query").training), "module/tensor state"),
    "parameter-replaced": (lambda p: setattr(p.module("query"), "bias", torch.nn.Parameter(
        p.module("query").bias.detach().clone())), "module/tensor state"),
    "requires-grad": (lambda p: p.module("query").weight.requires_grad_(False), "module/tensor state"),
    "hook": (lambda p: p.module("query").register_forward_hook(lambda *a: None), "module/tensor state"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_assert_pure_catches_every_kind_of_module_edit(name: str) -> None:
    mutate, what = MUTATIONS[name]

    def mutating(p: Program) -> Program:
        mutate(p)
        return p

    fresh = lift(observed_demo_model(), options=convert_options(is_reference=True, convert_custom_config=None))
    with pytest.raises(AssertionError, match=f"mutated its input program: {what}"):
        assert_pure(mutating, fresh)


@pytest.mark.parametrize("edit, what", [
    (lambda p: p.quant.prepare_custom_config.set_non_traceable_module_names(["x"]),
     "quant facts ('prepare_custom_config')"),
    (lambda p: p.options.backend_config.set_name("edited"), "options ('backend_config')"),
])
def test_assert_pure_catches_edits_of_the_configs_the_program_holds(edit, what: str) -> None:
    """The quant facts and options are immutable records, but the torch configs they hold are not (the
    observed model's own, and the backend config every convert shares)."""
    import attrs

    from qfx.ir.program import native_backend_config

    options = convert_options(is_reference=True, convert_custom_config=None)
    options = attrs.evolve(options, backend_config=copy.deepcopy(native_backend_config()))  # (a private one)
    fresh = lift(observed_demo_model(), options=options)

    def editing(p: Program) -> Program:
        edit(p)
        return p

    with pytest.raises(AssertionError, match=re.escape(f"mutated its input program: {what} changed; a pass must")):
        assert_pure(editing, fresh)


def test_check_purity_watches_every_pass_of_a_pipeline(program: Program, monkeypatch: pytest.MonkeyPatch) -> None:
    from qfx.ir.errors import PassError
    from qfx.passes import manager
    from qfx.passes.manager import Pass, Pipeline

    monkeypatch.setattr(manager, "GLOBAL_INSTRUMENTS", [])  # (the suite's own purity check would answer first)
    from qfx.passes.pipelines import reference_pipeline
    from qfx.testing import CheckPurity

    reference_pipeline().run(program, [CheckPurity()])  # qfx's own passes: pure

    def bump_bias(p: Program) -> Program:
        with torch.no_grad():
            p.module("query").bias.add_(1.0)
        return p

    fresh = lift(observed_demo_model(), options=program.options)
    with pytest.raises(PassError, match=r"pass 'bump-bias' failed: .*mutated its input program: module/tensor "
                                        r"state \('query'\) changed") as info:
        Pipeline([get_pass("dce"), Pass("bump-bias", bump_bias)]).run(fresh, [CheckPurity()])
    assert isinstance(info.value, AssertionError) and info.value.ran == ("dce",)


def test_assert_pure_catches_an_edited_node_meta() -> None:
    fresh = lift(observed_demo_model(), options=convert_options(is_reference=True, convert_custom_config=None))
    node, key = next((n, k) for n in fresh.graph.nodes for k, v in n.meta.items() if isinstance(v, dict) and v)

    def edit_meta(p: Program) -> Program:
        p.graph[node.name].meta[key].clear()
        return p

    with pytest.raises(AssertionError, match="mutated its input program: node meta"):
        assert_pure(edit_meta, fresh)


def test_assert_idempotent_compares_the_tensors_too(program: Program) -> None:
    def double_constants(p: Program) -> Program:
        return p.evolve(attributes={k: v * 2 if isinstance(v, torch.Tensor) else v for k, v in p.attributes.items()})

    with pytest.raises(AssertionError, match="not idempotent"):
        assert_idempotent(double_constants, program.evolve(attributes={"c": torch.ones(2)}))


def test_model_specs_need_a_step() -> None:
    from qfx.testing.strategies import model_specs

    with pytest.raises(ValueError, match="min_steps"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (.example() is for interactive use; it draws once here)
        model_specs(min_steps=0, max_steps=0).example()


def test_assert_idempotent(program: Program) -> None:
    assert_idempotent(get_pass("dce"), program)

    def fresh_copy(p: Program) -> Program:
        return p.with_modules({"query": copy.deepcopy(p.module("query"))})

    with pytest.raises(AssertionError, match="not idempotent"):
        assert_idempotent(fresh_copy, program)


def test_assert_same_as_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    observed = observed_demo_model()
    result = assert_same_as_torch(observed, is_reference=True, example_inputs=example_inputs())
    assert "quantize_per_tensor" in result.code
    real = qfx.convert_to_reference_fx

    def off_by_one(model: torch.fx.GraphModule, **kwargs: object) -> torch.fx.GraphModule:
        out = real(model, **kwargs)
        out.query.bias = torch.nn.Parameter(out.query.bias.detach() + 1.0)  # the bias tensor is shared: replace it
        return out

    monkeypatch.setattr(qfx, "convert_to_reference_fx", off_by_one)
    with pytest.raises(AssertionError, match="differs from torch's convert_to_reference_fx: state_dict values"):
        assert_same_as_torch(observed, is_reference=True)


class _DeadBranches(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _ = x * 3  # dead: a node 'mul' the user's dead-code elimination erases
        return self.conv(x) * 2


@pytest.mark.parametrize("kwargs", [{}, {"is_reference": True}, {"is_decomposed": True}])
def test_assert_same_as_torch_after_the_users_dead_code_elimination(kwargs: dict) -> None:
    """torch converts a copy, whose name space a deepcopy rebuilds from the nodes left: the check gives it a
    copy that still counts the erased names as used, as converting the model itself does."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    x = torch.randn(2, 3, 6, 6)
    observed = prepare_fx(_DeadBranches().eval(), get_default_qconfig_mapping("x86"), (x,))
    observed(x)
    observed.graph.eliminate_dead_code()
    observed.recompile()
    result = assert_same_as_torch(observed, example_inputs=(x,), **kwargs)
    assert "mul = " not in result.code  # (the erased name stays taken)


def test_the_copy_for_torch_lists_users_in_the_models_order() -> None:
    """A deepcopy lists every node's users in graph order; the copy torch converts keeps the model's order
    (which prepare leaves otherwise where it set a node's arguments again), which torch's convert reads."""
    from qfx.compare import copy_for_torch

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a, b = graph.call_function(torch.neg, (x,)), graph.call_function(torch.abs, (x,))
    graph.output((a, b))
    a.args = a.args  # x's users: abs_1, neg
    model = torch.fx.GraphModule(torch.nn.Module(), graph)
    assert [u.name for u in copy.deepcopy(model).graph.find_nodes(op="placeholder")[0].users] == ["neg", "abs_1"]
    assert [u.name for u in copy_for_torch(model).graph.find_nodes(op="placeholder")[0].users] == ["abs_1", "neg"]


@settings(max_examples=examples(5), deadline=None)
@given(programs())
def test_cleanup_is_pure_on_random_programs(program: Program) -> None:
    assert_pure(get_pass("cleanup"), program)


@settings(max_examples=examples(6), deadline=None)
@given(programs(mode="lowered", after="dce"))
def test_programs_after_a_pass_are_what_the_next_pass_gets(program: Program) -> None:
    """`after="dce"` in lowered mode: the program the lowering passes get (lowered options, observers
    replaced by quantize/dequantize), on which a lowering pass is pure."""
    assert not program.options.is_reference and program.quant is not None
    observers = [n.target for n in program.graph.nodes
                 if n.op == "call_module" and "activation_post_process" in n.target]
    assert not observers
    assert_pure(get_pass("lower-static-modules"), program)


@settings(max_examples=examples(8), deadline=None)
@given(programs(mode="decomposed", after="any"))
def test_programs_at_any_point_of_the_pipeline(program: Program) -> None:
    """`after="any"`: somewhere along the decomposed pipeline (its options kept), and the rest of the
    pipeline's passes still run on it (cleanup, its last, is pure and idempotent wherever it is met)."""
    assert program.options.is_decomposed and program.options.is_reference
    assert_idempotent(get_pass("cleanup"), assert_pure(get_pass("cleanup"), program))


@pytest.mark.parametrize(("after", "last_two"), [("dce#3", ["fold-weights", "dce"]),
                                                 ("dce", ["insert-qdq", "dce"]),
                                                 ("swap-modules", ["observe-weights", "swap-modules"])])
def test_programs_runs_the_prefix_it_names(after: str, last_two: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefix run ends with the named run of the pass (dce#3: the third dce, after weight folding)."""
    from hypothesis import find

    from qfx.passes.manager import Pipeline

    ran: list[tuple[str, ...]] = []
    run = Pipeline.run

    def spy(self: Pipeline, program: Program, instruments: tuple = ()) -> Program:
        ran.append(self.names)
        return run(self, program, instruments)

    monkeypatch.setattr(Pipeline, "run", spy)
    find(programs(mode="lowered", after=after), lambda p: True)
    assert ran and all(list(names[-2:]) == last_two for names in ran)
    assert ran[0][0] == "apply-qconfig-mapping"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"after": "nope"}, "programs(after='nope'): not a pass of the reference pipeline; use one of: "
                        "apply-qconfig-mapping"),
    ({"mode": "lowered", "after": "dce#4"}, "the lowered pipeline runs dce 3 times; use dce#1 or dce#2 or dce#3"),
    ({"mode": "lowered", "after": "lower-binary-ops#2"}, "runs lower-binary-ops once; use lower-binary-ops#1"),
    ({"mode": "fast"}, "unknown convert mode 'fast'; the modes are reference, decomposed, lowered"),
])
def test_programs_refuses_an_unknown_pass_or_mode_at_once(kwargs: dict, message: str) -> None:
    from qfx.ir.errors import PipelineSpecError

    with pytest.raises(PipelineSpecError, match=re.escape(message)):
        programs(**kwargs)


def readme_block(marker: str) -> str:
    """The python code block of README.md that follows the line containing `marker`."""
    text = README.read_text()
    start = text.index("```python", text.index(marker)) + len("```python")
    return text[start:text.index("```", start)]


def test_the_readme_pass_example_runs_under_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_my_pass.py").write_text(readme_block("property-test it"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_pass.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize("kwargs", [{}, {"is_reference": True}])
def test_assert_same_as_torch_with_an_attribute_set_after_prepare(kwargs: dict) -> None:
    """An attribute the user set on the observed model after prepare and asks convert to preserve: torch
    converting the model itself keeps it, as qfx does; a GraphModule's deepcopy drops it, so the check's
    copy for torch carries it over. An attribute only one result has is reported."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_fx

    from qfx.compare import differences

    x = torch.randn(2, 3, 6, 6)
    observed = prepare_fx(_DeadBranches().eval(), get_default_qconfig_mapping("x86"), (x,))
    observed(x)
    observed.new_attr = [1, 2]
    config = ConvertCustomConfig().set_preserved_attributes(["new_attr"])
    result = assert_same_as_torch(observed, example_inputs=(x,), convert_custom_config=config, **kwargs)
    assert result.new_attr == [1, 2]
    other = copy.deepcopy(result)
    assert differences(result, other, None) == []
    other.conv.extra = 1
    assert any("attributes differ on 'conv'" in found for found in differences(result, other, None))


def _observed_video(engine: str) -> tuple[torch.fx.GraphModule, tuple]:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 5, 5)
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.ReLU()).eval()
    observed = prepare_fx(model, get_default_qconfig_mapping(engine), (x,))
    observed(x)
    return observed, (x,)


def test_assert_same_as_torch_on_a_model_torch_cannot_save() -> None:
    """A 3-D conv lowered for qnnpack has a packed weight torch cannot unpack: neither model has a state_dict
    or a deep copy. The state_dict()s must fail alike, and the models themselves are run (nothing in them
    records anything); a model that could record something is not run without a copy."""
    from qfx.compare import differences

    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        observed, inputs = _observed_video("qnnpack")
        result = assert_same_as_torch(observed, example_inputs=inputs)
        with pytest.raises(RuntimeError, match="conv2d_unpack"):
            result.state_dict()
        saveable = qfx.convert_to_reference_fx(observed)
        assert ("state_dict() differs: qfx's RuntimeError: QNNPACK only supports conv2d_unpack right now., torch's "
                "works") in differences(result, saveable, None)
        result.observer = observed.activation_post_process_0  # as if it still observed: never run uncopied
        with pytest.raises(RuntimeError, match="conv2d_unpack"):
            differences(result, result, inputs)
    finally:
        torch.backends.quantized.engine = engine


def test_differences_compares_how_the_models_fail_on_the_inputs() -> None:
    """Two models that raise the same error on the inputs behave alike; one that raises where the other runs
    does not. What a failing GraphModule prints to stderr is dropped."""
    from qfx.compare import differences

    class Flattening(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(-1)

    failing = torch.fx.symbolic_trace(Flattening())
    running = torch.fx.symbolic_trace(torch.nn.Flatten(0))
    strided = (torch.randn(2, 3).t(),)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert differences(failing, copy.deepcopy(failing), strided) == []
        found = differences(failing, running, strided)[-1]  # (after the code's difference)
    assert found.startswith("outputs differ: qfx's model raises RuntimeError: view size is not compatible")
    assert found.endswith(", torch's runs") and err.getvalue() == ""


def test_assert_same_as_torch_warns_when_both_models_fail_on_the_inputs() -> None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    from tests.qfx.usermodel import build_flattening

    model, inputs = build_flattening()
    observed = prepare_fx(model, get_default_qconfig_mapping("x86"), inputs)
    observed(*inputs)
    with pytest.warns(UserWarning, match="both converted models fail alike on the example inputs .*view size"):
        assert_same_as_torch(observed, example_inputs=inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_as_torch(observed, example_inputs=inputs, is_reference=True)  # (runs: no warning)


def test_assert_same_as_torch_copies_a_model_holding_tensors_with_autograd_history() -> None:
    """Standalone module example inputs recorded under autograd are tensors torch cannot deep-copy: the copy
    torch converts gets them detached (qfx never copies the model)."""
    from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1))).eval()
    x = torch.randn(1, 3, 6, 6)
    inner_inputs = (model[0](x),)  # (recorded with autograd on: it has a grad_fn)
    assert inner_inputs[0].grad_fn is not None
    config = PrepareCustomConfig().set_standalone_module_name("1", QConfigMapping(), inner_inputs, None, None)
    observed = prepare_fx(model, get_default_qconfig_mapping("x86"), (x,), prepare_custom_config=config)
    observed(x)
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(observed)
    assert_same_as_torch(observed, example_inputs=(x,), is_reference=True)
