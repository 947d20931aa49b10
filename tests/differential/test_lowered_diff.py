"""Differential tests: qfx's lowered convert (convert_fx) against torch's on the whole model zoo.

Every case of tests/support/models.py is converted by `qfx.convert_fx` and (on a deep copy) by torch's
`quantize_fx.convert_fx`, under each quantized engine torch can run here (x86, fbgemm, qnnpack): the engine
decides how weights are packed, so it is part of the comparison. The checks are those of the reference
suite: the observed model unchanged, the same code, state_dict (packed params by their unpacked contents),
module tree, root attributes and bit-identical outputs; where torch refuses, qfx refuses with torch's type.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pytest
import torch

from tests.differential.test_reference_diff import check_against_torch
from tests.support.models import CASES, CASES_BY_NAME, Case

ENGINES = [e for e in ("x86", "fbgemm", "qnnpack") if e in torch.backends.quantized.supported_engines]


def case_engines(case: Case) -> list[str]:
    """The engines a case is compared under: those it lists (`Case.lowered_engines`: where torch's own lowered
    model can be run and inspected) that this build of torch supports."""
    return [e for e in case.lowered_engines if e in torch.backends.quantized.supported_engines]


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    """Run the body with `torch.backends.quantized.engine` set to `engine` (restored after)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        params += [pytest.param(case, engine, id=f"{case.name}-{engine}", marks=marks) for engine in case_engines(case)]
    return params


@pytest.mark.parametrize(("case", "engine"), _params())
def test_lowered_matches_torch(case: Case, engine: str) -> None:
    with quantized_engine(engine):
        check_against_torch(case, "lowered")


# (case, extra convert_fx arguments): flags beyond each case's own
VARIANTS: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("functional_linear", lambda: {"keep_original_weights": True}),
    ("functional_conv", lambda: {"keep_original_weights": True}),
    ("resnet_block", lambda: {"_remove_qconfig": False}),
    ("mixed_none_qconfigs", lambda: {"qconfig_mapping": CASES_BY_NAME["mixed_none_qconfigs"].qconfig_mapping()}),
]


@pytest.mark.parametrize(("name", "extra"), [pytest.param(*v, id=f"{v[0]}-{i}") for i, v in enumerate(VARIANTS)])
@pytest.mark.parametrize("engine", ENGINES)
def test_lowered_variant_matches_torch(name: str, extra: Callable[[], dict[str, Any]], engine: str) -> None:
    with quantized_engine(engine):
        check_against_torch(CASES_BY_NAME[name], "lowered", extra)
