"""QAT helpers: run_weight_fake_quant leaves a weight fake quant exactly as calling it does, without its
output; to_float builds exactly what a QAT module's to_float builds, without a full-size throwaway weight."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.nn.qat as nnqat
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import MovingAveragePerChannelMinMaxObserver, get_default_qat_qconfig_mapping
from torch.ao.quantization.fake_quantize import (
    FusedMovingAvgObsFakeQuantize,
    default_fused_per_channel_wt_fake_quant,
    default_fused_wt_fake_quant,
)

from qfx.passes.support.constructor_layouts import holds_placeholder
from qfx.passes.swap_modules import float_prototypes
from qfx.passes.swap_modules import qat as fq_module
from qfx.passes.swap_modules.qat import run_weight_fake_quant, to_float
from qfx.testing.strategies import examples
from tests.support.constructions import record_constructions
from tests.support.kernels import PATHS, assert_kernel_built, taking
from tests.support.snapshot import assert_unchanged, diff_values, freeze_value, snapshot

CONSTRUCTORS = [get_default_qat_qconfig_mapping(backend).global_qconfig.weight for backend in ("x86", "qnnpack")]
CONSTRUCTORS += [default_fused_wt_fake_quant, default_fused_per_channel_wt_fake_quant]
# 4-bit per-channel weights; torch's op refuses per-channel axes other than 0 (qfx must fail alike)
CONSTRUCTORS += [FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-8,
                                                         quant_max=7, dtype=torch.qint8,
                                                         qscheme=torch.per_channel_affine, ch_axis=axis)
                 for axis in (0, 1)]


@pytest.fixture(autouse=True)
def _steps_for_every_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' weights are small, which take one call (or are observed whole); here every weight takes
    the steps, observed by its channel extremes where it can be (tests that need otherwise set it)."""
    monkeypatch.setattr(fq_module, "_ONE_CALL_FASTER_BELOW", 0)


def _state(fake_quant: torch.nn.Module) -> list[torch.Tensor]:
    observer = fake_quant.activation_post_process
    return [fake_quant.scale, fake_quant.zero_point, observer.min_val, observer.max_val,
            fake_quant.observer_enabled, fake_quant.fake_quant_enabled]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            and (not a.is_floating_point() or torch.equal(torch.signbit(a), torch.signbit(b))))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("one_call_below", [0, 1 << 30])
@settings(max_examples=examples(80), deadline=None)
@given(data=st.data())
def test_the_fake_quant_ends_as_the_call_leaves_it(path, one_call_below, data):
    """Every way through run_weight_fake_quant: qparams by the kernel or by the op; the weight observed by its
    channel extremes (or by the op's reduction where those cannot stand in) or, small, by the op's reduction
    (or one call, where the kernel does not apply)."""
    with taking(fq_module, path), pytest.MonkeyPatch.context() as patch:
        patch.setattr(fq_module, "_ONE_CALL_FASTER_BELOW", one_call_below)
        _check_against_the_call(data)


def _check_against_the_call(data) -> None:
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
    outcome = _outcome(lambda: theirs(weight))
    assert _outcome(lambda: run_weight_fake_quant(ours, weight)) == outcome
    # When the op refuses (a per-channel axis other than 0), it has already resized the scale and zero point
    # without writing them: what they hold then is whatever the memory held, in torch's call as in ours.
    compared = slice(None) if outcome is None else slice(2, None)
    assert all(_same(a, b) for a, b in zip(_state(ours)[compared], _state(theirs)[compared]))


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
    # each channel's minimum and maximum observed in one call; the qparams are the kernel's
    assert calls == [(6, 2, 1, 1)]
    calls.clear()
    with_zero_channel = weight.clone()
    with_zero_channel[2] = 0.0  # a zero minimum: its sign is the op's to decide, so the op sees the weight
    run_weight_fake_quant(default_fused_per_channel_wt_fake_quant(), with_zero_channel)
    run_weight_fake_quant(default_fused_wt_fake_quant(), weight)  # per tensor: the weight itself
    # (per channel the qparams come from the kernel; per tensor the op computes them on one zero)
    assert calls == [(6, 4, 3, 3), (6, 4, 3, 3), (1, 1, 1, 1)]
    calls.clear()
    with taking(fq_module, "tensor"):  # without the kernel the op computes them, on one zero per channel
        run_weight_fake_quant(default_fused_per_channel_wt_fake_quant(), weight)
        run_weight_fake_quant(default_fused_per_channel_wt_fake_quant(), with_zero_channel)
    assert calls == [(6, 2, 1, 1), (6, 1, 1, 1), (6, 4, 3, 3), (6, 1, 1, 1)]

    calls.clear()
    off = default_fused_per_channel_wt_fake_quant()
    off.disable_fake_quant()  # the call keeps the qparams it has: made as it is
    hooked = default_fused_per_channel_wt_fake_quant()
    hooked.register_forward_hook(lambda *args: None)
    for fake_quant in (off, hooked):
        run_weight_fake_quant(fake_quant, weight)
    assert calls == [(6, 4, 3, 3), (6, 4, 3, 3)]
    assert fq_module._plain_fused(default_fused_wt_fake_quant(), weight)


