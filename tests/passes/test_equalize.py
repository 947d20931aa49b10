"""equalize: input-weight equalization at convert, against torch.

The reference is torch itself: its update_obs_for_equalization + convert_eq_obs run (here, in the tests
only) on a deep copy of the observed model. The pass must give the same graph (same generated code), the
same module and attribute values (bit for bit: weights, biases, observer min/max, equalization scales)
and the same outputs, while leaving the observed model and the input Program untouched. Once the whole
reference pipeline runs, qfx.convert_to_reference_fx is also compared with torch's.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.ao.quantization import QConfigMapping, default_qconfig
from torch.ao.quantization.fx._equalize import (
    _InputEqualizationObserver,
    _WeightEqualizationObserver,
    convert_eq_obs,
    default_equalization_qconfig,
    update_obs_for_equalization,
)
from torch.ao.quantization.quantize_fx import (
    _convert_to_reference_decomposed_fx,
    convert_to_reference_fx,
    prepare_fx,
)
from torch.fx import GraphModule

import qfx
from qfx.ir.errors import ConvertError, UnsupportedError
from qfx.ir.lift import lift
from qfx.ir.program import Program
from qfx.ir.verify import problems
from qfx.lowering.codegen import codegen
from tests.support.models import ConvChain, FunctionalLinearChain, LinearChain
from qfx.passes.equalize import equalize
from tests.support.snapshot import (
    assert_program_unchanged,
    assert_same_model,
    assert_same_outputs,
    assert_unchanged,
    diff_values,
    snapshot,
    snapshot_program,
)
from qfx.testing.strategies import examples

warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\.quantization\.observer")

# ---------------------------------------------------------------------------------------------------------
# models (besides the equalization models of tests/support/models.py)


class LinearAddLinear(nn.Module):
    """The second layer's input is an add: it gets a `mul` by its scale, unlike a layer fed by a layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x) + 1.0)


class ConvConv(nn.Module):
    """Two convs back to back: the first one's weight and bias take the second one's scale."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3)
        self.conv2 = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.conv2(self.conv1(x))


class FunctionalConvChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w1", torch.randn(4, 3, 3, 3))
        self.register_buffer("bias1", torch.randn(4))
        self.register_buffer("w2", torch.randn(2, 4, 1, 1))
        self.register_buffer("bias2", torch.randn(2))

    def forward(self, x):
        return F.conv2d(F.conv2d(x, self.w1, self.bias1), self.w2, self.bias2)


class ModuleThenFunctional(nn.Module):
    """A module layer whose next equalized layer is functional, and no biases on either side."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4, bias=False)
        self.register_buffer("w", torch.randn(3, 4))

    def forward(self, x):
        return F.linear(self.fc(x), self.w)


class GroupedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.conv(x)


def _global_eq() -> QConfigMapping:
    return QConfigMapping().set_global(default_equalization_qconfig)


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], Callable[[], Any]]] = {
    "linear_chain": (LinearChain, (4, 6), _global_eq),
    "linear_add_linear": (LinearAddLinear, (4, 6), _global_eq),
    "functional_linear": (FunctionalLinearChain, (4, 6), _global_eq),
    "functional_conv": (FunctionalConvChain, (2, 3, 6, 6), _global_eq),
    "conv_relu_conv": (ConvChain, (2, 3, 6, 6), _global_eq),
    "conv_conv": (ConvConv, (2, 3, 6, 6), _global_eq),
    "module_then_functional": (ModuleThenFunctional, (4, 6), _global_eq),
    # fc1 and fc3 are not equalized; fc2 is, after fusion with the relu
    "one_layer_by_name": (LinearChain, (4, 6), lambda: QConfigMapping().set_module_name(
        "fc2", default_equalization_qconfig)),
    "object_type_dict": (LinearAddLinear, (4, 6),
                         lambda: {"object_type": [(nn.Linear, default_equalization_qconfig)]}),
}


