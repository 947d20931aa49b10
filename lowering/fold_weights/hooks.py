"""The state_dict hooks a model with folded weights carries (the behaviour of torch's `fold_weight` hooks).

Packed weights are plain root attributes (ScriptObjects), which Module.state_dict does not see: the save
hook adds them under their attribute names, the load pre-hook takes them back out of a state_dict. A model
carrying them pickles, and, like torch's result, loads where only torch is installed: each hook pickles as
a reference to torch's hook of the same behaviour (by name; qfx itself never imports or calls it).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import torch

PACKED_WEIGHT_MARK = "_packed_weight"
# Where torch's converted models find their hooks of these names when they are unpickled.
_TORCH_HOOKS_MODULE = "torch.ao.quantization.fx._lower_to_native_backend"


class _TorchsHooks:
    """Stands for the torch module that holds torch's own hooks, in a pickle: unpickled, that module."""

    def __reduce__(self) -> tuple:
        return importlib.import_module, (_TORCH_HOOKS_MODULE,)


class _PicklesAsTorchs:
    """A hook that runs `function` and pickles as torch's hook called `torch_name`."""

    def __init__(self, function: Callable[..., None], torch_name: str) -> None:
        functools.update_wrapper(self, function)
        self._function = function
        self._torch_name = torch_name

    def __call__(self, *args: Any) -> None:
        self._function(*args)

    def __reduce__(self) -> tuple:
        return getattr, (_TorchsHooks(), self._torch_name)

    def __deepcopy__(self, memo: dict) -> "_PicklesAsTorchs":
        return self


def _save_packed_weights(module: torch.nn.Module, destination: dict, prefix: str, local_metadata: Any) -> None:
    """State_dict hook: add every attribute of `module` whose name contains `_packed_weight` and whose
    value is a ScriptObject to `destination` as `prefix + name`, in the sorted order `dir()` lists them."""
    for name in dir(module):
        if PACKED_WEIGHT_MARK in name:
            value = getattr(module, name)
            if isinstance(value, torch._C.ScriptObject):
                destination[prefix + name] = value


def _load_packed_weights(module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: Any,
                         strict: bool, missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """load_state_dict pre-hook: every entry whose key starts with `_packed_weight` and whose value is a
    ScriptObject becomes the attribute of that name on `module` and leaves `state_dict` (keys are taken as
    they are, whatever `prefix`: as torch's hook does)."""
    restored = [key for key, value in state_dict.items()
                if key.startswith(PACKED_WEIGHT_MARK) and isinstance(value, torch._C.ScriptObject)]
    for key in restored:
        setattr(module, key, state_dict[key])
    for key in restored:
        state_dict.pop(key)


save_packed_weights = _PicklesAsTorchs(_save_packed_weights, "_save_packed_weight")
load_packed_weights = _PicklesAsTorchs(_load_packed_weights, "_load_packed_weight")
