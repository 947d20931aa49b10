"""Weights' producer chains run ahead of time (observe-weights, fold-weights) on copies: an op of the chain that
works in place changes the copy, the result holds the changed copy, as torch's (which runs the chain on the
live model) holds the changed tensor, and the observed model stays as it was."""

from __future__ import annotations

import copy
import operator
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_fx

from qfx.ir.graph import Node
from qfx.passes.support.chain_copies import writes_its_inputs
from tests.differential.test_reference_diff import MODES, attempt
from tests.support.snapshot import assert_same_model, assert_same_outputs, assert_unchanged, snapshot


class _Linear(nn.Module):
    """F.linear of an input with a weight buffer (a buffer: an in-place op on a Parameter that requires
    grad fails in torch as in qfx)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(8, 6))
        self.register_buffer("b", torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)


def _with_in_place_weight_op(mapping: QConfigMapping, method: str, *args: object) -> torch.fx.GraphModule:
    """The observed _Linear with `w.<method>(*args)` (an in-place method) inserted between the weight's
    get_attr and its observer, so that the weight's producer chain runs it."""
    torch.manual_seed(0)
    example = (torch.randn(4, 6),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(_Linear().eval(), mapping, example)
        observed(*example)
    graph = observed.graph
    weight = next(n for n in graph.nodes if n.op == "get_attr" and n.target == "w")
    (observer,) = weight.users
    with graph.inserting_after(weight):
        shifted = graph.call_method(method, (weight, *args))
    observer.replace_input_with(weight, shifted)
    observed.recompile()
    return observed


def _with_fused_fake_quant_of_weight() -> torch.fx.GraphModule:
    """The observed dynamic _Linear whose weight goes through the fused fake-quantize op first, its running
    min/max, scale and zero point root buffers read by get_attr (what tracing a QAT conv as a standalone
    module gives): an op that writes four of its inputs, without counting new versions of them."""
    torch.manual_seed(0)
    example = (torch.randn(4, 6),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(_Linear().eval(), QConfigMapping().set_global(default_dynamic_qconfig), example)
        observed(*example)
    state = {"observe": torch.tensor([1], dtype=torch.uint8), "fake_quantize": torch.tensor([1], dtype=torch.uint8),
             "low": torch.tensor(float("inf")), "high": torch.tensor(float("-inf")), "scale": torch.tensor([1.0]),
             "zero_point": torch.tensor([0], dtype=torch.int32)}
    for name, value in state.items():
        observed.register_buffer(name, value)
    graph = observed.graph
    weight = next(n for n in graph.nodes if n.op == "get_attr" and n.target == "w")
    (observer,) = weight.users
    with graph.inserting_before(observer):
        reads = [graph.get_attr(name) for name in state]
        fake = graph.call_function(torch.fused_moving_avg_obs_fake_quant,
                                   (weight, *reads, 0.01, -128, 127, 0, False, True))
    observer.replace_input_with(weight, fake)
    observed.recompile()
    return observed


CHAINS = {
    "dynamic fused fake quant": _with_fused_fake_quant_of_weight,
    "dynamic add_": lambda: _with_in_place_weight_op(QConfigMapping().set_global(default_dynamic_qconfig),
                                                     "add_", 0.25),
    "static clamp_": lambda: _with_in_place_weight_op(get_default_qconfig_mapping("x86"), "clamp_", -0.5, 0.5),
}


@pytest.mark.parametrize("mode", ["reference", "decomposed", "lowered"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_an_in_place_op_in_a_weight_chain_changes_a_copy(name: str, mode: str) -> None:
    observed = CHAINS[name]()
    before = snapshot(observed)
    qfx_fn, torch_fn = MODES[mode]
    expected, torch_exc = attempt(torch_fn, copy.deepcopy(observed))
    actual, qfx_exc = attempt(qfx_fn, observed)
    assert_unchanged(before, observed)
    assert torch_exc is None and qfx_exc is None, (torch_exc, qfx_exc)
    assert_same_model(actual, expected)
    # (each from a copy: the converted forward still runs the in-place op, on its own model)
    assert_same_outputs(actual, expected, torch.randn(4, 6))


def _node(op: str, target: object, kwargs: tuple = ()) -> Node:
    return Node("n", op, target, (), kwargs)


@pytest.mark.parametrize("node, writes", [
    (_node("call_method", "add_"), True),
    (_node("call_method", "add"), False),
    (_node("call_method", "__getitem__"), False),
    (_node("call_function", torch.fused_moving_avg_obs_fake_quant), True),
    (_node("call_function", torch.ops.aten.add_.Tensor), True),
    (_node("call_function", torch.quantize_per_channel), False),  # (its .out overload writes only out=)
    (_node("call_function", torch.quantize_per_channel, (("out", None),)), True),
    (_node("call_function", torch.ops.quantized.linear_prepack), False),
    (_node("call_function", operator.getitem), False),
    (_node("call_function", operator.iadd), True),
    (_node("call_function", getattr), False),
    (_node("call_function", F.relu), True),  # a Python function: not known not to
    (_node("call_function", torch.transpose), False),
    (_node("get_attr", "w"), False),
])
def test_ops_that_may_write_their_inputs_are_told_apart(node: Node, writes: bool) -> None:
    assert writes_its_inputs(node) is writes