def prepare_observed(factory: Callable[[], nn.Module], shape: tuple[int, ...], eq_config: Any,
                     calibrate: bool = True, seed: int = 0) -> GraphModule:
    """`factory()`, prepared with `default_qconfig` and the equalization config `eq_config`, and (unless
    told otherwise) calibrated on a few random batches."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(factory().eval(), QConfigMapping().set_global(default_qconfig),
                              (torch.randn(shape),), _equalization_config=eq_config)
    if calibrate:
        with torch.no_grad():
            for _ in range(3):
                observed(torch.randn(shape) * 3)
    return observed


@functools.lru_cache(maxsize=None)
def observed_model(name: str, calibrate: bool = True) -> GraphModule:
    """The observed model of case `name` (shared by the tests, which all check they leave it unchanged)."""
    factory, shape, eq_config = CASES[name]
    return prepare_observed(factory, shape, eq_config(), calibrate)


def torch_equalized(observed: GraphModule) -> tuple[GraphModule, dict[str, nn.Module]]:
    """torch's convert-time equalization, in place on a deep copy; returns the GraphModule torch's convert
    would go on with (built from its edited graph) and its table of modules (which torch edited)."""
    model = copy.deepcopy(observed)
    modules = dict(model.named_modules(remove_duplicate=False))
    convert_eq_obs(model, modules, update_obs_for_equalization(model, modules))
    return GraphModule(model, model.graph), modules


# ---------------------------------------------------------------------------------------------------------
# comparisons


def assert_module_equal(ours: nn.Module, theirs: nn.Module, where: str) -> None:
    """Same type, same parameters and buffers bit for bit (Parameter-ness and requires_grad included), and
    for equalization observers the same scale and shape. (qconfig attributes are not compared: torch's
    reference works on a deep copy, so its qconfig objects are copies.)"""
    assert type(ours) is type(theirs), where
    problems = diff_values(dict(ours.named_parameters()), dict(theirs.named_parameters()), f"{where} parameters")
    problems += diff_values(dict(ours.named_buffers()), dict(theirs.named_buffers()), f"{where} buffers")
    if isinstance(theirs, (_InputEqualizationObserver, _WeightEqualizationObserver)):
        problems += diff_values(ours.equalization_scale, theirs.equalization_scale, f"{where}.equalization_scale")
        problems += diff_values(getattr(ours, "equalization_shape", None),
                                getattr(theirs, "equalization_shape", None), f"{where}.equalization_shape")
    assert not problems, "\n".join(problems)


def assert_matches_torch(result: Program, observed: GraphModule, shape: tuple[int, ...], seed: int = 5,
                         aliases: dict[str, str] | None = None) -> None:
    """`result` (our pass on the lifted `observed`) equals torch's equalization on a copy of `observed`:
    same code, state_dict and constants once generated, same value at every path of the module table
    (also for modules the graph no longer calls), same outputs.

    `aliases` maps extra module paths of `observed` (which deep-copying a GraphModule drops) to the path
    of the same module in torch's copy."""
    # The pass adds no IR problem (the lifted program itself may already carry some).
    assert problems(result) == problems(lift(observed))
    expected, torch_modules = torch_equalized(observed)
    ours = codegen(result)
    assert_same_model(ours, expected)
    aliases = aliases or {}
    assert set(result.modules) == set(torch_modules) - {""} | set(aliases)
    for path, module in result.modules.items():
        assert_module_equal(module, torch_modules[aliases.get(path, path)], path)
    torch.manual_seed(seed)
    assert_same_outputs(ours, expected, torch.randn(shape))


def assert_converted_equal(ours: GraphModule, expected: GraphModule, shape: tuple[int, ...]) -> None:
    """Two converted models are interchangeable: same code, state_dict, modules and outputs."""
    assert_same_model(ours, expected)
    torch.manual_seed(7)
    assert_same_outputs(ours, expected, torch.randn(shape))


# ---------------------------------------------------------------------------------------------------------
# the pass alone, against torch's helpers


@pytest.mark.parametrize("name", sorted(CASES))
def test_equalize_matches_torch_and_is_pure(name: str) -> None:
    observed = observed_model(name)
    before = snapshot(observed)
    program = lift(observed)
    program_before = snapshot_program(program)

    result = equalize(program)

    assert result is not program
    assert_program_unchanged(program_before, program)
    assert_unchanged(before, observed)
    assert_matches_torch(result, observed, CASES[name][1])
    assert_unchanged(before, observed)


