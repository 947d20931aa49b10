"""Every output behaves like a model: it deep-copies, loads its state_dict into a fresh convert, and pickles
and scripts (torch.jit.script) wherever torch's output of the same convert does; all with equal outputs.
(torch's decomposed outputs keep their qconfigs, whose observer constructors are local functions, so
they do not pickle: qfx's, which equal them, do not either.)

Reference and decomposed outputs are checked on a handful of zoo cases, lowered outputs on a few (they
equal torch's only once lowering is complete).
"""

from __future__ import annotations

import copy
import functools
import io
import pickle
import warnings
from typing import Any, Callable

import pytest
import torch
from torch.ao.quantization import quantize_fx as tq

import qfx
from tests.support.models import CASES_BY_NAME, convert_kwargs, prepare_case, run_inputs
from tests.support.snapshot import assert_same_outputs

MODES: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "reference": (qfx.convert_to_reference_fx, tq.convert_to_reference_fx),
    "decomposed": (qfx.convert_to_reference_decomposed_fx, tq._convert_to_reference_decomposed_fx),
    "lowered": (qfx.convert_fx, tq.convert_fx),
}
CASES = {
    "reference": ["resnet_block", "functional_linear", "rnn_cells_dynamic", "embeddings", "preserved_attributes"],
    "decomposed": ["resnet_block", "functional_linear", "embeddings"],
    "lowered": ["resnet_block", "functional_linear"],
}
PARAMS = [pytest.param(mode, name, id=f"{name}-{mode}") for mode, names in CASES.items() for name in names
          if name in CASES_BY_NAME]


@functools.cache
def _observed(name: str) -> torch.fx.GraphModule:
    return prepare_case(CASES_BY_NAME[name])[0]


def _convert(fn: Callable[..., Any], name: str) -> torch.fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(copy.deepcopy(_observed(name)), **convert_kwargs(CASES_BY_NAME[name]))


def _scripts(model: torch.nn.Module) -> torch.jit.ScriptModule | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.script(model)
    except Exception:  # noqa: BLE001 - whether it scripts is what we compare
        return None


def _round_trips(model: torch.nn.Module) -> bool:
    try:
        pickle.loads(pickle.dumps(model))
        return True
    except Exception:  # noqa: BLE001 - whether it pickles is what we compare
        return False


@pytest.mark.parametrize(("mode", "name"), PARAMS)
def test_output_behaves(mode: str, name: str) -> None:
    ours_fn, torch_fn = MODES[mode]
    ours = _convert(ours_fn, name)
    inputs = run_inputs(CASES_BY_NAME[name], 100)

    assert_same_outputs(copy.deepcopy(ours), ours, *inputs)

    fresh = _convert(ours_fn, name)
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    assert_same_outputs(fresh, ours, *inputs)

    reference = _convert(torch_fn, name)
    if _round_trips(reference):
        assert _round_trips(ours), f"torch's {mode} output of {name} pickles, qfx's does not"
        assert_same_outputs(pickle.loads(pickle.dumps(ours)), ours, *inputs)

    theirs = _scripts(reference)
    scripted = _scripts(ours)
    if theirs is not None:
        assert scripted is not None, f"torch's {mode} output of {name} scripts, qfx's does not"
        assert_same_outputs(scripted, ours, *inputs)
