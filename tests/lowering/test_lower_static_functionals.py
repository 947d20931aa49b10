"""lower-static-functionals: dequantize -> F.linear / F.conv* / F.conv_transpose* [-> relu] -> quantize
becomes a prepack call before the output scale and the quantized op after the zero point, as torch edits
it; the whole lowered model equals torch's convert_fx."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx

import qfx
from qfx.ir.args import Ref
from qfx.ir.edit import GraphEditor
from qfx.ir.program import Program
from qfx.passes import Pipeline
from tests.support.lowering import calibrated, reference_program
from tests.support.snapshot import assert_same_model, assert_same_outputs

LOWER = Pipeline.parse("lower-static-functionals")
Q = torch.ops.quantized


def assert_lowered_like_torch(observed: torch.fx.GraphModule, inputs: tuple, **kwargs: Any) -> torch.fx.GraphModule:
    """qfx.convert_fx equals torch's convert_fx (code, state_dict, tree, outputs); returns qfx's model."""
    expected = convert_fx(copy.deepcopy(observed), **kwargs)
    actual = qfx.convert_fx(observed, **kwargs)
    assert_same_model(actual, expected)
    assert_same_outputs(actual, expected, *inputs)
    return actual


def nodes_by_target(program: Program, target: Any) -> list:
    return [n for n in program.graph.nodes if n.op == "call_function" and n.target is target]


def position(program: Program, name: str) -> int:
    return program.graph.position[name]


class Linears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 6))
        self.b1 = nn.Parameter(torch.randn(8))
        self.w2 = nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        x = F.relu(F.linear(x, self.w1, bias=self.b1))
        return F.linear(x, self.w2)


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1d = nn.Parameter(torch.randn(4, 3, 3))
        self.b1d = nn.Parameter(torch.randn(4))
        self.wt = nn.Parameter(torch.randn(4, 2, 3, 3))

    def forward(self, x):
        y = F.relu(F.conv1d(x, self.w1d, self.b1d, 1, 1, 1, 1))
        y = y.unsqueeze(2).repeat(1, 1, 3, 1)
        return F.relu(F.conv_transpose2d(y, self.wt, None, (1, 1), (0, 0), (0, 0), 1, (1, 1)))


LINEAR_INPUTS = (torch.randn(3, 6),)
CONV_INPUTS = (torch.randn(2, 3, 5),)


def test_linear_becomes_prepack_and_quantized_linear_in_torch_order() -> None:
    observed = calibrated(Linears(), get_default_qconfig_mapping("x86"), LINEAR_INPUTS)
    before = reference_program(observed)
    after = LOWER.run(before)
    assert not nodes_by_target(after, F.linear) and not nodes_by_target(after, F.relu)
    (fused,) = nodes_by_target(after, Q.linear_relu)
    (plain,) = nodes_by_target(after, Q.linear)
    assert (fused.name, plain.name) == ("linear", "linear_1")  # the functional nodes keep their names
    prepacks = nodes_by_target(after, Q.linear_prepack)
    assert [p.name for p in prepacks] == ["linear_prepack", "linear_prepack_1"]
    for op, prepack in ((fused, prepacks[0]), (plain, prepacks[1])):
        x_q, packed, scale, zero_point = op.args
        assert packed == Ref(prepack.name) and op.kwargs == ()
        assert position(after, prepack.name) + 1 == position(after, scale.name)  # inserted before the scale
        assert position(after, zero_point.name) + 1 == position(after, op.name)  # moved after the zero point
        weight = after.graph[prepack.args[0].name]
        assert weight.target is torch.quantize_per_channel
    assert after.graph[fused.args[0].name].target is torch.quantize_per_tensor
    assert plain.args[0] == Ref(fused.name)  # the quantized output feeds the next op directly
    # linear's `bias` keyword is the prepack op's `B`
    assert prepacks[0].kwargs == (("B", before.graph["linear"].kwarg("bias")),)
    assert prepacks[1].kwargs == ()
    assert_lowered_like_torch(observed, LINEAR_INPUTS)


def test_conv1d_ints_become_tuples_and_conv_transpose_swaps_groups_and_dilation() -> None:
    observed = calibrated(Convs(), get_default_qconfig_mapping("x86"), CONV_INPUTS)
    after = LOWER.run(reference_program(observed))
    (conv1d_prepack,) = nodes_by_target(after, Q.conv1d_prepack)
    assert conv1d_prepack.args[2:] == ((1,), (1,), (1,), 1)
    (transpose_prepack,) = nodes_by_target(after, Q.conv_transpose2d_prepack)
    # functional: (w, b, stride, padding, output_padding, groups, dilation) -> prepack: ..., dilation, groups
    assert transpose_prepack.args[2:] == ((1, 1), (0, 0), (0, 0), (1, 1), 1)
    assert len(nodes_by_target(after, Q.conv1d_relu)) == 1
    # there is no fused conv_transpose + relu: the op is the plain one, the ReLU stays a float op after it
    (transpose,) = nodes_by_target(after, Q.conv_transpose2d)
    (relu,) = nodes_by_target(after, F.relu)
    assert after.graph[relu.args[0].name].args[0] == Ref(transpose.name)
    assert_lowered_like_torch(observed, CONV_INPUTS)


def test_a_float_weight_is_left_alone() -> None:
    # a dequantize of something that is not a quantize call: torch skips the pattern
    observed = calibrated(Linears(), get_default_qconfig_mapping("x86"), LINEAR_INPUTS)
    before = reference_program(observed)
    (weight_q,) = [n for n in before.graph.nodes if n.target is torch.quantize_per_channel][:1]
    editor = GraphEditor(before)
    # make the first linear read a dequantize of its float weight (through a clone)
    (w_dq,) = editor.users(weight_q.name)
    clone = editor.insert_before(weight_q.name, "call_method", "clone", (weight_q.args[0],))
    editor.update(w_dq, args=(clone,))
    edited = editor.finish()
    after = LOWER.run(edited)
    assert after.graph["linear"].target is F.linear
    assert after.graph["linear_1"].target is Q.linear


def test_no_pattern_no_change() -> None:
    class Plain(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x)

    observed = calibrated(Plain(), get_default_qconfig_mapping("x86"), LINEAR_INPUTS)
    before = reference_program(observed)
    assert LOWER.run(before) is before
