"""lower-special-patterns: copy, fixed-qparams, shape, cat and default ops read quantized tensors directly;
default modules become their quantized modules and default functions their quantized operators with the
output qparams as keywords; fp16 patterns of copy ops lose only their dequantize; the whole lowered convert
of such models equals torch's convert_fx; on random observed models no pattern is left."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from torch.ao.quantization import QConfigMapping, default_qconfig, float16_static_qconfig
from torch.ao.quantization.backend_config.native import get_test_only_legacy_native_backend_config
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import qfx
from qfx.api import convert_options
from qfx.ir import lift
from qfx.ir.edit import GraphEditor
from qfx.ir.program import Program
from qfx.lowering.lower_special_patterns.tables import SPECIAL
from qfx.lowering.support.engine import EngineError
from qfx.lowering.support.patterns import is_dequantize
from qfx.passes import Pipeline
from tests.support.lowering import REFERENCE_PREFIX, around_pass, observe
from tests.support.snapshot import assert_same_model, assert_same_outputs
from qfx.testing.strategies import examples, observed_models


PASS = Pipeline.parse("lower-special-patterns")


class Special(nn.Module):
    """One op of each family, modules (one called twice) and functions."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.pool = nn.MaxPool2d(2)
        self.hswish = nn.Hardswish()
        self.ln = nn.LayerNorm([3, 2, 2])
        self.softmax = nn.Softmax(dim=1)
        self.prelu = nn.PReLU()

    def forward(self, x):
        h = self.pool(self.bn(x))                                # default module, copy module
        h = F.hardswish(h)                                       # default function
        h = F.leaky_relu(h, negative_slope=0.2)
        h = F.instance_norm(h, momentum=0.2)                     # skipped keyword argument
        h = self.hswish(self.ln(h))
        h = self.hswish(torch.sigmoid(h))                        # shared module, fixed qparams function
        a = torch.cat([h.reshape(2, -1), torch.flatten(h, 1)], 1)  # cat of a list, shape method, copy function
        s = self.softmax(self.prelu(a))
        return torch.mean(F.elu(s), 1), F.dropout(a, 0.5, False, inplace=False)




def _patterns(program: Program) -> list[str]:
    """Quantize nodes that still read a special op whose first input is dequantized."""
    nodes = {n.name: n for n in program.graph.nodes}
    left = []
    for n in program.graph.nodes:
        if n.target is not torch.quantize_per_tensor or n.args[0].name not in nodes:
            continue
        ref = nodes[n.args[0].name]
        if SPECIAL.holds(program, ref) and ref.args and is_dequantize(nodes.get(getattr(ref.args[0], "name", None))):
            left.append(n.name)
    return left


INPUTS = (torch.randn(2, 3, 4, 4),)


def test_modules_are_swapped_and_functions_become_quantized_ops() -> None:
    before, after = around(observe(Special(), INPUTS))
    assert _patterns(before) and not _patterns(after)
    assert type(after.modules["bn"]) is nnq.BatchNorm2d
    assert type(after.modules["hswish"]) is nnq.Hardswish
    assert type(after.modules["ln"]) is nnq.LayerNorm
    assert type(after.modules["softmax"]) is nnq.Softmax
    assert type(after.modules["prelu"]) is nnq.PReLU
    assert type(after.modules["pool"]) is nn.MaxPool2d  # copy modules stay
    assert type(before.modules["bn"]) is nn.BatchNorm2d  # (the input program is untouched)
    nodes = {n.name: n for n in after.graph.nodes}
    q = torch.ops.quantized
    by_target = {n.target: n for n in after.graph.nodes if n.op == "call_function"}
    for op in (q.hardswish, q.leaky_relu, q.instance_norm, q.elu, q.dropout):
        node = by_target[op]
        keys = [k for k, _ in node.kwargs]
        assert keys[-2:] == ["output_scale", "output_zero_point"]
        assert all(nodes[v.name].op == "get_attr" for _, v in node.kwargs[-2:])
        assert list(node.meta) == ["stack_trace"]
        # inserted right after the zero-point node it reads
        order = [n.name for n in after.graph.nodes]
        assert order.index(node.name) == order.index(node.kwargs[-1][1].name) + 1
    assert "momentum" not in dict(by_target[q.instance_norm].kwargs)
    assert dict(by_target[q.leaky_relu].kwargs)["negative_slope"] == 0.2
    # the quantized op's name is FX's for its target; the float call's name stays taken
    assert by_target[q.hardswish].name == "hardswish_1"
    assert F.hardswish not in by_target and F.elu not in by_target
    cat = by_target[torch.cat]
    assert all(nodes[a.name].target != "dequantize" for a in cat.args[0].items)


