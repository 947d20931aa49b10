"""lower-dynamic-modules: reference Linear / LinearReLU / RNN cells / LSTM / GRU fed by
quantize_per_tensor_dynamic -> dequantize become torch's dynamically quantized modules reading the float
input; int8 and fp16 as torch decides, other dtypes left alone; engine failures are typed."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
from hypothesis import assume, given, settings
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, float16_dynamic_qconfig
from torch.ao.quantization import per_channel_dynamic_qconfig

from qfx.ir.errors import ConvertError
from qfx.lowering.lower_dynamic_modules import lower_dynamic_modules
from qfx.lowering.support.engine import EngineError
from qfx.passes import Pipeline
from qfx.testing.strategies import examples, observed_models
from tests.support.lowering import (
    assert_modules_lowered_as_torch,
    assert_same_module,
    calibrated,
    node_of,
    reference_program,
    torch_lowered,
)

LOWER = Pipeline.parse("lower-dynamic-modules")
DYNAMIC_CLASSES = (nnqd.Linear, nnqd.GRUCell, nnqd.LSTMCell, nnqd.RNNCell, nnqd.LSTM, nnqd.GRU, nniqd.LinearReLU)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc_relu = nn.Linear(4, 4)
        self.relu = nn.ReLU()
        self.lstm = nn.LSTM(4, 3, num_layers=2)
        self.gru = nn.GRU(4, 3)
        self.lstm_cell = nn.LSTMCell(4, 3)
        self.gru_cell = nn.GRUCell(4, 3)
        self.rnn_cell = nn.RNNCell(4, 3)

    def forward(self, x):
        y = self.relu(self.fc_relu(self.fc(x)))
        seq = y.unsqueeze(0)
        flat = y.reshape(-1, 4)
        return (self.lstm(seq)[0], self.gru(seq)[0], self.lstm_cell(flat)[0], self.gru_cell(flat),
                self.rnn_cell(flat))


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


INPUTS = (torch.randn(2, 4),)
PATHS = {"fc": nnqd.Linear, "fc_relu": nniqd.LinearReLU, "lstm": nnqd.LSTM, "gru": nnqd.GRU,
         "lstm_cell": nnqd.LSTMCell, "gru_cell": nnqd.GRUCell, "rnn_cell": nnqd.RNNCell}


def _mapping(qconfig) -> QConfigMapping:
    return QConfigMapping().set_global(qconfig)


@pytest.mark.parametrize("qconfig", [default_dynamic_qconfig, per_channel_dynamic_qconfig, float16_dynamic_qconfig],
                         ids=["int8", "int8_per_channel", "fp16"])
def test_dynamic_reference_modules_become_torchs_dynamic_modules(qconfig) -> None:
    observed = calibrated(Mixed(), _mapping(qconfig), INPUTS)
    before = reference_program(observed)
    assert type(before.modules["fc"]) is nnqr.Linear and type(before.modules["lstm"]) is nnqr.LSTM
    after = LOWER.run(before)
    expected = torch_lowered(observed)
    for path, cls in PATHS.items():
        assert type(after.modules[path]) is cls, path
        assert_same_module(after.modules[path], expected.get_submodule(path), path)
    nodes = after.graph.by_name
    for path in PATHS:
        node = node_of(after, path)
        first = nodes[node.input_names()[0]]
        # the module reads what the dynamic quantize read, never the dequantize
        assert not (first.op == "call_method" and first.target == "dequantize"), path
    assert node_of(after, "fc").input_names() == ["x"]
    # the bypassed quantize / dequantize stay for dce; no node is added or removed
    assert [n.name for n in after.graph.nodes] == [n.name for n in before.graph.nodes]


def test_a_module_called_twice_is_lowered_for_each_call() -> None:
    observed = calibrated(Shared(), _mapping(default_dynamic_qconfig), INPUTS)
    after = LOWER.run(reference_program(observed))
    assert_same_module(after.modules["fc"], torch_lowered(observed).get_submodule("fc"), "fc")
    calls = [n for n in after.graph.nodes if n.op == "call_module"]
    assert [n.input_names() for n in calls] == [["x"], ["fc"]]


def test_other_activation_dtypes_are_left_alone() -> None:
    observed = calibrated(Shared(), _mapping(default_dynamic_qconfig), INPUTS)
    before = reference_program(observed)
    nodes = [n.evolve(args=(n.args[0], torch.qint32, *n.args[2:]))
             if n.op == "call_function" and n.target is torch.quantize_per_tensor_dynamic else n
             for n in before.graph.nodes]
    program = before.with_nodes(nodes)
    after = LOWER.run(program)
    assert type(after.modules["fc"]) is nnqr.Linear
    assert list(after.graph.nodes) == list(program.graph.nodes)


def test_an_engine_that_cannot_pack_fp16_is_a_typed_runtime_error() -> None:
    observed = calibrated(Shared(), _mapping(float16_dynamic_qconfig), INPUTS)
    program = reference_program(observed)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        with pytest.raises(EngineError, match="node 'fc'.*qnnpack") as info:
            lower_dynamic_modules(program)
    finally:
        torch.backends.quantized.engine = previous
    assert isinstance(info.value, RuntimeError)


def test_a_module_without_a_node_input_is_a_typed_error() -> None:
    observed = calibrated(Shared(), _mapping(default_dynamic_qconfig), INPUTS)
    before = reference_program(observed)
    nodes = [n.evolve(args=(3.0,)) if n.name == "fc" else n for n in before.graph.nodes]
    with pytest.raises(ConvertError, match="node 'fc'"):
        lower_dynamic_modules(before.with_nodes(nodes))


def test_nothing_to_lower_returns_the_input() -> None:
    observed = calibrated(nn.Sequential(nn.Sigmoid()), _mapping(default_dynamic_qconfig), INPUTS)
    program = reference_program(observed)
    assert LOWER.run(program) is program


@settings(max_examples=examples(12))
@given(observed_models(qat=False, styles=("dynamic_linear",)))
def test_lowered_modules_equal_torch_convert_fx_on_random_models(observed_and_inputs) -> None:
    observed, _ = observed_and_inputs
    assume(assert_modules_lowered_as_torch(observed, LOWER, DYNAMIC_CLASSES))
