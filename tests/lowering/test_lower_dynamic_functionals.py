"""lower-dynamic-functionals: quantize_per_tensor_dynamic -> dequantize -> F.linear [-> relu] becomes
prepack + linear_dynamic / linear_relu_dynamic; dynamic convs stay as torch leaves them; the lowered model
equals torch's convert_fx."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, float16_dynamic_qconfig

from qfx.ir.args import Ref
from qfx.passes import Pipeline
from tests.lowering.test_lower_static_functionals import assert_lowered_like_torch, nodes_by_target
from tests.support.lowering import calibrated, reference_program

LOWER = Pipeline.parse("lower-dynamic-functionals")
Q = torch.ops.quantized


class Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 6))
        self.b1 = nn.Parameter(torch.randn(8))
        self.w2 = nn.Parameter(torch.randn(4, 8))
        self.w3 = nn.Parameter(torch.randn(4, 4))
        self.relu = nn.ReLU()
        self.wc = nn.Parameter(torch.randn(2, 1, 2, 2))

    def forward(self, x):
        y = F.relu(F.linear(x, self.w1, bias=self.b1))  # fused, bias moved to the prepack as B
        y = self.relu(F.linear(y, self.w2))  # an nn.ReLU module fuses too
        y = torch.relu(F.linear(y, self.w3))  # torch.relu does not
        z = F.conv2d(y.reshape(1, 1, 3, 4), self.wc)  # no fused dynamic conv + relu: torch lowers none
        return y, z


INPUTS = (torch.randn(3, 6),)


def _mapping(qconfig) -> QConfigMapping:
    return QConfigMapping().set_global(qconfig)


def test_int8_linears_are_lowered_and_relus_fused_as_torch_does() -> None:
    observed = calibrated(Dynamic(), _mapping(default_dynamic_qconfig), INPUTS)
    before = reference_program(observed)
    after = LOWER.run(before)
    (fused_f,) = [n for n in nodes_by_target(after, Q.linear_relu_dynamic) if n.name == "linear"]
    assert [n.name for n in nodes_by_target(after, Q.linear_relu_dynamic)] == ["linear", "linear_1"]
    (plain,) = nodes_by_target(after, Q.linear_dynamic)
    assert plain.name == "linear_2"
    assert not nodes_by_target(after, F.relu) and "relu" not in after.graph  # both fused ReLUs erased
    (trelu,) = nodes_by_target(after, torch.relu)
    assert trelu.args[0] == Ref("linear_2")
    prepacks = nodes_by_target(after, Q.linear_prepack)
    assert len(prepacks) == 3
    for op in (fused_f, plain):
        _, packed, _ = op.args
        assert after.graph.position[packed.name] + 1 == after.graph.position[op.name]  # right before the op
    first = after.graph[fused_f.args[1].name]
    assert first.kwargs == (("B", before.graph["linear"].kwarg("bias")),) and fused_f.kwargs == ()
    # the conv keeps its reference form
    assert len(nodes_by_target(after, F.conv2d)) == 1 and not nodes_by_target(after, Q.conv2d_prepack)
    assert_lowered_like_torch(observed, INPUTS)


def test_dynamic_op_reads_the_float_input_and_reduce_range() -> None:
    observed = calibrated(Dynamic(), _mapping(default_dynamic_qconfig), INPUTS)
    before = reference_program(observed)
    after = LOWER.run(before)
    dq = before.graph[before.graph["linear"].args[0].name]
    dynamic_q = before.graph[dq.args[0].name]
    assert dynamic_q.target is torch.quantize_per_tensor_dynamic
    x, _, reduce_range = after.graph["linear"].args
    assert (x, reduce_range) == (dynamic_q.args[0], dynamic_q.args[2])


def test_fp16_dynamic_is_as_torch_leaves_it() -> None:
    observed = calibrated(Dynamic(), _mapping(float16_dynamic_qconfig), INPUTS)
    assert_lowered_like_torch(observed, INPUTS)
