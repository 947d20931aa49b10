"""QAT modules converted as torch converts them, without the work whose result torch throws away.

The weight fake quant. torch's convert calls a QAT module's `weight_fake_quant` on the float weight and then
reads its qparams; the fake-quantized weight it returns is thrown away. For the usual fake quant
(`FusedMovingAvgObsFakeQuantize`) that call is one fused op which updates the running min/max, computes the
scale and zero point from them and fake-quantizes every element of the weight, the last step being most of
its cost (three quarters on a 3x3 conv of 512 channels). The op does each step under its own flag, so here
it runs in steps. It observes with fake quantization off (the min/max update alone): for a per-channel
one, of a large weight, each channel's minimum and maximum instead of the weight (taken in one pass by
`row_ranges`; the op's own per-channel reduction costs more than the rest of the call), which the op
observes as it would the weight. Then the qparams are computed from the updated min/max: per channel by
the compiled `_channel_qparams_kernel.c`, as the op computes them (the op stores them an element at a time,
half a microsecond a channel), else by the op with observation off on a zero tensor of one element per
channel. Either way the fake quant ends in the very state the call leaves it in. It runs on a working copy
of the QAT module that shares everything but the weight fake quant, whose own copy shares everything but
the four tensors the op writes (the input model is never changed, and a QAT model's weights are not
copied).

The float module. torch's `to_float` of the QAT Linear and Conv families constructs a float module of the
QAT module's sizes (allocating and initialising a weight of the full size) and then assigns the QAT
module's weight (or the weight with its BatchNorm folded in) over it. It runs here on a shallow stand-in of
the QAT module that reports one feature (one channel per group and a unit kernel for convs), so that the
constructor's weight is tiny; the float module then gets the real sizes. For torch's QAT convs the float
conv is not constructed at all but copied from a prototype (`float_prototypes.py`).
"""

from __future__ import annotations

import copy
import functools
import itertools
from typing import Any

import torch
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.nn.qat as nnqat
import torch.nn.modules.module as module_globals
from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.quantization.fake_quantize import FusedMovingAvgObsFakeQuantize
from torch.ao.quantization.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

from qfx.passes.support.constructor_layouts import holds_placeholder, registration_hooks

from ..support.module_copies import standin
from .float_prototypes import replaying_standin
from .reference_modules import give_real_sizes, torchs_own
from .weight_qparams import row_ranges


# Below this many weight elements the op's own reduction observes a weight faster than its channel extremes
# are taken, and, where the qparams kernel does not apply, one call (fake quantization included) costs less
# than the steps (per channel: a 3x3 depthwise conv of 32 channels, 52 against 136 us; 4k elements, 103
# against 161; 16k, 226 against 202; 33k, 348 against 209).
_ONE_CALL_FASTER_BELOW = 16384
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def run_weight_fake_quant(fake_quant: Any, weight: Any) -> None:
    """Leave `fake_quant` as `fake_quant(weight)` leaves it (the result is not needed)."""
    if not _plain_fused(fake_quant, weight):
        fake_quant(weight)
        return
    kernel = native_kernel() if _kernel_applies(fake_quant) else None
    small = weight.numel() < _ONE_CALL_FASTER_BELOW
    if kernel is None and small:
        fake_quant(weight)
        return
    observer = fake_quant.activation_post_process
    op_args = (observer.min_val, observer.max_val, fake_quant.scale, fake_quant.zero_point,
               observer.averaging_constant, observer.quant_min, observer.quant_max, fake_quant.ch_axis,
               fake_quant.is_per_channel, fake_quant.is_symmetric_quant)
    if int(fake_quant.observer_enabled) == 1:
        # the observation alone (fake quantization off): of the extremes in the weight's place, or of the
        # weight by the op's own reduction
        extremes = None if small else _channel_extremes(fake_quant, weight)
        torch.fused_moving_avg_obs_fake_quant(weight if extremes is None else extremes, fake_quant.observer_enabled,
                                              torch.zeros_like(fake_quant.fake_quant_enabled), *op_args)
    if kernel is not None and _write_channel_qparams(kernel, fake_quant):
        return
    # the qparams alone, by the op: observation off, on one zero per channel
    shape = [1] * weight.dim()
    if fake_quant.is_per_channel:
        shape[fake_quant.ch_axis] = weight.shape[fake_quant.ch_axis]
    torch.fused_moving_avg_obs_fake_quant(weight.new_zeros(shape), torch.zeros_like(fake_quant.observer_enabled),
                                          fake_quant.fake_quant_enabled, *op_args)