# ---------------------------------------------------------------------------------------- to_float

QAT_LINEAR = [nnqat.Linear, nniqat.LinearReLU, nniqat.LinearBn1d]
QAT_CONV = {1: [nnqat.Conv1d, nniqat.ConvReLU1d, nniqat.ConvBn1d, nniqat.ConvBnReLU1d],
            2: [nnqat.Conv2d, nniqat.ConvReLU2d, nniqat.ConvBn2d, nniqat.ConvBnReLU2d],
            3: [nnqat.Conv3d, nniqat.ConvReLU3d, nniqat.ConvBn3d, nniqat.ConvBnReLU3d]}
FLOAT_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@st.composite
def qat_modules(draw) -> nn.Module:
    """A QAT Linear/Conv family module as prepare_qat_fx makes it, with trained-looking BatchNorm stats."""
    torch.manual_seed(draw(st.integers(0, 1000)))
    qconfig = get_default_qat_qconfig_mapping("x86").global_qconfig
    if draw(st.booleans()):
        kind = draw(st.sampled_from(QAT_LINEAR))
        n_in, n_out = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        bias = draw(st.booleans()) and kind is not nniqat.LinearBn1d
        linear = nn.Linear(n_in, n_out, bias=bias)
        if kind is nnqat.Linear:
            return nnqat.Linear.from_float(_with_qconfig(linear, qconfig))
        fused = nni.LinearReLU(linear, nn.ReLU()) if kind is nniqat.LinearReLU else nni.LinearBn1d(
            nn.Linear(n_in, n_out), _trained(nn.BatchNorm1d(n_out)))
        return kind.from_float(_with_qconfig(fused, qconfig))
    dims = draw(st.sampled_from([1, 2, 3]))
    kind = draw(st.sampled_from(QAT_CONV[dims]))
    groups = draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, 1, "same"]))
    conv = FLOAT_CONV[dims](groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)),
                            draw(st.integers(1, 3)), padding=padding, groups=groups, bias=draw(st.booleans()),
                            padding_mode=draw(st.sampled_from(["zeros", "reflect"])) if padding != 0 else "zeros")
    members = [conv]
    if "Bn" in kind.__name__:
        members.append(_trained(BN[dims](conv.out_channels)))
    if "ReLU" in kind.__name__:
        members.append(nn.ReLU())
    float_kind = kind._FLOAT_MODULE
    made = conv if float_kind is FLOAT_CONV[dims] else float_kind(*members)
    module = kind.from_float(_with_qconfig(made, qconfig))
    module.train(draw(st.booleans()))
    return module


def _with_qconfig(module: nn.Module, qconfig) -> nn.Module:
    for sub in module.modules():  # (fused modules' from_float reads their first member's)
        sub.qconfig = qconfig
    return module


def _trained(bn: nn.Module) -> nn.Module:
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    return bn


