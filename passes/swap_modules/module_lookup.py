"""What a module's attribute lookup will find, answered without running it where nn.Module's own lookup decides.

Asking a module for a name it lacks runs nn.Module.__getattr__, which builds and raises an AttributeError
(torch's hasattr-style probes catch it: thousands of instructions a call). Where the module's class leaves
the lookup to nn.Module and defines no such name itself, the answer is in the instance dict and the three
tables nn.Module.__getattr__ searches, and can be read there.
"""

from __future__ import annotations

from typing import Any

import torch

def attribute_in_tables(kind: type, name: str) -> bool:
    """Whether a `kind` instance's attribute `name` is what nn.Module.__getattr__ finds in its tables whenever
    its instance dict has none: a module class with nn.Module's attribute lookup and no `name` of its own."""
    return (issubclass(kind, torch.nn.Module) and kind.__getattribute__ is object.__getattribute__
            and kind.__getattr__ is torch.nn.Module.__getattr__ and not hasattr(kind, name))


class ModuleLookup:
    """`attribute_in_tables` remembered per (class, name), for one pass run, and the answers that follow."""

    def __init__(self) -> None:
        self._plain: dict[tuple[type, str], bool] = {}

    def plain(self, kind: type, name: str) -> bool:
        """`attribute_in_tables(kind, name)`, asked once per class and name."""
        known = self._plain.get((kind, name))
        if known is None:
            known = self._plain[(kind, name)] = attribute_in_tables(kind, name)
        return known

    def lacks(self, module: Any, name: str) -> bool:
        """True when `module` certainly has no attribute `name`: its class leaves the lookup to nn.Module and
        neither its instance dict nor its tables hold the name. False means: ask the module."""
        if not self.plain(type(module), name):
            return False
        state = module.__dict__
        return (name not in state and name not in state.get("_parameters", ())
                and name not in state.get("_buffers", ()) and name not in state.get("_modules", ()))

    def parameter(self, module: torch.nn.Module, name: str) -> Any:
        """`getattr(module, name, None)`, read straight from the module's parameters where nn.Module's lookup
        would find it there (skipping that lookup's Python frame)."""
        if self.plain(type(module), name):
            state = module.__dict__
            if name not in state:
                parameters = state.get("_parameters", {})
                if name in parameters:
                    return parameters[name]
        return getattr(module, name, None)
