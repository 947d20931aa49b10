"""Which modules convert treats as activation observers, asked once per class (insert-qdq, swap-modules)."""

from __future__ import annotations

from typing import Any

import torch
from torch.ao.quantization.observer import _is_activation_post_process


class ObserverTest:
    """torch's `_is_activation_post_process`, remembered per class for one pass run.

    For a module that is not a scripted one the answer is an isinstance test against the observer and
    fake-quantize base classes, so its class decides it. Scripted modules share their class and are
    answered from their compiled class name, so they are asked every time, as are objects whose
    `__class__` is not their type."""

    def __init__(self) -> None:
        self._by_class: dict[type, bool] = {}

    def __call__(self, module: Any) -> bool:
        kind = type(module)
        known = self._by_class.get(kind)
        if known is None:
            known = _is_activation_post_process(module)
            if module.__class__ is kind and not isinstance(module, torch.jit.ScriptModule):
                self._by_class[kind] = known
        return known
