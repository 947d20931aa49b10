"""Classes pickled by their names: a saved model's node meta, type annotations and prepare's module scopes
name the user's classes, which may not import where the model is loaded. `classes_by_name(value)` gives a
copy of `value` that pickles each class by module and qualified name and loads it as that class where it
imports, else as a stand-in class of the same name (a subclass of `MissingClass`).
"""

from __future__ import annotations

import collections
import functools
import importlib
import operator
import types
import typing
from typing import Any

from qfx.ir.frozendict import FrozenDict


class MissingClass:
    """Base of the stand-ins for classes a loaded model's node meta names but this process cannot import."""


_STAND_INS: dict[tuple, type] = {}


def _class_named(module: str, qualname: str) -> type:
    """The class `module`.`qualname`, or, when it cannot be imported here, a stand-in class of that name
    (one per name): node meta only records which classes the code came from (`nn_module_stack`), so a
    model whose modules are all importable loads and runs without the user's own module."""
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        if isinstance(found, type):
            return found
    except Exception:
        pass
    key = (module, qualname)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(qualname.rpartition(".")[2], (MissingClass,), {
            "__module__": module, "__qualname__": qualname,
            "__doc__": f"stand-in for {module}.{qualname}, which could not be imported when the model was loaded"})
    return _STAND_INS[key]


class _ClassByName:
    """A class in node meta, pickled by name and loaded with `_class_named`."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __reduce__(self) -> tuple:
        return (_class_named, (self.cls.__module__, self.cls.__qualname__))


class _Rebuilt:
    """A value pickled as `make(*args)`, where `args` may hold `_ClassByName`s."""

    def __init__(self, make: Any, args: tuple) -> None:
        self.make, self.args = make, args

    def __reduce__(self) -> tuple:
        return (self.make, self.args)


def _partial(func: Any, args: tuple, keywords: dict) -> functools.partial:
    return functools.partial(func, *args, **keywords)


def _defaultdict(factory: Any, items: list) -> collections.defaultdict:
    return collections.defaultdict(factory, items)


def _named_tuple(module: str, qualname: str, fields: tuple[str, ...], values: tuple) -> tuple:
    """A `module`.`qualname` named tuple of `values`; where that class cannot be imported, one of a stand-in
    named tuple class of that name and fields."""
    kind = _class_named(module, qualname)
    if issubclass(kind, MissingClass):
        key = (module, qualname, fields)
        if key not in _STAND_INS:
            _STAND_INS[key] = collections.namedtuple(qualname.rpartition(".")[2], fields, module=module)
        kind = _STAND_INS[key]
    return kind(*values)


def _union(members: tuple) -> Any:
    return functools.reduce(operator.or_, members)


def classes_by_name(value: Any) -> Any:
    """`value` (a node's meta or type, or prepare's module scopes) with every class in it replaced by a
    `_ClassByName`, through dicts (keys too), lists, tuples, named tuples, sets, default dicts, partials and
    type annotations (`Optional[MyClass]`, `MyClass | None`)."""
    if isinstance(value, type):
        return value if value.__module__ == "builtins" else _ClassByName(value)  # (type(None) is not a name)
    kind = type(value)
    if kind in (dict, collections.OrderedDict, FrozenDict):
        return kind((classes_by_name(k), classes_by_name(v)) for k, v in value.items())
    if kind is collections.defaultdict:
        return _Rebuilt(_defaultdict, (classes_by_name(value.default_factory),
                                       [(classes_by_name(k), classes_by_name(v)) for k, v in value.items()]))
    if kind in (list, tuple, set, frozenset):
        return kind(classes_by_name(v) for v in value)
    if isinstance(value, tuple) and hasattr(kind, "_fields"):  # a named tuple
        return _Rebuilt(_named_tuple, (kind.__module__, kind.__qualname__, tuple(kind._fields),
                                       tuple(classes_by_name(v) for v in value)))
    if kind is functools.partial:
        return _Rebuilt(_partial, (classes_by_name(value.func), classes_by_name(value.args),
                                   classes_by_name(value.keywords)))
    if kind is types.UnionType:
        return _Rebuilt(_union, (classes_by_name(typing.get_args(value)),))
    if typing.get_origin(value) is not None:  # Optional[C], List[C], list[C], ...: pickled by their parts
        reduced = value.__reduce__()
        if isinstance(reduced, tuple):  # (not a bare typing.List, which pickles by its name)
            return _Rebuilt(reduced[0], classes_by_name(reduced[1]))
    return value
