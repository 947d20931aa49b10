"""Observers whose calculate_qparams writes to themselves (torch's learnable fake quant clamps its scale in
place; a user's observer may count its calls): convert gives torch's result and leaves the observed model as
it was (torch calls them on the live model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.ao.quantization import QConfig, QConfigMapping, default_weight_fake_quant, default_weight_observer
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torch.ao.quantization.fake_quantize import FakeQuantize
from torch.ao.quantization.observer import MinMaxObserver, MovingAverageMinMaxObserver
from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

from qfx.passes.support.observers import QParamsReads
from qfx.testing import assert_same_as_torch

MODES = [{"is_reference": True}, {"is_reference": True, "is_decomposed": True}, {}]


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class CountingObserver(MinMaxObserver):
    """A user's observer that records each qparams request in a buffer and answers with a scale that
    grows with the count: a second call on the same observer gives other qparams."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("calls", torch.zeros(()))

    def calculate_qparams(self):
        self.calls += 1
        scale, zero_point = super().calculate_qparams()
        return scale * self.calls, zero_point


class _ObservesOtherwise(MinMaxObserver):
    def forward(self, x):
        return super().forward(x.abs())


def _learnable_qat_model() -> torch.fx.GraphModule:
    activation = _LearnableFakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
        qscheme=torch.per_tensor_affine, scale=1.0, zero_point=0.0, use_grad_scaling=True)
    qconfig = QConfig(activation=activation, weight=default_weight_fake_quant)
    torch.manual_seed(0)
    observed = prepare_qat_fx(TwoLinear().train(), QConfigMapping().set_global(qconfig), (torch.randn(2, 4),))
    observed(torch.randn(2, 4))
    for module in observed.modules():
        if isinstance(module, _LearnableFakeQuantize):
            module.scale.data.fill_(1e-9)  # below eps: its calculate_qparams clamps it in place
    return observed


def _counting_model() -> torch.fx.GraphModule:
    qconfig = QConfig(activation=CountingObserver.with_args(dtype=torch.quint8), weight=default_weight_observer)
    torch.manual_seed(0)
    observed = prepare_fx(TwoLinear().eval(), QConfigMapping().set_global(qconfig), (torch.randn(2, 4),))
    observed(torch.randn(2, 4))
    return observed


@pytest.mark.parametrize("kwargs", MODES)
@pytest.mark.parametrize("build", [_learnable_qat_model, _counting_model])
def test_writing_calculate_qparams_matches_torch_and_leaves_the_model(build, kwargs):
    observed = build()
    before = {name: t.clone() for name, t in observed.state_dict().items()}
    assert_same_as_torch(observed, example_inputs=(torch.randn(3, 4),), **kwargs)
    after = observed.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_reads_copy_only_observers_that_may_write():
    reads = QParamsReads()
    plain = MinMaxObserver()
    fake_quant = FakeQuantize(observer=MovingAverageMinMaxObserver)
    assert reads(plain) is plain and reads(fake_quant) is fake_quant  # torch's own: they only read
    observes_otherwise = _ObservesOtherwise()  # a user's class running torch's calculate_qparams
    assert reads(observes_otherwise) is observes_otherwise
    learnable = _LearnableFakeQuantize(observer=MovingAverageMinMaxObserver)
    counting = CountingObserver()
    users_inside = FakeQuantize(observer=CountingObserver)
    for observer in (learnable, counting, users_inside):
        copied = reads(observer)
        assert copied is not observer and type(copied) is type(observer)
        assert reads(observer) is copied  # one copy a run: later calls see what earlier ones left
