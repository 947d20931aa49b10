"""Property: on random observed models, qfx's lowered convert (convert_fx) equals torch's, engine by engine.

Models come from `qfx.testing.strategies.observed_models()` (random DAGs through prepare_fx / prepare_qat_fx with varied
qconfig mappings). Each is converted under the x86 and the qnnpack engine (the engine decides how weights
are packed and which ops exist). For each, qfx must leave the observed model unchanged and give the same
code, state_dict (packed params by their unpacked contents), module tree, root attributes and bit-identical
outputs as torch; or fail where torch fails, with a qfx error of torch's type.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings

from qfx.testing.strategies import examples, observed_models
from tests.differential.test_diff_property import check_mode
from tests.differential.test_lowered_diff import quantized_engine

ENGINES = [e for e in ("x86", "qnnpack") if e in torch.backends.quantized.supported_engines]


def check_lowered(observed: torch.fx.GraphModule, example_inputs: tuple, engine: str) -> None:
    """qfx.convert_fx against torch's convert_fx on one observed model under `engine` (see module docstring)."""
    with quantized_engine(engine):
        check_mode(observed, example_inputs, "lowered")


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observed_models())
def test_lowered_equals_torch(case) -> None:
    observed, example_inputs = case
    for engine in ENGINES:
        check_lowered(observed, example_inputs, engine)
