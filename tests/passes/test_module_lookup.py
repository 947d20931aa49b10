"""Module attribute lookups answered from the tables (module_lookup.py) agree with torch's and Python's own."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn as nn


class _ClassAttribute(nn.ReLU):
    parametrizations = None


class _OwnLookup(nn.ReLU):
    def __getattr__(self, name: str) -> Any:
        if name == "parametrizations":
            return nn.ModuleDict()
        return super().__getattr__(name)


class _ClaimsAnotherClass(nn.ReLU):
    @property
    def __class__(self) -> type:  # type: ignore[override]
        return nn.Linear


def _with(module: nn.Module, edit: Any) -> nn.Module:
    edit(module)
    return module


def _parametrized() -> nn.Module:
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    return _with(nn.Linear(2, 2), lambda m: parametrize.register_parametrization(m, "weight", Double()))


@pytest.mark.parametrize("module", [
    nn.ReLU(), nn.Linear(2, 2), _parametrized(), _ClassAttribute(), _OwnLookup(), _ClaimsAnotherClass(),
    _with(nn.ReLU(), lambda m: m.register_buffer("parametrizations", torch.zeros(1))),
    _with(nn.ReLU(), lambda m: m.add_module("parametrizations", nn.ModuleDict())),
    _with(nn.ReLU(), lambda m: m.__dict__.__setitem__("parametrizations", nn.ModuleDict())),
], ids=lambda m: type(m).__name__)
def test_the_class_before_parametrizations_is_torchs(module):
    from torch.ao.quantization.backend_config import get_native_backend_config
    from torch.nn.utils.parametrize import type_before_parametrizations

    from qfx.passes.swap_modules.weighted import WeightedClasses
    classes = WeightedClasses.of(get_native_backend_config())
    for _ in range(2):  # (the second time from what the class told the first)
        assert classes.class_before_parametrizations(module) is type_before_parametrizations(module)


class _WeightProperty(nn.Module):
    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self._parameters["kept"]


@pytest.mark.parametrize("module", [
    nn.Linear(2, 2), nn.ReLU(), _OwnLookup(), _ClaimsAnotherClass(),
    _with(nn.Linear(2, 2), lambda m: m.__dict__.__setitem__("weight", "instance")),
    _with(nn.ReLU(), lambda m: m.register_buffer("weight", torch.zeros(1))),
    _with(nn.ReLU(), lambda m: m.register_parameter("kept", nn.Parameter(torch.ones(1)))),
], ids=lambda m: type(m).__name__)
def test_a_parameter_read_is_getattrs(module):
    from qfx.passes.swap_modules.module_lookup import ModuleLookup
    lookup = ModuleLookup()
    for _ in range(2):
        assert lookup.parameter(module, "weight") is getattr(module, "weight", None)


def test_a_weight_property_is_asked():
    from qfx.passes.swap_modules.module_lookup import ModuleLookup
    module = _WeightProperty()
    module.register_parameter("kept", nn.Parameter(torch.ones(1)))
    assert ModuleLookup().parameter(module, "weight") is module._parameters["kept"]
