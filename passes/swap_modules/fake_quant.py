"""Running a QAT weight fake quant once more before its qparams are read, without fake-quantizing the weight.

torch's convert calls a QAT module's `weight_fake_quant` on the float weight and then reads its qparams; the
fake-quantized weight it returns is thrown away. For the usual fake quant (`FusedMovingAvgObsFakeQuantize`)
that call is one fused op which updates the running min/max, computes the scale and zero point from them and
fake-quantizes every element of the weight, the last step being most of its cost (three quarters on a 3x3
conv of 512 channels). The op does each step under its own flag, so it is run twice: once observing the
weight with fake quantization off (the min/max update alone), once with observation off on a zero tensor
of one element per channel (the qparams alone, from the updated min/max): the fake quant ends in the very
state the call leaves it in.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.modules.module as module_globals
from torch.ao.quantization.fake_quantize import FusedMovingAvgObsFakeQuantize


def run_weight_fake_quant(fake_quant: Any, weight: Any) -> None:
    """Leave `fake_quant` as `fake_quant(weight)` leaves it (the result is not needed)."""
    if not _plain_fused(fake_quant, weight):
        fake_quant(weight)
        return
    observer = fake_quant.activation_post_process
    qparam_args = (observer.min_val, observer.max_val, fake_quant.scale, fake_quant.zero_point,
                   observer.averaging_constant, observer.quant_min, observer.quant_max, fake_quant.ch_axis,
                   fake_quant.is_per_channel, fake_quant.is_symmetric_quant)
    off = torch.zeros_like(fake_quant.fake_quant_enabled)
    torch.fused_moving_avg_obs_fake_quant(weight, fake_quant.observer_enabled, off, *qparam_args)
    shape = [1] * weight.dim()
    if fake_quant.is_per_channel:
        shape[fake_quant.ch_axis] = weight.shape[fake_quant.ch_axis]
    torch.fused_moving_avg_obs_fake_quant(weight.new_zeros(shape), torch.zeros_like(fake_quant.observer_enabled),
                                          fake_quant.fake_quant_enabled, *qparam_args)


def _plain_fused(fake_quant: Any, weight: Any) -> bool:
    """A FusedMovingAvgObsFakeQuantize whose call is its class's forward and nothing else (no hooks), with
    fake quantization on (when it is off the call leaves the qparams as they are, uninitialised at first:
    it is made as it is), on a float CPU weight of at least one dimension."""
    if type(fake_quant) is not FusedMovingAvgObsFakeQuantize or "forward" in fake_quant.__dict__:
        return False
    if (fake_quant._forward_hooks or fake_quant._forward_pre_hooks or module_globals._global_forward_hooks
            or module_globals._global_forward_pre_hooks):
        return False
    enabled = fake_quant.fake_quant_enabled
    if not (isinstance(enabled, torch.Tensor) and enabled.numel() == 1 and int(enabled) == 1):
        return False
    return (isinstance(weight, torch.Tensor) and weight.is_floating_point() and weight.dim() > 0
            and weight.device.type == "cpu"
            and (not fake_quant.is_per_channel or 0 <= fake_quant.ch_axis < weight.dim()))
