"""Quantization parameters of many MinMax-family observers (or min/max ranges) at once.

torch computes each observer's (scale, zero_point) with a dozen small tensor operations; on large models
that Python overhead dominates insert-qdq. The arithmetic is elementwise, so doing it on one stacked
tensor per group of alike observers gives bit-identical numbers. Observers this module does not recognise
(other classes, per-channel schemes, uncalibrated or invalid ranges) are left to their own
`calculate_qparams`, so torch's warnings and errors stay torch's.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any, Iterable, Iterator

import numpy
import torch
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, UniformQuantizationObserverBase

_AFFINE = torch.per_tensor_affine
_SYMMETRIC = torch.per_tensor_symmetric


def _computes_plain_minmax_qparams(kind: type) -> bool:
    """Whether observers of this class compute qparams with MinMaxObserver's code from their `min_val`,
    `max_val` and `eps` buffers (a module class, and no class attribute of those names hides the buffers)."""
    return (issubclass(kind, torch.nn.Module)
            and kind.calculate_qparams is MinMaxObserver.calculate_qparams
            and kind._calculate_qparams is UniformQuantizationObserverBase._calculate_qparams
            and not any(hasattr(kind, name) for name in ("min_val", "max_val", "eps")))


def _fast_path_member(observer: Any, plain_classes: dict[type, bool]) -> tuple[tuple, float, float] | None:
    """(the group an observer's qparams can be computed with, its min_val and max_val as Python floats),
    or None when it must compute them itself. `plain_classes` remembers the class test."""
    kind = type(observer)
    plain = plain_classes.get(kind)
    if plain is None:
        plain = plain_classes[kind] = _computes_plain_minmax_qparams(kind)
    if not plain:
        return None
    qscheme = observer.qscheme
    if qscheme not in (_AFFINE, _SYMMETRIC):
        return None
    # The buffers as nn.Module.__getattr__ finds them, without its lookups (a missing one: the slow path).
    buffers = observer._buffers
    lo, hi, eps = buffers.get("min_val"), buffers.get("max_val"), buffers.get("eps")
    if not (isinstance(lo, torch.Tensor) and isinstance(hi, torch.Tensor) and isinstance(eps, torch.Tensor)):
        return None
    if lo.dim() != 0 or hi.dim() != 0 or lo.dtype != torch.float32 or hi.dtype != torch.float32:
        return None
    device = lo.device
    if eps.numel() != 1 or eps.dtype != torch.float32 or hi.device != device:
        return None
    low, high = float(lo), float(hi)  # exact: every float32 is a Python float
    # Uncalibrated, inverted or NaN ranges: torch warns, raises or does its own thing; let it.
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        return None
    key = (qscheme, observer.quant_min, observer.quant_max, observer.dtype, bool(observer.has_customized_qrange),
           float(eps), device)
    return key, low, high


def batched_per_tensor_qparams(observers: Iterable[Any]) -> dict[int, tuple[float, int]]:
    """For each observer on the fast path: id(observer) -> (float(scale), int(zero_point)), exactly what
    `float(s), int(z)` of its own `calculate_qparams()` would give."""
    groups: dict[tuple, dict[int, tuple[float, float]]] = defaultdict(dict)
    plain_classes: dict[type, bool] = {}  # per call: a class may be patched between two calls
    for observer in observers:
        member = _fast_path_member(observer, plain_classes)
        if member is not None:
            key, low, high = member
            groups[key][id(observer)] = (low, high)
    out: dict[int, tuple[float, int]] = {}
    for key, members in groups.items():
        qscheme, qmin, qmax, dtype, customized, eps, device = key
        # Back to float32 tensors on the observers' device, the same numbers exactly.
        ranges = torch.tensor(list(members.values()), dtype=torch.float32, device=device)
        eps_tensor = torch.tensor(eps, dtype=torch.float32, device=device)
        scale, zero_point = minmax_qparams(ranges[:, 0], ranges[:, 1], eps_tensor, qscheme, qmin, qmax, dtype,
                                           customized)
        for i, s, z in zip(members, scale.tolist(), zero_point.tolist()):
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
    """HistogramObserver.calculate_qparams() of a calibrated observer, bit for bit, without a tensor op per
    search step; None when the observer is not a plain, calibrated HistogramObserver.

    torch's search moves its quantile bounds in steps of 1e-5 and on every step compares elements of the
    float32 cumulative histogram with the bounds, one tensor op per comparison, then scores each new
    candidate range with `_compute_quantization_error` (about fifteen small tensor ops). Here a float32 tensor
    compared with a Python number is compared in float32, so rounding each bound to float32 and comparing
    Python floats makes the same decisions; and since the candidates only depend on the cumulative histogram
    (a candidate is either accepted or ends the search), they are scored in batches
    (`quantization_errors`), each element computed by the same float32 operations as torch's. The final
    qparams come from the observer's own `_calculate_qparams`.
    """
    kind = type(observer)
    if (kind.calculate_qparams is not HistogramObserver.calculate_qparams
            or kind._non_linear_param_search is not HistogramObserver._non_linear_param_search
            or kind._compute_quantization_error is not HistogramObserver._compute_quantization_error
            or kind._get_norm is not HistogramObserver._get_norm):
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


def _candidate_ranges(observer: Any) -> Iterator[tuple[int, int]]:
    """The (start bin, end bin) ranges torch's search scores, in its order, assuming each is accepted."""
    bins = observer.bins
    total = torch.sum(observer.histogram).item()
    cumulative = torch.cumsum(observer.histogram, dim=0).tolist()
    stepsize = 1e-5
    alpha, beta = 0.0, 1.0
    start_bin, end_bin = 0, bins - 1
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
        yield next_start, next_end
        start_bin, end_bin = next_start, next_end


def _histogram_bin_search(observer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """HistogramObserver._non_linear_param_search: candidates scored in growing batches until one scores
    worse than the one before it."""
    start_bin, end_bin = 0, observer.bins - 1
    norm_min = float("inf")
    candidates = _candidate_ranges(observer)
    batch = 8
    done = False
    while not done:
        chunk = list(itertools.islice(candidates, batch))
        if not chunk:
            break
        for (next_start, next_end), norm in zip(chunk, quantization_errors(observer, chunk)):
            if norm > norm_min:
                done = True
                break
            norm_min = norm
            start_bin, end_bin = next_start, next_end
        batch = min(batch * 4, 128)
    bin_width = (observer.max_val - observer.min_val) / observer.bins
    new_min = observer.min_val + bin_width * start_bin
    new_max = observer.min_val + bin_width * (end_bin + 1)
    return new_min, new_max


def quantization_errors(observer: Any, ranges: list[tuple[int, int]]) -> list[float]:
    """HistogramObserver._compute_quantization_error(start, end) for each (start, end) in `ranges`, bit for
    bit: one row per range, every element computed by the same float32 operations in the same order (the
    per-range Python numbers become float32 columns, as torch turns them into float32 operands), each row
    summed on its own as torch sums its vector."""
    bins, dst_nbins = observer.bins, observer.dst_nbins
    bin_width = (observer.max_val.item() - observer.min_val.item()) / bins
    widths = [bin_width * (end - start + 1) / dst_nbins for start, end in ranges]
    live = [i for i, w in enumerate(widths) if w != 0.0]
    errors = [0.0] * len(ranges)
    if not live:
        return errors
    device = observer.histogram.device

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)

    width = column([widths[i] for i in live])
    half = column([widths[i] / 2 for i in live])
    neg_half = column([-widths[i] / 2 for i in live])
    starts = torch.tensor([ranges[i][0] for i in live], device=device).unsqueeze(1)
    src_bin = torch.arange(bins, device=device)
    src_bin_begin = (src_bin - starts) * bin_width
    src_bin_end = src_bin_begin + bin_width
    dst_bin_of_begin = torch.clamp(torch.div(src_bin_begin, width, rounding_mode="floor"), 0, dst_nbins - 1)
    dst_bin_of_begin_center = (dst_bin_of_begin + 0.5) * width
    dst_bin_of_end = torch.clamp(torch.div(src_bin_end, width, rounding_mode="floor"), 0, dst_nbins - 1)
    density = observer.histogram / bin_width
    norm = torch.zeros(bins, device=device) + _l2_norm(
        src_bin_begin - dst_bin_of_begin_center, torch.ones(bins, device=device) * half, density)
    norm = norm + (dst_bin_of_end - dst_bin_of_begin - 1) * _l2_norm(neg_half, half, density)
    dst_bin_of_end_center = dst_bin_of_end * width + half
    norm = norm + _l2_norm(neg_half, src_bin_end - dst_bin_of_end_center, density)
    for row, i in enumerate(live):
        errors[i] = norm[row].clone().sum().item()
    return errors


def _l2_norm(delta_begin: torch.Tensor, delta_end: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    """HistogramObserver._get_norm: density * (end^3 - begin^3) / 3, in its operation order."""
    return density * ((delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3)
