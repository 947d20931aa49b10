"""The float conv a QAT conv's `to_float` constructs, copied from a prototype instead of constructed.

torch's `to_float` of the QAT conv families constructs `cls._FLOAT_CONV_MODULE(...)` (an nn.Conv1d/2d/3d) and
then assigns the QAT module's weight and bias over the constructor's. `qat.to_float` runs it on a stand-in
with one channel per group and a unit kernel, so the constructor's weight is tiny, but the constructor
itself (attribute checks, parameter registration, a random initialisation) still costs about 75 us a module.
Here the stand-in's class is a subclass of the QAT class whose `_FLOAT_CONV_MODULE` builds the float conv
as a copy of a prototype: the layout of a module the constructor built once for the same arguments
(remembered across converts; `qfx.passes.support.constructor_layouts`), with tables of its own, immutable
values shared, lists copied, and a placeholder where the constructor put a parameter. `to_float` assigns
every parameter it keeps; a placeholder left in the result (`constructor_layouts.holds_placeholder`) means
this torch's to_float does otherwise, and the caller builds the module the plain way. Only the random
numbers the constructor would draw are not drawn (the convert restores the global generator anyway).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from qfx.passes.support.constructor_layouts import Layout, call_key, layout_of, replay

from ..support.module_copies import standin


_PROTOTYPES: dict[tuple, Layout] = {}
_MAX_PROTOTYPES = 512


def replaying_standin(module: torch.nn.Module, **attributes: Any) -> torch.nn.Module:
    """`standin(module, **attributes)` whose to_float builds its float conv from a prototype (see the module
    docstring); `module` is only read. For torch's own QAT conv classes: the stand-in's class is a subclass
    of the module's (made once per class), and subclassing a user's class could run code of theirs."""
    made = standin(module, **attributes)
    made.__class__ = _replaying_class(type(module))
    return made


@functools.cache
def _replaying_class(qat_class: type) -> type:
    float_class = qat_class._FLOAT_CONV_MODULE

    def build(*args: Any, **kwargs: Any) -> torch.nn.Module:
        return _from_prototype(float_class, args, kwargs)

    return type(qat_class.__name__, (qat_class,), {"_FLOAT_CONV_MODULE": staticmethod(build),
                                                   "__module__": __name__,
                                                   "__qualname__": f"_replaying.<{qat_class.__qualname__}>"})


def _from_prototype(float_class: type, args: tuple, kwargs: dict) -> torch.nn.Module:
    """`float_class(*args, **kwargs)`, made from the prototype's layout for these arguments (recorded on first
    use) when there is one."""
    key = call_key(args, kwargs)
    layout = _PROTOTYPES.get((float_class, key)) if key is not None else None
    if layout is None:
        built = float_class(*args, **kwargs)
        if key is not None and len(_PROTOTYPES) < _MAX_PROTOTYPES:
            layout = layout_of(built.__dict__, parameters=True)
            if layout is not None:
                _PROTOTYPES[(float_class, key)] = layout
        return built
    made = float_class.__new__(float_class)
    replay(layout, made.__dict__)
    return made