def test_the_shared_module_takes_the_last_calls_qparams() -> None:
    observed = observe(Special(), INPUTS)
    before, after = around(observed)
    assert [n.name for n in after.graph.nodes if n.op == "call_module" and n.target == "hswish"] == [
        "hswish", "hswish_1"]
    nodes = {n.name: n for n in before.graph.nodes}
    scales = [float(before.resolve(nodes[n.args[1].name].target)) for n in before.graph.nodes
              if n.target is torch.quantize_per_tensor and n.args[0].name in ("hswish", "hswish_1")]
    assert len(scales) == 2 and scales[0] != scales[1]
    # torch swaps the module once per call, so the second call's output qparams win
    assert after.modules["hswish"].scale == scales[1]
    theirs = convert_fx(copy.deepcopy(observed))
    assert (after.modules["hswish"].scale, after.modules["hswish"].zero_point) == (
        theirs.hswish.scale, theirs.hswish.zero_point)


def test_whole_convert_matches_torch() -> None:
    observed = observe(Special(), INPUTS)
    ours = qfx.convert_fx(observed)
    theirs = convert_fx(copy.deepcopy(observed))
    assert_same_model(ours, theirs)
    assert_same_outputs(ours, theirs, *INPUTS)


class CatOfLinears(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(4, 4) for _ in range(k))

    def forward(self, x):
        return torch.cat([fc(x) for fc in self.fcs], 1)


def test_a_cat_of_many_inputs_is_rebuilt_once_and_matches_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cat reads every quantized input in one edit (one per input made lowering a k-input cat O(k^2))."""
    observed = observe(CatOfLinears(12), (torch.randn(2, 4),))
    rebuilt: list[str] = []
    replace = GraphEditor._replace_inputs
    monkeypatch.setattr(GraphEditor, "_replace_inputs",
                        lambda editor, name, mapping: rebuilt.append(name) or replace(editor, name, mapping))
    ours = qfx.convert_fx(observed)
    assert rebuilt.count("cat") == 1
    theirs = convert_fx(copy.deepcopy(observed))
    assert_same_model(ours, theirs)
    assert_same_outputs(ours, theirs, torch.randn(2, 4))


class Fp16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        h = torch.flatten(self.pool(x), 1)
        h = self.lin(h.reshape(2, 3))
        return F.layer_norm(h, [3]), torch.sigmoid(h), torch.relu(h)


def test_fp16_copy_ops_lose_their_dequantize_and_match_torch() -> None:
    # torch's legacy native backend config is the one that runs copy ops in fp16 (`.to(torch.float16)`)
    backend = get_test_only_legacy_native_backend_config()
    mapping = QConfigMapping().set_global(float16_static_qconfig)
    inputs = (torch.randn(2, 3, 4, 4),)
    observed = prepare_fx(Fp16().eval(), mapping, inputs, backend_config=backend)
    observed(*inputs)
    program = lift(observed, options=convert_options(is_reference=False, convert_custom_config=None,
                                                     backend_config=backend))
    before = Pipeline.parse(REFERENCE_PREFIX).run(program)
    after = PASS.run(before)
    reads = lambda p, name: next(n for n in p.graph.nodes if n.name == name).args[0].name  # noqa: E731
    assert [reads(before, n) for n in ("pool", "flatten", "reshape")] == ["dequantize", "dequantize_1",
                                                                         "dequantize_2"]
    assert [reads(after, n) for n in ("pool", "flatten", "reshape")] == ["to", "pool", "flatten"]
    assert reads(after, "sigmoid") == "dequantize_4"  # fixed-qparams ops have no fp16 lowering
    assert not any(n.name in ("to_1", "to_2", "to_3") for n in after.graph.nodes)
    ours = qfx.convert_fx(observed, backend_config=backend)
    theirs = convert_fx(copy.deepcopy(observed), backend_config=backend)
    assert_same_model(ours, theirs)
    assert_same_outputs(ours, theirs, *inputs)


@settings(max_examples=examples(15))
@given(observed_models(qat=False))
def test_no_pattern_left_and_idempotent(case: tuple[torch.fx.GraphModule, tuple]) -> None:
    observed, _ = case
    _, after = around(observed)
    assert _patterns(after) == []
    assert PASS.run(after) is after


def around(observed: torch.fx.GraphModule) -> tuple[Program, Program]:
    """(the program before lower-special-patterns, the program after it)."""
    return around_pass(observed, "lower-special-patterns")


def test_a_module_the_engine_cannot_build_is_a_typed_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.ConvTranspose2d(3, 4, 2, stride=2)).eval()
    observed = prepare_fx(model, QConfigMapping().set_global(default_qconfig), INPUTS)
    observed(*INPUTS)

    def refuse(*args):
        raise RuntimeError("this engine has no such kernel")  # as an engine's prepack refuses a layout

    monkeypatch.setattr(torch.ops.quantized, "conv_transpose2d_prepack", refuse)
    with pytest.raises(RuntimeError, match="no such kernel"):
        convert_fx(copy.deepcopy(observed))
    engine = torch.backends.quantized.engine
    with pytest.raises(EngineError, match=f"node '_0' \\(module '0'\\): the '{engine}' quantized engine.*no such kernel"):
        qfx.convert_fx(observed)
