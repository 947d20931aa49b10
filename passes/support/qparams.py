"""Quantization parameters of many MinMax-family observers (or min/max ranges) at once.

torch computes each observer's (scale, zero_point) with a dozen small tensor operations; on large models
that Python overhead dominates insert-qdq. The arithmetic is elementwise, so doing it on one stacked
tensor per group of alike observers gives bit-identical numbers. Observers this module does not recognise
(other classes, per-channel schemes, uncalibrated or invalid ranges) are left to their own
`calculate_qparams`, so torch's warnings and errors stay torch's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import math
import random
import struct
import time
import types
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

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
    # The buffers as nn.Module.__getattr__ finds them, without its lookups (a missing one: the slow path).
    buffers = observer._buffers
    lo, hi = buffers.get("min_val"), buffers.get("max_val")
    if not (isinstance(lo, torch.Tensor) and isinstance(hi, torch.Tensor)):
        return None
    if lo.dim() != 0 or hi.dim() != 0 or lo.dtype != torch.float32 or hi.dtype != torch.float32:
        return None
    if hi.device != lo.device:
        return None
    low, high = float(lo), float(hi)  # exact: every float32 is a Python float
    key = _group_key(observer, low, high, lo.device)
    return None if key is None else (key, low, high)


def _group_key(observer: Any, low: float, high: float, device: Any) -> tuple | None:
    """The group whose qparams `minmax_qparams` computes together, for an observer whose
    `_calculate_qparams` is UniformQuantizationObserverBase's and gets the float32 range (low, high) on
    `device`; None when the observer must compute its qparams itself."""
    qscheme = observer.qscheme
    if qscheme not in (_AFFINE, _SYMMETRIC):
        return None
    eps = observer._buffers.get("eps")
    if not isinstance(eps, torch.Tensor) or eps.numel() != 1 or eps.dtype != torch.float32:
        return None
    # Uncalibrated, inverted or NaN ranges: torch warns, raises or does its own thing; let it.
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        return None
    return (qscheme, observer.quant_min, observer.quant_max, observer.dtype, bool(observer.has_customized_qrange),
            float(eps), device)


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
    return _grouped_qparams(groups)


def _grouped_qparams(groups: dict[tuple, dict[int, tuple[float, float]]]) -> dict[int, tuple[float, int]]:
    """{member: (scale, zero point)} for groups of {member: (low, high)} keyed by `_group_key`."""
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
    search step; None when the observer is not a plain, calibrated HistogramObserver (see
    `batched_histogram_qparams`, which this is the one-observer case of)."""
    if not _plain_histogram(observer):
        return None
    (start, end), = _histogram_bin_searches([observer])
    return observer._calculate_qparams(*_searched_range(observer, start, end))


def batched_histogram_qparams(observers: Iterable[Any]) -> dict[int, tuple[float, int]]:
    """{id(observer): (scale, zero_point)} as Python numbers, as torch derives them from
    `calculate_qparams()`, for every plain, calibrated HistogramObserver among `observers` (others are left
    out), each bit-identical to torch's.

    torch's search moves its quantile bounds in steps of 1e-5 and on every step compares elements of the
    float32 cumulative histogram with the bounds, one tensor op per comparison, then scores each new
    candidate range with `_compute_quantization_error` (about fifteen small tensor ops). Here a float32 tensor
    compared with a Python number is compared in float32, so rounding each bound to float32 and comparing
    Python floats makes the same decisions. Each search runs in the compiled kernel where it can: torch's
    steps, each candidate's error computed by the same float32 operations as torch's and summed in the order
    torch sums it. Otherwise, since the candidates only depend on the cumulative histogram (a candidate is
    either accepted or ends the search), the searches of all observers advance in lockstep and score their
    next candidates together (`quantization_errors`). The final qparams of observers with the base class's
    `_calculate_qparams` are computed together too (`minmax_qparams`); others call their own.
    """
    # prepare_fx shares one observer between the nodes whose outputs share qparams: search each once
    classes: dict[type, tuple[bool, bool]] = {}  # per call: a class may be patched between two calls
    states = {id(o): (o, _searchable_buffers(o, classes)) for o in observers}
    searchable = {key: (o, found) for key, (o, found) in states.items() if found is not None}
    ranges = {key: (low.item(), high.item()) for key, (_, (_, low, high)) in searchable.items()}
    plain = [o for key, (o, _) in searchable.items() if _calibrated(*ranges[key])]
    histograms = {key: histogram for key, (_, (histogram, _, _)) in searchable.items()}
    groups: dict[tuple, dict[int, tuple[float, float]]] = defaultdict(dict)
    own: list[tuple[Any, int, int]] = []
    for observer, (start, end) in zip(plain, _histogram_bin_searches(plain, ranges, histograms)):
        key = None
        if type(observer)._calculate_qparams is UniformQuantizationObserverBase._calculate_qparams:
            low, high = _searched_range_floats(observer, start, end, ranges[id(observer)])
            _, (_, min_val, _) = searchable[id(observer)]
            key = _group_key(observer, low, high, min_val.device)
        if key is None:
            own.append((observer, start, end))
        else:
            groups[key][id(observer)] = (low, high)
    out = _grouped_qparams(groups)
    for observer, start, end in own:
        scale, zero_point = observer._calculate_qparams(*_searched_range(observer, start, end))
        out[id(observer)] = (float(scale), int(zero_point))
    return out


