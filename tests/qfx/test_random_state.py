"""Converting leaves torch's global random number generator as it found it.

torch's convert advances it (each initializer it runs draws from it); qfx builds some modules with torch's
constructors too (dynamic RNN cells, QAT modules' float stand-ins), which draw placeholder weights: none of
that is part of the result, and code that draws random numbers after converting gets the same numbers
whatever was converted, and whether converting raised.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import qfx
from qfx.passes.instruments import BaseInstrument
from tests.support.models import CASES_BY_NAME, prepare_case

# cases whose convert builds modules whose constructors draw random numbers
DRAWING = ["lstm_dynamic", "rnn_cells_dynamic", "qat_linear", "qat_convbn"]
CONVERTS = {"reference": qfx.convert_to_reference_fx, "lowered": qfx.convert_fx}


@pytest.mark.parametrize("mode", sorted(CONVERTS))
@pytest.mark.parametrize("name", DRAWING)
def test_convert_leaves_the_global_generator_alone(name: str, mode: str) -> None:
    observed, _ = prepare_case(CASES_BY_NAME[name])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    CONVERTS[mode](observed)
    assert torch.equal(torch.get_rng_state(), state)


class _DrawThenFail(BaseInstrument):
    """Draws from the global generator after the first pass, then fails the convert."""

    def after_pass(self, index: int, p: Any, before: Any, after: Any, seconds: float) -> None:
        torch.rand(8)
        raise RuntimeError("failing on purpose")


def test_a_failing_convert_leaves_it_alone_too() -> None:
    observed, _ = prepare_case(CASES_BY_NAME["lstm_dynamic"])
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="failing on purpose"):
        qfx.convert_fx(observed, instruments=[_DrawThenFail()])
    assert torch.equal(torch.get_rng_state(), state)
