"""Per-tensor quantization parameters of many MinMax-family observers at once.

torch computes each observer's (scale, zero_point) with a dozen small tensor operations; on large models
that Python overhead dominates insert-qdq. The arithmetic is elementwise, so doing it on one stacked
tensor per group of alike observers gives bit-identical numbers. Observers this module does not recognise
(other classes, per-channel schemes, uncalibrated or invalid ranges) are left to their own
`calculate_qparams`, so torch's warnings and errors stay torch's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import torch
from torch.ao.quantization.observer import MinMaxObserver, UniformQuantizationObserverBase

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
        eps = members[ids[0]].eps
        min_neg = torch.min(mins, torch.zeros_like(mins))
        max_pos = torch.max(maxs, torch.zeros_like(maxs))
        if qscheme == _SYMMETRIC:
            max_pos = torch.max(-min_neg, max_pos)
            scale = torch.max(max_pos / (float(qmax - qmin) / 2), eps)
            if dtype in (torch.quint8, torch.uint8):
                zero_point = [(qmin + qmax) // 2 if customized else 128] * len(ids)
            elif dtype == torch.uint16:
                zero_point = [2**15] * len(ids)
            else:
                zero_point = [0] * len(ids)
        else:
            scale = torch.max((max_pos - min_neg) / float(qmax - qmin), eps)
            zp = qmin - torch.round(min_neg / scale).to(torch.int)
            zero_point = torch.clamp(zp, qmin, qmax).tolist()
        for i, s, z in zip(ids, scale.tolist(), zero_point):
            out[i] = (s, int(z))
    return out
