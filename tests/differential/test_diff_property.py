"""Property: on random observed models, qfx's reference and decomposed converts equal torch's.

Models come from `qfx.testing.strategies.observed_models()` (random DAGs through prepare_fx / prepare_qat_fx with varied
qconfig mappings). For each, qfx must leave the observed model unchanged and give the same code, state_dict,
module tree and bit-identical outputs as torch, or fail where torch fails with a qfx error of torch's type.
"""

from __future__ import annotations


from hypothesis import HealthCheck, event, given, settings

from tests.support.snapshot import assert_same_model, assert_unchanged, snapshot
from qfx.compare import copy_for_torch
from qfx.testing.strategies import examples, observed_models
from tests.differential.test_reference_diff import MODES, assert_same_behaviour, assert_same_failure, assert_same_root_attributes, attempt


def check_mode(observed, example_inputs, mode: str) -> None:
    """One observed model converted by qfx and torch in `mode` (see the module docstring)."""
    qfx_fn, torch_fn = MODES[mode]
    before = snapshot(observed)
    expected, torch_exc = attempt(torch_fn, copy_for_torch(observed))
    actual, qfx_exc = attempt(qfx_fn, observed)
    assert_unchanged(before, observed)
    if torch_exc is not None:
        event(f"{mode}: torch refused ({type(torch_exc).__name__})")
        assert_same_failure(qfx_exc, torch_exc, mode)
        return
    event(f"{mode}: converted")
    if qfx_exc is not None:
        raise qfx_exc
    assert_same_model(actual, expected)
    assert_same_root_attributes(actual, expected)
    assert_same_behaviour(actual, expected, example_inputs)
    # a second batch with the same shapes, so outputs are not only checked on the calibration data
    other = tuple(t * 1.5 - 0.25 if t.is_floating_point() else t for t in example_inputs)
    assert_same_behaviour(actual, expected, other)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observed_models())
def test_reference_equals_torch(case) -> None:
    observed, example_inputs = case
    check_mode(observed, example_inputs, "reference")
    check_mode(observed, example_inputs, "decomposed")

