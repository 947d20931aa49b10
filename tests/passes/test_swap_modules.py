"""swap-modules on its own: the modules it produces equal those torch's convert puts in the model, the
calling conventions it records, its errors, and that neither the observed model nor the input Program
changes."""

from __future__ import annotations

import copy
from typing import Any

import attrs
import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.nn as nn
from torch.ao.quantization import (
    QConfigMapping,
    QuantType,
    default_dynamic_qconfig,
    default_qconfig,
    float16_dynamic_qconfig,
    float16_static_qconfig,
    float_qparams_weight_only_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig, PrepareCustomConfig
from torch.ao.quantization.quantize_fx import (
    _convert_to_reference_decomposed_fx,
    convert_to_reference_fx,
    prepare_fx,
    prepare_qat_fx,
)

import qfx.api as api
import qfx.passes.swap_modules as swap_package
from qfx.passes.swap_modules import standalone as swap_standalone
from qfx.ir.errors import ConvertError
from qfx.ir.lift import OBSERVED_ATTRS_KEY, lift
from qfx.ir.program import CallingConvention, Program
from qfx.ir.verify import problems
from qfx.passes import get_pass
from qfx.passes.swap_modules.custom import CustomModuleError
from qfx.passes.swap_modules.standalone import StandaloneOutputError
from qfx.passes.swap_modules.weighted import MissingQConfigAttributeError
from tests.support.snapshot import (
    assert_program_unchanged,
    assert_same_model,
    assert_same_outputs,
    assert_unchanged,
    diff_values,
    snapshot,
    snapshot_program,
)

SWAP = get_pass("swap-modules")


# ----------------------------------------------------------------------------------------------- helpers


def observe(model: nn.Module, mapping: Any, example: tuple, *, qat: bool = False, steps: int = 2, **kw: Any):
    """prepare_fx (or prepare_qat_fx, with a few training steps) and calibrate on `example`."""
    torch.manual_seed(0)
    if qat:
        model.train()
        observed = prepare_qat_fx(model, mapping, example, **kw)
        opt = torch.optim.SGD(observed.parameters(), lr=0.1)
        for _ in range(steps):
            opt.zero_grad()
            out = observed(*example)
            (out[0] if isinstance(out, tuple) else out).sum().backward()
            opt.step()
    else:
        observed = prepare_fx(model.eval(), mapping, example, **kw)
        for _ in range(steps):
            observed(*example)
    return observed


def assert_state_equal(a: dict[str, Any], b: dict[str, Any], where: str = "state_dict") -> None:
    """Same keys in the same order and bit-identical values (see snapshot.diff_values)."""
    found = diff_values(a, b, where)
    assert not found, "\n".join(found)


def swap(observed: torch.fx.GraphModule, **options: Any) -> tuple[Program, Program]:
    """Lift `observed` and run swap-modules alone; check the pass left its input and the model untouched."""
    options.setdefault("is_reference", True)
    options.setdefault("convert_custom_config", None)
    model_before = snapshot(observed)
    program = lift(observed, options=api.convert_options(**options))
    program_before = snapshot_program(program)
    result = SWAP(program)
    # Lifted models may already break an invariant (e.g. scopes of nodes fusion removed); add none.
    assert problems(result) == problems(program)
    assert result.graph == program.graph
    assert_program_unchanged(program_before, program, "the input of swap-modules")
    assert_unchanged(model_before, observed)
    return program, result


def torch_reference(observed: torch.fx.GraphModule, decomposed: bool = False, **kw: Any) -> torch.fx.GraphModule:
    convert = _convert_to_reference_decomposed_fx if decomposed else convert_to_reference_fx
    return convert(copy.deepcopy(observed), **kw)


def assert_matches_torch(program: Program, result: Program, expected: torch.fx.GraphModule,
                         swapped: set[str]) -> None:
    """Targets in `swapped` hold new modules of torch's type and state; every other call target is the
    input's object (of the type torch left there, where torch kept the module)."""
    targets = {n.target for n in program.graph.nodes if n.op == "call_module"}
    kept_by_torch = dict(expected.named_modules())
    assert swapped <= targets
    for t in targets:
        if t in swapped:
            want = expected.get_submodule(t)
            assert result.modules[t] is not program.modules[t]
            assert type(result.modules[t]) is type(want), t
            assert_state_equal(result.modules[t].state_dict(), want.state_dict(), t)
            for sub, child in result.modules[t].named_children():
                assert type(child) is type(want.get_submodule(sub)), f"{t}.{sub}"
        else:
            assert result.modules[t] is program.modules[t], t
            if t in kept_by_torch:
                assert type(kept_by_torch[t]) is type(program.modules[t]), t


# ------------------------------------------------------------------------------------------------ models


class ConvLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.linear = nn.Linear(4, 5)
        self.linear2 = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x)).mean((2, 3))
        return self.linear2(self.linear(x))


class ConvBnLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.bn(self.conv(x))))
        return self.linear(x.mean((2, 3)))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, num_layers=2)
        self.gru = nn.GRU(3, 3)
        self.lstm_cell = nn.LSTMCell(3, 2)
        self.gru_cell = nn.GRUCell(2, 2)
        self.rnn_cell = nn.RNNCell(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        h, _ = self.lstm_cell(y[0])
        return self.rnn_cell(self.gru_cell(h))


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.bag = nn.EmbeddingBag(10, 4, mode="sum")

    def forward(self, idx: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.emb(idx).sum(0) + self.bag(idx, offsets).sum(0)


class SharedQat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.linear(x))


_GEN = torch.Generator().manual_seed(0)
X = (torch.randn(2, 3, 8, 8, generator=_GEN),)
LSTM_EXAMPLE = (torch.randn(5, 2, 4, generator=_GEN), torch.randn(1, 2, 3, generator=_GEN),
                torch.randn(1, 2, 3, generator=_GEN))
MHA_EXAMPLE = tuple(torch.randn(3, 2, 4, generator=_GEN) for _ in range(3))


# ------------------------------------------------------------------------------------- weighted modules


@pytest.mark.parametrize("mapping", [
    QConfigMapping().set_global(default_qconfig),
    get_default_qconfig_mapping("x86"),
], ids=["default_qconfig", "x86_per_channel"])
def test_static_conv_relu_and_linear_become_reference_modules(mapping):
    observed = observe(ConvLinear(), mapping, X)
    program, result = swap(observed)
    expected = torch_reference(observed)
    assert_matches_torch(program, result, expected, {"conv", "linear", "linear2"})
    fused = result.modules["conv"]
    assert type(fused) is torch.ao.nn.intrinsic.ConvReLU2d
    assert fused is not program.modules["conv"]
    assert type(fused[0]) is torch.ao.nn.quantized.reference.Conv2d
    assert fused[1] is program.modules["conv"][1]  # untouched members are shared, not copied
    assert type(program.modules["conv"][0]) is nn.Conv2d
    assert result.modules["conv.0"] is fused[0]
    assert not result.quant.calling_conventions


def test_none_qconfig_submodule_is_not_swapped():
    mapping = QConfigMapping().set_global(default_qconfig).set_module_name("linear2", None)
    observed = observe(ConvLinear(), mapping, X)
    program, result = swap(observed)
    assert_matches_torch(program, result, torch_reference(observed), {"conv", "linear"})
    assert type(result.modules["linear2"]) is nn.Linear


def test_weighted_module_without_qconfig_attribute_is_a_typed_error():
    observed = observe(ConvLinear(), QConfigMapping().set_global(default_qconfig), X)
    program = lift(observed, options=api.convert_options(is_reference=True, convert_custom_config=None))
    with pytest.raises(MissingQConfigAttributeError, match="module 'linear' .*no 'qconfig' attribute") as info:
        SWAP(program.with_modules({"linear": nn.Linear(4, 5)}))
    assert isinstance(info.value, AttributeError)


@pytest.mark.parametrize("qconfig,expect_swapped", [
    (default_dynamic_qconfig, True),
    (float16_dynamic_qconfig, True),
    (float16_static_qconfig, False),  # the native backend config has no fp16 static linear
], ids=["dynamic", "fp16_dynamic", "fp16_static"])
def test_dynamic_and_fp16_linear(qconfig, expect_swapped):
    mapping = QConfigMapping().set_object_type(nn.Linear, qconfig)
    observed = observe(ConvLinear(), mapping, X)
    program, result = swap(observed)
    expected = torch_reference(observed)
    swapped = {"linear", "linear2"} if expect_swapped else set()
    assert_matches_torch(program, result, expected, swapped)
    if expect_swapped:
        assert result.modules["linear"].weight_dtype == qconfig.weight().dtype


def test_weight_only_embeddings():
    mapping = QConfigMapping().set_object_type(nn.Embedding, float_qparams_weight_only_qconfig) \
        .set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)
    example = (torch.tensor([1, 2, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 4]))
    observed = observe(Embeddings(), mapping, example)
    program, result = swap(observed)
    assert_matches_torch(program, result, torch_reference(observed), {"emb", "bag"})
    assert type(result.modules["emb"]) is torch.ao.nn.quantized.reference.Embedding