def test_mul_and_scale_constant_are_placed_and_named_as_torch_does() -> None:
    observed = observed_model("linear_add_linear")
    result = equalize(lift(observed))
    ops = [(n.op, n.name, n.target) for n in result.graph.nodes]
    # x is multiplied before its observer; fc2's input (an add) too; fc1 -> add is not a layer-to-layer edge
    assert ("get_attr", "x_equalization_scale0", "x_equalization_scale0") in ops
    assert ("get_attr", "add_equalization_scale0", "add_equalization_scale0") in ops
    assert [n.name for n in result.graph.nodes if n.target is torch.mul] == ["mul", "mul_1"]
    assert not any(isinstance(result.modules.get(n.target), _InputEqualizationObserver)
                   for n in result.graph.nodes if n.op == "call_module")
    position = result.graph.position
    assert position["x_equalization_scale0"] + 1 == position["mul"] == position["activation_post_process_0"] - 1


def test_layer_to_layer_edges_get_no_mul() -> None:
    result = equalize(lift(observed_model("linear_chain")))
    muls = [n for n in result.graph.nodes if n.target is torch.mul]
    assert [m.args[0].name for m in muls] == ["x"]


def test_only_the_configured_layer_is_equalized() -> None:
    program = lift(observed_model("one_layer_by_name"))
    result = equalize(program)
    changed = {path for path, module in result.modules.items() if module is not program.modules[path]}
    # fc2 (fused with its relu) gets new weights; fc1 feeds it directly, so torch inserts no mul and, fc1
    # not being equalized itself, leaves its weights alone: only the equalization observer copy remains
    assert {"fc2", "fc2.0", "fc2.1"} <= changed
    assert not changed & {"fc1", "fc3"}
    assert not any(n.target is torch.mul for n in result.graph.nodes)
    assert not torch.equal(result.modules["fc2.0"].weight, program.modules["fc2.0"].weight)


def test_functional_weight_observers_are_dropped_and_reset() -> None:
    observed = observed_model("functional_linear")
    program = lift(observed)
    result = equalize(program)
    weight_eq = [n.name for n in program.graph.nodes
                 if isinstance(program.modules.get(n.target), _WeightEqualizationObserver)]
    assert weight_eq and not any(name in result.graph for name in weight_eq)
    # the weight observers forgot their calibration (new objects), the originals did not
    for n in result.graph.nodes:
        if n.op == "call_module" and n.args and result.graph[n.args[0].name].op == "get_attr":
            new, old = result.modules[n.target], program.modules[n.target]
            assert new is not old and torch.isinf(new.min_val) and not torch.isinf(old.min_val)


def test_uncalibrated_model_gets_default_scales_and_torchs_warnings() -> None:
    observed = observed_model("linear_add_linear", calibrate=False)
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        result = equalize(lift(observed))
    with warnings.catch_warnings(record=True) as torch_warned:
        warnings.simplefilter("always")
        torch_equalized(observed)
    assert [str(w.message) for w in ours_warned] == [str(w.message) for w in torch_warned]
    assert ours_warned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_matches_torch(result, observed, CASES["linear_add_linear"][1])


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.lists(
        st.tuples(st.sampled_from(["module", "functional"]), st.integers(2, 5),
                  st.sampled_from(["none", "module", "functional", "add"]), st.booleans()),
        min_size=1, max_size=4,
    ),
    in_features=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
def test_random_chains_match_torch(layers: list, in_features: int, seed: int) -> None:
    shape = (3, in_features)
    observed = prepare_observed(lambda: _Chain(in_features, layers), shape, _global_eq(), seed=seed)
    before = snapshot(observed)
    result = equalize(lift(observed))
    assert_unchanged(before, observed)
    assert_matches_torch(result, observed, shape, seed)
    try:
        ours = qfx.convert_to_reference_fx(observed)
    except UnsupportedError as exc:
        if "not implemented yet" not in str(exc):
            raise
        return
    assert_unchanged(before, observed)
    assert_converted_equal(ours, convert_to_reference_fx(copy.deepcopy(observed)), shape)


