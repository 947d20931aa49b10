"""Weight qparams of reference modules, computed for many modules at once without building observers.

For every weighted module convert builds a fresh observer from `qconfig.weight()`, runs it on the weight
and reads `get_qparam_dict` from it: ~150 us of small Python and tensor operations per module. For the
plain min/max observers the result depends only on the weight's min and max (which are exact) and on the
observer's configuration, which is the same for every observer one constructor builds. So this module
builds one observer per constructor to read that configuration, takes each weight's min and max itself,
and computes the qparams of all weights with alike configurations in a few elementwise operations on
stacked tensors (`qparams.minmax_qparams`, bit-identical to one observer at a time).

Anything else (other observer classes, constructors that warn or fail, RNNs, weights that are not plain
finite float32 CPU tensors) gets no entry here and is left to the observers, so torch's warnings and
errors stay torch's.
"""

from __future__ import annotations

import functools
import struct
import warnings
from collections import defaultdict
from typing import Any, Iterable

import attrs
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from ..support.qparams import minmax_qparams
from .module_lookup import ModuleLookup

_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
# get_qparam_dict reports symmetric schemes as their affine counterparts (quantized tensors have no others).
_REPORTED_QSCHEME = {
    torch.per_tensor_affine: torch.per_tensor_affine,
    torch.per_tensor_symmetric: torch.per_tensor_affine,
    torch.per_channel_affine: torch.per_channel_affine,
    torch.per_channel_symmetric: torch.per_channel_affine,
    torch.per_channel_affine_float_qparams: torch.per_channel_affine_float_qparams,
}


