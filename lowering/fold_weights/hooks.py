"""The state_dict hooks a model with folded weights carries (the behaviour of torch's `fold_weight` hooks).

Packed weights are plain root attributes (ScriptObjects), which Module.state_dict does not see: the save
hook adds them under their attribute names, the load pre-hook takes them back out of a state_dict. Both
are module-level functions, so a model carrying them pickles.
"""

from __future__ import annotations

from typing import Any

import torch

PACKED_WEIGHT_MARK = "_packed_weight"


def save_packed_weights(module: torch.nn.Module, destination: dict, prefix: str, local_metadata: Any) -> None:
    """State_dict hook: add every attribute of `module` whose name contains `_packed_weight` and whose
    value is a ScriptObject to `destination` as `prefix + name`, in the sorted order `dir()` lists them."""
    for name in dir(module):
        if PACKED_WEIGHT_MARK in name:
            value = getattr(module, name)
            if isinstance(value, torch._C.ScriptObject):
                destination[prefix + name] = value


def load_packed_weights(module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: Any,
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
