"""qfx.testing: property-test your own passes.

- `qfx.testing.strategies`: hypothesis strategies for random float, traced and observed models and for
  lifted Programs (`traced_models`, `observed_models`, `programs`, `examples`).
- `qfx.testing.checks`: `assert_pure(pass_, program)`, `assert_idempotent(pass_, program)` and
  `assert_same_as_torch(observed, **convert_kwargs)`; the instrument `CheckPurity()` checks every pass of a
  pipeline run as `assert_pure` checks one.

    from hypothesis import given, settings
    from qfx.testing import assert_pure, programs

    @settings(max_examples=20, deadline=None)
    @given(programs())
    def test_my_pass_is_pure(program):
        assert_pure(my_pass, program)
"""

from .checks import CheckPurity, assert_idempotent, assert_pure, assert_same_as_torch
from .strategies import examples, float_models, model_specs, observed_models, programs, traced_models

__all__ = [
    "CheckPurity", "assert_idempotent", "assert_pure", "assert_same_as_torch", "examples", "float_models",
    "model_specs", "observed_models", "programs", "traced_models",
]
