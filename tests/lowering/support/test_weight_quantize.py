"""qfx's per-channel weight quantization gives exactly torch.quantize_per_channel's tensor, or its error.

The values are drawn to hit the cases where a different formula would differ: scaled values at and next
to half-integers (ties to even, after the zero point is added), values past the integer range, scales of
every magnitude (float64 ones that float32 rounds), zero points at both ends of the range.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qfx.lowering.support import weight_quantize
from qfx.lowering.support.weight_quantize import _vectorised, quantize_per_channel
from tests.support.kernels import PATHS, assert_kernel_built, taking

DTYPES = {torch.qint8: (-128, 127), torch.quint8: (0, 255)}


def test_the_quantization_kernel_is_built_and_agrees() -> None:
    """Installing qfx with a C compiler builds the kernel, and it passes its own check against the tensor
    operations (without one, qfx quantizes with the tensor operations)."""
    assert_kernel_built(weight_quantize)


def _same(found: torch.Tensor, expected: torch.Tensor) -> None:
    assert found.dtype == expected.dtype and found.qscheme() == expected.qscheme()
    assert found.shape == expected.shape and found.stride() == expected.stride()
    assert torch.equal(found.int_repr(), expected.int_repr())
    for read in ("q_per_channel_scales", "q_per_channel_zero_points"):
        a, b = getattr(found, read)(), getattr(expected, read)()
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert found.q_per_channel_axis() == expected.q_per_channel_axis()


@st.composite
def quantizations(draw: st.DrawFn) -> tuple:
    dtype = draw(st.sampled_from(sorted(DTYPES, key=str)))
    qmin, qmax = DTYPES[dtype]
    dims = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(1, 5), min_size=dims, max_size=dims))
    axis = draw(st.integers(0, dims - 1))
    channels = shape[axis]
    scale_dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    scales = draw(st.lists(st.floats(1e-8, 1e3, allow_subnormal=False), min_size=channels, max_size=channels))
    if draw(st.booleans()):  # integer zero points, within the range (torch refuses others)
        zero_points = draw(st.lists(st.sampled_from([qmin, qmax, 0, (qmin + qmax) // 2]) | st.integers(qmin, qmax),
                                    min_size=channels, max_size=channels))
        zp_dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    else:  # float qparams: any float zero point, halves (ties after the addition) included
        zero_points = draw(st.lists(st.sampled_from([0.0, -0.0, 0.5, -2.5, float(qmin), float(qmax)])
                                    | st.floats(-400, 400, width=32), min_size=channels, max_size=channels))
        zp_dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    scale_t = torch.tensor(scales, dtype=scale_dtype)
    zp_t = torch.tensor(zero_points, dtype=zp_dtype)
    count = math.prod(shape)
    # A scaled value k/2 + tiny offset lands on, just beside, or far from a rounding tie.
    halves = draw(st.lists(st.integers(-2 * 300, 2 * 300), min_size=count, max_size=count))
    offsets = draw(st.lists(st.sampled_from([0.0, 1e-7, -1e-7, 0.25]) | st.floats(-1, 1), min_size=count,
                            max_size=count))
    view = [1] * dims
    view[axis] = channels
    units = torch.tensor([h / 2 + o for h, o in zip(halves, offsets)], dtype=torch.float64).view(shape)
    weight = (units * scale_t.double().view(view)).to(torch.float32)
    return weight, scale_t, zp_t, axis, dtype


@settings(max_examples=300)
@given(quantizations())
def test_equals_torch_quantize_per_channel(case: tuple) -> None:
    weight, scales, zero_points, axis, dtype = case
    expected = torch.quantize_per_channel(weight, scales, zero_points, axis, dtype)
    for path in PATHS:
        with taking(weight_quantize, path):
            found = _vectorised(weight, scales, zero_points, axis, dtype)
            assert found is not None
            _same(found, expected)
            _same(quantize_per_channel(weight, scales, zero_points, axis, dtype), expected)


def test_small_weights_take_torchs_loop_and_large_ones_the_vectorised_path(monkeypatch) -> None:
    calls = []
    real = weight_quantize._vectorised
    monkeypatch.setattr(weight_quantize, "_vectorised", lambda *a: (calls.append(a[0].numel()), real(*a))[1])
    for shape in ((32, 3, 3, 3), (448, 1, 3, 3), (64, 512), (256, 64, 3, 3)):
        weight = torch.randn(*shape)
        scales = weight.abs().flatten(1).amax(dim=1) / 127 + 1e-6
        zero_points = torch.zeros(shape[0], dtype=torch.int64)
        _same(quantize_per_channel(weight, scales, zero_points, 0, torch.qint8),
              torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8))
    assert calls == [64 * 512, 256 * 64 * 9]
    assert all(n >= weight_quantize._TORCH_FASTER_BELOW for n in calls)


@pytest.mark.parametrize("path", PATHS)
def test_random_weights_at_scale(path: str) -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 20000) * torch.logspace(-3, 2, 64)[:, None]
    scales = torch.rand(64) * 0.05 + 1e-4
    for dtype, (qmin, qmax) in DTYPES.items():
        zero_points = torch.randint(qmin, qmax + 1, (64,))
        with taking(weight_quantize, path):
            found = quantize_per_channel(weight, scales, zero_points, 0, dtype)
        _same(found, torch.quantize_per_channel(weight, scales, zero_points, 0, dtype))


def test_a_weight_that_requires_grad_is_quantized_the_same() -> None:
    weight = torch.randn(4, 3, 2, 2, requires_grad=True)
    scales, zero_points = torch.full((4,), 0.1), torch.zeros(4, dtype=torch.int64)
    found = _vectorised(weight, scales, zero_points, 0, torch.qint8)
    assert found is not None
    _same(found, torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8))


@pytest.mark.parametrize("case", ["nan", "inf", "zero scale", "zero scale, weight not zero", "overflow",
                                  "channels last", "float64 weight", "qint32", "negative axis",
                                  "zero point above range", "float zero points, zero scale",
                                  "half zero points"])
@pytest.mark.parametrize("path", PATHS)
def test_what_it_does_not_reproduce_is_left_to_torch(case: str, path: str, monkeypatch) -> None:
    if path == "tensor":
        monkeypatch.setattr(weight_quantize, "native_kernel", lambda: None)
    weight, scales = torch.randn(4, 3, 2, 2), torch.full((4,), 0.1)
    zero_points, axis, dtype = torch.zeros(4, dtype=torch.int64), 0, torch.qint8
    if case == "nan":
        weight[1, 0, 0, 0] = float("nan")
    elif case == "inf":
        weight[3, 2, 1, 0] = float("-inf")
    elif case == "zero scale, weight not zero":
        scales[1] = 0.0
    elif case == "overflow":
        weight[0, 0, 0, 1] = 3e38
        scales[0] = 1e-3
    elif case == "zero scale":
        weight[2].zero_()
        scales[2] = 0.0
    elif case == "channels last":
        weight = weight.contiguous(memory_format=torch.channels_last)
    elif case == "float64 weight":
        weight = weight.double()
    elif case == "qint32":
        dtype = torch.qint32
    elif case == "negative axis":
        axis = -4
    elif case == "zero point above range":
        zero_points[0] = 300
    elif case == "float zero points, zero scale":  # torch divides by 1 there
        zero_points = zero_points.float()
        scales[3] = 0.0
    else:
        zero_points = zero_points.half()
    assert _vectorised(weight, scales, zero_points, axis, dtype) is None
    try:
        expected = torch.quantize_per_channel(weight, scales, zero_points, axis, dtype)
    except RuntimeError as exc:
        with pytest.raises(RuntimeError, match=re.escape(str(exc).split("\n")[0][:40])):
            quantize_per_channel(weight, scales, zero_points, axis, dtype)
    else:
        found = quantize_per_channel(weight, scales, zero_points, axis, dtype)
        assert torch.equal(found.int_repr(), expected.int_repr()) and found.stride() == expected.stride()


@pytest.mark.parametrize("dtype", sorted(DTYPES, key=str))
@pytest.mark.parametrize("path", PATHS)
def test_all_zero_zero_points_skip_the_addition_exactly(dtype, path: str, monkeypatch) -> None:
    if path == "tensor":
        monkeypatch.setattr(weight_quantize, "native_kernel", lambda: None)
    # symmetric weights: tiny negatives and -0.0 scale to -0.0, which must still become integer 0
    weight = torch.tensor([[-0.0, -1e-9, 1e-9, 0.0, -0.05, 0.05, -3.0, 3.0]] * 3) * torch.tensor([[1.0], [2.0], [4.0]])
    weight = weight.repeat(1, 5000)  # (past the size below which torch's loop is used)
    scales = torch.tensor([0.1, 0.2, 0.4])
    zero_points = torch.zeros(3, dtype=torch.int64)
    found = _vectorised(weight, scales, zero_points, 0, dtype)
    assert found is not None
    _same(found, torch.quantize_per_channel(weight, scales, zero_points, 0, dtype))


@pytest.mark.parametrize("path", PATHS)
def test_quantization_does_not_depend_on_the_default_dtype(path: str) -> None:
    """A float64 default dtype changes nothing: the work buffers are float32 (a float64 one once added the
    zero points in float64, which rounds differently where the float32 sum lands on a tie)."""
    g = torch.Generator().manual_seed(1)
    # scaled values just beside k + 0.5 - 0.1, whose float32 sum with the zero point 0.1 rounds onto the tie
    near = (torch.randint(0, 250, (4, 20000), generator=g) + 0.4).to(torch.float32)
    near = near + (torch.randint(-64, 65, (4, 20000), generator=g) * 2.0**-20).to(torch.float32)
    weight = near.contiguous()
    scales = torch.ones(4, dtype=torch.float32)
    zero_points = torch.full((4,), 0.1, dtype=torch.float32)
    expected = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.quint8)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with taking(weight_quantize, path):
            found = _vectorised(weight, scales, zero_points, 0, torch.quint8)
    finally:
        torch.set_default_dtype(previous)
    assert found is not None
    _same(found, expected)