def _searched_range(observer: Any, start_bin: int, end_bin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (new_min, new_max) torch's search returns for the bin range it settled on."""
    bin_width = (observer.max_val - observer.min_val) / observer.bins
    return observer.min_val + bin_width * start_bin, observer.min_val + bin_width * (end_bin + 1)


def _searched_range_floats(observer: Any, start_bin: int, end_bin: int,
                           observed: tuple[float, float] | None = None) -> tuple[float, float]:
    """`_searched_range` as Python floats, by the same float32 operations: the range's ends are float32
    0-dim tensors, and each step is done on Python floats and rounded to float32 (an operation on float32
    values taken in float64 and rounded to float32 is the float32 operation's result). `observed` is the
    observer's (min_val, max_val) as read by `_observed_ranges` (None: read here)."""
    # float32 values, exact as Python floats
    low, high = observed if observed is not None else (observer.min_val.item(), observer.max_val.item())
    bin_width = _float32(_float32(high - low) / observer.bins)
    return _float32(low + _float32(bin_width * start_bin)), _float32(low + _float32(bin_width * (end_bin + 1)))


def _plain_histogram(observer: Any) -> bool:
    """A calibrated HistogramObserver whose search and scoring are torch's own, with a float32 histogram."""
    found = _searchable_buffers(observer)
    return found is not None and _calibrated(found[1].item(), found[2].item())


def _calibrated(low: float, high: float) -> bool:
    """Whether an observer with this (min_val, max_val) saw data: an uncalibrated one (torch warns and
    returns defaults) still holds (inf, -inf). Lift checked that the range buffers hold one value each."""
    return not (low == math.inf and high == -math.inf)


_HISTOGRAM_STATE = ("histogram", "min_val", "max_val")


def _searchable_class(kind: type) -> tuple[bool, bool]:
    """(whether `kind` is a HistogramObserver class whose search and scoring are torch's own, whether
    nn.Module's lookup finds its histogram and range in the buffer table: no class attribute of their
    names)."""
    searchable = (issubclass(kind, HistogramObserver)
                  and kind.calculate_qparams is HistogramObserver.calculate_qparams
                  and kind._non_linear_param_search is HistogramObserver._non_linear_param_search
                  and kind._compute_quantization_error is HistogramObserver._compute_quantization_error
                  and kind._get_norm is HistogramObserver._get_norm)
    in_table = (searchable and kind.__getattr__ is torch.nn.Module.__getattr__
                and not any(hasattr(kind, name) for name in _HISTOGRAM_STATE))
    return searchable, in_table


def _searchable_buffers(observer: Any, searchable_classes: dict[type, tuple[bool, bool]] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The (histogram, min_val, max_val) of a HistogramObserver whose search and scoring are torch's own,
    with a float32 histogram and float32 range buffers (calibrated or not; the search computes in float32,
    torch in the buffers' dtype), while float32 is the default dtype (torch's scoring makes its tensors in
    the default dtype), as attribute access gives them; None for any other observer. `searchable_classes`
    may remember the class test for one batch."""
    if torch.get_default_dtype() != torch.float32:
        return None
    kind = type(observer)
    classes = searchable_classes if searchable_classes is not None else {}
    facts = classes.get(kind)
    if facts is None:
        facts = classes[kind] = _searchable_class(kind)
    searchable, in_table = facts
    if not searchable:
        return None
    found = None
    if in_table:
        # Straight from the buffer table, where nn.Module.__getattr__ finds them after a miss in the class
        # and the instance dict, at an exception each.
        buffers, own = observer._buffers, observer.__dict__
        found = (buffers.get("histogram"), buffers.get("min_val"), buffers.get("max_val"))
        if found[0] is None or found[1] is None or found[2] is None or any(name in own for name in _HISTOGRAM_STATE):
            found = None
    if found is None:
        found = (observer.histogram, observer.min_val, observer.max_val)
    histogram, low, high = found
    if (histogram.dim() != 1 or histogram.dtype != torch.float32 or histogram.numel() != observer.bins
            or not histogram.numel() or low.dtype != torch.float32 or high.dtype != torch.float32):
        return None
    return found


def _observed_ranges(observers: list[Any]) -> dict[int, tuple[float, float]]:
    """{id(observer): (min_val.item(), max_val.item())} for each observer, read once for the whole search."""
    return {id(o): (o.min_val.item(), o.max_val.item()) for o in observers}


_FLOAT32 = struct.Struct("f")


def _float32(value: float) -> float:
    """`value` rounded to float32 (to nearest, ties to even), as a Python float."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:  # beyond float32's largest finite value after rounding: infinite, with its sign
        return float(numpy.float32(value))


_STEP = 1e-5  # torch's quantile step


@functools.cache
def _quantile_bound_arrays() -> tuple[numpy.ndarray, numpy.ndarray]:
    """torch's alpha and beta after k steps, for every k a search can reach: alpha_k = (..(0 + s) + s..)
    and beta_k = (..(1 - s) - s..), accumulated in torch's order, so each is the very float torch holds;
    as float64 arrays.

    numpy's cumulative sum adds in order (it does not sum pairwise), so it makes the very float64 additions
    (1 + -s is 1 - s exactly) about thirty times faster than a Python loop over the 100,008 steps, which
    cost the first convert of every process 10 ms or more; in place, in the one array each fills."""
    steps = int(1 / _STEP) + 8  # alpha_k < beta_j needs k + j below 1 / s + 1
    bounds = []
    for first, step in ((0.0, _STEP), (1.0, -_STEP)):
        values = numpy.full(steps + 1, step)
        values[0] = first
        bounds.append(numpy.cumsum(values, out=values))
    return bounds[0], bounds[1]


@functools.cache
def _quantile_bound_addresses() -> tuple[int, int, int]:
    """The addresses of the `_quantile_bound_arrays` (which stay alive: they are cached), and their length."""
    alphas, betas = _quantile_bound_arrays()
    return alphas.ctypes.data, betas.ctypes.data, len(alphas)


@functools.cache
def _quantile_bounds() -> tuple[Sequence[float], Sequence[float]]:
    """`_quantile_bound_arrays` as sequences whose items read as Python floats."""
    alphas, betas = _quantile_bound_arrays()
    return memoryview(alphas), memoryview(betas)


def _first_from(low: int, high: int, holds: Callable[[int], bool]) -> int:
    """The first index in [low, high) where the monotone (False..., True...) `holds` is true, else high:
    galloping from `low` (the answer is usually near), then bisecting."""
    step = 1
    while low + step < high and not holds(low + step - 1):
        low += step
        step *= 2
    high = min(high, low + step)
    while low < high:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle + 1
    return low


class _Counts(NamedTuple):
    """An observer's histogram as torch's search takes it: torch.sum(histogram).item(), and
    torch.cumsum(histogram, 0) as exact Python floats read from float32 memory."""

    total: float
    cumulative: Sequence[float]


def _cumulative_histograms(observers: list[Any]) -> list[_Counts]:
    """The `_Counts` of each observer.

    Histograms of one bin count and device are stacked and reduced together: torch accumulates each row of
    a cumulative sum on its own, and sums a row of up to one grain in one piece, as it sums the vector."""
    out: list[_Counts | None] = [None] * len(observers)
    groups: dict[tuple[int, Any], list[int]] = defaultdict(list)
    for k, observer in enumerate(observers):
        histogram = observer.histogram
        groups[(histogram.numel(), histogram.device)].append(k)
    for (bins, _), members in groups.items():
        if bins > _ONE_GRAIN or len(members) == 1:
            for k in members:
                histogram = observers[k].histogram
                out[k] = _Counts(torch.sum(histogram).item(), _float32_values(torch.cumsum(histogram, dim=0)))
            continue
        stacked = torch.stack([observers[k].histogram for k in members])
        totals = stacked.sum(dim=1).tolist()
        cumulative = _float32_values(torch.cumsum(stacked, dim=1))
        for row, (k, total) in enumerate(zip(members, totals)):
            out[k] = _Counts(total, cumulative[row * bins:(row + 1) * bins])
    return out  # type: ignore[return-value]


def _float32_values(values: torch.Tensor) -> memoryview:
    """A contiguous float32 tensor's values, flattened, as a sequence whose items read as exact Python
    floats: a view of the tensor's own memory (copying large buffers costs more than reading them)."""
    return memoryview(values.cpu().contiguous().numpy()).cast("B").cast("f")


def _candidate_ranges(observer: Any, counts: _Counts | None = None
                      ) -> Iterator[tuple[int, int]]:
    """The (start bin, end bin) ranges torch's search scores, in its order, assuming each is accepted;
    `counts` is the observer's entry of `_cumulative_histograms` (None: computed here).

    torch's loop makes one 1e-5 step per iteration. Steps in which neither bound passes a bin only lower
    beta; those runs are skipped at once (the first step at which the upper bound passes the end bin's
    cumulative count, or the loop ends, is found by bisection over the exact betas)."""
    alphas, betas = _quantile_bounds()
    bins = observer.bins
    total, cumulative = _cumulative_histograms([observer])[0] if counts is None else counts
    ka = kb = 0  # steps taken by alpha and by beta
    start_bin, end_bin = 0, bins - 1
    while alphas[ka] < betas[kb]:
        left, right = start_bin, end_bin
        # torch compares float32 cumulative counts with the bound rounded to float32. A count is a float32
        # value and rounding is monotone, so a count at or above the unrounded bound is at or above the
        # rounded one too: the rounding is only needed when the pointer may move (most steps it may not).
        low = alphas[ka + 1] * total
        if left < end_bin and cumulative[left] < low:
            low = _float32(low)
            while left < end_bin and cumulative[left] < low:
                left += 1
        high = betas[kb + 1] * total
        if right > start_bin and cumulative[right] > high:
            high = _float32(high)
            while right > start_bin and cumulative[right] > high:
                right -= 1
        if left == start_bin and right == end_bin:
            # An idle step: torch lowers beta and tries again; the left test stays as it is until alpha
            # moves, so go straight to the step where the right one passes (or the loop ends).
            kb = _next_moving_step(alphas[ka], betas, kb + 1, cumulative[end_bin], total,
                                   end_bin > start_bin)
            continue
        if (left - start_bin) > (end_bin - right):
            start_bin = left
            ka += 1
        else:
            end_bin = right
            kb += 1
        yield start_bin, end_bin


def _next_moving_step(alpha: float, betas: list[float], kb: int, count: float, total: float,
                      may_move: bool) -> int:
    """The first beta step from `kb` at which torch's loop ends (beta <= alpha) or the upper bound falls
    below the end bin's cumulative `count` (when that bin may move at all)."""
    if not total >= 0:  # (NaN too) the bounds would not fall monotonically: take one step
        return kb

    def stops(j: int) -> bool:
        if betas[j] <= alpha:
            return True
        high = betas[j + 1] * total
        return may_move and count > high and count > _float32(high)

    return _first_from(kb, len(betas) - 1, stops)


class _Search:
    """One observer's HistogramObserver._non_linear_param_search, advanced a batch of candidates at a time."""

    def __init__(self, observer: Any, counts: _Counts) -> None:
        self.observer = observer
        self.candidates = _candidate_ranges(observer, counts)
        self.start_bin, self.end_bin = 0, observer.bins - 1
        self.norm_min = float("inf")
        self.done = False

    def next_batch(self, size: int) -> list[tuple[int, int]]:
        batch = list(itertools.islice(self.candidates, size))
        self.done = not batch
        return batch

    def consume(self, batch: list[tuple[int, int]], norms: list[float]) -> None:
        """Accept candidates in order until one scores worse than the last accepted (torch's stop)."""
        for (start, end), norm in zip(batch, norms):
            if norm > self.norm_min:
                self.done = True
                return
            self.norm_min = norm
            self.start_bin, self.end_bin = start, end


def _histogram_bin_searches(observers: list[Any], ranges: dict[int, tuple[float, float]] | None = None,
                            histograms: dict[int, torch.Tensor] | None = None) -> list[tuple[int, int]]:
    """The (start bin, end bin) HistogramObserver._non_linear_param_search settles on for each observer.
    `ranges` may hold the observers' `_observed_ranges`, `histograms` their histograms as
    `_searchable_buffers` read them.

    Each search runs in the compiled kernel where it can (`_search_natively`); the others advance together,
    their candidates scored in growing batches until each stops."""
    found: list[tuple[int, int] | None] = [None] * len(observers)
    kernel = native_kernel()
    lanes = summing_lanes(kernel) if kernel is not None else None
    if lanes is not None:
        ranges = ranges if ranges is not None else _observed_ranges(observers)
        histograms = histograms if histograms is not None else {id(o): o.histogram for o in observers}
        found = [_search_natively(kernel, lanes, o, ranges[id(o)], histograms[id(o)]) for o in observers]
    rest = [k for k, searched in enumerate(found) if searched is None]
    if rest:
        left = [observers[k] for k in rest]
        for k, searched in zip(rest, _lockstep_searches(left, _cumulative_histograms(left), ranges)):
            found[k] = searched
    return found  # type: ignore[return-value]


def _search_natively(kernel: Any, lanes: int, observer: Any, observed: tuple[float, float],
                     histogram: torch.Tensor) -> tuple[int, int] | None:
    """One observer's search by the kernel, candidate by candidate as torch makes them, each scored by
    the kernel's terms summed in torch's order (its total and cumulative counts, too, are summed as torch
    sums them); None when the kernel cannot take it (a histogram off the CPU or of more than one grain of
    bins, or a candidate whose quotients are beyond its flooring). `histogram` is the observer's."""
    bins = observer.bins
    if not histogram.is_cpu or not histogram.is_contiguous() or bins > _ONE_GRAIN:
        return None
    low, high = observed
    return kernel.search(histogram.data_ptr(), *_quantile_bound_addresses(), bins, observer.dst_nbins,
                         (high - low) / bins, lanes)


def _lockstep_searches(observers: list[Any], counts: list[_Counts],
                       ranges: dict[int, tuple[float, float]] | None) -> list[tuple[int, int]]:
    """The searches of `observers` (whose `_Counts` are `counts`), advanced together: their candidates
    scored in growing batches by `quantization_errors` until each stops."""
    searches = [_Search(o, c) for o, c in zip(observers, counts)]
    active = searches
    scorers = ErrorScorers(ranges)
    # Most searches stop at their second or third candidate, few go on for long: score two, then one,
    # then twice as many each round.
    sizes = itertools.chain([2, 1, 2, 4, 8, 16, 32], itertools.repeat(64))
    while active:
        size = next(sizes)
        batches = [(search, search.next_batch(size)) for search in active]
        batches = [(search, batch) for search, batch in batches if batch]
        norms = quantization_errors([(search.observer, batch) for search, batch in batches], scorers)
        for (search, batch), scored in zip(batches, norms):
            search.consume(batch, scored)
        active = [search for search in active if not search.done]
    return [(search.start_bin, search.end_bin) for search in searches]


def quantization_errors(requests: list[tuple[Any, list[tuple[int, int]]]],
                        scorers: "ErrorScorers | None" = None) -> list[list[float]]:
    """For each (observer, ranges) request: HistogramObserver._compute_quantization_error(start, end) for each
    (start, end) in ranges, bit for bit. One row per range (rows of all requests with the same bin count,
    destination bin count and device computed together); every element computed by the same float32
    operations in the same order (the per-range and per-observer Python numbers become float32 columns, as
    torch turns them into float32 operands), each row summed on its own as torch sums its vector.
    `scorers` holds work buffers to reuse across calls (a search scores many rounds); None: fresh ones."""
    scorers = ErrorScorers() if scorers is None else scorers
    out = [[0.0] * len(ranges) for _, ranges in requests]
    groups: dict[tuple[int, int, Any], list[tuple[int, int, Any, int, float, float]]] = defaultdict(list)
    for r, (observer, ranges) in enumerate(requests):
        bins, dst_nbins = observer.bins, observer.dst_nbins
        bin_width, device = scorers.facts(observer)
        rows = groups[(bins, dst_nbins, device)]
        for i, (start, end) in enumerate(ranges):
            width = bin_width * (end - start + 1) / dst_nbins
            if width != 0.0:
                rows.append((r, i, observer, start, bin_width, width))
    for (bins, dst_nbins, device), rows in groups.items():
        if not rows:
            continue
        work = scorers.work(bins, device)
        densities = work.density_rows({id(row[2]): (row[2], row[4]) for row in rows})
        per_chunk = work.rows
        for k in range(0, len(rows), per_chunk):
            chunk = rows[k:k + per_chunk]
            indices = [densities[id(row[2])] for row in chunk]
            for (r, i, *_), error in zip(chunk, work.errors(chunk, indices, dst_nbins - 1)):
                out[r][i] = error
    return out


@functools.cache
def native_kernel() -> Any:
    """The compiled search and scoring kernel (`_histogram_kernel.c`, built when qfx is installed with a C
    compiler at hand), or None when it was not built or does not reproduce `_ErrorWork._error_terms` bit for
    bit on a sample of rows, both ways it can score rows of tiny destination bins (a compiler that fused
    multiply-adds would not): the tensor operations run then. It computes each row's per-bin terms in one
    pass where the tensor operations make forty; its searches also need `summing_lanes`. Of its two ways
    with tiny rows, the one faster on this CPU is set (`_tiny_rows_faster_natively`)."""
    try:
        from . import _histogram_kernel  # type: ignore[attr-defined]
    except ImportError:
        return None
    if not all(hasattr(_histogram_kernel, name) for name in _KERNEL_FUNCTIONS):
        return None  # built from older sources (an editable install not rebuilt since)
    if not all(_kernel_agrees(_histogram_kernel, emulated) for emulated in (True, False)):
        return None
    _histogram_kernel.set_tiny_row_emulation(not _tiny_rows_faster_natively(_histogram_kernel))
    return _histogram_kernel


# What this module calls in the kernel.
_KERNEL_FUNCTIONS = ("score_rows", "search", "vector_sum", "cumulative_sum", "set_tiny_row_emulation")


@contextlib.contextmanager
def tiny_row_emulation(kernel: Any, emulated: bool) -> Iterator[None]:
    """Within the block, `kernel` scores rows of tiny destination bins in its float64 emulation of float32
    (`emulated`) or in float32 itself; the setting before is restored after."""
    previous = kernel.set_tiny_row_emulation(emulated)
    try:
        yield
    finally:
        kernel.set_tiny_row_emulation(previous)


def _kernel_agrees(kernel: Any, emulated: bool) -> bool:
    """Whether `kernel` writes the very bits `_error_terms` writes on `_check_rows` (histograms with empty
    and tiny bins, assorted ranges and scales, tiny ones too, whose float32 intermediates are subnormal),
    with tiny rows scored the `emulated` way: the known answer, or else the tensor operations' own."""
    with tiny_row_emulation(kernel, emulated):
        return _writes_the_known_terms(kernel) or kernel_writes_the_terms(kernel, *_check_rows())


# SHA-256 of the terms `_error_terms` writes for `_check_rows()` (tests/passes/support/test_qparams.py keeps
# it the tensor operations' answer): a kernel that writes them needs no run of the tensor operations, whose
# first run in a process costs several milliseconds.
_CHECK_ROWS_TERMS = "eed995fa70e8ce3388b147e5934c35abdecff7b6119d050b2f39bd8c6cd200a0"


@functools.cache
def _check_rows() -> tuple[list[tuple], int, int]:
    """Rows to check the kernel on, (rows, bins, top) as `kernel_writes_the_terms` takes them: six histograms
    of 256 bins (uniform, empty, tiny, small integer and power-of-two counts), each scored on four ranges
    with its own bin width (the widths below 1e-12 make rows of tiny destination bins). Drawn by Python's
    seeded generator and exact float32 arithmetic, so they are the same bits on every machine."""
    draw = random.Random(0)
    bins, dst_nbins = 256, 64
    f32 = numpy.float32

    def uniform() -> numpy.ndarray:
        return numpy.array([draw.random() for _ in range(bins)], dtype=f32)

    tiny = uniform()
    tiny = tiny * tiny
    tiny = tiny * tiny
    histograms = [uniform() * f32(1000), numpy.zeros(bins, f32), tiny * tiny * f32(1e-30),
                  numpy.array([draw.randrange(3) for _ in range(bins)], dtype=f32), uniform() * f32(50),
                  numpy.array([2.0 ** draw.randrange(-9, 9) for _ in range(bins)], dtype=f32)]
    rows = []
    for k, histogram in enumerate(histograms):
        observer = types.SimpleNamespace(histogram=torch.from_numpy(histogram))
        for start, end in ((0, bins - 1), (3, bins - 9), (40, 41), (100, 100)):
            bin_width = (0.37, 1e-3, 25.0, 1.0, 1e-14, 3e-13)[k] * (1 + start / 7)
            rows.append((0, 0, observer, start, bin_width, bin_width * (end - start + 1) / dst_nbins))
    return rows, bins, dst_nbins - 1


def _writes_the_known_terms(kernel: Any) -> bool:
    """Whether `kernel` writes the terms whose digest is `_CHECK_ROWS_TERMS` for `_check_rows()`, given the
    inputs `kernel_writes_the_terms` gives it (each observer's density: its histogram over the bin width of
    its last row, in float32, divided here by numpy: no tensor operation runs)."""
    rows, bins, top = _check_rows()
    last_width = {id(row[2]): (row[2], row[4]) for row in rows}
    table = {key: k for k, key in enumerate(last_width)}
    densities = numpy.stack([observer.histogram.numpy() / numpy.float32(width) for observer, width in
                             last_width.values()])
    index = numpy.array([table[id(row[2])] for row in rows], dtype=numpy.int64)
    columns = _columns(rows, torch.device("cpu")).numpy()  # (making a tensor from numbers costs no first run)
    written = numpy.full((len(rows), bins), numpy.nan, dtype=numpy.float32)
    kernel.score_rows(written.ctypes.data, densities.ctypes.data, index.ctypes.data, columns.ctypes.data,
                      len(rows), bins, float(top))
    return hashlib.sha256(written.tobytes()).hexdigest() == _CHECK_ROWS_TERMS


def _tiny_rows_faster_natively(kernel: Any) -> bool:
    """Whether `kernel` scores rows of tiny destination bins faster in float32 itself than in its float64
    emulation on this CPU: the best of three timings each, on four rows of 1024 bins (under a millisecond in
    all). Both ways write the same bits, so the answer only decides the speed."""
    rows, bins = 4, 1024
    density = numpy.linspace(0.5, 2.0, rows * bins, dtype=numpy.float32)
    index = numpy.arange(rows, dtype=numpy.int64)
    width = 1e-13
    columns = numpy.array([[width / 8] * rows, [width] * rows, [width / 2] * rows, [-width / 2] * rows,
                           [float(k) for k in range(rows)]], dtype=numpy.float32)
    norm = numpy.empty(rows * bins, dtype=numpy.float32)
    best: dict[bool, float] = {}
    for emulated in (True, False) * 3:
        with tiny_row_emulation(kernel, emulated):
            began = time.perf_counter()
            kernel.score_rows(norm.ctypes.data, density.ctypes.data, index.ctypes.data, columns.ctypes.data,
                              rows, bins, float(bins // 8 - 1))
            took = time.perf_counter() - began
        best[emulated] = min(took, best.get(emulated, took))
    return best[False] < best[True]


# Vector lengths the summing check draws: below, at and above a vector's lanes and four vectors, across the
# cascade's carries (every 16 rows of four vectors), up to one grain.
_SUM_CHECK_LENGTHS = (1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 37, 64, 100, 255, 1000, 1024, 2048, 4099, 20000, 32768)


@functools.cache
def summing_lanes(kernel: Any) -> int | None:
    """The vector width (in float32 lanes) with which `kernel.vector_sum` adds the values of a vector in the
    very order torch's sum of a CPU vector of up to one grain adds them, on every sample (values of widely
    spread magnitudes, so that another order shows), or None when no width does: searches then score with
    tensor operations. (8 on x86 builds of torch, whatever their vector extensions.)"""
    values = torch.from_numpy(_spread_values(max(_SUM_CHECK_LENGTHS)))
    samples = [values[:n] for n in _SUM_CHECK_LENGTHS]
    wanted = [x.sum().item().hex() for x in samples]
    for lanes in (8, 16, 4):
        if all(kernel.vector_sum(x.data_ptr(), x.numel(), lanes).hex() == want for x, want in zip(samples, wanted)):
            return lanes
    return None


def _spread_values(n: int) -> numpy.ndarray:
    """n float32 values of both signs and magnitudes from 2**-21 to 2**19 in no order, made by exact integer
    and power-of-two arithmetic (a multiplicative hash of the index): the same bits on every machine."""
    hashed = numpy.arange(n, dtype=numpy.int64) * 2654435761 % (1 << 32)
    return numpy.ldexp(hashed / float(1 << 32) - 0.5, hashed % 41 - 20).astype(numpy.float32)


def kernel_writes_the_terms(kernel: Any, rows: list[tuple], bins: int, top: int) -> bool:
    """Whether `kernel` writes the very bits (signs of zeros included) `_ErrorWork._error_terms` writes for
    `rows` (request, index, observer, start bin, bin width, dst bin width) of histograms of `bins` bins, with
    `top` the last destination bin; False when some row's quotients are too large for the kernel."""
    work = _ErrorWork(len(rows), bins, torch.device("cpu"))
    if not work._quotients_are_small(rows):
        return False
    table = work.density_rows({id(row[2]): (row[2], row[4]) for row in rows})
    index = torch.tensor([table[id(row[2])] for row in rows])
    columns = _columns(rows, work.device)
    buffers = work._first_rows(len(rows))
    work._error_terms(columns.unsqueeze(2), index, top, True, buffers)
    expected = buffers[6].clone()
    buffers[6].fill_(float("nan"))
    kernel.score_rows(buffers[6].data_ptr(), work._densities.data_ptr(), index.data_ptr(), columns.data_ptr(),
                      len(rows), bins, float(top))
    return torch.equal(buffers[6].view(torch.int32), expected.view(torch.int32))


def _columns(rows: list[tuple], device: Any) -> torch.Tensor:
    """The float32 columns ([5, rows]) of scoring rows (request, index, observer, start bin, bin width, dst
    bin width): one per Python number torch uses, rounded as torch rounds it into an operand (bin width,
    dst bin width, its half, minus its half, start bin). (src_bin - start) is exact in float32 (bin counts
    are far below 2**24), as torch's int64 difference is once promoted for the float multiplication."""
    return torch.tensor([[row[4] for row in rows], [row[5] for row in rows], [row[5] / 2 for row in rows],
                         [-row[5] / 2 for row in rows], [float(row[3]) for row in rows]],
                        dtype=torch.float32, device=device)


# Rows per chunk: its seven float32 buffers and one float64 buffer (about 1.2 MB) stay in a core's L2 cache
# (64k elements, 2.4 MB, ran 10-25% slower on a 2 MB-L2 Xeon; 8k pays more per-operation overhead).
_CHUNK_ELEMENTS = 1 << 15
_ONE_GRAIN = 32768  # at::internal::GRAIN_SIZE: longer vectors are summed in pieces, then the pieces


class ErrorScorers:
    """The work buffers of `quantization_errors`, one set per (bin count, device), made when first needed
    and reused by later calls: rows go in chunks of about 32k elements through one set of buffers, so the
    intermediates stay in the cache and no operation pays for fresh memory (one big batch, or new tensors
    per operation, are several times slower per row)."""

    def __init__(self, ranges: dict[int, tuple[float, float]] | None = None) -> None:
        self._works: dict[tuple[int, Any], _ErrorWork] = {}
        self._facts: dict[int, tuple[float, Any, Any]] = {}
        self._ranges = ranges or {}

    def facts(self, observer: Any) -> tuple[float, Any]:
        """(torch's Python bin width, the histogram's device) of `observer`, read once per observer (its
        range and histogram must not change while this is in use; its range may come from the ranges
        this was made with)."""
        known = self._facts.get(id(observer))
        if known is None:
            low, high = self._ranges.get(id(observer)) or (observer.min_val.item(), observer.max_val.item())
            bin_width = (high - low) / observer.bins
            known = self._facts[id(observer)] = (bin_width, observer.histogram.device, observer)
        return known[0], known[1]

    def work(self, bins: int, device: Any) -> "_ErrorWork":
        """The buffers for histograms of `bins` bins on `device`."""
        work = self._works.get((bins, device))
        if work is None:
            work = self._works[(bins, device)] = _ErrorWork(max(1, _CHUNK_ELEMENTS // bins), bins, device)
        return work


class _ErrorWork:
    """Work buffers for scoring up to `rows` ranges of histograms with `bins` bins at a time, and the
    density of each observer scored so far (its histogram must not change while this is in use)."""

    def __init__(self, rows: int, bins: int, device: Any) -> None:
        self.device = device
        self.rows = rows
        self.bins = bins
        self.src_bin = torch.arange(bins, dtype=torch.float32, device=device)
        empty = torch.empty((rows, bins), dtype=torch.float32, device=device)
        self._buffers = (empty, *(torch.empty_like(empty) for _ in range(6)),
                         torch.empty((rows, bins), dtype=torch.float64, device=device))
        self._views: dict[int, tuple[torch.Tensor, ...]] = {}
        # torch's Python-number operands as float32 tensors: the same float32 arithmetic, without wrapping
        # a number into a tensor on every operation
        self._half, self._one, self._three = (torch.tensor(v, dtype=torch.float32, device=device)
                                              for v in (0.5, 1.0, 3.0))
        self._densities = torch.empty((0, bins), dtype=torch.float32, device=device)
        self._density_row: dict[int, tuple[int, Any]] = {}

    def density_rows(self, observers: dict[int, tuple[Any, float]]) -> dict[int, int]:
        """{id(observer): its row of the density table} for {id(observer): (observer, bin width)}; the
        densities not yet held (torch's histogram / bin_width, in float32) are computed together."""
        new = [(key, observer, bin_width) for key, (observer, bin_width) in observers.items()
               if key not in self._density_row]
        if new:
            widths = torch.tensor([bin_width for *_, bin_width in new], dtype=torch.float32, device=self.device)
            fresh = torch.stack([observer.histogram for _, observer, _ in new]).div_(widths.unsqueeze(1))
            first = self._densities.shape[0]
            self._densities = torch.cat([self._densities, fresh]) if first else fresh
            for k, (key, observer, _) in enumerate(new):
                self._density_row[key] = (first + k, observer)  # the observer held: its id stays its own
        return {key: self._density_row[key][0] for key in observers}

    def _first_rows(self, n: int) -> tuple[torch.Tensor, ...]:
        """The buffers' first `n` rows (views made once per row count)."""
        views = self._views.get(n)
        if views is None:
            views = self._views[n] = tuple(buffer[:n] for buffer in self._buffers)
        return views

    def errors(self, rows: list[tuple], densities: list[int], top: int) -> list[float]:
        """The quantization error of each row (request, index, observer, start bin, bin width, dst bin
        width), whose observer's density is row `densities[k]` of the table: torch's float32 operations in
        torch's order, with per-row float32 columns for torch's Python numbers, each row then summed by
        torch as it sums its vector; `top` is the last destination bin."""
        n = len(rows)
        columns = _columns(rows, self.device)
        index = torch.tensor(densities, device=self.device)
        buffers = self._first_rows(n)
        norm = buffers[6]
        small = self._quotients_are_small(rows)
        kernel = native_kernel() if small and self.device.type == "cpu" else None
        if kernel is not None:
            kernel.score_rows(norm.data_ptr(), self._densities.data_ptr(), index.data_ptr(), columns.data_ptr(),
                              n, self.bins, float(top))
        else:
            self._error_terms(columns.unsqueeze(2), index, top, small, buffers)
        if norm.shape[1] <= _ONE_GRAIN:
            # torch sums a vector this short in one piece, the very loop that sums each row of a matrix
            return norm.sum(dim=1).tolist()
        return [norm[k].clone().sum().item() for k in range(n)]

    def _error_terms(self, columns: torch.Tensor, index: torch.Tensor, top: int, small: bool,
                     buffers: tuple[torch.Tensor, ...]) -> None:
        """Fill the norm buffer (`buffers[6]`) with the per-bin error terms of the rows whose float32
        columns are `columns` ([5, rows, 1]: bin width, dst bin width, its half, minus its half, start bin)
        and densities are rows `index` of the table, by torch's tensor operations; `small`: every quotient
        is one `_floor_quotients` takes."""
        bin_width, width, half, neg_half, starts = columns.unbind()
        half_cube, neg_half_cube = _cube(half), _cube(neg_half)
        begin, end, density, low_bin, high_bin, scratch, norm, quotient = buffers
        torch.index_select(self._densities, 0, index, out=density)

        torch.sub(self.src_bin, starts, out=begin).mul_(bin_width)
        torch.add(begin, bin_width, out=end)
        if small:
            inverse64 = width.double().reciprocal_()
            _floor_quotients(begin, inverse64, top, quotient, low_bin)
            _floor_quotients(end, inverse64, top, quotient, high_bin)
        else:
            torch.div(begin, width, rounding_mode="floor", out=low_bin).clamp_(0, top)
            torch.div(end, width, rounding_mode="floor", out=high_bin).clamp_(0, top)
        # norm = 0 + get_norm(begin - begin's dst bin center, dst_bin_width / 2): torch's delta_end there is
        # a vector filled with the half width, whose cube is the column's.
        delta_begin = torch.sub(begin, torch.add(low_bin, self._half, out=scratch).mul_(width), out=scratch)
        # (torch adds this into a zero vector, which turns -0.0 into 0.0; not needed here: each row's sum
        # starts from 0.0, and x + -0.0 is x + 0.0 for every x but -0.0, which such a sum never holds)
        torch.sub(half_cube, _cube(delta_begin, out=norm), out=norm).div_(self._three).mul_(density)
        # + (high bin - low bin - 1) * get_norm(-half width, half width)
        whole = torch.mul(density, torch.sub(half_cube, neg_half_cube).div_(self._three), out=scratch)
        norm.add_(torch.sub(high_bin, low_bin, out=low_bin).sub_(self._one).mul_(whole))
        # + get_norm(-half width, end - end's dst bin center)
        delta_end = torch.sub(end, torch.mul(high_bin, width, out=scratch).add_(half), out=scratch)
        norm.add_(torch.sub(_cube(delta_end, out=begin), neg_half_cube, out=begin).div_(self._three).mul_(density))

    def _quotients_are_small(self, rows: list[tuple]) -> bool:
        """Whether every begin/end of these rows is finite and below 2**21 destination bin widths (with
        room for float32 rounding), where `_floor_quotients` is exact."""
        reach = self.bins + 2
        return all(row[5] > 1e-37 and reach * row[4] < 1e37 and reach * row[4] < row[5] * 2.0**21
                   for row in rows)


def _floor_quotients(x: torch.Tensor, inverse64: torch.Tensor, top: int, quotient: torch.Tensor,
                     out: torch.Tensor) -> None:
    """clamp(torch.div(x, width, rounding_mode="floor"), 0, top) into `out`, for float32 `x` and widths whose
    quotients are finite and below 2**21 in size; `inverse64` holds 1 / width in float64 (the float32
    widths widened, then inverted), `quotient` is a float64 buffer of x's shape.

    torch's floor division of float32 numbers costs fifteen times a division; for quotients below 2**22
    it is the floor of the exact quotient (its fmod-based steps are off by less than a half). That floor
    is taken here from x * (1 / width) in float64, nudged up by 2**-28 (a float64 multiplication costs a
    third of a division):
    - the product is off from the exact quotient by at most 2**-52 of it (two roundings), under 2**-31;
    - an integer quotient (x a multiple of the width) thus lands in (n, n + 2**-27) once nudged: floor n;
    - a non-integer quotient of float32 numbers that is at least 1/2 lies more than 2**-26 from every
      integer (x - n * width is a nonzero multiple of the smaller of their units in the last place, and
      x >= width / 2 bounds how much smaller x's can be), so the nudge and the error do not carry it
      past one; quotients below 1/2 floor to 0 or, when negative, to what the clamp makes 0 anyway.
    Clamped, the floor is an integer below 2**21, exact in float32 (so the clamp runs there, after the
    narrowing); only the sign of a zero may differ, which no later step sees (the bin index is only added
    to or multiplied into something nonzero)."""
    # (x is widened into the buffer first: multiplying the float32 x by float64 columns directly would
    # widen it into a fresh tensor on every call)
    quotient.copy_(x).mul_(inverse64).add_(_QUOTIENT_NUDGE).floor_()
    out.copy_(quotient).clamp_(0, top)


_QUOTIENT_NUDGE = 2.0**-28


def _cube(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x * x * x, multiplied left to right as torch's _get_norm does (into `out` when given)."""
    return torch.mul(x, x, out=out).mul_(x) if out is not None else (x * x).mul_(x)