def _partial_key(partial: Any) -> tuple | None:
    """(function, args, sorted keywords) of a functools.partial, or None when they are not hashable."""
    key = (partial.func, partial.args, tuple(sorted(partial.keywords.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


class ConstructorKeys:
    """What determines the observers a constructor builds (its class and arguments), as a key; None when
    the arguments are not hashable. prepare wraps constructors with a per-module `factory_kwargs` callable
    that only picks the module's device, so callable arguments count by name only.

    Each constructor object's key is computed once (a pass asks about the constructors of the same qconfig
    objects more than once), and since prepare gives each module its own wrapper around one shared
    partial, the partial's part of the key is remembered per partial too."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Any, tuple | None]] = {}
        self._partials: dict[int, tuple[Any, tuple | None]] = {}

    def __call__(self, constructor: Any) -> tuple | None:
        known = self._known.get(id(constructor))
        if known is None or known[0] is not constructor:
            known = self._known[id(constructor)] = (constructor, self._key(constructor))
        return known[1]

    def _key(self, constructor: Any) -> tuple | None:
        partial = getattr(constructor, "p", None)
        if partial is None or not hasattr(partial, "func"):
            return None
        known = self._partials.get(id(partial))
        if known is None or known[0] is not partial:
            known = self._partials[id(partial)] = (partial, _partial_key(partial))
        if known[1] is None:
            return None
        return (*known[1], tuple(sorted(getattr(constructor, "callable_args", {}) or {})))


@attrs.frozen
class WeightObserverConfig:
    """The part of a weight observer's configuration its qparams depend on."""

    qscheme: torch.qscheme
    dtype: torch.dtype
    quant_min: int
    quant_max: int
    customized_range: bool
    eps: float
    ch_axis: int | None  # None for per-tensor observers
    eps_tensor: torch.Tensor = attrs.field(eq=False, repr=False)

    @classmethod
    def of(cls, observer: Any) -> "WeightObserverConfig | None":
        """The configuration of a fresh `observer` whose qparams this module computes exactly: a
        MinMaxObserver or PerChannelMinMaxObserver (not a subclass) with float32 buffers on the CPU.
        None for anything else."""
        kind = type(observer)
        if kind is MinMaxObserver:
            if observer.qscheme not in _PER_TENSOR:
                return None
            ch_axis = None
        elif kind is PerChannelMinMaxObserver:
            if observer.qscheme not in _PER_CHANNEL or type(observer.ch_axis) is not int:
                return None
            ch_axis = observer.ch_axis
        else:
            return None
        eps, lo = observer.eps, observer.min_val
        if eps.dtype != torch.float32 or eps.shape != (1,) or eps.device.type != "cpu":
            return None
        if lo.dtype != torch.float32 or lo.device.type != "cpu":
            return None
        return cls(observer.qscheme, observer.dtype, observer.quant_min, observer.quant_max,
                   bool(observer.has_customized_qrange), float(eps), ch_axis, eps)

    def qparam_dict(self, scale: torch.Tensor, zero_point: torch.Tensor) -> dict[str, Any]:
        """What get_qparam_dict returns for an observer of this configuration with these qparams."""
        found: dict[str, Any] = {"qscheme": _REPORTED_QSCHEME[self.qscheme], "dtype": self.dtype}
        if self.ch_axis is not None:
            found["axis"] = self.ch_axis
        found["scale"] = scale
        found["zero_point"] = zero_point
        found["quant_min"] = self.quant_min
        found["quant_max"] = self.quant_max
        return found


class WeightQParamTable:
    """Weight qparams computed ahead for the float modules a pass will convert, looked up by module.

    `compute` takes (float module, qconfig) pairs; `get` returns, for the same module and qconfig objects,
    exactly the dict `get_qparam_dict` would return for a fresh `qconfig.weight()` observer (moved to the
    pass's device) after it observed the module's weight, or None when that is left to the observer.
    Each entry is handed out once, and its scale and zero point tensors are new tensors of their own
    (nobody else holds them): the caller may keep them instead of copying them.
    """

    def __init__(self, device: torch.device | None, constructor_keys: ConstructorKeys, lookup: ModuleLookup) -> None:
        self._device = device
        self._constructor_keys = constructor_keys
        self._lookup = lookup
        self._configs: dict[tuple, WeightObserverConfig | None] = {}
        self._found: dict[int, tuple[torch.nn.Module, Any, dict[str, Any]]] = {}

    def compute(self, pairs: Iterable[tuple[torch.nn.Module, Any]]) -> None:
        """Compute the qparams of every (float module, qconfig) pair this table can do."""
        owners: list[tuple[torch.nn.Module, Any]] = []
        requests: list[tuple[torch.Tensor, WeightObserverConfig]] = []
        seen: set[int] = set()
        for module, qconfig in pairs:
            request = self._request(module, qconfig) if id(module) not in seen else None
            if request is not None:
                seen.add(id(module))
                owners.append((module, qconfig))
                requests.append(request)
        for (module, qconfig), qparams in zip(owners, batched_weight_qparams(requests)):
            if qparams is not None:
                self._found[id(module)] = (module, qconfig, qparams)

    def get(self, module: torch.nn.Module, qconfig: Any) -> dict[str, Any] | None:
        """The precomputed get_qparam_dict for `module`'s weight under `qconfig`, or None; taken out of the
        table (a second call for the module answers None)."""
        entry = self._found.get(id(module))
        if entry is None or entry[0] is not module or entry[1] is not qconfig:
            return None
        del self._found[id(module)]
        return entry[2]

    def _request(self, module: torch.nn.Module, qconfig: Any) -> tuple[torch.Tensor, WeightObserverConfig] | None:
        """Where the fast and the observer path part: the weight and the observer configuration when this
        table computes the module's weight qparams, else None (then `batched_weight_qparams` may still
        leave an unusual weight to the observer)."""
        if isinstance(module, (torch.nn.RNNCellBase, torch.nn.RNNBase)):
            return None  # one observer per weight, handled by the observer path
        if self._device is not None and self._device.type != "cpu":
            return None
        if "parametrizations" in module._modules:
            return None  # reading the weight runs the parametrizations: only where torch reads it
        weight = self._lookup.parameter(module, "weight")
        if type(weight) not in (torch.Tensor, torch.nn.Parameter):
            return None
        constructor = getattr(qconfig, "weight", None)
        key = self._constructor_keys(constructor)
        if key is None or not set(key[3]) <= {"factory_kwargs"}:
            return None  # callable arguments other than prepare's device pick may differ per module
        if key not in self._configs:
            self._configs[key] = _config_of_fresh_observer(constructor)
        config = self._configs[key]
        return None if config is None else (weight, config)


def _config_of_fresh_observer(constructor: Any) -> WeightObserverConfig | None:
    # An observer whose construction warns (reduce_range) or fails stays on the observer path, which
    # builds one per module and so warns or fails as torch does.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            observer = constructor()
        except Exception:
            return None
    if caught:
        return None
    return WeightObserverConfig.of(observer)


def _observed_channels(weight: torch.Tensor, config: WeightObserverConfig) -> int | None:
    """How many (min_val, max_val) pairs an observer of `config` holds after observing `weight` once (1 per
    tensor, the channel count per channel), when the weight is a non-empty strided float32 CPU tensor the
    observer reduces as usual; else None."""
    if weight.dtype != torch.float32 or weight.layout != torch.strided or not weight.is_cpu:
        return None
    if weight.numel() == 0:
        return None
    if config.ch_axis is None:
        return 1
    if weight.dim() < 2 or not -weight.dim() <= config.ch_axis < weight.dim():
        return None
    return weight.shape[config.ch_axis]


def observer_rows(weight: torch.Tensor, ch_axis: int | None) -> torch.Tensor | None:
    """The matrix whose row minima and maxima an observer along `ch_axis` (None: per tensor) takes of
    `weight` (at least 2-D when per channel): the channels as rows (the observer's permutation swaps
    dimensions 0 and ch_axis), or the whole weight as one row where that is a view (None where it is not)."""
    if ch_axis is None:
        return weight.view(1, -1) if weight.is_contiguous() else None
    if ch_axis not in (0, -weight.dim()):
        weight = weight.transpose(0, ch_axis)
    return weight.flatten(start_dim=1)


class RangeVectors:
    """Two float32 CPU vectors of `size` elements, `low` and `high`, that the compiled kernel fills with the
    minima and maxima of matrices' rows, a matrix at a time, each at the index asked."""

    def __init__(self, size: int) -> None:
        self.low = torch.empty(size, dtype=torch.float32)
        self.high = torch.empty(size, dtype=torch.float32)
        self._size = size
        self._low_address, self._high_address = self.low.data_ptr(), self.high.data_ptr()
        kernel = native_kernel()
        self._row_ranges = None if kernel is None else kernel.row_ranges

    def write(self, start: int, rows: torch.Tensor) -> bool:
        """Write the minimum and maximum of each row of the matrix `rows` from index `start` on, in one pass;
        False (having written some or none) where the kernel cannot vouch for them: it was not built, the
        rows are not a contiguous non-empty float32 matrix, or a row holds an inf or a NaN (the values are
        then the reductions' to find). A ValueError where the vectors have no room for the rows."""
        count, length = rows.shape
        return self._write(start, rows, count, length)

    def write_in_memory_order(self, start: int, tensor: torch.Tensor, count: int) -> bool:
        """`write(start, rows)` for the matrix `rows` of `count` rows that a contiguous tensor's elements make
        in memory order (its view(count, -1)), without making that view; False where the tensor is not
        contiguous or its elements do not make `count` rows."""
        numel = tensor.numel()
        length = numel // count if count > 0 and numel % count == 0 else 0
        return self._write(start, tensor, count, length)

    def _write(self, start: int, data: torch.Tensor, count: int, length: int) -> bool:
        if not 0 <= start <= self._size - count:
            raise ValueError(f"RangeVectors.write: no room for {count} values from index {start} of {self._size}")
        row_ranges = self._row_ranges
        if row_ranges is None or data.dtype is not torch.float32 or not data.is_contiguous() or not length:
            return False
        offset = 4 * start
        return row_ranges(self._low_address + offset, self._high_address + offset, data.data_ptr(), count, length)


def _reduced_ranges(weight: torch.Tensor, rows: torch.Tensor | None, config: WeightObserverConfig
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The observer's (min_val, max_val) of `weight` (whose `observer_rows` are `rows`) by tensor reductions:
    the same values as its aminmax, up to the sign of a zero, which only float qparams show (and get
    exactly)."""
    if rows is None:
        return torch.aminmax(weight)
    if config.qscheme == torch.per_channel_affine_float_qparams:
        # Its zero point is -min / scale, so the sign of a zero minimum shows.
        return _row_ranges_with_zero_signs(rows)
    return rows.amin(dim=1), rows.amax(dim=1)


def _group_ranges(members: list[tuple[int, torch.Tensor, int]], config: WeightObserverConfig
                  ) -> tuple[list[tuple[int, torch.Tensor, int]], torch.Tensor, torch.Tensor]:
    """The ranges of every (index, weight, channels) member of one configuration, end to end in two float32
    vectors (a per-tensor weight takes one element, a per-channel one an element per channel), and the
    members they are of: those with finite ranges (an inf or NaN makes the observer warn, fail or do its own
    thing; those weights are left to it).

    Where it can, the kernel writes each member's ranges straight into the vectors and vouches that they
    are finite (it refuses rows holding an inf or a NaN); the others are reduced by tensor operations and
    checked."""
    vectors = RangeVectors(sum(channels for _, _, channels in members))
    lo, hi = vectors.low, vectors.high
    direct = config.qscheme != torch.per_channel_affine_float_qparams  # (which shows the signs of zeros)
    checked = True
    start = 0
    for _, weight, channels in members:
        end = start + channels
        if not (direct and _write_ranges(vectors, start, weight, channels, config.ch_axis)):
            low, high = _reduced_ranges(weight, observer_rows(weight, config.ch_axis), config)
            lo[start:end] = low
            hi[start:end] = high
            checked = False
        start = end
    if checked or bool(torch.isfinite(lo).logical_and_(torch.isfinite(hi)).all()):
        return members, lo, hi
    kept, lows, highs = [], [], []
    start = 0
    for member in members:
        end = start + member[2]
        low, high = lo[start:end], hi[start:end]
        if bool(torch.isfinite(low).all()) and bool(torch.isfinite(high).all()):
            kept.append(member)
            lows.append(low)
            highs.append(high)
        start = end
    if not kept:
        return kept, lo[:0], hi[:0]
    return kept, torch.cat(lows), torch.cat(highs)


def _write_ranges(vectors: RangeVectors, start: int, weight: torch.Tensor, channels: int, ch_axis: int | None) -> bool:
    """`vectors.write(start, observer_rows(weight, ch_axis))` (`channels` rows), without making the rows' view
    where the weight's memory holds them in order: a contiguous weight, per tensor or along dimension 0."""
    if weight.is_contiguous() and (ch_axis is None or ch_axis in (0, -weight.dim())):
        return vectors.write_in_memory_order(start, weight, channels)
    rows = observer_rows(weight, ch_axis)
    return rows is not None and vectors.write(start, rows)


def row_ranges(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows.amin(dim=1), rows.amax(dim=1)) of a non-empty floating-point CPU matrix, up to the sign of a
    zero minimum or maximum: by the compiled kernel in one pass for a contiguous float32 matrix of finite
    values, else by the two reductions."""
    vectors = RangeVectors(rows.shape[0])
    if vectors.write(0, rows):
        return vectors.low, vectors.high
    return rows.amin(dim=1), rows.amax(dim=1)


# What the kernel must have (the tests also set its vector width).
_KERNEL_FUNCTIONS = ("row_ranges", "set_vector_width")


@functools.cache
def native_kernel() -> Any:
    """The compiled row-range kernel (`_range_kernel.c`, built when qfx is installed with a C compiler at
    hand), or None when it was not built or does not find the ranges the reductions find on a sample: the
    reductions run then."""
    try:
        from . import _range_kernel  # type: ignore[attr-defined]
    except ImportError:
        return None
    if not all(hasattr(_range_kernel, name) for name in _KERNEL_FUNCTIONS):
        return None  # built from older sources (an editable install not rebuilt)
    rows = _check_rows()
    # (the values are float32 values: the tensor holds them exactly)
    sample = torch.tensor(rows, dtype=torch.float32)
    low, high = torch.zeros(len(rows), dtype=torch.float32), torch.zeros(len(rows), dtype=torch.float32)
    if not _range_kernel.row_ranges(low.data_ptr(), high.data_ptr(), sample.data_ptr(), *sample.shape):
        return None
    if low.tolist() != [min(row) for row in rows] or high.tolist() != [max(row) for row in rows]:
        return None
    rows[5][20] = float("nan")
    sample = torch.tensor(rows, dtype=torch.float32)
    refused = not _range_kernel.row_ranges(low.data_ptr(), high.data_ptr(), sample.data_ptr(), *sample.shape)
    return _range_kernel if refused else None


def _check_rows() -> list[list[float]]:
    """Nine rows of 37 float32 values (as exact Python floats) to check the range kernel on: both signs,
    magnitudes from 1e-30 to 1e30 a row, one row all negative, one holding 1e38; by exact arithmetic, so
    their minima and maxima are Python's min and max."""
    rows = []
    for k in range(9):
        scale = 10.0 ** (7.5 * k - 30)
        row = [struct.unpack("f", struct.pack("f", ((i * 2654435761 + k) % 4096 / 2048 - 1) * scale))[0]
               for i in range(37)]
        rows.append([-abs(x) for x in row] if k == 3 else row)
    rows[4][36] = struct.unpack("f", struct.pack("f", 1e38))[0]
    return rows


def _row_ranges_with_zero_signs(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.aminmax(rows, dim=1), the signs of zeros included. `row_ranges` (the kernel's one pass, or row
    amin and amax: several times, or about twice, as fast on embedding tables) gives the same values, but a
    zero may come out with another sign (0.0 and -0.0 compare equal, and the reductions meet a row's
    elements in other orders): the rows whose minimum or maximum is a zero are taken again by aminmax,
    which reduces each row of a contiguous matrix on its own, the same way whichever rows are beside it."""
    if not rows.is_contiguous():
        return torch.aminmax(rows, dim=1)
    low, high = row_ranges(rows)
    zeros = torch.logical_or(low == 0, high == 0).nonzero().squeeze(1)
    if zeros.numel():
        again_low, again_high = torch.aminmax(rows.index_select(0, zeros), dim=1)
        low.index_copy_(0, zeros, again_low)
        high.index_copy_(0, zeros, again_high)
    return low, high


def batched_weight_qparams(
    requests: list[tuple[torch.Tensor, WeightObserverConfig]],
) -> list[dict[str, Any] | None]:
    """For each (weight, config): get_qparam_dict of a fresh observer of `config` after it observed the
    weight once, or None when the observer must do it (see `_observed_channels`; non-finite ranges too).

    Requests with equal configurations are computed together; each gets scale and zero point tensors of its
    own, copied out of the group's at once.
    """
    with torch.no_grad():  # the observer detaches the weight
        return _batched_weight_qparams(requests)


def _batched_weight_qparams(
    requests: list[tuple[torch.Tensor, WeightObserverConfig]],
) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = [None] * len(requests)
    # The ranges of one configuration are computed together, end to end whatever the weights' channel
    # counts (real networks have many).
    groups: dict[WeightObserverConfig, list[tuple[int, torch.Tensor, int]]] = defaultdict(list)
    for index, (weight, config) in enumerate(requests):
        channels = _observed_channels(weight, config)
        if channels is not None:
            groups[config].append((index, weight, channels))
    for config, members in groups.items():
        members, lo, hi = _group_ranges(members, config)
        if not members:
            continue
        scale, zero_point = minmax_qparams(lo, hi, config.eps_tensor, config.qscheme, config.quant_min,
                                           config.quant_max, config.dtype, config.customized_range)
        # A per-tensor observer's qparams have shape [1], a per-channel one's [channels].
        sizes = [channels for _, _, channels in members]
        scales = torch.split_with_sizes_copy(scale, sizes)
        zero_points = torch.split_with_sizes_copy(zero_point, sizes)
        for (index, _, _), s, z in zip(members, scales, zero_points):
            out[index] = config.qparam_dict(s, z)
    return out
