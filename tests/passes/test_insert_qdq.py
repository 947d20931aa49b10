"""insert-qdq (with observe-weights, dce and cleanup) against torch's convert, on models whose weighted ops are
functional so that no module swap is involved: every observer conversion branch, quantized I/O indexes,
DeQuantStub, None-qconfig neighbours, attribute naming; in reference and decomposed modes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    default_qconfig,
    float16_static_qconfig,
    get_default_qconfig_mapping,
    per_channel_dynamic_qconfig,
)
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
from torch.ao.quantization.quantize_fx import (
    _convert_to_reference_decomposed_fx,
    convert_to_reference_fx,
    prepare_fx,
)
from torch.ao.quantization.stubs import DeQuantStub

from qfx.ir import ConvertOptions, lift
from qfx.lowering import codegen
from qfx.passes import Pipeline

PIPELINE = "observe-weights,insert-qdq,dce,cleanup"


class FunctionalNet(nn.Module):
    """Two inputs, functional linear with get_attr weights, cat, a tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 6))
        self.b = nn.Parameter(torch.randn(6))

    def forward(self, x, y):
        h = torch.relu(x + y)
        z = F.linear(h, self.w, self.b)
        return torch.cat([z, h], 1).sigmoid(), z * 2


class NestedOut(nn.Module):
    def forward(self, x):
        a = torch.relu(x)
        b = a + 1
        return {"a": a, "rest": [b, (a * b,)]}


class WithDeQuantStub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dequant = DeQuantStub()

    def forward(self, x):
        return self.dequant(torch.relu(x) + 1)


def _inputs(n: int, shape=(3, 6)):
    g = torch.Generator().manual_seed(n)
    return tuple(torch.randn(*shape, generator=g) for _ in range(n))


def _convert_both(model, mapping, example, decomposed, prepare_custom_config=None):
    torch.manual_seed(0)
    observed = prepare_fx(model.eval(), mapping, example, prepare_custom_config=prepare_custom_config)
    for i in range(3):
        observed(*_inputs(len(example), example[0].shape))
    program = lift(observed, options=ConvertOptions(is_decomposed=decomposed, remove_qconfig=not decomposed))
    before_code = observed.code
    before_state = {k: v.clone() for k, v in observed.state_dict().items()}
    ours = codegen(Pipeline.parse(PIPELINE).run(program))
    assert observed.code == before_code
    assert all(torch.equal(before_state[k], v) for k, v in observed.state_dict().items())
    reference = (_convert_to_reference_decomposed_fx if decomposed else convert_to_reference_fx)(
        copy.deepcopy(observed)
    )
    return ours, reference


def _assert_same(ours, reference, example):
    assert ours.code == reference.code
    ours_sd, ref_sd = ours.state_dict(), reference.state_dict()
    assert list(ours_sd) == list(ref_sd)
    for k in ref_sd:
        assert ours_sd[k].dtype == ref_sd[k].dtype and torch.equal(ours_sd[k], ref_sd[k]), k
    out_a, out_b = ours(*example), reference(*example)
    flat_a, _ = torch.utils._pytree.tree_flatten(out_a)
    flat_b, _ = torch.utils._pytree.tree_flatten(out_b)
    assert len(flat_a) == len(flat_b)
    for a, b in zip(flat_a, flat_b):
        if a.is_quantized:
            assert torch.equal(a.int_repr(), b.int_repr()) and a.q_scale() == b.q_scale()
        else:
            assert torch.equal(a, b)


MAPPINGS = {
    "minmax": lambda: QConfigMapping().set_global(default_qconfig),
    "x86": lambda: get_default_qconfig_mapping("x86"),
    "dynamic": lambda: QConfigMapping().set_global(default_dynamic_qconfig),
    "dynamic-per-channel": lambda: QConfigMapping().set_global(per_channel_dynamic_qconfig),
    "fp16": lambda: QConfigMapping().set_global(float16_static_qconfig),
    "relu-none": lambda: QConfigMapping().set_global(default_qconfig).set_object_type(torch.relu, None),
    "cat-none": lambda: QConfigMapping().set_global(default_qconfig).set_object_type(torch.cat, None),
}


@pytest.mark.parametrize("decomposed", [False, True], ids=["reference", "decomposed"])
@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_functional_net_matches_torch(mapping, decomposed):
    example = _inputs(2)
    ours, reference = _convert_both(FunctionalNet(), MAPPINGS[mapping](), example, decomposed)
    _assert_same(ours, reference, example)


@pytest.mark.parametrize("decomposed", [False, True], ids=["reference", "decomposed"])
def test_quantized_input_and_nested_output_indexes(decomposed):
    example = _inputs(1)
    config = PrepareCustomConfig().set_input_quantized_indexes([0]).set_output_quantized_indexes([0])
    ours, reference = _convert_both(NestedOut(), MAPPINGS["minmax"](), example, decomposed, config)
    assert "dequantize" in ours.code
    q = torch.quantize_per_tensor(example[0], 0.05, 128, torch.quint8)
    _assert_same(ours, reference, (q,))


def test_quantized_output_index_on_tuple():
    example = _inputs(2)
    config = PrepareCustomConfig().set_output_quantized_indexes([1])
    ours, reference = _convert_both(FunctionalNet(), MAPPINGS["minmax"](), example, False, config)
    _assert_same(ours, reference, example)
    assert ours(*example)[1].is_quantized


def test_dequant_stub_becomes_dequantize():
    example = _inputs(1)
    ours, reference = _convert_both(WithDeQuantStub(), MAPPINGS["minmax"](), example, False)
    _assert_same(ours, reference, example)
    assert "dequant" not in dict(ours.named_modules())


def test_scale_attributes_are_named_like_torch():
    example = _inputs(2)
    ours, _ = _convert_both(FunctionalNet(), MAPPINGS["minmax"](), example, False)
    names = [n for n, _ in ours.named_buffers()]
    assert names and all("_scale_" in n or "_zero_point_" in n for n in names)


def test_insert_qdq_alone_is_pure_and_idempotent_on_converted():
    example = _inputs(2)
    observed = prepare_fx(FunctionalNet().eval(), MAPPINGS["minmax"](), example)
    observed(*example)
    program = lift(observed)
    once = Pipeline.parse("observe-weights,insert-qdq").run(program)
    # no observers left: running insert-qdq again changes nothing in the graph
    twice = Pipeline.parse("insert-qdq").run(once)
    assert twice.graph == once.graph
    assert program.graph == lift(observed).graph


def test_the_model_device_is_worked_out_once_per_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch reads the model's device once, before converting: swap-modules records the one it found and
    insert-qdq uses it; insert-qdq run without swap-modules before it works the device out itself."""
    import qfx.passes.insert_qdq as insert_qdq_module
    from qfx.api import convert_options
    from qfx.demo_model import observed_demo_model
    from qfx.ir.program import Absent

    lifted = lift(observed_demo_model(), options=convert_options(is_reference=True, convert_custom_config=None))
    swapped = Pipeline.parse("swap-modules").run(lifted)
    assert lifted.quant.model_device is Absent.FIELD
    assert swapped.quant.model_device == torch.device("cpu")

    asked: list[object] = []

    def unique_device(program: object) -> torch.device:
        asked.append(program)
        return torch.device("cpu")

    monkeypatch.setattr(insert_qdq_module, "unique_device", unique_device)
    expected = Pipeline.parse("insert-qdq").run(swapped)
    assert not asked and any(n.op == "get_attr" and "_scale_" in n.target for n in expected.graph.nodes)
    Pipeline.parse("insert-qdq").run(lifted)
    assert asked == [lifted]