def test_dynamic_recurrent_modules_and_cells():
    mapping = QConfigMapping().set_global(default_dynamic_qconfig)
    observed = observe(Recurrent(), mapping, (torch.randn(5, 2, 4),))
    program, result = swap(observed)
    swapped = {"lstm", "gru", "lstm_cell", "gru_cell", "rnn_cell"}
    assert_matches_torch(program, result, torch_reference(observed), swapped)
    # the reference LSTM takes the float weights as they are (shared, as torch shares them)
    assert torch.equal(result.modules["lstm"].weight_ih_l1, program.modules["lstm"].weight_ih_l1)


@pytest.mark.parametrize("decomposed", [False, True], ids=["reference", "decomposed"])
def test_qat_linear_and_conv_bn_use_their_trained_fake_quants(decomposed):
    mapping = get_default_qat_qconfig_mapping("x86")
    observed = observe(ConvBnLinear(), mapping, X, qat=True, steps=3)
    qat_types = {k: type(observed.get_submodule(k)).__name__ for k in ("conv", "conv2", "linear")}
    assert qat_types == {"conv": "ConvBn2d", "conv2": "ConvReLU2d", "linear": "Linear"}
    program, result = swap(observed, is_decomposed=decomposed, remove_qconfig=not decomposed)
    expected = torch_reference(observed, decomposed=decomposed)
    assert_matches_torch(program, result, expected, {"conv", "conv2", "linear"})
    assert type(result.modules["conv"]) is torch.ao.nn.quantized.reference.Conv2d  # bn folded away
    assert type(result.modules["conv2"]) is torch.ao.nn.intrinsic.ConvReLU2d
    # the input's fake quants did not run again (swap() also checks every buffer)
    fq = program.modules["linear.weight_fake_quant"]
    assert fq is observed.linear.weight_fake_quant


def test_qat_module_with_none_qconfig_at_convert_still_becomes_float():
    observed = observe(ConvBnLinear(), get_default_qat_qconfig_mapping("x86"), X, qat=True)
    options = api.convert_options(is_reference=True, convert_custom_config=None)
    program = lift(observed, options=options)
    linear = _call_of(program, "linear").name
    # what apply-qconfig-mapping makes of a convert-time mapping that sets 'linear' to None
    facts = attrs.evolve(program.quant, node_name_to_qconfig={**program.quant.node_name_to_qconfig, linear: None})
    result = SWAP(program.evolve(quant=facts))
    convert_mapping = get_default_qat_qconfig_mapping("x86").set_module_name("linear", None)
    expected = torch_reference(observed, qconfig_mapping=convert_mapping)
    assert type(program.modules["linear"]) is torch.ao.nn.qat.Linear
    assert type(result.modules["linear"]) is nn.Linear is type(expected.linear)
    assert_state_equal(result.modules["linear"].state_dict(), expected.linear.state_dict())
    assert type(result.modules["conv"]) is torch.ao.nn.quantized.reference.Conv2d


def test_qat_module_called_twice_replays_torch_fake_quant_runs():
    mapping = QConfigMapping().set_global(torch.ao.quantization.get_default_qat_qconfig("x86"))
    observed = observe(SharedQat(), mapping, (torch.randn(3, 4),), qat=True)
    program, result = swap(observed)
    assert_matches_torch(program, result, torch_reference(observed), {"linear"})


def test_a_qat_module_is_converted_from_a_copy_owning_only_its_weight_fake_quant():
    # torch's to_float only reads the module: the weights and BatchNorm are shared with the input, the fake
    # quant that converting runs is the copy's own; a QAT class with a to_float of its own gets a deep copy
    observed = observe(ConvBnLinear(), get_default_qat_qconfig_mapping("x86"), X, qat=True)
    program = lift(observed, options=api.convert_options(is_reference=True, convert_custom_config=None))
    work = swap_package._Workspace(program, program.options)
    conv = work.owned_qat_copy("conv")
    assert conv is work.owned_qat_copy("conv") and type(conv) is type(observed.conv)
    assert conv.weight is observed.conv.weight and conv.bn is observed.conv.bn
    assert conv.weight_fake_quant is not observed.conv.weight_fake_quant
    assert torch.equal(conv.weight_fake_quant.scale, observed.conv.weight_fake_quant.scale)

    class OwnToFloat(type(observed.linear)):
        def to_float(self):
            return super().to_float()

    mine = copy.deepcopy(observed.linear)
    mine.__class__ = OwnToFloat
    program = program.with_modules({"linear": mine})
    copied = swap_package._Workspace(program, program.options).owned_qat_copy("linear")
    assert type(copied) is OwnToFloat and copied.weight is not mine.weight