class _Chain(nn.Module):
    """Linear layers (modules or F.linear on buffers, with or without bias), each followed by nothing, an
    nn.ReLU, an F.relu or an add."""

    def __init__(self, width: int, layers: list) -> None:
        super().__init__()
        self.layers = layers
        for i, (kind, out, _, bias) in enumerate(layers):
            if kind == "module":
                setattr(self, f"fc{i}", nn.Linear(width, out, bias=bias))
            else:
                self.register_buffer(f"w{i}", torch.randn(out, width))
                self.register_buffer(f"bias{i}", torch.randn(out) if bias else None)
            setattr(self, f"relu{i}", nn.ReLU())
            width = out

    def forward(self, x):
        for i, (kind, _, after, _) in enumerate(self.layers):
            x = getattr(self, f"fc{i}")(x) if kind == "module" else F.linear(x, getattr(self, f"w{i}"),
                                                                             getattr(self, f"bias{i}"))
            if after == "module":
                x = getattr(self, f"relu{i}")(x)
            elif after == "functional":
                x = F.relu(x)
            elif after == "add":
                x = x + 0.5
        return x


# ---------------------------------------------------------------------------------------------------------
# nothing to do, and errors


def test_program_without_equalization_is_returned_as_is() -> None:
    torch.manual_seed(0)
    observed = prepare_fx(LinearChain().eval(), QConfigMapping().set_global(default_qconfig), (torch.randn(4, 6),))
    program = lift(observed)
    assert program.quant.equalization_node_name_to_qconfig is not None  # prepare always records a map
    assert equalize(program) is program
    plain = lift(torch.fx.symbolic_trace(LinearChain()), observed=False)
    assert equalize(plain) is plain


def test_grouped_conv_raises_torchs_shape_error() -> None:
    observed = prepare_observed(GroupedConv, (1, 4, 6, 6), _global_eq())
    with pytest.raises(ValueError) as theirs:
        torch_equalized(observed)
    before = snapshot(observed)
    with pytest.raises(ConvertError) as ours:
        equalize(lift(observed))
    assert isinstance(ours.value, ValueError)
    assert str(ours.value).startswith(str(theirs.value))
    assert "conv" in str(ours.value)
    assert_unchanged(before, observed)


def test_functional_weights_held_as_parameters_raise_torchs_type_error() -> None:
    observed = prepare_observed(lambda: FunctionalLinearChain(as_parameters=True), (4, 6), _global_eq())
    with pytest.raises(TypeError) as theirs:
        torch_equalized(observed)
    before = snapshot(observed)
    with pytest.raises(ConvertError) as ours:
        equalize(lift(observed))
    assert isinstance(ours.value, TypeError)
    assert str(ours.value) == str(theirs.value)
    assert_unchanged(before, observed)
    with pytest.raises(TypeError) as through_api:
        qfx.convert_to_reference_fx(observed)
    assert str(through_api.value) == str(theirs.value)
    assert_unchanged(before, observed)


def test_an_observer_listed_under_two_names_changes_under_both() -> None:
    observed = prepare_observed(*CASES["linear_add_linear"][:2], _global_eq())
    observed.alias = observed.activation_post_process_0  # named_modules(remove_duplicate=False) lists both
    program = lift(observed)
    result = equalize(program)
    assert result.modules["alias"] is result.modules["activation_post_process_0"]
    assert result.modules["alias"] is not program.modules["alias"]
    assert_matches_torch(result, observed, CASES["linear_add_linear"][1],
                         aliases={"alias": "activation_post_process_0"})


# ---------------------------------------------------------------------------------------------------------
# the whole reference convert


def _qfx_or_skip(observed: GraphModule, convert: Callable = qfx.convert_to_reference_fx) -> GraphModule:
    try:
        return convert(observed)
    except UnsupportedError as exc:
        if "not implemented yet" in str(exc):
            pytest.skip(f"reference pipeline not complete: {exc}")
        raise


@pytest.mark.parametrize("name", sorted(CASES))
def test_convert_to_reference_fx_matches_torch(name: str) -> None:
    observed = observed_model(name)
    before = snapshot(observed)
    ours = _qfx_or_skip(observed)
    assert_unchanged(before, observed)
    assert_converted_equal(ours, convert_to_reference_fx(copy.deepcopy(observed)), CASES[name][1])



@pytest.mark.parametrize("name", ["linear_add_linear", "functional_conv"])
def test_convert_to_reference_decomposed_fx_matches_torch(name: str) -> None:
    observed = observed_model(name)
    before = snapshot(observed)
    ours = _qfx_or_skip(observed, qfx.convert_to_reference_decomposed_fx)
    assert_unchanged(before, observed)
    assert_converted_equal(ours, _convert_to_reference_decomposed_fx(copy.deepcopy(observed)), CASES[name][1])
