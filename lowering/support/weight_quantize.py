"""Per-channel weight quantization, bit-identical to `torch.quantize_per_channel`, in one vectorised pass.

On x86 CPUs torch quantizes per channel one element at a time (about 8 ns per element, a quarter of a
lowered ResNet-50 convert). Each element is `clamp(nearbyint(x * (1.0f / scale) + zero_point), qmin, qmax)`
in float32: the product and the sum are rounded separately (no fused multiply-add), ties go to even. The
same operations done by the compiled kernel `_quantize_kernel.c` in one pass over the weight (or, where it
was not built, on whole tensors: one multiply, one add, round, clamp, cast) give the same integers at a
fraction of the cost, except on small weights, which keep torch's loop. Float qparams (embeddings' float
zero points) take the same steps, the zero point added as a float32. Anything this module does not
reproduce exactly (non-finite weights or scales, other dtypes or layouts, zero points torch rejects) is left
to torch, so its results and errors stay torch's.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy
import torch

_CHUNK_ELEMENTS = 65536
# Below this many elements torch's element-at-a-time loop (about 2.5-5 ns, some 35 instructions, an element)
# beats the vectorised path's fixed cost, a dozen tensor operations (about 0.15 ms), or the set-up around the
# compiled kernel (about 135k instructions, half a dozen tensor operations): depthwise and small convs.
_TORCH_FASTER_BELOW = 32768
_TORCH_FASTER_BELOW_NATIVE = 4096
_ZERO_POINT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_INTEGER_RANGE = {torch.qint8: (-128, 127, torch.int8), torch.quint8: (0, 255, torch.uint8)}


def quantize_per_channel(weight: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, axis: int,
                         dtype: torch.dtype) -> torch.Tensor:
    """`torch.quantize_per_channel(weight, scales, zero_points, axis, dtype)`: the same quantized tensor
    (integers, per-channel scales and zero points, axis, strides), or the same error."""
    below = _TORCH_FASTER_BELOW_NATIVE if native_kernel() is not None else _TORCH_FASTER_BELOW
    small = isinstance(weight, torch.Tensor) and weight.numel() < below
    found = None if small else _vectorised(weight, scales, zero_points, axis, dtype)
    if found is None:
        return torch.quantize_per_channel(weight, scales, zero_points, axis, dtype)
    return found


def _vectorised(weight: Any, scales: Any, zero_points: Any, axis: Any, dtype: Any) -> torch.Tensor | None:
    """The quantized tensor for a contiguous float32 CPU weight quantized to qint8 or quint8 with valid
    per-channel parameters (integer zero points, or float ones: float qparams) whose scaled values are all
    finite; None otherwise."""
    limits = _INTEGER_RANGE.get(dtype)
    if limits is None or type(axis) is not int or not _plain_weight(weight) or not 0 <= axis < weight.dim():
        return None
    channels = weight.shape[axis]
    if not (_cpu_vector(scales, channels) and scales.dtype in (torch.float32, torch.float64)
            and _cpu_vector(zero_points, channels)):
        return None
    qmin, qmax, storage = limits
    if zero_points.dtype in _ZERO_POINT_DTYPES:
        lowest, highest = (int(bound) for bound in torch.aminmax(zero_points))  # (a plain weight has channels)
        if not qmin <= lowest <= highest <= qmax:
            return None  # torch refuses these; let it say so
    elif zero_points.dtype in (torch.float32, torch.float64):
        # Float qparams: any zero point is added as it is (in float32); a zero scale, which torch takes as
        # 1, is left to torch.
        if not bool(scales.ne(0).all()):
            return None
        lowest, highest = (float(bound) for bound in torch.aminmax(zero_points))
    else:
        return None
    with torch.no_grad():
        inverse = torch.reciprocal(scales.to(torch.float32))
        # All-zero points (symmetric weights) add nothing: adding 0.0 only turns -0.0 into 0.0, which
        # rounds and casts to the same integer.
        shift = None if lowest == highest == 0 else zero_points.to(torch.float32)
        # The quantized tensor torch.quantize_per_channel allocates (its quantizer keeps the qparams as
        # torch's does: float64 scales and int64 zero points, or float32 ones for float qparams), written
        # in place.
        quantized = torch._empty_per_channel_affine_quantized(weight.shape, scales=scales, zero_points=zero_points,
                                                              axis=axis, dtype=dtype)
        kernel = native_kernel()
        if kernel is not None:
            finite = _quantize_natively(kernel, quantized, weight, inverse, shift, axis, qmin, qmax)
        else:
            # (through an integer view of its storage: building it from an integer tensor would copy every
            # byte once more)
            integers = torch.empty(0, dtype=storage).set_(quantized.untyped_storage(), 0, weight.shape,
                                                          quantized.stride())
            finite = _quantize_into(integers, weight, inverse, shift, axis, qmin, qmax)
        if not finite:
            return None
    return quantized


@functools.cache
def native_kernel() -> Any:
    """The compiled quantization kernel (`_quantize_kernel.c`, built when qfx is installed with a C compiler
    at hand), or None when it was not built or does not write what `_quantize_into` writes on a sample of
    weights: the tensor operations run then. It makes one pass over the weight where they make six."""
    try:
        from . import _quantize_kernel  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _quantize_kernel if _kernel_agrees(_quantize_kernel) else None


def _kernel_agrees(kernel: Any) -> bool:
    """Whether `kernel` writes the integers the float32 operations give (ties, both signs, the clamps, with
    and without zero points, along an inner axis; computed by numpy, whose float32 operations round as
    torch's do, so that this check runs no tensor operation for the first time in a process) and refuses
    the weights `_quantize_into` refuses."""
    f32 = numpy.float32
    # weight [6, 5, 7], channels along axis 1: values of both signs up to 300, by exact arithmetic
    hashed = numpy.arange(6 * 5 * 7, dtype=numpy.int64) * 2654435761 % 4096
    weight = ((hashed / 2048 - 1) * 300).astype(f32).reshape(6, 5, 7)
    weight[0, 0, :] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.5]  # ties, with a unit scale
    scales = numpy.array([1.0, 0.7, 1.3, 0.55, 1.45], dtype=f32)
    inverse = f32(1) / scales
    per_channel = (slice(None), None)  # [5, 1]: along axis 1 of the weight
    for zero_points in (None, numpy.array([0.0, 3.0, -7.0, 100.0, 2.5], dtype=f32)):
        scaled = weight * inverse[per_channel]
        if zero_points is not None:
            scaled = scaled + zero_points[per_channel]
        for qmin, qmax, storage in _INTEGER_RANGE.values():
            want = numpy.clip(numpy.rint(scaled), qmin, qmax).astype(f32)
            got = torch.empty(weight.shape, dtype=storage)
            if not _quantize_natively(kernel, got, torch.from_numpy(weight), torch.from_numpy(inverse),
                                      None if zero_points is None else torch.from_numpy(zero_points), 1, qmin,
                                      qmax) or not numpy.array_equal(got.numpy().astype(f32), want):
                return False
    weight[:, :, 3] = numpy.nan
    return not _quantize_natively(kernel, torch.empty(weight.shape, dtype=torch.int8), torch.from_numpy(weight),
                                  torch.from_numpy(inverse), None, 1, -128, 127)


def _quantize_natively(kernel: Any, out: torch.Tensor, weight: torch.Tensor, inverse: torch.Tensor,
                       zero_points: torch.Tensor | None, axis: int, qmin: int, qmax: int) -> bool:
    """`_quantize_into`, by the compiled kernel (same arguments, same result; `out` may also be the
    quantized tensor whose integers these are)."""
    channels = weight.shape[axis]
    length = math.prod(weight.shape[axis + 1:])
    inverse = inverse.contiguous()
    zero_points = None if zero_points is None else zero_points.to(torch.float32).contiguous()
    return kernel.quantize_rows(out.data_ptr(), weight.data_ptr(), inverse.data_ptr(),
                                0 if zero_points is None else zero_points.data_ptr(), weight.numel() // length,
                                length, channels, float(qmin), float(qmax), qmin < 0)


def _quantize_into(out: torch.Tensor, weight: torch.Tensor, inverse: torch.Tensor, zero_points: torch.Tensor | None,
                   axis: int, qmin: int, qmax: int) -> bool:
    """Write clamp(round(weight * inverse + zero_point), qmin, qmax) per channel into the contiguous integer
    tensor `out` of the weight's shape (no addition when `zero_points` is None); False when a scaled value
    is not finite (NaN or infinite weights or inverse scales, or an overflowing product), where torch's own
    loop must decide.

    The weight is taken as rows (everything before the axis, by channel) of the elements after it, and
    done in cache-sized runs of rows through one float buffer: a float intermediate the size of the weight
    would cost more in fresh pages than the arithmetic does. The finiteness check sums each run of scaled
    values while it is in the cache (the sum is finite only if every value is, or it overflowed, which
    hands the weight to torch too)."""
    channels = weight.shape[axis]
    row_length = math.prod(weight.shape[axis + 1:])
    rows = weight.reshape(-1, row_length)
    repeat = rows.shape[0] // channels
    inverse = _per_row(inverse, repeat)
    zero_points = None if zero_points is None else _per_row(zero_points, repeat)
    out = out.view(rows.shape)
    step = max(1, _CHUNK_ELEMENTS // row_length)
    buffer = torch.empty(min(rows.shape[0], step) * row_length, dtype=torch.float32)
    scaled_sum = torch.zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], step):
        stop = min(start + step, rows.shape[0])
        work = buffer[:(stop - start) * row_length].view(stop - start, row_length)
        torch.mul(rows[start:stop], inverse[start:stop], out=work)
        if zero_points is not None:
            work.add_(zero_points[start:stop])
        scaled_sum.add_(work.sum())
        work.round_().clamp_(qmin, qmax)
        out[start:stop].copy_(work)
    return math.isfinite(scaled_sum.item())


def _per_row(values: torch.Tensor, repeat: int) -> torch.Tensor:
    """Per-channel `values` as a column for `repeat` blocks of channel rows (no Tensor.repeat for one
    block: it costs more than a small weight's whole arithmetic)."""
    return (values.repeat(repeat) if repeat > 1 else values)[:, None]


def _plain_weight(weight: Any) -> bool:
    return (isinstance(weight, torch.Tensor) and weight.dtype == torch.float32 and weight.layout == torch.strided
            and weight.is_cpu and weight.numel() > 0 and weight.is_contiguous())


def _cpu_vector(values: Any, length: int) -> bool:
    return (isinstance(values, torch.Tensor) and values.layout == torch.strided and values.is_cpu
            and values.dim() == 1 and values.numel() == length)