def _kernel_applies(fake_quant: Any) -> bool:
    """Whether the qparams kernel may compute what the op stores for `fake_quant`: per channel along axis 0
    (the op refuses other axes), into a float32 scale and an integer zero point (of one value per channel,
    which the op's observation makes them: `_write_channel_qparams` checks)."""
    return (fake_quant.is_per_channel and fake_quant.ch_axis == 0 and fake_quant.scale.dtype == torch.float32
            and fake_quant.zero_point.dtype in (torch.int32, torch.int64))


def _write_channel_qparams(kernel: Any, fake_quant: Any) -> bool:
    """Store in `fake_quant`'s scale and zero point the qparams the op derives from its observer's running
    minima and maxima (computed by `kernel`); False, having changed nothing, where the op must: running
    ranges or qparams not of one value per channel (float32 ranges), values that are not finite."""
    observer = fake_quant.activation_post_process
    low, high = observer.min_val, observer.max_val
    channels = low.numel()
    if not (low.dtype == high.dtype == torch.float32 and low.shape == high.shape == (channels,)
            and fake_quant.scale.shape == fake_quant.zero_point.shape == (channels,)
            and low.is_contiguous() and high.is_contiguous()):
        return False
    qmin, qmax = observer.quant_min, observer.quant_max
    if not (type(qmin) is int and type(qmax) is int and _INT32_MIN <= qmin and qmax <= _INT32_MAX):
        return False
    found = _kernel_qparams(kernel, low, high, qmin, qmax, bool(fake_quant.is_symmetric_quant))
    if found is None:
        return False
    fake_quant.scale.copy_(found[0])
    fake_quant.zero_point.copy_(found[1])
    return True


def _kernel_qparams(kernel: Any, low: torch.Tensor, high: torch.Tensor, qmin: int, qmax: int,
                    symmetric: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(float32 scales, int32 zero points) by `kernel` for contiguous float32 minima and maxima; None where it
    leaves them to the op."""
    channels = low.numel()
    scales, zero_points = torch.empty(channels), torch.empty(channels, dtype=torch.int32)
    if not kernel.channel_qparams(scales.data_ptr(), zero_points.data_ptr(), low.data_ptr(), high.data_ptr(),
                                  channels, qmin, qmax, symmetric):
        return None
    return scales, zero_points


@functools.cache
def native_kernel() -> Any:
    """The compiled qparams kernel (`_channel_qparams_kernel.c`, built when qfx is installed with a C compiler
    at hand), or None when it was not built or does not compute what torch's op stores on a sample of
    ranges: the op computes the qparams then (about half a microsecond a channel, where the kernel takes
    nanoseconds)."""
    try:
        from . import _channel_qparams_kernel  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _channel_qparams_kernel if _kernel_agrees(_channel_qparams_kernel) else None


def _kernel_agrees(kernel: Any) -> bool:
    """Whether `kernel` gives the op's qparams for ranges that take each of its branches (a zero end, equal
    ends, tiny and huge ranges, both signs) and for maxima around ties of the zero point (where functions of
    the same name round differently), symmetric and affine, signed and unsigned."""
    ties = torch.tensor([255 / (k + 0.5) - 1 for k in (3, 60, 127, 200)], dtype=torch.float32).view(torch.int32)
    near_ties = (ties[:, None] + torch.arange(-40, 41, dtype=torch.int32)).flatten().view(torch.float32)
    branches_low = torch.tensor([0.0, -1.5, 0.25, -3e-7, -2e30, 0.0, -0.75, 1e-3])
    branches_high = torch.tensor([2.0, 0.0, 0.25, 5e-7, 3e30, 0.0, 0.5, 4.0])
    low = torch.cat([branches_low, torch.full_like(near_ties, -1.0)])
    high = torch.cat([branches_high, near_ties])
    channels = low.numel()
    for (qmin, qmax), symmetric in itertools.product(((-128, 127), (0, 255), (0, 15)), (False, True)):
        scale, zero_point = torch.ones(channels), torch.zeros(channels, dtype=torch.int32)
        torch.fused_moving_avg_obs_fake_quant(torch.zeros(channels, 1), torch.tensor([0]), torch.tensor([1]),
                                              low.clone(), high.clone(), scale, zero_point, 0.01, qmin, qmax, 0,
                                              True, symmetric)
        found = _kernel_qparams(kernel, low, high, qmin, qmax, symmetric)
        if found is None or not (torch.equal(found[0], scale) and torch.equal(found[1], zero_point)):
            return False
    return True


def _channel_extremes(fake_quant: Any, weight: torch.Tensor) -> torch.Tensor | None:
    """For a per-channel fake quant whose observer is on, a tensor holding each channel's minimum and
    maximum (two values a channel, along another axis), whose per-channel minima and maxima are the
    weight's, found in one pass instead of the op's slow reduction of the whole weight; None when a
    channel's minimum or maximum is zero (the op's own reduction decides the sign of such a zero, which the
    fake quant keeps) or not finite, and for other fake quants."""
    axis = fake_quant.ch_axis
    if not (fake_quant.is_per_channel and int(fake_quant.observer_enabled) == 1 and weight.dim() >= 2):
        return None
    with torch.no_grad():
        low, high = row_ranges(weight.detach().transpose(0, axis).flatten(1))
        extremes = torch.stack([low, high], dim=1 if axis == 0 else 0)
        if not bool(extremes.isfinite().logical_and_(extremes.ne(0)).all()):
            return None
        shape = [1] * weight.dim()
        shape[axis] = low.shape[0]
        shape[1 if axis == 0 else 0] = 2
        return extremes.view(shape)


def working_module(module: Any, memo: dict[int, Any] | None = None) -> Any:
    """A QAT module for converting to run its weight fake quant on and build float modules from: when its
    to_float is torch's (which only reads the module), a copy sharing everything (the weights, BatchNorm,
    other children) but the weight fake quant, which is a `working_copy`; else, and for a parametrized
    module (reading its weight runs the parametrizations, which may update state of theirs, as spectral
    norm's power iteration does in training), a deep copy. (Copying the weights of a large QAT model costs
    more than the rest of its convert.) Copies go through `memo`, a deepcopy memo shared by the copies of
    one convert: what several modules share (one fake quant tied to two layers) they share as copies too,
    and a call through one changes what the others see, as on torch's live model."""
    memo = {} if memo is None else memo
    children = module.__dict__.get("_modules", {})
    fake_quant = children.get("weight_fake_quant")
    if (fake_quant is None or "parametrizations" in children
            or not torchs_own(type(module).to_float)):
        return copy.deepcopy(module, memo)
    return _sharing_copy(module, {}, {"weight_fake_quant": working_copy(fake_quant, memo)})


