"""lower-binary-ops: quantized add/mul/matmul (with a fused ReLU) replace the reference patterns, with
torch's node names, argument lists and meta; the whole lowered convert of models that only need this pass
(and the special patterns) equals torch's convert_fx; on random observed models no pattern is left."""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn as nn
from hypothesis import given, settings
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx

import qfx
from qfx.ir.program import Program
from qfx.passes import Pipeline
from tests.support.lowering import around_pass, observe
from tests.support.snapshot import assert_same_model, assert_same_outputs
from qfx.testing.strategies import examples, observed_models


PASS = Pipeline.parse("lower-binary-ops")


class Binary(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x, y):
        a = torch.relu(x + y)            # add + F.relu -> add_relu
        b = self.relu(torch.add(a, x))   # torch.add + nn.ReLU -> add_relu
        c = a * 2.0                      # scalar operand -> mul without qparams
        d = torch.mul(b, c)              # -> mul
        e = torch.matmul(d, y.transpose(0, 1))
        return e, d




def calls(program: Program) -> list[tuple[str, object]]:
    return [(n.name, n.target) for n in program.graph.nodes if n.op == "call_function"]


def test_patterns_become_quantized_ops() -> None:
    inputs = (torch.randn(3, 4), torch.randn(3, 4))
    before, after = around(observe(Binary(), inputs))
    nodes = {n.name: n for n in after.graph.nodes}
    targets = [t for _, t in calls(after)]
    assert operator.add not in targets and torch.add not in targets and torch.mul not in targets
    assert torch.matmul not in targets
    q = torch.ops.quantized
    lowered_ops = [(name, t) for name, t in calls(after) if isinstance(t, torch._ops.OpOverloadPacket)]
    assert [t for _, t in lowered_ops] == [q.add_relu, q.add_relu, q.mul, q.mul, q.matmul]
    # FX names the new nodes after the quantized op; the float ops' names (mul, mul_1, matmul) stay taken
    assert [name for name, _ in lowered_ops] == ["add_relu", "add_relu_1", "mul_2", "mul_3", "matmul_1"]
    scalar = nodes["mul_2"]
    assert len(scalar.args) == 2 and scalar.args[1] == 2.0
    for name in ("add_relu", "add_relu_1", "mul_3", "matmul_1"):
        node = nodes[name]
        assert len(node.args) == 4
        assert all(nodes[a.name].op == "get_attr" for a in node.args[2:])
        assert all(nodes[a.name].target != "dequantize" for a in node.args[:2])
        # torch keeps only the stack trace of the float op
        assert list(node.meta) == ["stack_trace"]
    # the quantize and ReLU nodes are gone; nothing reads a binary op's dequantized inputs any more
    # (left: the two inputs' quantize nodes and the transpose's, which lower-special-patterns handles)
    quantizes = [n.name for n in after.graph.nodes if n.target is torch.quantize_per_tensor]
    assert quantizes == ["quantize_per_tensor", "quantize_per_tensor_1", "quantize_per_tensor_6"]
    assert not any(n.op == "call_module" and n.target == "relu" for n in after.graph.nodes)
    assert before is not after


def test_meta_keeps_only_the_stack_trace() -> None:
    inputs = (torch.randn(3, 4), torch.randn(3, 4))
    observed = observe(Binary(), inputs)
    for n in observed.graph.nodes:
        if n.target is operator.add:
            n.meta["stack_trace"] = "File model.py, line 1"
    _, after = around(observed)
    assert dict(next(n for n in after.graph.nodes if n.name == "add_relu").meta) == {
        "stack_trace": "File model.py, line 1"}


def test_none_qconfig_is_left_alone() -> None:
    class AddOnly(nn.Module):
        def forward(self, x, y):
            return torch.sigmoid(x) + y

    inputs = (torch.randn(3, 4), torch.randn(3, 4))
    mapping = get_default_qconfig_mapping("x86").set_object_type(operator.add, None)
    before, after = around(observe(AddOnly(), inputs, mapping))
    assert after is before  # nothing to lower: the pass returns its input


def test_whole_convert_matches_torch() -> None:
    inputs = (torch.randn(3, 4), torch.randn(3, 4))
    observed = observe(Binary(), inputs)
    ours = qfx.convert_fx(observed)
    theirs = convert_fx(copy.deepcopy(observed))
    assert_same_model(ours, theirs)
    assert_same_outputs(ours, theirs, *inputs)


def test_same_operand_twice_counts_as_two_tensors() -> None:
    class Square(nn.Module):
        def forward(self, x):
            h = torch.sigmoid(x)
            return h * h

    inputs = (torch.randn(3, 4),)
    observed = observe(Square(), inputs)
    _, after = around(observed)
    mul = next(n for n in after.graph.nodes if n.target is torch.ops.quantized.mul)
    assert mul.args[0] == mul.args[1] and len(mul.args) == 4
    ours = qfx.convert_fx(observed)
    theirs = convert_fx(copy.deepcopy(observed))
    assert_same_model(ours, theirs)
    assert_same_outputs(ours, theirs, *inputs)


def _binary_patterns(program: Program) -> list[str]:
    """Quantize nodes that still read a lowerable binary op (maybe through a ReLU) with a dequantize input."""
    from qfx.ir.edit import GraphEditor
    from qfx.lowering.lower_binary_ops import BINARY_OPS
    from qfx.lowering.support.patterns import match_static_pattern

    editor = GraphEditor(program)
    return [n.name for n in editor.walk() if match_static_pattern(editor, n, BINARY_OPS, (0, 1))]


@settings(max_examples=examples(15))
@given(observed_models(qat=False))
def test_no_pattern_left_and_idempotent(case: tuple[torch.fx.GraphModule, tuple]) -> None:
    observed, _ = case
    _, after = around(observed)
    assert _binary_patterns(after) == []
    assert PASS.run(after) is after


def around(observed: torch.fx.GraphModule) -> tuple[Program, Program]:
    """(the program before lower-binary-ops, the program after it)."""
    return around_pass(observed, "lower-binary-ops")
