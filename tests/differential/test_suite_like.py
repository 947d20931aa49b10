"""Differential tests on cases modelled on PyTorch's own FX quantization test suite (tests/support/suite_models.py).

Each case is converted by qfx and by torch in reference, decomposed and lowered mode (lowered under each
engine the case lists), with the checks of tests/differential/test_reference_diff.py: observed model
unchanged, same code, state_dict, module tree, root attributes and bit-identical outputs, or the same failure.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from tests.differential.test_lowered_diff import quantized_engine
from tests.differential.test_reference_diff import check_against_torch
from tests.support.models import Case
from tests.support.suite_models import SUITE_CASES, SUITE_CASES_BY_NAME, SUITE_VARIANTS


def _engines(case: Case) -> list[str]:
    return [e for e in case.lowered_engines if e in torch.backends.quantized.supported_engines]


def _params() -> list[Any]:
    params = []
    for case in SUITE_CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        for mode in ("reference", "decomposed"):
            params.append(pytest.param(case, mode, None, id=f"{case.name}-{mode}", marks=marks))
        for engine in _engines(case):
            params.append(pytest.param(case, "lowered", engine, id=f"{case.name}-lowered-{engine}", marks=marks))
    return params


@pytest.mark.parametrize(("case", "mode", "engine"), _params())
def test_suite_case_matches_torch(case: Case, mode: str, engine: str | None) -> None:
    if engine is None:
        check_against_torch(case, mode)
    else:
        with quantized_engine(engine):
            check_against_torch(case, mode)


def _variant_params() -> list[Any]:
    params = []
    for i, (name, mode, extra) in enumerate(SUITE_VARIANTS):
        case = SUITE_CASES_BY_NAME[name]
        for engine in _engines(case) if mode == "lowered" else [None]:
            params.append(pytest.param(case, mode, engine, extra, id=f"{name}-{mode}-{engine}-{i}"))
    return params


@pytest.mark.parametrize(("case", "mode", "engine", "extra"), _variant_params())
def test_suite_variant_matches_torch(case: Case, mode: str, engine: str | None,
                                     extra: Callable[[], dict[str, Any]]) -> None:
    if engine is None:
        check_against_torch(case, mode, extra)
    else:
        with quantized_engine(engine):
            check_against_torch(case, mode, extra)