# ---------------------------------------------------------------------------------- standalone modules


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class WithStandalone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.inner = Inner()
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.inner(self.conv1(x)))


def observe_standalone(in_idxs: list[int], out_idxs: list[int]) -> torch.fx.GraphModule:
    mapping = QConfigMapping().set_global(default_qconfig)
    inner_config = PrepareCustomConfig().set_input_quantized_indexes(in_idxs).set_output_quantized_indexes(out_idxs)
    config = PrepareCustomConfig().set_standalone_module_name("inner", mapping, (torch.randn(2, 4, 8, 8),),
                                                              inner_config, None)
    return observe(WithStandalone(), mapping, X, prepare_custom_config=config)


def _call_of(program: Program, target: str):
    return next(n for n in program.graph.nodes if n.op == "call_module" and n.target == target)


@pytest.mark.parametrize("in_idxs,out_idxs,output", [([0], [0], "dequantize"), ([], [], "float")])
def test_standalone_module_is_converted_by_the_pipeline(monkeypatch, in_idxs, out_idxs, output):
    observed = observe_standalone(in_idxs, out_idxs)
    calls = []
    marker = torch.fx.symbolic_trace(Inner())

    def fake_convert(gm, options):
        calls.append((gm, options))
        return marker

    monkeypatch.setattr(swap_standalone, "_convert_submodule", fake_convert)
    program, result = swap(observed)
    (gm, options), = calls
    assert gm is observed.inner and options is program.options
    assert result.modules["inner"] is marker and result.modules["inner.conv"] is marker.conv
    node = _call_of(program, "inner")
    assert result.quant.calling_conventions[node.name] == CallingConvention(
        quantized_args=tuple((i,) for i in in_idxs), output=output)
    assert program.quant.calling_conventions == {}


def test_standalone_module_is_converted_like_torch_converts_it():
    observed = observe_standalone([0], [0])
    program, result = swap(observed)
    expected = torch_reference(observed)
    assert isinstance(result.modules["inner"], torch.fx.GraphModule)
    assert result.modules["inner"].code == expected.inner.code
    assert_state_equal(result.modules["inner"].state_dict(), expected.inner.state_dict())
    assert OBSERVED_ATTRS_KEY not in result.modules["inner"].meta


def test_standalone_module_with_quantized_output_other_than_0_is_rejected():
    observed = observe_standalone([0], [0])
    program = lift(observed, options=api.convert_options(is_reference=True, convert_custom_config=None))
    inner = copy.deepcopy(program.modules["inner"])
    inner.meta[OBSERVED_ATTRS_KEY].standalone_module_output_quantized_idxs = [1]
    with pytest.raises(StandaloneOutputError, match=r"Currently only quantized output idxs = \[0\] is supported") \
            as info:
        SWAP(program.with_modules({"inner": inner}))
    assert isinstance(info.value, AssertionError) and isinstance(info.value, ConvertError)
    assert "inner" in str(info.value)


# -------------------------------------------------------------------------------------- custom modules


class FloatCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class ObservedCustom(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    @classmethod
    def from_float(cls, float_module: FloatCustom) -> "ObservedCustom":
        observed = cls(float_module.linear)
        observed.qconfig = float_module.qconfig
        return observed


class QuantizedCustom(nn.Module):
    """Like torch's test classes, from_observed writes into the observed module it is given."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    @classmethod
    def from_observed(cls, observed: ObservedCustom) -> "QuantizedCustom":
        observed.linear.activation_post_process = observed.activation_post_process
        observed.linear.qconfig = observed.qconfig
        return cls(torch.ao.nn.quantized.Linear.from_float(observed.linear))


class DynamicQuantizedCustom(nn.Module):
    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    @classmethod
    def from_observed(cls, observed: ObservedCustom) -> "DynamicQuantizedCustom":
        observed.linear.qconfig = observed.qconfig
        return cls(torch.ao.nn.quantized.dynamic.Linear.from_float(observed.linear))


class WithCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.custom = FloatCustom()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.custom(self.linear(x)).relu()


def observe_custom(quant_type: QuantType, qconfig: Any) -> tuple[torch.fx.GraphModule, ConvertCustomConfig]:
    prepare_config = PrepareCustomConfig().set_float_to_observed_mapping(FloatCustom, ObservedCustom)
    quantized = QuantizedCustom if quant_type == QuantType.STATIC else DynamicQuantizedCustom
    convert_config = ConvertCustomConfig().set_observed_to_quantized_mapping(ObservedCustom, quantized, quant_type)
    observed = observe(WithCustom(), QConfigMapping().set_global(default_qconfig), (torch.randn(3, 4),),
                       prepare_custom_config=prepare_config)
    if qconfig is not default_qconfig:
        # prepare_fx only observes static custom modules; torch's convert also swaps the others
        observed.custom.qconfig = qconfig
    return observed, convert_config


def test_static_custom_module_gets_its_output_observer():
    observed, convert_config = observe_custom(QuantType.STATIC, default_qconfig)
    program, result = swap(observed, convert_custom_config=convert_config)
    expected = torch_reference(observed, convert_custom_config=convert_config)
    assert_matches_torch(program, result, expected, {"linear", "custom"})
    assert type(result.modules["custom.linear"]) is torch.ao.nn.quantized.Linear
    node = _call_of(program, "custom")
    assert result.quant.calling_conventions == {node.name: CallingConvention(((0,),), "observer")}
    observer_node = program.graph[program.graph.users[node.name][0]]
    observer = program.modules[observer_node.target]
    scale, zero_point = observer.calculate_qparams()
    assert result.modules["custom.linear"].scale == pytest.approx(float(scale))
    assert not hasattr(program.modules["custom"], "activation_post_process")


def test_dynamic_custom_module_is_just_swapped():
    observed, convert_config = observe_custom(QuantType.DYNAMIC, default_dynamic_qconfig)
    program, result = swap(observed, convert_custom_config=convert_config)
    assert type(result.modules["custom"]) is DynamicQuantizedCustom
    assert type(result.modules["custom.linear"]) is torch.ao.nn.quantized.dynamic.Linear
    assert result.quant.calling_conventions == {}
    expected = torch_reference(observed, convert_custom_config=convert_config)
    assert_state_equal(result.modules["custom"].state_dict(), expected.custom.state_dict())


def test_custom_module_without_a_quantized_class_is_a_typed_error():
    observed, _ = observe_custom(QuantType.STATIC, default_qconfig)
    wrong = ConvertCustomConfig().set_observed_to_quantized_mapping(ObservedCustom, QuantizedCustom,
                                                                    QuantType.DYNAMIC)
    with pytest.raises(CustomModuleError, match="did not find corresponding observed module class") as info:
        swap(observed, convert_custom_config=wrong)
    assert isinstance(info.value, AssertionError)


def test_static_custom_module_without_output_observer_is_a_typed_error():
    observed, convert_config = observe_custom(QuantType.STATIC, default_qconfig)
    program = lift(observed, options=api.convert_options(is_reference=True, convert_custom_config=convert_config))
    reader = program.graph[program.graph.users[_call_of(program, "custom").name][0]]
    with pytest.raises(CustomModuleError, match="Expected activation_post_process to be present"):
        SWAP(program.with_modules({reader.target: nn.Identity()}))


def test_static_custom_module_reading_a_constant_is_a_typed_error():
    observed, convert_config = observe_custom(QuantType.STATIC, default_qconfig)
    program = lift(observed, options=api.convert_options(is_reference=True, convert_custom_config=convert_config))
    node = _call_of(program, "custom")
    bad = program.with_nodes(n.evolve(args=(1.0,)) if n is node else n for n in program.graph.nodes)
    with pytest.raises(CustomModuleError, match="Expected arg to be a Node"):
        SWAP(bad)


class WithMha(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 2)

    def forward(self, q, k, v):
        return self.mha(q, k, v)


def observe_custom_mha() -> tuple[torch.fx.GraphModule, ConvertCustomConfig]:
    prepare_config = PrepareCustomConfig().set_float_to_observed_mapping(
        nn.MultiheadAttention, torch.ao.nn.quantizable.MultiheadAttention)
    convert_config = ConvertCustomConfig().set_observed_to_quantized_mapping(
        torch.ao.nn.quantizable.MultiheadAttention, torch.ao.nn.quantized.MultiheadAttention)
    # prepare puts an observer on the (tuple) output, so the model cannot be calibrated; torch converts it anyway
    observed = observe(WithMha(), QConfigMapping().set_global(default_qconfig), MHA_EXAMPLE,
                       prepare_custom_config=prepare_config, steps=0)
    return observed, convert_config


def test_custom_mha_takes_quantized_query_key_value():
    observed, convert_config = observe_custom_mha()
    program, result = swap(observed, convert_custom_config=convert_config)
    node = _call_of(program, "mha")
    assert result.quant.calling_conventions == {node.name: CallingConvention(((0,), (1,), (2,)), "observer")}
    expected = torch_reference(observed, convert_custom_config=convert_config)
    assert type(result.modules["mha"]) is torch.ao.nn.quantized.MultiheadAttention is type(expected.mha)
    assert_state_equal(result.modules["mha"].state_dict(), expected.mha.state_dict())

    bad = program.with_nodes(n.evolve(args=n.args[:2]) if n.name == node.name else n for n in program.graph.nodes)
    with pytest.raises(CustomModuleError, match=r"Expected MHA custom module inputs to be \(query, key, value\)"):
        SWAP(bad)


class WithLstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3)

    def forward(self, x, h0, c0):
        return self.lstm(x, (h0, c0))


def observe_custom_lstm() -> tuple[torch.fx.GraphModule, ConvertCustomConfig]:
    prepare_config = PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, torch.ao.nn.quantizable.LSTM)
    convert_config = ConvertCustomConfig().set_observed_to_quantized_mapping(torch.ao.nn.quantizable.LSTM,
                                                                             torch.ao.nn.quantized.LSTM)
    observed = observe(WithLstm(), QConfigMapping().set_global(default_qconfig), LSTM_EXAMPLE,
                       prepare_custom_config=prepare_config)
    return observed, convert_config


def test_custom_lstm_takes_quantized_input_and_hidden_state():
    observed, convert_config = observe_custom_lstm()
    program, result = swap(observed, convert_custom_config=convert_config)
    node = _call_of(program, "lstm")
    assert result.quant.calling_conventions == {node.name: CallingConvention(((0,), (1, 0), (1, 1)), "observer")}
    expected = torch_reference(observed, convert_custom_config=convert_config)
    assert type(result.modules["lstm"]) is torch.ao.nn.quantized.LSTM is type(expected.lstm)
    assert_state_equal(result.modules["lstm"].state_dict(), expected.lstm.state_dict())


def test_custom_lstm_called_without_a_hidden_tuple_is_a_typed_error():
    observed, convert_config = observe_custom_lstm()
    program = lift(observed, options=api.convert_options(is_reference=True, convert_custom_config=convert_config))
    node = _call_of(program, "lstm")
    bad = program.with_nodes(n.evolve(args=n.args[:1]) if n is node else n for n in program.graph.nodes)
    with pytest.raises(CustomModuleError, match=r"Expected LSTM custom module inputs to be \(input, \(hidden0, h"):
        SWAP(bad)


# ---------------------------------------------------------------------------------- whole-model checks


class SharedFused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(self.relu(self.conv(x))))


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_fused_module_called_twice_is_swapped_once(qat):
    mapping = get_default_qat_qconfig_mapping("x86") if qat else get_default_qconfig_mapping("x86")
    observed = observe(SharedFused(), mapping, X, qat=qat)
    program, result = swap(observed)
    assert_matches_torch(program, result, torch_reference(observed), {"conv"})
    assert type(result.modules["conv"][0]) is torch.ao.nn.quantized.reference.Conv2d


# ---------------------------------------------------------------------------------- whole-model checks


def _custom_case():
    observed, config = observe_custom(QuantType.STATIC, default_qconfig)
    return observed, {"convert_custom_config": config}, (torch.randn(3, 4),)


def _lstm_case():
    observed, config = observe_custom_lstm()
    return observed, {"convert_custom_config": config}, LSTM_EXAMPLE


def _mha_case():
    observed, config = observe_custom_mha()
    # torch's result calls .dequantize() on the attention's (output, weights) tuple: it cannot run
    return observed, {"convert_custom_config": config}, None


def _case(make: Any, mapping: Any, example: tuple, **kw: Any):
    return lambda: (observe(make(), mapping, example, **kw), {}, example)


FULL_CASES = {
    "static": _case(ConvLinear, get_default_qconfig_mapping("x86"), X),
    "none_qconfig": _case(ConvLinear, QConfigMapping().set_global(default_qconfig).set_module_name("linear2", None), X),
    "qat": _case(ConvBnLinear, get_default_qat_qconfig_mapping("x86"), X, qat=True),
    "qat_shared": _case(SharedQat, get_default_qat_qconfig_mapping("x86"), (torch.randn(3, 4, generator=_GEN),),
                        qat=True),
    "recurrent_dynamic": _case(Recurrent, QConfigMapping().set_global(default_dynamic_qconfig),
                               (torch.randn(5, 2, 4, generator=_GEN),)),
    "standalone": lambda: (observe_standalone([0], [0]), {}, X),
    "custom": _custom_case,
    "custom_lstm": _lstm_case,
    "custom_mha": _mha_case,
}


@pytest.mark.parametrize("case", list(FULL_CASES))
def test_full_convert_equals_torch(case):
    observed, kw, example = FULL_CASES[case]()
    before = snapshot(observed)
    got = api.convert_to_reference_fx(observed, **kw)
    assert_unchanged(before, observed)
    expected = torch_reference(observed, **kw)
    assert_same_model(got, expected)
    if example is not None:
        assert_same_outputs(got, expected, *example)


class _CopiesItself(nn.Sequential):
    def __copy__(self) -> "_CopiesItself":
        clone = _CopiesItself()
        clone.__dict__.update(self.__dict__)
        clone.copied = True
        return clone


class _KeepsLess(nn.Sequential):
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("qconfig", None)
        return state


def _without_tables(module: nn.Module, *names: str) -> nn.Module:
    """`module` without some tables, as one unpickled from an old checkpoint (nn.Module.__setstate__ adds them)."""
    for name in names:
        del module.__dict__[name]
    return module


@pytest.mark.parametrize("module", [
    torch.ao.nn.intrinsic.LinearReLU(nn.Linear(2, 2), nn.ReLU()),
    torch.ao.nn.intrinsic.ConvBnReLU2d(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.ReLU()),
    _CopiesItself(nn.Linear(2, 2)),
    _KeepsLess(nn.Linear(2, 2)),
    _without_tables(torch.ao.nn.intrinsic.LinearReLU(nn.Linear(2, 2), nn.ReLU()), "_backward_pre_hooks",
                    "_forward_hooks_always_called"),
])
def test_container_copy_is_copy_copy_with_its_own_children_table(module):
    """swap-modules' copy of a fused container is copy.copy's (its own dict, the same values, in the same
    order; a class's own copying hooks are honoured) with a table of children of its own."""
    from qfx.passes.swap_modules.weighted import WeightedClasses, _container_copy
    module.qconfig = "the qconfig"
    module._compiled_call_impl = "dropped by nn.Module's __getstate__"
    expected = copy.copy(module)
    classes = WeightedClasses.of(torch.ao.quantization.backend_config.get_native_backend_config())
    clone = _container_copy(module, classes)
    assert type(clone) is type(expected) and clone is not module
    assert list(clone.__dict__) == list(expected.__dict__)
    assert all(clone.__dict__[k] is v for k, v in expected.__dict__.items() if k != "_modules" and k in module.__dict__)
    # (tables the module lacked are new ones, as __setstate__ makes them)
    assert all(clone.__dict__[k] == v and type(clone.__dict__[k]) is type(v) for k, v in expected.__dict__.items()
               if k not in module.__dict__)
    assert clone._modules == module._modules and clone._modules is not module._modules


class _RecordsSetattr(nni.LinearReLU):
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        object.__setattr__(self, "last_set", name)


def _fused(setup: Any = None) -> nn.Module:
    module = nni.LinearReLU(nn.Linear(2, 2), nn.ReLU())
    if setup is not None:
        setup(module)
    return module


@pytest.mark.parametrize("make", [
    _fused, lambda: _RecordsSetattr(nn.Linear(2, 2), nn.ReLU()),
    lambda: _fused(lambda m: m.__dict__.__setitem__("0", "an instance attribute of the child's name")),
    lambda: _fused(lambda m: m._buffers.__setitem__("0", torch.zeros(1))),
    lambda: _fused(lambda m: m._non_persistent_buffers_set.add("0")),
])
@pytest.mark.parametrize("hooked", [False, True])
def test_setting_the_first_member_is_sequential_indexing(make, hooked):
    """swap-modules puts the reference module into its fused container as `container[0] = member` does:
    the same table of children and the same __dict__, a class's own __setattr__ and a global module
    registration hook run (then it takes the indexing itself)."""
    from qfx.passes.swap_modules.weighted import _set_first_member
    expected, got, member = make(), make(), nn.Linear(2, 2)
    seen = []
    handle = (torch.nn.modules.module.register_module_module_registration_hook(
        lambda module, name, child: seen.append(name)) if hooked else None)
    try:
        expected[0] = member
        _set_first_member(got, member)
    finally:
        if handle is not None:
            handle.remove()
    assert list(got._modules) == list(expected._modules) and got[0] is member and expected[0] is member
    assert list(got.__dict__) == list(expected.__dict__)
    assert got.__dict__.get("0") == expected.__dict__.get("0")
    assert list(got._buffers) == list(expected._buffers)
    assert got._non_persistent_buffers_set == expected._non_persistent_buffers_set
    assert getattr(got, "last_set", None) == getattr(expected, "last_set", None)
    assert seen == (["0", "0"] if hooked else [])


class _MetaProperty(nn.Module):
    @property
    def meta(self) -> dict:
        return {}


class _LooksUpAnything(nn.Module):
    def __getattr__(self, name: str) -> Any:
        return {} if name == "meta" else super().__getattr__(name)


def _with(setup: Any) -> nn.Module:
    module = nn.Linear(2, 2)
    setup(module)
    return module


@pytest.mark.parametrize("module, quick", [
    (nn.Linear(2, 2), True), (nn.Sequential(nn.ReLU()), True), (_MetaProperty(), False),
    (_LooksUpAnything(), False),
    (_with(lambda m: setattr(m, "meta", {})), False),
    (_with(lambda m: m.register_buffer("meta", torch.zeros(1))), False),
    (_with(lambda m: m.add_module("meta", nn.ReLU())), False),
    (_with(lambda m: m.register_parameter("meta", nn.Parameter(torch.zeros(1)))), False),
    (torch.fx.symbolic_trace(nn.ReLU()), False),
])
def test_the_quick_no_meta_answer_agrees_with_hasattr(module, quick):
    """StandaloneTest answers 'no' without asking hasattr only for modules that have no `meta`; for the
    others it answers (or fails) as torch's test does."""
    from torch.ao.quantization.fx.graph_module import _is_observed_standalone_module

    from qfx.passes.swap_modules.module_lookup import ModuleLookup
    from qfx.passes.swap_modules.standalone import StandaloneTest
    assert ModuleLookup().lacks(module, "meta") is quick
    assert hasattr(module, "meta") is not quick

    def outcome(test: Any) -> Any:
        try:
            return test(module)
        except Exception as exc:  # noqa: BLE001  (a buffer named meta makes torch's `in` fail)
            return type(exc)
    assert outcome(StandaloneTest(ModuleLookup())) == outcome(_is_observed_standalone_module)


def test_the_swap_support_check_answers_as_torchs_own():
    """Whether a class with a qconfig gets a reference module, read from the qconfig's dtypes once per
    qconfig: torch's dtype-config check and weight test on the qconfig itself give the same answers."""
    from torch.ao.quantization import (default_dynamic_qconfig, float16_dynamic_qconfig, float16_static_qconfig,
                                       float_qparams_weight_only_qconfig, get_default_qconfig,
                                       per_channel_dynamic_qconfig)
    from torch.ao.quantization.backend_config import get_native_backend_config
    from torch.ao.quantization.fx.qconfig_mapping_utils import _is_qconfig_supported_by_dtype_configs
    from torch.ao.quantization.utils import weight_is_quantized

    from qfx.passes.swap_modules.weighted import WeightedClasses
    qconfigs = [get_default_qconfig("x86"), get_default_qconfig("qnnpack"), default_dynamic_qconfig,
                float16_dynamic_qconfig, float16_static_qconfig, float_qparams_weight_only_qconfig,
                per_channel_dynamic_qconfig]
    classes = WeightedClasses.of(get_native_backend_config())
    kinds = [*classes.root_to_reference, *classes.fused, nn.ReLU]
    for qconfig in qconfigs:
        for kind in kinds:
            configs = classes.pattern_to_dtype_configs.get(kind, [])
            expected = _is_qconfig_supported_by_dtype_configs(qconfig, configs) and weight_is_quantized(qconfig)
            assert classes.reference_swap_applies(qconfig, kind) is expected, (qconfig, kind)
