"""Quantization parameters of many MinMax-family observers (or min/max ranges) at once.

torch computes each observer's (scale, zero_point) with a dozen small tensor operations; on large models
that Python overhead dominates insert-qdq. The arithmetic is elementwise, so doing it on one stacked
tensor per group of alike observers gives bit-identical numbers. Observers this module does not recognise
(other classes, per-channel schemes, uncalibrated or invalid ranges) are left to their own
`calculate_qparams`, so torch's warnings and errors stay torch's.
"""

from __future__ import annotations

import math

import numpy
from collections import defaultdict
from typing import Any, Iterable

import torch
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, UniformQuantizationObserverBase

_AFFINE = torch.per_tensor_affine
_SYMMETRIC = torch.per_tensor_symmetric


def _fast_path_key(observer: Any) -> tuple | None:
    """The group an observer's qparams can be computed with, or None when it must compute them itself."""
    kind = type(observer)
    if kind.calculate_qparams is not MinMaxObserver.calculate_qparams:
        return None
    if kind._calculate_qparams is not UniformQuantizationObserverBase._calculate_qparams:
        return None
    if observer.qscheme not in (_AFFINE, _SYMMETRIC):
        return None
    lo, hi, eps = observer.min_val, observer.max_val, observer.eps
    if not (isinstance(lo, torch.Tensor) and isinstance(hi, torch.Tensor) and isinstance(eps, torch.Tensor)):
        return None
    if lo.dim() != 0 or hi.dim() != 0 or lo.dtype != torch.float32 or hi.dtype != torch.float32:
        return None
    if eps.numel() != 1 or eps.dtype != torch.float32 or lo.device != hi.device:
        return None
    low, high = float(lo), float(hi)
    # Uncalibrated, inverted or NaN ranges: torch warns, raises or does its own thing; let it.
    if math.isnan(low) or math.isnan(high) or math.isinf(low) or math.isinf(high) or low > high:
        return None
    return (observer.qscheme, observer.quant_min, observer.quant_max, observer.dtype,
            bool(observer.has_customized_qrange), float(eps), lo.device)


def batched_per_tensor_qparams(observers: Iterable[Any]) -> dict[int, tuple[float, int]]:
    """For each observer on the fast path: id(observer) -> (float(scale), int(zero_point)), exactly what
    `float(s), int(z)` of its own `calculate_qparams()` would give."""
    groups: dict[tuple, dict[int, Any]] = defaultdict(dict)
    for observer in observers:
        key = _fast_path_key(observer)
        if key is not None:
            groups[key][id(observer)] = observer
    out: dict[int, tuple[float, int]] = {}
    for key, members in groups.items():
        qscheme, qmin, qmax, dtype, customized, _, _ = key
        ids = list(members)
        mins = torch.stack([members[i].min_val for i in ids])
        maxs = torch.stack([members[i].max_val for i in ids])
        scale, zero_point = minmax_qparams(mins, maxs, members[ids[0]].eps, qscheme, qmin, qmax, dtype, customized)
        for i, s, z in zip(ids, scale.tolist(), zero_point.tolist()):
            out[i] = (s, int(z))
    return out


