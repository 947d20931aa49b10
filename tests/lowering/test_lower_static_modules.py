"""lower-static-modules: static weighted reference modules (Linear, Conv1d/2d/3d, fused LinearReLU /
ConvReLU, two-input ConvAdd2d / ConvAddReLU2d) become torch's quantized modules, with torch's graph edits;
None qconfigs and fused modules around float modules are left alone; the modules equal torch's convert_fx's."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
from hypothesis import assume, given, settings
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.backend_config import get_onednn_backend_config

from qfx.ir.args import Ref
from qfx.ir.edit import GraphEditor
from qfx.ir.errors import ConvertValueError
from qfx.ir.program import Program
from qfx.lowering.lower_static_modules import lower_static_modules
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
from tests.support.models import SmallLinear

STATIC_CLASSES = (nnq.Linear, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nniq.LinearReLU, nniq.LinearLeakyReLU,
                  nniq.LinearTanh, nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.ConvReLU3d, nniq.ConvAdd2d,
                  nniq.ConvAddReLU2d)


def input_ops(program: Program, node) -> list[tuple[str, Any]]:
    """(op, target) of each node the node reads, in argument order."""
    nodes = program.graph.by_name
    return [(nodes[name].op, nodes[name].target) for name in node.input_names()]


LOWER = Pipeline.parse("lower-static-modules")


# ---- models -------------------------------------------------------------------------------------------

class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.conv1d = nn.Conv1d(2, 3, 2)
        self.conv3d = nn.Conv3d(1, 2, 2)

    def forward(self, x, y, z):
        return self.conv2(self.relu(self.conv1(x))), self.conv1d(y), torch.relu(self.conv3d(z))


class ConvAdds(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.conv_relu = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x, y):
        return self.conv(x) + y, self.relu(self.conv_relu(x) + y)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        return self.fc(torch.sigmoid(self.fc(x)))


MLP_INPUTS = (torch.randn(3, 6),)
CNN_INPUTS = (torch.randn(2, 3, 6, 6), torch.randn(2, 2, 5), torch.randn(1, 1, 3, 3, 3))


# ---- tests --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_linear_and_fused_linear_relu_are_lowered_as_torch_does(engine: str) -> None:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        observed = calibrated(SmallLinear(), get_default_qconfig_mapping(engine), MLP_INPUTS)
        before = reference_program(observed)
        assert type(before.modules["fc1"][0]) is nnqr.Linear and type(before.modules["fc2"]) is nnqr.Linear
        after = LOWER.run(before)
        expected = torch_lowered(observed)
    finally:
        torch.backends.quantized.engine = previous
    assert type(after.modules["fc1"]) is nniq.LinearReLU and type(after.modules["fc2"]) is nnq.Linear
    assert "fc1.0" not in after.modules  # the fused module's reference child left the table with it
    for path in ("fc1", "fc2"):
        assert_same_module(after.modules[path], expected.get_submodule(path), path)
    # each module reads the quantized tensor its dequantize read
    assert input_ops(after, node_of(after, "fc1")) == [("call_function", torch.quantize_per_tensor)]
    # the quantize after each module and its scale / zero-point nodes are gone, nothing else
    gone = {n.name for n in before.graph.nodes} - {n.name for n in after.graph.nodes}
    assert gone == {"quantize_per_tensor_1", "fc1_scale_0", "fc1_zero_point_0",
                    "quantize_per_tensor_2", "fc2_scale_0", "fc2_zero_point_0"}
    assert [n.name for n in after.graph.nodes if n.name not in gone] == [
        n.name for n in before.graph.nodes if n.name not in gone]
    # fc2 reads fc1 directly (fc1's quantize's users were redirected), and the output dequantize reads fc2
    assert node_of(after, "fc2").input_names() == ["fc1"]
    assert [u for u in after.graph.users["fc2"]] == ["dequantize_2"]


def test_convs_and_fused_conv_relu_are_lowered_as_torch_does() -> None:
    observed = calibrated(CNN(), get_default_qconfig_mapping("x86"), CNN_INPUTS)
    after = LOWER.run(reference_program(observed))
    expected = torch_lowered(observed)
    classes = {p: type(after.modules[p]) for p in ("conv1", "conv2", "conv1d", "conv3d")}
    assert classes == {"conv1": nniq.ConvReLU2d, "conv2": nnq.Conv2d, "conv1d": nnq.Conv1d, "conv3d": nnq.Conv3d}
    for path in classes:
        assert_same_module(after.modules[path], expected.get_submodule(path), path)


def test_a_relu_between_module_and_quantize_is_matched_and_left_unread() -> None:
    # conv3d -> relu -> quantize (a relu inside the pattern): torch's static walk matches through the relu,
    # redirects the quantize's users to the conv node and leaves the relu unread (dce drops it later)
    observed = calibrated(CNN(), get_default_qconfig_mapping("x86"), CNN_INPUTS)
    before = reference_program(observed)
    editor = GraphEditor(before)
    (q,) = [n for n in editor.nodes() if n.op == "call_function" and n.args and n.args[0] == Ref("conv3d")]
    (dq,) = editor.users(q.name)
    (relu,) = editor.users(dq)
    editor.replace_all_uses(relu, Ref(dq))
    editor.update(relu, args=(Ref("conv3d"),))
    editor.move_after("conv3d", relu)
    editor.update(q.name, args=(Ref(relu), *q.args[1:]))
    with_relu = editor.finish()
    after = LOWER.run(with_relu)
    assert type(after.modules["conv3d"]) is nnq.Conv3d
    assert q.name not in after.graph and after.graph[dq].input_names() == ["conv3d"]
    assert after.graph[relu].input_names() == ["conv3d"] and not after.graph.users[relu]


def test_two_input_conv_add_modules_are_lowered() -> None:
    config = get_onednn_backend_config()
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "onednn"
    try:
        example = (torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5))
        observed = calibrated(ConvAdds(), get_default_qconfig_mapping("onednn"), example, backend_config=config)
        before = reference_program(observed, backend_config=config)
        after = LOWER.run(before)
        expected = torch_lowered(observed, backend_config=config)
    finally:
        torch.backends.quantized.engine = previous
    assert type(after.modules["conv"]) is nniq.ConvAdd2d
    assert type(after.modules["conv_relu"]) is nniq.ConvAddReLU2d
    for path in ("conv", "conv_relu"):
        assert_same_module(after.modules[path], expected.get_submodule(path), path)
        # both dequantize inputs are bypassed
        assert input_ops(after, node_of(after, path)) == [("call_function", torch.quantize_per_tensor)] * 2
        assert [u for u in after.graph.users[path]] == [
            n.name for n in expected.graph.nodes if n.op == "call_module" and n.target == path
            for n in n.users]


def test_a_module_called_twice_ends_with_its_last_calls_qparams() -> None:
    observed = calibrated(Shared(), get_default_qconfig_mapping("x86"), (torch.randn(2, 5),))
    after = LOWER.run(reference_program(observed))
    expected = torch_lowered(observed)
    assert_same_module(after.modules["fc"], expected.get_submodule("fc"), "fc")
    calls = [n for n in after.graph.nodes if n.op == "call_module"]
    assert [n.name for n in calls] == ["fc", "fc_1"]
    assert all(input_ops(after, n) == [("call_function", torch.quantize_per_tensor)] for n in calls)


def test_nodes_with_a_none_qconfig_are_left_alone() -> None:
    observed = calibrated(SmallLinear(), get_default_qconfig_mapping("x86"), MLP_INPUTS)
    before = reference_program(observed)
    quant = before.quant
    silenced = before.evolve(quant=attrs.evolve(
        quant, node_name_to_qconfig={**quant.node_name_to_qconfig, "fc2": None}))
    after = LOWER.run(silenced)
    assert type(after.modules["fc2"]) is nnqr.Linear
    assert type(after.modules["fc1"]) is nniq.LinearReLU
    assert [n.op for n in map(after.graph.by_name.get, node_of(after, "fc2").input_names())] == ["call_method"]


def test_a_fused_module_around_a_float_module_is_left_alone() -> None:
    observed = calibrated(SmallLinear(), get_default_qconfig_mapping("x86"), MLP_INPUTS)
    before = reference_program(observed)
    fused = before.modules["fc1"]
    float_inner = type(fused)(nn.Linear(6, 8), nn.ReLU())
    swapped = before.with_modules({"fc1": float_inner})
    after = LOWER.run(swapped)
    assert after.modules["fc1"] is float_inner
    assert node_of(after, "fc1") == node_of(swapped, "fc1")
    assert type(after.modules["fc2"]) is nnq.Linear


def test_a_quantize_without_its_dtype_argument_is_a_typed_error() -> None:
    observed = calibrated(SmallLinear(), get_default_qconfig_mapping("x86"), MLP_INPUTS)
    before = reference_program(observed)
    nodes = [n.evolve(args=n.args[:3]) if n.name == "quantize_per_tensor_2" else n for n in before.graph.nodes]
    with pytest.raises(ConvertValueError, match="quantize_per_tensor_2.*fc2"):
        lower_static_modules(before.with_nodes(nodes))


def test_nothing_to_lower_returns_the_input() -> None:
    observed = calibrated(nn.Sequential(nn.Sigmoid()), get_default_qconfig_mapping("x86"), MLP_INPUTS)
    program = reference_program(observed)
    assert LOWER.run(program) is program


@settings(max_examples=examples(12))
@given(observed_models(qat=False, styles=("x86", "qnnpack", "per_channel", "module_names", "mixed_none")))
def test_lowered_modules_equal_torch_convert_fx_on_random_models(observed_and_inputs) -> None:
    observed, _ = observed_and_inputs
    assume(assert_modules_lowered_as_torch(observed, LOWER, STATIC_CLASSES))
