"""The native backend config every convert without one shares is built once and left as torch builds it."""

from __future__ import annotations

import copy
import re
import warnings

import pytest
from torch.ao.quantization.backend_config import get_native_backend_config

import qfx
from qfx.ir.program import native_backend_config
from tests.support.models import CASES_BY_NAME, convert_kwargs, prepare_case


@pytest.mark.parametrize("name", ["resnet_block", "functional_linear"])
def test_converts_share_the_native_config_and_leave_it_as_built(name: str):
    case = CASES_BY_NAME[name]
    observed = prepare_case(case)[0]
    kwargs = {k: v for k, v in convert_kwargs(case).items() if k != "backend_config"}
    shared = native_backend_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for convert in (qfx.convert_to_reference_fx, qfx.convert_to_reference_decomposed_fx, qfx.convert_fx):
            convert(copy.deepcopy(observed), **kwargs)
        program = qfx.lift(observed, options=qfx.api.convert_options(is_reference=True, convert_custom_config=None))
    assert program.options.backend_config is shared is native_backend_config()
    assert _contents(shared) == _contents(get_native_backend_config())


def _contents(config) -> str:
    # (each build makes new fuser-method closures: they are told apart by name only)
    return re.sub(r" at 0x[0-9a-f]+", "", repr(config.to_dict()))
