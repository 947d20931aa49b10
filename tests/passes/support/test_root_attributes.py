"""Root attribute constants: the cheap scalar constructor gives exactly what torch.tensor gives."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qfx.passes.support.root_attributes import _as_tensor


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if (a.dtype, a.shape, a.device, a.requires_grad, a.stride()) != (b.dtype, b.shape, b.device, b.requires_grad, b.stride()):
        return False
    return bool(torch.equal(a, b)) or (a.is_floating_point() and bool(torch.isnan(a)) and bool(torch.isnan(b)))


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**63), max_value=2**63 - 1)))
def test_scalar_constants_equal_torch_tensor(value: float | int) -> None:
    try:
        expected = torch.tensor(value)
    except (RuntimeError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            _as_tensor(value, None)
        return
    assert _same(_as_tensor(value, None), expected)


@pytest.mark.parametrize("value", [3.4e39, -1e300, 1e-46, 0.1, True, torch.tensor([1.5, 2.5])])
def test_edge_values(value: object) -> None:
    expected = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(value)
    got = _as_tensor(value, None)
    assert _same(got, expected)
    if isinstance(value, torch.Tensor):
        assert got.data_ptr() != value.data_ptr()
