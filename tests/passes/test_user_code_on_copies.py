"""Inputs where torch's convert runs code on the live model that may write (observers' calculate_qparams, a
user's classes, weight fake quants, stateful parametrizations) or skips what qfx would otherwise read: qfx
gives torch's result and leaves the observed model as it was."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.qat as nnqat
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize
from torch.ao.quantization import (
    QConfig,
    QConfigMapping,
    default_weight_fake_quant,
    default_weight_observer,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torch.ao.quantization.backend_config import BackendConfig, BackendPatternConfig, DTypeConfig, ObservationType
from torch.ao.quantization.fake_quantize import FakeQuantize
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig, PrepareCustomConfig
from torch.ao.quantization.observer import MinMaxObserver, MovingAverageMinMaxObserver
from torch.ao.quantization.quant_type import QuantType
from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx
from torch.nn.utils.parametrizations import spectral_norm

from qfx.passes.support.observers import QParamsReads
from qfx.testing import assert_same_as_torch

from ..support.snapshot import assert_unchanged, snapshot

MODES = [{"is_reference": True}, {}]
ALL_MODES = [{"is_reference": True}, {"is_reference": True, "is_decomposed": True}, {}]


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


@pytest.mark.parametrize("kwargs", ALL_MODES)
@pytest.mark.parametrize("build", [_learnable_qat_model, _counting_model])
def test_writing_calculate_qparams_matches_torch_and_leaves_the_model(build, kwargs):
    """Observers whose calculate_qparams writes to themselves (torch's learnable fake quant clamps its
    scale in place; a user's observer counting its calls): torch calls it on the live model."""
    observed = build()
    before = snapshot(observed)
    assert_same_as_torch(observed, example_inputs=(torch.randn(3, 4),), **kwargs)
    assert_unchanged(before, observed)


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


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)


class _ObservedCustom(_Custom):
    @classmethod
    def from_float(cls, module):
        made = cls()
        made.lin, made.qconfig = module.lin, module.qconfig
        return made


class _QuantizedCustom(_Custom):
    @classmethod
    def from_observed(cls, module):
        made = cls()
        made.lin = module.lin
        return made


class _WithCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = _Custom()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return self.l(self.c(x))


@pytest.mark.parametrize("kwargs", MODES)
@pytest.mark.parametrize("quant_type", [QuantType.QAT, "static"])
def test_custom_mapping_under_a_quant_type_torch_does_not_read(quant_type, kwargs):
    """torch takes custom module classes from the static, dynamic and weight-only entries only: a mapping
    filed under another key leaves the observed custom module in place."""
    example = (torch.randn(2, 4),)
    prepare_config = PrepareCustomConfig().set_float_to_observed_mapping(_Custom, _ObservedCustom)
    observed = prepare_fx(_WithCustom().eval(), get_default_qconfig_mapping(), example,
                          prepare_custom_config=prepare_config)
    observed(*example)
    config = ConvertCustomConfig().set_observed_to_quantized_mapping(_ObservedCustom, _QuantizedCustom, quant_type)
    before = snapshot(observed)
    result = assert_same_as_torch(observed, example_inputs=example, convert_custom_config=config, **kwargs)
    assert type(result.c) is _ObservedCustom
    assert_unchanged(before, observed)


class _OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return self.l(x)


class _CountingParametrization(nn.Module):
    """Counts its runs in a buffer: reading the weight it parametrizes changes the module."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, weight):
        self.calls.add_(1)
        return weight


@pytest.mark.parametrize("kwargs", ALL_MODES)
def test_qat_module_whose_weight_parametrization_has_state(kwargs):
    """Spectral norm's power iteration updates its vectors each time the weight is read in training: torch's
    to_float reads it on the live model; qfx on a copy of the QAT module."""
    example = (torch.randn(2, 4),)
    torch.manual_seed(0)
    model = _OneLinear()
    spectral_norm(model.l)
    observed = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(), example)
    observed(*example)
    before = snapshot(observed)
    assert_same_as_torch(observed, example_inputs=example, **kwargs)
    assert_unchanged(before, observed)


@pytest.mark.parametrize("kwargs", ALL_MODES)
def test_parametrized_module_torch_leaves_float_is_not_read(kwargs):
    """torch keeps a parametrized Linear float under post-training quantization and never reads its weight;
    qfx's batched weight qparams must not read it ahead either."""
    example = (torch.randn(2, 4),)
    torch.manual_seed(0)
    model = _OneLinear()
    parametrize.register_parametrization(model.l, "weight", _CountingParametrization())
    observed = prepare_fx(model.eval(), get_default_qconfig_mapping(), example)
    observed(*example)
    before = snapshot(observed)
    result = assert_same_as_torch(observed, **kwargs)  # (no outputs: running them counts)
    assert_unchanged(before, observed)
    assert float(result.l.parametrizations.weight[0].calls) == float(observed.l.parametrizations.weight[0].calls)


@pytest.mark.parametrize("qat", [False, True])
def test_user_reference_class_writing_into_the_float_module(qat):
    """A custom backend config's reference class whose from_float marks the float module and clamps its
    weight in place (torch gives it the live module): same result as torch's, observed model unchanged (for
    QAT, the float module from to_float shares the QAT module's weight)."""
    class ClampingReferenceLinear(nnqr.Linear):
        @classmethod
        def from_float(cls, float_linear, weight_qparams):
            float_linear.converted_by = cls.__name__
            float_linear.weight.data.clamp_(-0.3, 0.3)
            return super().from_float(float_linear, weight_qparams)

    dtypes = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8, weight_dtype=torch.qint8,
                         bias_dtype=torch.float)

    def pattern(kind):
        return (BackendPatternConfig(kind).set_observation_type(ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT)
                .add_dtype_config(dtypes).set_root_module(nn.Linear)
                .set_reference_quantized_module(ClampingReferenceLinear))

    patterns = [pattern(nn.Linear).set_qat_module(nnqat.Linear), pattern(nnqat.Linear)] if qat else [pattern(nn.Linear)]
    backend = BackendConfig("clamping").set_backend_pattern_configs(patterns)
    example = (torch.randn(2, 4),)
    torch.manual_seed(0)
    if qat:
        observed = prepare_qat_fx(_OneLinear().train(), get_default_qat_qconfig_mapping(), example,
                                  backend_config=backend)
    else:
        observed = prepare_fx(_OneLinear().eval(), get_default_qconfig_mapping(), example, backend_config=backend)
    observed(*example)
    before = snapshot(observed)
    assert_same_as_torch(observed, example_inputs=example, is_reference=True, backend_config=backend)
    assert_unchanged(before, observed)


@pytest.mark.parametrize("kwargs", ALL_MODES)
def test_one_weight_fake_quant_tied_to_two_qat_modules(kwargs):
    """torch runs the shared fake quant on the first module's weight (moving its running min/max in place),
    then on the second's: the second's qparams depend on the first call. qfx's private copies keep the
    sharing."""

    example = (torch.randn(2, 4),)
    torch.manual_seed(0)
    observed = prepare_qat_fx(TwoLinear().train(), get_default_qat_qconfig_mapping(), example)
    observed(*example)
    observed.b.weight_fake_quant = observed.a.weight_fake_quant
    observed(*example)
    with torch.no_grad():
        observed.a.weight.mul_(100)  # wider than what the fake quant saw: the first call moves its range
    before = snapshot(observed)
    assert_same_as_torch(observed, example_inputs=example, **kwargs)
    assert_unchanged(before, observed)
