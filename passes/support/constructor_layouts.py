"""What a module constructor builds, recorded once and replayed instead of running the constructor again.

Two places build modules whose constructor costs more than the result is worth: the lowering's
`from_reference` calls (`qfx.lowering.support.engine`: a quantized module whose placeholder weight is
packed over right away) and QAT `to_float` (`float_prototypes.py`: a float conv whose parameters are
assigned over right away). A constructor called with the same arguments builds the same instance dict, so
the dict of its first call is kept as a layout, and the next object with those arguments gets its dict from
the layout: immutable values shared, empty module tables made afresh, lists of immutable values copied,
child modules rebuilt from their own layouts, scalar buffers cloned, and a placeholder wherever the caller
replaces what the constructor made (parameters and other buffers, when asked; one named slot, such as a
packed weight). A dict holding
anything else has no layout, and its constructor runs every time.
"""

from __future__ import annotations

import collections
from typing import Any

import torch
import torch.nn.modules.module as module_globals

# What a layout may share between objects (the constructor's own values: never changed in place).
IMMUTABLE = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.qscheme)
_TABLES = (dict, set, collections.OrderedDict)


class _Placeholder:
    """Stands where the constructor put a parameter or buffer, until the caller assigns the real one."""

    def __repr__(self) -> str:
        return "<placeholder tensor>"


PLACEHOLDER = _Placeholder()

# One entry of a layout: (attribute name, how to make its value, what from).
Layout = tuple[tuple[str, int, Any], ...]
_VALUE, _TABLE, _LIST, _PARAMETERS, _BUFFERS, _SLOT, _CHILDREN = range(7)


def call_key(args: tuple, kwargs: dict) -> tuple | None:
    """Constructor arguments as a key, when they are immutable values and tuples of them (None otherwise).
    The key holds the values' types too: equal values of different types (1, 1.0, True), or 0.0 and -0.0,
    build different instance dicts."""
    key = (args, tuple(sorted(kwargs.items())))
    types = _leaf_types(key)
    return None if types is None else (key, types)


def _leaf_types(value: Any) -> tuple | None:
    """The types of the leaves of nested tuple `value`, depth first (a float's exact value instead); None
    if a leaf is not immutable."""
    types = []
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is tuple:
            stack.extend(item)
        elif kind in IMMUTABLE:
            types.append(item.hex() if kind is float else kind)  # hex tells 0.0 from -0.0
        else:
            return None
    return tuple(types)


def layout_of(state: dict[str, Any], *, parameters: bool = False, buffers: bool = False,
              slot: tuple[str, type] | None = None) -> Layout | None:
    """The layout of a constructor's instance dict `state`, or None when it holds something a layout does not
    replay. With `parameters`, the parameter table is replayed with a PLACEHOLDER for each parameter (None
    stays None); with `buffers`, the buffer table with a clone of each scalar (0-dim) buffer, which is what
    its constructor would make again, and a PLACEHOLDER for each other; else those tables must be empty, as
    every other table. `slot` = (name, type): a value of that type under that name is replayed as None (for
    the caller to fill). Children get layouts of their own."""
    layout = []
    for name, value in state.items():
        kind = type(value)
        if name == "_modules" and kind is dict and value:
            children = []
            for child_name, child in value.items():
                child_layout = None if child is None else layout_of(child.__dict__, parameters=parameters,
                                                                     buffers=buffers, slot=slot)
                if child_layout is None:
                    return None
                children.append((child_name, type(child), child_layout))
            layout.append((name, _CHILDREN, tuple(children)))
        elif parameters and name == "_parameters" and kind in _TABLES:
            layout.append((name, _PARAMETERS, (kind, tuple((key, p is not None) for key, p in value.items()))))
        elif buffers and name == "_buffers" and kind in _TABLES:
            entries = tuple((key, b.detach().clone() if isinstance(b, torch.Tensor) and b.dim() == 0 and
                             type(b) is torch.Tensor else (None if b is None else PLACEHOLDER))
                            for key, b in value.items())
            layout.append((name, _BUFFERS, (kind, entries)))
        elif kind in _TABLES:
            if value:
                return None
            layout.append((name, _TABLE, kind))
        elif kind is list:
            if _leaf_types(tuple(value)) is None:
                return None
            layout.append((name, _LIST, tuple(value)))
        elif _leaf_types((value,)) is not None:
            layout.append((name, _VALUE, value))
        elif slot is not None and name == slot[0] and isinstance(value, slot[1]):
            layout.append((name, _SLOT, None))
        else:
            return None
    return tuple(layout)


def replay(layout: Layout, state: dict[str, Any]) -> None:
    """Fill an empty instance dict from `layout`."""
    for name, how, what in layout:
        if how == _VALUE:
            state[name] = what
        elif how == _TABLE:
            state[name] = what()
        elif how == _LIST:
            state[name] = list(what)
        elif how == _PARAMETERS:
            kind, entries = what
            state[name] = kind((key, PLACEHOLDER if present else None) for key, present in entries)
        elif how == _BUFFERS:
            kind, entries = what
            state[name] = kind((key, b.clone() if isinstance(b, torch.Tensor) else b) for key, b in entries)
        elif how == _SLOT:
            state[name] = None
        else:
            children = {}
            for child_name, child_class, child_layout in what:
                child = child_class.__new__(child_class)
                replay(child_layout, child.__dict__)
                children[child_name] = child
            state[name] = children


def holds_placeholder(module: torch.nn.Module) -> bool:
    """Whether `module` or a module below it still holds a PLACEHOLDER parameter or buffer."""
    return any(t is PLACEHOLDER for sub in module.modules() for table in (sub._parameters, sub._buffers)
               for t in table.values())


def registration_hooks() -> bool:
    """Whether global module/parameter/buffer registration hooks are set: a constructor's registrations call
    them, so then only the constructor itself may build modules (nothing is replayed), at their real sizes."""
    return bool(module_globals._global_parameter_registration_hooks or module_globals._global_buffer_registration_hooks
                or module_globals._global_module_registration_hooks)
