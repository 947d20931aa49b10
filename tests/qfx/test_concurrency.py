"""Several threads converting the same observed model at once all get the serial result (qfx is pure)."""

from __future__ import annotations

import copy
import functools
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import qfx
from tests.support.models import CASES_BY_NAME, convert_kwargs, prepare_case, run_inputs
from tests.support.snapshot import assert_same_model, assert_same_outputs, assert_unchanged, snapshot

THREADS = 4
MODES = {"reference": qfx.convert_to_reference_fx, "decomposed": qfx.convert_to_reference_decomposed_fx,
         "lowered": qfx.convert_fx}


@functools.cache
def _observed(name: str) -> torch.fx.GraphModule:
    return prepare_case(CASES_BY_NAME[name])[0]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", ["resnet_block", "functional_linear"])
def test_threads_converting_one_model(name: str, mode: str) -> None:
    case = CASES_BY_NAME[name]
    observed = copy.deepcopy(_observed(name))
    convert = MODES[mode]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serial = convert(observed, **convert_kwargs(case))
    before = snapshot(observed)
    with warnings.catch_warnings(), ThreadPoolExecutor(THREADS) as pool:
        warnings.simplefilter("ignore")
        results = list(pool.map(lambda _: convert(observed, **convert_kwargs(case)), range(THREADS * 2)))
    assert_unchanged(before, observed)
    inputs = run_inputs(case, 100)
    for result in results:
        assert_same_model(result, serial)
        assert_same_outputs(result, serial, *inputs)
