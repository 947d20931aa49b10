"""Inputs where torch's convert runs code that may write (a user's classes, stateful parametrizations) or
skips what qfx would otherwise read: qfx gives torch's result and leaves the observed model as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig, PrepareCustomConfig
from torch.ao.quantization.quant_type import QuantType
from torch.ao.quantization.quantize_fx import prepare_fx

from qfx.testing import assert_same_as_torch

from ..support.snapshot import assert_unchanged, snapshot

MODES = [{"is_reference": True}, {}]


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


ALL_MODES = [{"is_reference": True}, {"is_reference": True, "is_decomposed": True}, {}]


@pytest.mark.parametrize("kwargs", ALL_MODES)
def test_qat_module_whose_weight_parametrization_has_state(kwargs):
    """Spectral norm's power iteration updates its vectors each time the weight is read in training: torch's
    to_float reads it on the live model; qfx on a copy of the QAT module."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from torch.nn.utils.parametrizations import spectral_norm

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
    import torch.nn.utils.parametrize as parametrize

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
    import torch.ao.nn.qat as nnqat
    import torch.ao.nn.quantized.reference as nnqr
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.backend_config import BackendConfig, BackendPatternConfig, DTypeConfig, ObservationType
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

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
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    class TwoLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.l2(self.l1(x))

    example = (torch.randn(2, 4),)
    torch.manual_seed(0)
    observed = prepare_qat_fx(TwoLinear().train(), get_default_qat_qconfig_mapping(), example)
    observed(*example)
    observed.l2.weight_fake_quant = observed.l1.weight_fake_quant
    observed(*example)
    with torch.no_grad():
        observed.l1.weight.mul_(100)  # wider than what the fake quant saw: the first call moves its range
    before = snapshot(observed)
    assert_same_as_torch(observed, example_inputs=example, **kwargs)
    assert_unchanged(before, observed)