def minmax_qparams(
    lo: torch.Tensor,
    hi: torch.Tensor,
    eps: torch.Tensor,
    qscheme: torch.qscheme,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    customized_range: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (scale, zero_point) UniformQuantizationObserverBase._calculate_qparams computes from valid ranges
    (finite, lo <= hi), elementwise over stacked ranges of any shape.

    `qscheme` may be per tensor or per channel, symmetric or affine, or per-channel float qparams. Each
    element is bit-identical to the observer's; the results have the broadcast shape of `lo` and `eps`
    (the observer's shapes too, with a leading batch dimension). Zero points are int32 for affine
    schemes, int64 for symmetric ones and float32 for float qparams, as the observer's are.
    """
    if qscheme == torch.per_channel_affine_float_qparams:
        scale = (hi - lo) / float(quant_max - quant_min)
        scale = torch.where(scale > eps, scale, torch.ones_like(scale))
        return scale, -1 * lo / scale
    min_neg = torch.min(lo, torch.zeros_like(lo))
    max_pos = torch.max(hi, torch.zeros_like(hi))
    if qscheme in (_SYMMETRIC, torch.per_channel_symmetric):
        max_pos = torch.max(-min_neg, max_pos)
        scale = torch.max(max_pos / (float(quant_max - quant_min) / 2), eps)
        if dtype in (torch.quint8, torch.uint8):
            center = (quant_min + quant_max) // 2 if customized_range else 128
        elif dtype == torch.uint16:
            center = 2**15
        else:
            center = 0
        return scale, torch.full(scale.shape, center, dtype=torch.int64)
    scale = torch.max((max_pos - min_neg) / float(quant_max - quant_min), eps)
    zero_point = quant_min - torch.round(min_neg / scale).to(torch.int)
    return scale, torch.clamp(zero_point, quant_min, quant_max)


def histogram_qparams(observer: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """HistogramObserver.calculate_qparams() of a calibrated observer, bit for bit, with its bin search
    stepping on Python numbers; None when the observer is not a plain, calibrated HistogramObserver.

    torch's search moves its quantile bounds in steps of 1e-5 and on every step compares elements of the
    float32 cumulative histogram with the bounds, one tensor op per comparison: on narrow distributions
    that is ~100 ms per observer. A float32 tensor compared with a Python number is compared in float32,
    so rounding each bound to float32 and comparing Python floats makes the same decisions. Candidate
    ranges are scored by the observer's own `_compute_quantization_error`, and the final qparams come from
    its own `_calculate_qparams`.
    """
    kind = type(observer)
    if (kind.calculate_qparams is not HistogramObserver.calculate_qparams
            or kind._non_linear_param_search is not HistogramObserver._non_linear_param_search
            or kind._compute_quantization_error is not HistogramObserver._compute_quantization_error):
        return None
    histogram = observer.histogram
    if histogram.dim() != 1 or histogram.dtype != torch.float32 or histogram.numel() != observer.bins:
        return None
    if bool(observer.min_val == float("inf")) and bool(observer.max_val == float("-inf")):
        return None  # uncalibrated: torch warns and returns defaults
    new_min, new_max = _histogram_bin_search(observer)
    return observer._calculate_qparams(new_min, new_max)


def _float32(value: float) -> float:
    return float(numpy.float32(value))


def _histogram_bin_search(observer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """HistogramObserver._non_linear_param_search with the bound comparisons on Python floats."""
    bins = observer.bins
    bin_width = (observer.max_val - observer.min_val) / bins
    total = torch.sum(observer.histogram).item()
    cumulative = torch.cumsum(observer.histogram, dim=0).tolist()
    stepsize = 1e-5
    alpha, beta = 0.0, 1.0
    start_bin, end_bin = 0, bins - 1
    norm_min: Any = float("inf")
    while alpha < beta:
        next_alpha = alpha + stepsize
        next_beta = beta - stepsize
        left, right = start_bin, end_bin
        if left < end_bin:
            low_bound = _float32(next_alpha * total)
            while left < end_bin and cumulative[left] < low_bound:
                left += 1
        if right > start_bin:
            high_bound = _float32(next_beta * total)
            while right > start_bin and cumulative[right] > high_bound:
                right -= 1
        next_start, next_end = start_bin, end_bin
        if (left - start_bin) > (end_bin - right):
            next_start = left
            alpha = next_alpha
        else:
            next_end = right
            beta = next_beta
        if next_start == start_bin and next_end == end_bin:
            continue
        norm = observer._compute_quantization_error(next_start, next_end)
        if norm > norm_min:
            break
        norm_min = norm
        start_bin, end_bin = next_start, next_end
    new_min = observer.min_val + bin_width * start_bin
    new_max = observer.min_val + bin_width * (end_bin + 1)
    return new_min, new_max
