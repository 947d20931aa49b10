"""A pass-local working view of a Program's module table, where replacing a module never mutates it.

Torch's equalization edits modules in place through a `{qualified name: module}` dict, so one object
listed under several names (named_modules(remove_duplicate=False)) changes under all of them at once.
`ModuleTable` gives the same effect without mutation: replacing the object at one path puts the new
object at every path that held the old one.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from qfx.ir.program import Program


class ModuleTable:
    """Current module per qualified name during one pass run; records which paths got a new object."""

    def __init__(self, program: Program) -> None:
        self._current: dict[str, nn.Module] = dict(program.modules)
        self._paths_of: dict[int, list[str]] = {}
        for path, module in self._current.items():
            self._paths_of.setdefault(id(module), []).append(path)
        self._changed: dict[str, None] = {}

    def __getitem__(self, path: str) -> nn.Module:
        return self._current[path]

    def __contains__(self, path: object) -> bool:
        return path in self._current

    def get(self, path: str, default: Any = None) -> Any:
        """The current module at `path`, or `default`."""
        return self._current.get(path, default)

    def replace(self, path: str, new: nn.Module) -> None:
        """Put `new` wherever the module now at `path` is listed."""
        old = self._current[path]
        paths = self._paths_of.pop(id(old), [path])
        for p in paths:
            self._current[p] = new
            self._changed[p] = None
        self._paths_of.setdefault(id(new), []).extend(paths)

    def replacements(self) -> dict[str, nn.Module]:
        """Every path that now holds a different object, with that object (in order of first change)."""
        return {p: self._current[p] for p in self._changed}