@settings(max_examples=examples(100), deadline=None)
@given(qat_modules())
def test_to_float_builds_what_the_modules_to_float_builds(module):
    before = snapshot(module)
    ours, theirs = to_float(module), module.to_float()
    _assert_builds_what_to_float_builds(ours, theirs)
    assert_unchanged(before, module)
    first = ours[0] if isinstance(ours, nni._FusedModule) else ours
    x = (torch.randn(2, first.in_features) if isinstance(first, nn.Linear)
         else torch.randn(1, first.in_channels, *[5] * len(first.kernel_size)))
    a, b = _forward(ours.eval(), x), _forward(theirs.eval(), x)
    assert a[0] == b[0] and (torch.equal(a[1], b[1]) if a[0] == "value" else a[1] == b[1])


def _assert_builds_what_to_float_builds(ours: nn.Module, theirs: nn.Module) -> None:
    assert [(n, type(m)) for n, m in ours.named_modules()] == [(n, type(m)) for n, m in theirs.named_modules()]
    for (name, a), (_, b) in zip(ours.named_modules(), theirs.named_modules()):
        assert list(a.__dict__) == list(b.__dict__) and list(a._modules) == list(b._modules)
        own = [{k: v for k, v in m.__dict__.items() if k != "_modules"} for m in (a, b)]  # (children: above)
        assert not diff_values(freeze_value(own[0]), freeze_value(own[1]), name or "module")


def test_a_float_conv_is_constructed_once_for_its_arguments_then_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """The float conv to_float builds comes from a prototype the constructor made for the same arguments:
    with other sizes but the same groups, stride, padding and bias, no constructor runs for the second."""
    monkeypatch.setattr(float_prototypes, "_PROTOTYPES", {})
    qconfig = get_default_qat_qconfig_mapping("x86").global_qconfig
    modules = [nniqat.ConvBnReLU2d.from_float(_with_qconfig(nni.ConvBnReLU2d(
        nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1, groups=2), _trained(nn.BatchNorm2d(2 * c)), nn.ReLU()),
        qconfig)) for c in (3, 5)]
    constructed = record_constructions(monkeypatch, nn.Conv2d)
    for module in modules:
        ours = to_float(module)
        count = len(constructed)
        _assert_builds_what_to_float_builds(ours, module.to_float())
        constructed[count:] = []  # (torch's own to_float constructs, of course)
    assert len(constructed) == 1


