"""Activation observers as convert meets them (insert-qdq, swap-modules): which modules are observers,
asked once per class, and what their qparams can be read from without changing the observed model."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.ao.quantization.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from torch.ao.quantization.observer import _is_activation_post_process

from qfx.ir.validate import torchs_own_observer_method


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


# calculate_qparams and the methods torch's implementations of it call on the observer. torch's own (those of
# its observer and fake_quantize modules) only read the module; its _LearnableFakeQuantize, defined elsewhere,
# clamps its scale in place in calculate_qparams.
_QPARAMS_METHODS = ("calculate_qparams", "_calculate_qparams", "_non_linear_param_search",
                    "_compute_quantization_error", "_get_norm")


class QParamsReads:
    """What to call an activation observer's `calculate_qparams` on, so that the call cannot change the
    observed model, for one pass run.

    torch calls it on the live model. An observer whose class runs torch's own implementations of
    calculate_qparams and of the methods those call, which only read (a user's subclass that observes in
    its own way included), is used as it is; so is a torch fake quant that hands over to such an
    observer. Any other (a class with its own calculate_qparams, torch's learnable fake quant) is
    deep-copied on first use, and the copy serves every later call in the run: a second call sees what the
    first left, as on torch's live model. (One that deepcopy cannot copy is used as it is.)"""

    def __init__(self) -> None:
        self._copies: dict[int, Any] = {}
        self._memo: dict[int, Any] = {}  # one deepcopy memo: what observers share, their copies share
        self._reading_classes: dict[type, bool] = {}

    def __call__(self, observer: Any) -> Any:
        if self._only_reads(observer):
            return observer
        made = self._copies.get(id(observer))
        if made is None:
            try:
                made = copy.deepcopy(observer, self._memo)
            except Exception:  # (one that cannot be copied is read as torch reads it, on the model)
                made = observer
            self._copies[id(observer)] = made
        return made

    def _only_reads(self, observer: Any) -> bool:
        if isinstance(observer, torch.jit.ScriptModule):
            return False  # (its methods are compiled, whatever their source)
        kind = type(observer)
        known = self._reading_classes.get(kind)
        if known is None:
            methods = [getattr(kind, name) for name in _QPARAMS_METHODS if hasattr(kind, name)]
            known = self._reading_classes[kind] = all(torchs_own_observer_method(m) for m in methods)
        if not known:
            return False
        if kind.calculate_qparams not in HANDS_OVER:
            return True
        inner = observer.__dict__.get("_modules", {}).get("activation_post_process")
        return inner is not None and self._only_reads(inner)


# torch's fake quants whose calculate_qparams is their observer's
HANDS_OVER = (FakeQuantize.calculate_qparams, FusedMovingAvgObsFakeQuantize.calculate_qparams)
