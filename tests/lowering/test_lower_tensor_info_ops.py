"""lower-tensor-info-ops: `getattr(dequantize(x), "shape")`, `dequantize(x).size()` read x itself; other
reads of the dequantized value stay; the whole lowered convert equals torch's convert_fx."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from hypothesis import given, settings
from torch.ao.quantization.quantize_fx import convert_fx

import qfx
from qfx.ir.program import Program
from qfx.lowering.lower_tensor_info_ops import is_shape_getattr, is_tensor_info_method
from qfx.passes import Pipeline
from tests.support.lowering import around_pass, observe
from tests.support.snapshot import assert_same_model, assert_same_outputs
from qfx.testing.strategies import examples, observed_models


PASS = Pipeline.parse("lower-tensor-info-ops")


class ShapeReads(nn.Module):
    def forward(self, x):
        h = torch.sigmoid(x)
        n = h.shape[0]
        c = h.size(1)
        return h.reshape(n, c, -1) * 2.0, h.size()




def _reads(program: Program) -> dict[str, str]:
    """shape/size node -> the op of the node it reads ('dequantize' or the producer's target)."""
    nodes = {n.name: n for n in program.graph.nodes}
    out = {}
    for n in program.graph.nodes:
        if is_shape_getattr(n) or is_tensor_info_method(n):
            src = nodes[n.args[0].name]
            out[n.name] = src.target if isinstance(src.target, str) else getattr(src.target, "__name__", "?")
    return out


def test_shape_and_size_read_the_quantized_tensor() -> None:
    inputs = (torch.randn(2, 3, 4),)
    before, after = around(observe(ShapeReads(), inputs))
    assert set(_reads(before).values()) == {"dequantize"}
    assert _reads(after) == {"getattr_1": "quantize_per_tensor", "size": "quantize_per_tensor",
                             "size_1": "quantize_per_tensor"}
    # the other users of the dequantized value still read the dequantize node
    reshape = next(n for n in after.graph.nodes if n.target == "reshape")
    assert {n.name: n for n in after.graph.nodes}[reshape.args[0].name].target == "dequantize"
    # only the first argument changes
    size = next(n for n in after.graph.nodes if n.name == "size")
    assert size.args[1:] == (1,)


def test_whole_convert_matches_torch() -> None:
    inputs = (torch.randn(2, 3, 4),)
    observed = observe(ShapeReads(), inputs)
    ours = qfx.convert_fx(observed)
    theirs = convert_fx(copy.deepcopy(observed))
    assert_same_model(ours, theirs)
    assert_same_outputs(ours, theirs, *inputs)


@settings(max_examples=examples(15))
@given(observed_models(qat=False))
def test_no_dequantized_shape_read_left_and_idempotent(case: tuple[torch.fx.GraphModule, tuple]) -> None:
    observed, _ = case
    _, after = around(observed)
    assert "dequantize" not in _reads(after).values()
    assert PASS.run(after) is after


def around(observed: torch.fx.GraphModule) -> tuple[Program, Program]:
    """(the program before lower-tensor-info-ops, the program after it)."""
    return around_pass(observed, "lower-tensor-info-ops")
