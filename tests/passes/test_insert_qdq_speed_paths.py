"""insert-qdq's shortcuts give what the general code gives: batched qparams skip exactly the observers torch
must handle itself, per-class memos never outlive what they remember, attribute names avoid GraphModule's
own attributes as `hasattr` does."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver, MovingAverageMinMaxObserver
from torch.ao.quantization.observer import _is_activation_post_process
from torch.ao.quantization.quantize_fx import prepare_fx
from torch.ao.quantization import QConfigMapping, default_qconfig
from torch.ao.quantization.utils import is_per_channel, to_underlying_dtype
from torch.fx import GraphModule

from qfx.ir import lift
import qfx.passes.insert_qdq as insert_qdq_module
from qfx.passes.insert_qdq import _QdqRewrite, _is_per_channel, _underlying_dtype
from qfx.passes.support.observers import ObserverTest
from qfx.passes.support.qparams import batched_per_tensor_qparams
from qfx.passes.support.root_attributes import AttributeAllocator, _graph_module_attributes


def _calibrated(observer_class=MinMaxObserver, data=None, **kwargs):
    observer = observer_class(**kwargs)
    observer(torch.randn(32) if data is None else data)
    return observer


def _with_range(low: float, high: float) -> MinMaxObserver:
    observer = MinMaxObserver()
    observer.min_val.fill_(low)
    observer.max_val.fill_(high)
    return observer


def _expected(observer) -> tuple[float, int]:
    scale, zero_point = observer.calculate_qparams()
    return float(scale), int(zero_point)


def test_batched_qparams_skip_invalid_ranges_and_keep_the_rest():
    torch.manual_seed(0)
    valid = [_calibrated(), _calibrated(data=torch.rand(8) * 1e-3), _with_range(-2.0, -1.0), _with_range(0.0, 0.0),
             _calibrated(MovingAverageMinMaxObserver), _calibrated(eps=1e-3), _calibrated(dtype=torch.qint8)]
    invalid = [MinMaxObserver(), _with_range(float("nan"), 1.0), _with_range(0.0, float("nan")),
               _with_range(-math.inf, 1.0), _with_range(0.0, math.inf), _with_range(1.0, -1.0)]
    mixed = [valid[0], *invalid[:3], *valid[1:4], *invalid[3:], *valid[4:], valid[0]]  # (one observer twice)
    got = batched_per_tensor_qparams(mixed)
    assert set(got) == {id(o) for o in valid}
    for observer in valid:
        assert got[id(observer)] == _expected(observer)


def test_batched_qparams_recheck_a_class_patched_between_calls():
    class Patched(MinMaxObserver):
        pass

    observer = _calibrated(Patched)
    assert id(observer) in batched_per_tensor_qparams([observer])
    Patched.eps = property(lambda self: torch.tensor([0.5]))  # now hides the buffer calculate_qparams reads
    try:
        assert batched_per_tensor_qparams([observer]) == {}
        assert _expected(observer)[0] == 0.5  # what the slow path (the observer itself) gives
    finally:
        del Patched.eps


def _rewrite() -> _QdqRewrite:
    class Net(nn.Module):
        def forward(self, x):
            return torch.relu(x)

    observed = prepare_fx(Net().eval(), QConfigMapping().set_global(default_qconfig), (torch.randn(2, 3),))
    return _QdqRewrite(lift(observed))


def test_the_observer_test_per_class_agrees_with_torch_also_for_script_modules():
    """The per-class memo of `_is_activation_post_process` (insert-qdq's and swap-modules') gives torch's
    answer for observers, fake-quantizes, plain modules and scripted modules (a scripted observer and a
    scripted Linear share a class, so they are asked every time), asked twice each."""
    test = ObserverTest()
    modules = [MinMaxObserver(), FakeQuantize(), nn.Linear(2, 2), nn.ReLU(),
               torch.jit.script(MinMaxObserver()), torch.jit.script(nn.Linear(2, 2))]
    for _ in range(2):  # second round: from the memo (none for script modules, which share one class)
        assert [test(m) for m in modules] == [_is_activation_post_process(m) for m in modules]
    assert [test(m) for m in modules] == [True, True, False, False, True, False]


def test_memoised_torch_helpers_agree_with_torch():
    for dtype in (torch.quint8, torch.qint8, torch.qint32, torch.uint8, torch.int8, torch.uint16, torch.int16,
                  torch.int32, torch.float8_e5m2, torch.float8_e4m3fn):
        assert _underlying_dtype(dtype) == to_underlying_dtype(dtype)
    for _ in range(2):  # torch's error, every time (errors are not remembered)
        with pytest.raises(AssertionError):
            _underlying_dtype(torch.float32)
    for qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric, torch.per_channel_affine,
                    torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        assert _is_per_channel(qscheme) == is_per_channel(qscheme)


def test_graph_module_attribute_names_are_what_hasattr_accepts():
    names = set(dir(GraphModule)) | set(dir(type(GraphModule))) | {"x_scale_0", "forward", "mro", "graph", "code"}
    known = _graph_module_attributes()
    assert {n for n in names if hasattr(GraphModule, n)} == set(known)
    assert "__abstractmethods__" not in known and "mro" in known and "forward" in known


def test_attribute_names_skip_graph_module_attributes_as_of_the_run(monkeypatch):
    program = _rewrite().program
    monkeypatch.setattr(GraphModule, "obs_scale_0", 1, raising=False)
    allocator = AttributeAllocator(program)
    assert allocator.new("obs_scale_", 0.5, None) == "obs_scale_1"
    assert allocator.new("obs_scale_", 0.25, None) == "obs_scale_2"
    monkeypatch.delattr(GraphModule, "obs_scale_0")
    assert AttributeAllocator(program).new("obs_scale_", 0.5, None) == "obs_scale_0"


class _WithConvert(MinMaxObserver):
    def convert(self, model, node):  # a pt2e-style observer
        raise NotImplementedError


class _OwnGetattr(MinMaxObserver):
    def __getattr__(self, name):
        if name == "convert":
            return None
        return super().__getattr__(name)


def _observers_with_and_without_convert() -> list:
    in_dict, submodule, buffer, parameter = MinMaxObserver(), MinMaxObserver(), MinMaxObserver(), MinMaxObserver()
    in_dict.convert = 1
    submodule.convert = nn.ReLU()
    buffer.register_buffer("convert", None)  # a None entry still answers hasattr
    parameter.convert = nn.Parameter(torch.ones(1))
    return [MinMaxObserver(), MovingAverageMinMaxObserver(), FakeQuantize(), in_dict, submodule, buffer, parameter,
            _WithConvert(), _OwnGetattr(), torch.jit.script(MinMaxObserver())]


def test_converts_itself_is_hasattr_convert():
    rewrite = _rewrite()
    observers = _observers_with_and_without_convert()
    for _ in range(2):  # second round: class answers remembered
        assert [rewrite.converts_itself(o) for o in observers] == [hasattr(o, "convert") for o in observers]
    assert [rewrite.converts_itself(o) for o in observers] == [False, False, False, True, True, True, True, True,
                                                                True, False]


def test_fake_quants_qparams_are_their_observers_computed_together(monkeypatch):
    """A QAT model's activation fake quants hand calculate_qparams over to their observers: insert-qdq
    computes those in the batch (no call of the fake quants' own), with the numbers the calls give."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.fake_quantize import FusedMovingAvgObsFakeQuantize
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1)).train()
    x = torch.randn(2, 3, 8, 8)
    observed = prepare_qat_fx(model, get_default_qat_qconfig_mapping("x86"), (x,))
    for _ in range(3):
        observed(torch.randn(2, 3, 8, 8))
    observed.eval()
    program = lift(observed)
    fake_quants = [program.modules[n.target] for n in program.graph.nodes if n.op == "call_module"
                   and type(program.modules[n.target]) is FusedMovingAvgObsFakeQuantize]
    expected = {id(fq): (float(s), int(z)) for fq in fake_quants for s, z in [fq.calculate_qparams()]}
    batched = []
    real = insert_qdq_module.batched_per_tensor_qparams
    monkeypatch.setattr(insert_qdq_module, "batched_per_tensor_qparams",
                        lambda observers: (batched.extend(observers), real(observers))[1])
    rewrite = _QdqRewrite(program)
    assert fake_quants and {id(fq): rewrite.per_tensor_qparams(fq) for fq in fake_quants} == expected
    assert {id(o) for o in batched} >= {id(fq.activation_post_process) for fq in fake_quants}
    assert all(id(fq) in rewrite._per_tensor for fq in fake_quants)  # (found there, not asked one by one)