def working_copy(fake_quant: Any, memo: dict[int, Any] | None = None) -> Any:
    """A copy of a weight fake quant for converting to run (and change): a plain fused one (see
    `_only_its_op_runs`) shares everything but the four tensors its op writes in place (the running min and
    max, the scale and the zero point), which are cloned; any other is deep-copied. The copy of a fake quant
    already copied through `memo` is that copy."""
    memo = {} if memo is None else memo
    made = memo.get(id(fake_quant))
    if made is not None:
        return made
    if not _only_its_op_runs(fake_quant):
        return copy.deepcopy(fake_quant, memo)
    observer = fake_quant.activation_post_process
    own_observer = _sharing_copy(observer, {"min_val": observer.min_val.clone(), "max_val": observer.max_val.clone()},
                                 {})
    made = memo[id(fake_quant)] = _sharing_copy(
        fake_quant, {"scale": fake_quant.scale.clone(), "zero_point": fake_quant.zero_point.clone()},
        {"activation_post_process": own_observer})
    return made


def _sharing_copy(module: torch.nn.Module, buffers: dict[str, torch.Tensor],
                  children: dict[str, torch.nn.Module]) -> torch.nn.Module:
    """A `standin` of `module` with tables of its own, holding `buffers` and `children` in place of its own
    of those names."""
    return standin(module, _buffers={**module._buffers, **buffers}, _modules={**module._modules, **children})


def _only_its_op_runs(fake_quant: Any) -> bool:
    """A FusedMovingAvgObsFakeQuantize whose call is its class's forward and nothing else (no hooks) and
    whose observer is one of torch's moving-average ones: calling it runs the fused op on its tensors."""
    if type(fake_quant) is not FusedMovingAvgObsFakeQuantize or "forward" in fake_quant.__dict__:
        return False
    if (fake_quant._forward_hooks or fake_quant._forward_pre_hooks or module_globals._global_forward_hooks
            or module_globals._global_forward_pre_hooks):
        return False
    observer = fake_quant._modules.get("activation_post_process")
    return (type(observer) in (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)
            and all(isinstance(t, torch.Tensor) for t in (observer.min_val, observer.max_val, fake_quant.scale,
                                                          fake_quant.zero_point)))


