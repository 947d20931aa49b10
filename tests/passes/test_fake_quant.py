"""run_weight_fake_quant leaves a QAT weight fake quant exactly as calling it does, without its output."""

from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import MovingAveragePerChannelMinMaxObserver, get_default_qat_qconfig_mapping
from torch.ao.quantization.fake_quantize import (
    FusedMovingAvgObsFakeQuantize,
    default_fused_per_channel_wt_fake_quant,
    default_fused_wt_fake_quant,
)

from qfx.passes.swap_modules import fake_quant as fq_module
from qfx.passes.swap_modules.fake_quant import run_weight_fake_quant
from qfx.testing.strategies import examples

CONSTRUCTORS = [get_default_qat_qconfig_mapping(backend).global_qconfig.weight for backend in ("x86", "qnnpack")]
CONSTRUCTORS += [default_fused_wt_fake_quant, default_fused_per_channel_wt_fake_quant]
# 4-bit per-channel weights; torch's op refuses per-channel axes other than 0 (qfx must fail alike)
CONSTRUCTORS += [FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-8,
                                                         quant_max=7, dtype=torch.qint8,
                                                         qscheme=torch.per_channel_affine, ch_axis=axis)
                 for axis in (0, 1)]


def _state(fake_quant: torch.nn.Module) -> list[torch.Tensor]:
    observer = fake_quant.activation_post_process
    return [fake_quant.scale, fake_quant.zero_point, observer.min_val, observer.max_val,
            fake_quant.observer_enabled, fake_quant.fake_quant_enabled]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            and (not a.is_floating_point() or torch.equal(torch.signbit(a), torch.signbit(b))))


@settings(max_examples=examples(80), deadline=None)
@given(data=st.data())
def test_the_fake_quant_ends_as_the_call_leaves_it(data):
    fake_quant = data.draw(st.sampled_from(CONSTRUCTORS))()
    shape = (data.draw(st.integers(1, 12)), data.draw(st.integers(1, 6)), *data.draw(st.sampled_from([(), (3,),
                                                                                                     (2, 2)])))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    for _ in range(data.draw(st.integers(0, 2))):  # training steps before convert
        _outcome(lambda: fake_quant(torch.randn(shape, generator=g) * 3))
    if data.draw(st.booleans()):
        fake_quant.disable_observer()  # frozen after training
    scale = 10.0 ** data.draw(st.integers(-4, 3))
    weight = torch.randn(shape, generator=g) * scale
    kind = data.draw(st.sampled_from(["plain", "zero channel", "signed zeros", "constant"]))
    if kind == "zero channel":
        weight[0] = 0.0
    elif kind == "signed zeros":
        weight = torch.where(torch.rand(shape, generator=g) < 0.5, -0.0, weight.abs())
    elif kind == "constant":
        weight = torch.full(shape, scale)
    ours, theirs = copy.deepcopy(fake_quant), copy.deepcopy(fake_quant)
    assert _outcome(lambda: run_weight_fake_quant(ours, weight)) == _outcome(lambda: theirs(weight))
    assert all(_same(a, b) for a, b in zip(_state(ours), _state(theirs)))


def _outcome(call) -> str | None:
    """None, or the message of the RuntimeError torch's op raises (per-channel fake quant off axis 0)."""
    try:
        call()
    except RuntimeError as exc:
        return str(exc)
    return None


def test_the_output_is_skipped_only_for_a_plain_fused_fake_quant_that_fake_quantizes(monkeypatch):
    calls = []
    real = torch.fused_moving_avg_obs_fake_quant
    monkeypatch.setattr(torch, "fused_moving_avg_obs_fake_quant",
                        lambda x, *rest: (calls.append(tuple(x.shape)), real(x, *rest))[1])
    weight = torch.randn(6, 4, 3, 3)
    run_weight_fake_quant(default_fused_per_channel_wt_fake_quant(), weight)
    assert calls == [(6, 4, 3, 3), (6, 1, 1, 1)]  # the weight observed, qparams from one zero per channel

    calls.clear()
    off = default_fused_per_channel_wt_fake_quant()
    off.disable_fake_quant()  # the call keeps the qparams it has: made as it is
    hooked = default_fused_per_channel_wt_fake_quant()
    hooked.register_forward_hook(lambda *args: None)
    for fake_quant in (off, hooked):
        run_weight_fake_quant(fake_quant, weight)
    assert calls == [(6, 4, 3, 3), (6, 4, 3, 3)]
    assert fq_module._plain_fused(default_fused_wt_fake_quant(), weight)