def test_a_placeholder_to_float_leaves_makes_the_module_the_plain_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prototype parameter that to_float does not assign (a torch whose to_float differs) is noticed, and
    the float module is built by the constructor instead."""
    monkeypatch.setattr(float_prototypes, "_PROTOTYPES", {})
    real_layout = float_prototypes.layout_of

    def with_an_extra_parameter(state, **options):
        return tuple((name, how, (what[0], (*what[1], ("extra", True))) if name == "_parameters" else what)
                     for name, how, what in real_layout(state, **options))

    monkeypatch.setattr(float_prototypes, "layout_of", with_an_extra_parameter)
    qconfig = get_default_qat_qconfig_mapping("x86").global_qconfig
    module = nnqat.Conv2d.from_float(_with_qconfig(nn.Conv2d(3, 4, 3), qconfig))
    to_float(module)  # (the prototype is made)
    ours = to_float(module)
    assert not holds_placeholder(ours)
    _assert_builds_what_to_float_builds(ours, module.to_float())


def _forward(module: nn.Module, x: torch.Tensor) -> tuple[str, object]:
    """("value", the output) or ("error", its message): some float modules torch builds (a "same" padding
    with a padding mode) cannot run."""
    try:
        return "value", module(x)
    except (RuntimeError, TypeError) as exc:
        return "error", f"{type(exc).__name__}: {exc}"


def test_to_float_runs_the_modules_own_where_it_does_not_know_it():
    calls = []
    qconfig = get_default_qat_qconfig_mapping("x86").global_qconfig
    module = nnqat.Linear.from_float(_with_qconfig(nn.Linear(3, 4), qconfig))

    class Own(nnqat.Linear):
        def to_float(self):
            calls.append("own")
            return super().to_float()

    module.__class__ = Own
    to_float(module)
    assert calls == ["own"]


def test_a_working_copy_shares_all_but_what_the_fused_op_writes():
    fake_quant = default_fused_per_channel_wt_fake_quant()
    fake_quant(torch.randn(4, 3))
    own = fq_module.working_copy(fake_quant)
    observer, own_observer = fake_quant.activation_post_process, own.activation_post_process
    written = [(own.scale, fake_quant.scale), (own.zero_point, fake_quant.zero_point),
               (own_observer.min_val, observer.min_val), (own_observer.max_val, observer.max_val)]
    assert all(a is not b and torch.equal(a, b) for a, b in written)
    assert own.fake_quant_enabled is fake_quant.fake_quant_enabled and own_observer is not observer
    before = [t.clone() for _, t in written]
    run_weight_fake_quant(own, torch.randn(4, 3) * 10)
    assert all(torch.equal(t, b) for (_, t), b in zip(written, before))  # the original is untouched
    hooked = default_fused_per_channel_wt_fake_quant()
    hooked.register_forward_pre_hook(lambda *args: None)
    assert fq_module.working_copy(hooked).scale is not hooked.scale  # (deep-copied)


def test_running_ranges_of_another_size_are_left_to_the_call():
    # torch's op reads and writes out of bounds when the running min/max do not hold one value per channel:
    # whatever it does then, qfx does not do it twice
    observed = default_fused_per_channel_wt_fake_quant()
    observed(torch.randn(4, 3))
    unobserved = default_fused_per_channel_wt_fake_quant()
    unobserved.disable_observer()
    assert not fq_module._plain_fused(observed, torch.randn(6, 3))
    assert not fq_module._plain_fused(unobserved, torch.randn(4, 3))
    assert fq_module._plain_fused(observed, torch.randn(4, 3)) and fq_module._plain_fused(
        default_fused_per_channel_wt_fake_quant(), torch.randn(6, 3))


def test_small_weights_are_observed_by_the_op_and_take_one_call_without_the_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Below the size where taking a weight's channel extremes pays, the op observes the weight itself and
    the kernel computes the qparams; where the kernel does not apply (per tensor, or not built) the fake
    quant is called once."""
    monkeypatch.setattr(fq_module, "_ONE_CALL_FASTER_BELOW", 4096)
    calls: list[tuple[tuple[int, ...], int]] = []
    real = torch.fused_moving_avg_obs_fake_quant
    monkeypatch.setattr(torch, "fused_moving_avg_obs_fake_quant",
                        lambda x, observing, quantizing, *rest: (calls.append((tuple(x.shape), int(quantizing))),
                                                                 real(x, observing, quantizing, *rest))[1])
    small, large = torch.randn(32, 1, 3, 3), torch.randn(64, 64)
    for weight in (small, large):
        run_weight_fake_quant(default_fused_per_channel_wt_fake_quant(), weight)
    assert calls == [((32, 1, 3, 3), 0), ((64, 2), 0)]  # observation only: the qparams are the kernel's
    calls.clear()
    run_weight_fake_quant(default_fused_wt_fake_quant(), small)
    with taking(fq_module, "tensor"):
        run_weight_fake_quant(default_fused_per_channel_wt_fake_quant(), small)
    assert calls == [((32, 1, 3, 3), 1), ((32, 1, 3, 3), 1)]


def test_the_qparams_kernel_is_built_and_agrees() -> None:
    assert_kernel_built(fq_module)


_QRANGES = [(-128, 127), (0, 255), (-64, 63), (0, 127), (0, 15), (-8, 7), (0, 1), (-(2**31), 2**31 - 1)]


