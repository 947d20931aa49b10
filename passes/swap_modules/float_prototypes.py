"""The float conv a QAT conv's `to_float` constructs, copied from a prototype instead of constructed.

torch's `to_float` of the QAT conv families constructs `cls._FLOAT_CONV_MODULE(...)` (an nn.Conv1d/2d/3d) and
then assigns the QAT module's weight and bias over the constructor's. `qat.to_float` runs it on a stand-in
with one channel per group and a unit kernel, so the constructor's weight is tiny, but the constructor
itself (attribute checks, parameter registration, a random initialisation) still costs about 75 us a module.
Here the stand-in's class is a subclass of the QAT class whose `_FLOAT_CONV_MODULE` builds the float conv
as a copy of a prototype: a module the constructor built once for the same arguments (remembered across
converts), with tables of its own, immutable values shared, lists copied, and a placeholder where the
constructor put a parameter. `to_float` assigns every parameter it keeps; a placeholder left in the result
(`holds_placeholder`) means this torch's to_float does otherwise, and the caller builds the module the
plain way. Only the random numbers the constructor would draw are not drawn (the convert restores the
global generator anyway).
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import torch

from .reference_modules import standin


class _Placeholder:
    """Stands where a prototype's constructor put a parameter, until to_float assigns the real one."""

    def __repr__(self) -> str:
        return "<placeholder parameter>"


PLACEHOLDER = _Placeholder()

_PROTOTYPES: dict[tuple, tuple[type, tuple[tuple[str, Any], ...]]] = {}
_MAX_PROTOTYPES = 512
_IMMUTABLE = (int, float, bool, str, type(None))
_TABLES = (dict, set, collections.OrderedDict)


def replaying_standin(module: torch.nn.Module, **attributes: Any) -> torch.nn.Module:
    """`standin(module, **attributes)` whose to_float builds its float conv from a prototype (see the module
    docstring); `module` is only read. For torch's own QAT conv classes: the stand-in's class is a subclass
    of the module's (made once per class), and subclassing a user's class could run code of theirs."""
    made = standin(module, **attributes)
    made.__class__ = _replaying_class(type(module))
    return made


def holds_placeholder(module: torch.nn.Module) -> bool:
    """Whether `module` or a module below it still holds a prototype's placeholder parameter."""
    return any(p is PLACEHOLDER for sub in module.modules() for p in sub._parameters.values())


@functools.cache
def _replaying_class(qat_class: type) -> type:
    float_class = qat_class._FLOAT_CONV_MODULE

    def build(*args: Any, **kwargs: Any) -> torch.nn.Module:
        return _from_prototype(float_class, args, kwargs)

    return type(qat_class.__name__, (qat_class,), {"_FLOAT_CONV_MODULE": staticmethod(build),
                                                   "__module__": __name__,
                                                   "__qualname__": f"_replaying.<{qat_class.__qualname__}>"})


def _from_prototype(float_class: type, args: tuple, kwargs: dict) -> torch.nn.Module:
    """`float_class(*args, **kwargs)`, copied from the prototype for these arguments (made on first use) when
    there is one."""
    key = _key(float_class, args, kwargs)
    prototype = _PROTOTYPES.get(key) if key is not None else None
    if prototype is None:
        built = float_class(*args, **kwargs)
        layout = _layout_of(built)
        if key is not None and layout is not None and len(_PROTOTYPES) < _MAX_PROTOTYPES:
            _PROTOTYPES[key] = (float_class, layout)
        return built
    kind, layout = prototype
    made = kind.__new__(kind)
    state = made.__dict__
    for name, value in layout:
        kind_of_value = type(value)
        state[name] = kind_of_value(value) if kind_of_value in _TABLES or kind_of_value is list else value
    return made


def _key(float_class: type, args: tuple, kwargs: dict) -> tuple | None:
    """The constructor call as a key (with every leaf's type: 1, 1.0 and True build different modules), or
    None when an argument is not a plain immutable value."""
    leaves: list[Any] = []
    stack: list[Any] = [args, tuple(sorted(kwargs.items()))]
    while stack:
        item = stack.pop()
        if type(item) is tuple:
            stack.extend(item)
        elif type(item) in _IMMUTABLE:
            leaves.append(item.hex() if type(item) is float else type(item))  # (hex tells 0.0 from -0.0)
        else:
            return None
    return float_class, args, tuple(sorted(kwargs.items())), tuple(leaves)


def _layout_of(module: torch.nn.Module) -> tuple[tuple[str, Any], ...] | None:
    """The constructed module's instance dict as a prototype: tables (parameters as placeholders; no buffers
    or children), lists of immutable values, and immutable values and tuples of them; None when it holds
    anything else."""
    layout = []
    for name, value in module.__dict__.items():
        kind = type(value)
        if name == "_parameters" and kind in _TABLES:
            value = kind((key, None if p is None else PLACEHOLDER) for key, p in value.items())
        elif kind in _TABLES:
            if value:
                return None
        elif kind is list or kind is tuple:
            if not all(type(item) in _IMMUTABLE for item in value):
                return None
        elif kind not in _IMMUTABLE:
            return None
        layout.append((name, value))
    return tuple(layout)