def _plain_fused(fake_quant: Any, weight: Any) -> bool:
    """A fake quant whose call only runs its fused op (`_only_its_op_runs`), with fake quantization on (when
    it is off the call leaves the qparams as they are, uninitialised at first: it is made as it is), on a
    float CPU weight of at least one dimension, whose running min/max (after observing it, if the observer
    is on) hold one value per channel (one in all per tensor). (On others torch's op reads or writes out of
    bounds: the call is made as it is.)"""
    if not _only_its_op_runs(fake_quant):
        return False
    enabled, observing = fake_quant.fake_quant_enabled, fake_quant.observer_enabled
    if not all(isinstance(flag, torch.Tensor) and flag.numel() == 1 for flag in (enabled, observing)):
        return False
    if int(enabled) != 1 or not (isinstance(weight, torch.Tensor) and weight.is_floating_point()
                                 and weight.dim() > 0 and weight.device.type == "cpu"):
        return False
    if fake_quant.is_per_channel:
        if not 0 <= fake_quant.ch_axis < weight.dim():
            return False
        values = weight.shape[fake_quant.ch_axis]
    else:
        values = 1
    observer = fake_quant.activation_post_process
    # (a per-channel observer that has not observed yet holds none; observing fills them)
    fine = {values, 0} if int(observing) == 1 and fake_quant.is_per_channel else {values}
    return observer.min_val.numel() in fine and observer.max_val.numel() in fine


# torch's to_float implementations that build the float module from the sizes below and then assign the
# QAT module's weights (and bias) over its own.
_LINEAR_SIZES = ("in_features", "out_features")
_CONV_SIZES = ("in_channels", "out_channels", "kernel_size")
_TO_FLOAT_SIZES = {
    nnqat.Linear.to_float: _LINEAR_SIZES,
    nniqat.LinearReLU.to_float: _LINEAR_SIZES,
    nniqat.LinearBn1d.to_float: _LINEAR_SIZES,
    nnqat.Conv2d.to_float: _CONV_SIZES,  # (the one of every QAT conv and conv-ReLU)
    nniqat.ConvBn2d.to_float: _CONV_SIZES,  # (the one of every QAT conv-BatchNorm[-ReLU])
}


def to_float(module: Any) -> torch.nn.Module:
    """`module.to_float()` of a QAT module (which it only reads), without a full-size throwaway weight
    where its to_float is one of torch's (see the module docstring); else the module's own."""
    sizes = _TO_FLOAT_SIZES.get(getattr(type(module), "to_float", None))
    if sizes is None or registration_hooks() or not _plain_sizes(module, sizes):
        return module.to_float()
    state = module.__dict__
    if sizes is _LINEAR_SIZES:
        small = {"in_features": 1, "out_features": 1}
        result = standin(module, **small).to_float()
    else:
        groups = state["groups"]
        small = {"in_channels": groups, "out_channels": groups, "kernel_size": (1,) * len(state["kernel_size"])}
        result = None
        if torchs_own(type(module)):  # (a user's subclass is not subclassed again)
            result = replaying_standin(module, **small).to_float()  # its float conv copied from a prototype
        if result is None or holds_placeholder(result):
            result = standin(module, **small).to_float()
    built = result[0] if isinstance(result, _FusedModule) else result
    if type(built) not in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d) or not give_real_sizes(
            built, module, sizes):
        return module.to_float()  # (not torch 2.13's layout: build it the plain way)
    return result


def _plain_sizes(module: Any, sizes: tuple[str, ...]) -> bool:
    """Sizes the float module stores as given: positive ints, an int tuple kernel, numeric padding (a
    "same" padding is derived from the kernel) and plain Parameters."""
    state = module.__dict__
    if sizes is _CONV_SIZES:
        kernel, padding, groups = state.get("kernel_size"), state.get("padding"), state.get("groups")
        if not (type(kernel) is tuple and all(type(k) is int for k in kernel) and type(padding) is tuple
                and type(groups) is int and groups > 0):
            return False
        names = ("in_channels", "out_channels")
    else:
        names = sizes
    return (all(type(state.get(name)) is int and state[name] > 0 for name in names)
            and all(type(p) is torch.nn.Parameter for p in module._parameters.values() if p is not None))

