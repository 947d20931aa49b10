"""Node-name allocation with exactly FX's rules, as an immutable value.

FX never frees a name: an erased node's name stays taken, and each base name remembers the last numeric
suffix it handed out. To give new nodes the names torch's convert would give them, a Program carries that
state (`Namespace`) and passes allocate through a `NameAllocator`, then freeze it back.
"""

from __future__ import annotations

from functools import lru_cache

import attrs
from torch.fx.graph import _illegal_char_regex, _illegal_names, _name_regex

from .errors import QfxError
from .frozendict import FrozenDict


@attrs.frozen(slots=True)
class Namespace:
    """Every name FX has handed out in this graph, and the last suffix used per base name."""

    # A frozenset rather than a PSet: it is only ever copied whole (into and out of an allocator), which
    # a frozenset does at C speed.
    used: frozenset = attrs.field(factory=frozenset, converter=frozenset)
    base_count: FrozenDict = attrs.field(factory=FrozenDict, converter=FrozenDict)

    def allocator(self) -> "NameAllocator":
        """A mutable allocator starting from this state (for use inside one pass)."""
        return NameAllocator(set(self.used), dict(self.base_count))

    @staticmethod
    def fresh_graph() -> "NameAllocator":
        """An allocator for a brand-new FX Graph of this program (nothing taken, as torch's fold_weight
        builds one)."""
        return NameAllocator(set(), {})


class NameAllocator:
    """Allocates names as torch.fx.graph._Namespace.create_name does; `freeze()` returns a Namespace."""

    __slots__ = ("_used", "_base_count")

    def __init__(self, used: set[str], base_count: dict[str, int]) -> None:
        self._used = used
        self._base_count = base_count

    def fresh(self, candidate: str) -> str:
        """Return a new unique name derived from `candidate`, as FX would choose it."""
        if not isinstance(candidate, str):
            raise QfxError(f"a node name candidate must be a string, got {type(candidate).__name__}")
        candidate, base, num = split_candidate(candidate)
        if num is None or candidate in self._used:
            num = self._base_count.get(base, 0)
            if _illegal_names.get(candidate, None) is not None:
                num += 1
                candidate = f"{base}_{num}"
        else:
            num = int(num)
        while candidate in self._used:
            num += 1
            candidate = f"{base}_{num}"
        self._used.add(candidate)
        self._base_count[base] = num
        return candidate

    def taken(self, name: str) -> bool:
        """Whether `name` was ever handed out."""
        return name in self._used

    def freeze(self) -> Namespace:
        """The immutable state after the allocations made so far."""
        return Namespace(frozenset(self._used), FrozenDict(self._base_count))


def split_candidate(candidate: str) -> tuple[str, str, str | None]:
    """How FX reads a name candidate: (the candidate made a legal identifier, its base, its numeric suffix
    or None), what `_name_regex` matches in it after FX's clean-up."""
    if candidate.isascii() and candidate.isidentifier():
        # For a legal ASCII identifier the regex's lazy base stops before a final `_<digits>`, if the
        # identifier has one after a non-empty base: the same split, without running the regex.
        head, _, tail = candidate.rpartition("_")
        if head and tail.isdigit():
            return candidate, head, tail
        return candidate, candidate, None
    return _split_by_regex(candidate)


@lru_cache(maxsize=4096)
def _split_by_regex(candidate: str) -> tuple[str, str, str | None]:
    # Remembered: FX's op-overload candidates (`quantized_decomposed.quantize_per_tensor.default`) all
    # take this path, with the same few strings.
    match = _name_regex.match(candidate)
    if match is None:
        candidate = _illegal_char_regex.sub("_", candidate) or "_unnamed"
        if candidate[0].isdigit():
            candidate = f"_{candidate}"
        match = _name_regex.match(candidate)
    base, num = match.group(1, 2)
    return candidate, base, num
