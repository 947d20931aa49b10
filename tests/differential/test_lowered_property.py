"""Property: on random observed models, qfx's lowered convert (convert_fx) equals torch's, engine by engine.

Models come from `qfx.testing.strategies.observed_models()` (random DAGs through prepare_fx / prepare_qat_fx with varied
qconfig mappings). Each is converted under the x86 and the qnnpack engine (the engine decides how weights
are packed and which ops exist). For each, qfx must leave the observed model unchanged and give the same
code, state_dict (packed params by their unpacked contents), module tree, root attributes and bit-identical
outputs as torch; or fail where torch fails, with a qfx error of torch's type.
"""

from __future__ import annotations

import copy

import torch
from hypothesis import HealthCheck, event, given, settings

from tests.differential.test_lowered_diff import quantized_engine
from tests.differential.test_reference_diff import (
    MODES,
    assert_same_behaviour,
    assert_same_failure,
    assert_same_root_attributes,
    attempt,
)
from tests.support.snapshot import assert_same_model, assert_unchanged, snapshot
from qfx.testing.strategies import examples, observed_models

ENGINES = [e for e in ("x86", "qnnpack") if e in torch.backends.quantized.supported_engines]


def check_lowered(observed: torch.fx.GraphModule, example_inputs: tuple, engine: str) -> None:
    """qfx.convert_fx against torch's convert_fx on one observed model under `engine` (see module docstring)."""
    qfx_fn, torch_fn = MODES["lowered"]
    with quantized_engine(engine):
        before = snapshot(observed)
        expected, torch_exc = attempt(torch_fn, copy.deepcopy(observed))
        actual, qfx_exc = attempt(qfx_fn, observed)
        assert_unchanged(before, observed)
        if torch_exc is not None:
            event(f"{engine}: torch refused ({type(torch_exc).__name__})")
            assert_same_failure(qfx_exc, torch_exc, f"lowered/{engine}")
            return
        event(f"{engine}: converted")
        if qfx_exc is not None:
            raise qfx_exc
        assert_same_model(actual, expected)
        assert_same_root_attributes(actual, expected)
        assert_same_behaviour(actual, expected, example_inputs)
        # a second batch of the same shapes, so outputs are not only checked on the calibration data
        other = tuple(t * 1.5 - 0.25 if t.is_floating_point() else t for t in example_inputs)
        assert_same_behaviour(actual, expected, other)


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observed_models())
def test_lowered_equals_torch(case) -> None:
    observed, example_inputs = case
    for engine in ENGINES:
        check_lowered(observed, example_inputs, engine)