@pytest.mark.parametrize("qmin, qmax, low", [(0, 255, -1.0), (-128, 127, -1.0), (0, 255, -0.37), (0, 15, -2.5)])
def test_the_qparams_kernel_breaks_zero_point_ties_as_the_op(qmin: int, qmax: int, low: float) -> None:
    """Maxima within 300 float32 steps of each one that puts the exact zero point on a half: there the
    functions named ChooseQuantizationParams part (ATen's keeps a double scale and compares differences of
    the errors, fbgemm's a float scale and their sums), and the kernel must round as the op does."""
    kernel = fq_module.native_kernel()
    if kernel is None:
        pytest.skip("the qparams kernel is not built")
    ties = [(-low) * (qmax - qmin) / (k + 0.5 - qmin) + low for k in range(qmin, qmax)]
    bits = torch.tensor([t for t in ties if t > 0], dtype=torch.float32).view(torch.int32)
    high = (bits[:, None] + torch.arange(-300, 301, dtype=torch.int32)).flatten().view(torch.float32).contiguous()
    channels = high.numel()
    lows = torch.full((channels,), low)
    scales, zero_points = torch.empty(channels), torch.empty(channels, dtype=torch.int32)
    assert kernel.channel_qparams(scales.data_ptr(), zero_points.data_ptr(), lows.data_ptr(), high.data_ptr(),
                                  channels, qmin, qmax, False)
    scale, zero_point = torch.ones(channels), torch.zeros(channels, dtype=torch.int32)
    torch.fused_moving_avg_obs_fake_quant(torch.zeros(channels, 1), torch.tensor([0]), torch.tensor([1]), lows.clone(),
                                          high.clone(), scale, zero_point, 0.01, qmin, qmax, 0, True, False)
    assert torch.equal(scales, scale) and torch.equal(zero_points, zero_point)


@st.composite
def _float32(draw) -> float:
    """Floats that running minima and maxima hold: zeros of both signs, tiny, ordinary and huge magnitudes (the
    largest finite ones too, whose ranges overflow a float32 scale; beyond them, infinities)."""
    kind = draw(st.sampled_from(["zero", "tiny", "plain", "huge", "largest", "any"]))
    if kind == "zero":
        return draw(st.sampled_from([0.0, -0.0]))
    if kind == "any":
        return draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
    if kind == "largest":
        largest = draw(st.floats(9.999999680285692e37, 3.4028234663852886e38, width=32))
        return draw(st.sampled_from([1.0, -1.0])) * largest
    exponent = {"tiny": (-45, -4), "plain": (-4, 3), "huge": (3, 38)}[kind]
    magnitude = draw(st.floats(1.0, 9.99)) * 10.0 ** draw(st.integers(*exponent))
    return draw(st.sampled_from([1.0, -1.0])) * magnitude


@settings(max_examples=examples(300), deadline=None)
@given(ranges=st.lists(st.tuples(_float32(), _float32()), min_size=1, max_size=24),
       qrange=st.sampled_from(_QRANGES), symmetric=st.booleans())
def test_the_qparams_kernel_stores_what_the_op_stores(ranges, qrange, symmetric) -> None:
    """Bit for bit, on ranges of every kind (a zero end, equal ends, tiny, huge, below the small-scale
    threshold, a minimum above its maximum, which the op takes as it comes), for every quantized range and
    both schemes; what the kernel declines the op refuses or gives a scale that is not finite."""
    kernel = fq_module.native_kernel()
    if kernel is None:
        pytest.skip("the qparams kernel is not built")
    low = torch.tensor([min(r) if i % 5 else r[0] for i, r in enumerate(ranges)], dtype=torch.float32)
    high = torch.tensor([max(r) if i % 5 else r[1] for i, r in enumerate(ranges)], dtype=torch.float32)
    channels = low.numel()
    qmin, qmax = qrange
    scales, zero_points = torch.empty(channels), torch.empty(channels, dtype=torch.int32)
    written = kernel.channel_qparams(scales.data_ptr(), zero_points.data_ptr(), low.data_ptr(), high.data_ptr(),
                                     channels, qmin, qmax, symmetric)
    if qmax - qmin > 2**31 - 1 or not (bool(low.isfinite().all()) and bool(high.isfinite().all())):
        assert not written  # the op's int arithmetic would overflow, or values are not finite: the op's to take
        return
    scale, zero_point = torch.ones(channels), torch.zeros(channels, dtype=torch.int32)
    refusal = _outcome(lambda: torch.fused_moving_avg_obs_fake_quant(
        torch.zeros(channels, 1), torch.tensor([0]), torch.tensor([1]), low.clone(), high.clone(), scale, zero_point,
        0.01, qmin, qmax, 0, True, symmetric))
    if written:
        assert refusal is None and torch.equal(scales, scale) and torch.equal(zero_points, zero_point)
    else:  # declined only where a scale or zero point is not finite on the way (the op refuses, or stores inf)
        assert refusal is not None or not bool(scale.isfinite().all())


