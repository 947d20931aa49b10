"""FrozenDict: an immutable dict for IR tables that are copied whole more often than they are edited."""

from __future__ import annotations

from typing import Any


class FrozenDict(dict):
    """A dict that refuses every change (node metas, FX's name counters). Reading and copying it run at
    dict speed, unlike a persistent map, and it pickles, as IR values must. Not hashable."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is immutable; build a new one")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


def frozen_dict(table: Any = None) -> FrozenDict:
    """`table` as a FrozenDict: itself when it is one, else a copy of its entries in its order."""
    if type(table) is FrozenDict:
        return table
    return FrozenDict(table) if table else _EMPTY


def frozen_dict_or_none(table: Any) -> FrozenDict | None:
    """`frozen_dict(table)`, or None for None."""
    return None if table is None else frozen_dict(table)


_EMPTY = FrozenDict()
