"""New root attributes (scale and zero-point constants), named the way torch's convert names them."""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule

import warnings

from qfx.ir.errors import ConvertAssertionError
from qfx.ir.frozendict import FrozenDict
from qfx.ir.program import Program
from qfx.ir.validate import table_devices

PRESERVED_ATTRS_KEY = "_user_preserved_attributes"
_INSTANCE_ATTRIBUTES = frozenset({"training", "meta", "graph", "code"})


class AttributeAllocator:
    """Allocates root attribute names `<prefix><n>` with the first n not already an attribute of the root
    module torch would be editing, and collects their values."""

    def __init__(self, program: Program) -> None:
        self._attributes = program.attributes
        self._new: dict[str, torch.Tensor] = {}
        taken = {name.split(".", 1)[0] for name in program.modules}
        taken.update(name.split(".", 1)[0] for name in program.attributes)
        taken.update((program.root.meta.get(PRESERVED_ATTRS_KEY) or {}).keys())
        # Names torch's setattr on the root would not register as new attributes: GraphModule's own.
        taken.update(_INSTANCE_ATTRIBUTES, _graph_module_attributes())
        self._taken = taken
        # prefix -> an index below which every name is known to be taken (names are never freed).
        self._first_free: dict[str, int] = {}

    def new(self, prefix: str, value: Any, device: Any) -> str:
        """Register `value` (a tensor is detached and cloned; a number becomes a tensor on `device`) under a
        fresh name `prefix<n>` (dots in the prefix become underscores); return the name."""
        return self.new_object(prefix, _as_tensor(value, device))

    def new_object(self, prefix: str, value: Any) -> str:
        """Register `value` itself (any object, e.g. a packed-weight ScriptObject) under a fresh name
        `prefix<n>` (dots in the prefix become underscores); return the name."""
        prefix = prefix.replace(".", "_")
        i = self._first_free.get(prefix, 0)
        name = f"{prefix}{i}"
        while name in self._taken:
            i += 1
            name = f"{prefix}{i}"
        self._first_free[prefix] = i + 1
        self._new[name] = value
        self._taken.add(name)
        return name

    def table(self) -> FrozenDict:
        """The program's attribute table with the new attributes added."""
        if not self._new:
            return self._attributes
        return FrozenDict({**self._attributes, **self._new})


def _graph_module_attributes() -> frozenset[str]:
    """The names `hasattr(GraphModule, name)` accepts, as of now: those of the class and its bases and those
    of its metaclass (dir() lists the metaclass's `__abstractmethods__`, which only some classes have)."""
    candidates = set(dir(GraphModule)) | set(dir(type(GraphModule)))
    return frozenset(name for name in candidates if hasattr(GraphModule, name))


def _as_tensor(value: Any, device: Any) -> torch.Tensor:
    """What `torch.tensor(value, device=device)` gives (a detached clone for a tensor). Python floats and
    ints, the common case, take the cheaper scalar constructor with the dtype torch.tensor would infer."""
    kind = type(value)
    if kind is float or kind is int:
        try:
            dtype = torch.get_default_dtype() if kind is float else torch.int64
            return torch.scalar_tensor(value, dtype=dtype, device=device)
        except RuntimeError:  # out of the dtype's range: torch.tensor has its own rules (inf, or its error)
            pass
    elif isinstance(value, torch.Tensor):
        return value.detach().clone()
    return torch.tensor(value, device=device)


def unique_device(program: Program) -> torch.device | None:
    """The one device all parameters and buffers of the model live on (None if it has none)."""
    devices = set(table_devices(program.modules, program.attributes))
    if devices == {torch.device("cpu"), torch.device("meta")}:
        warnings.warn(
            "Both 'meta' and 'cpu' are present in the list of devices. Module can have one device. We Select 'cpu'.",
            stacklevel=2,
        )
        devices = {torch.device("cpu")}
    if len(devices) > 1:
        # torch's text and type (AssertionError); move the model to one device before converting.
        raise ConvertAssertionError(
            f"prepare only works with cpu or single-device CUDA modules, but got devices {devices}"
        )
    return next(iter(devices)) if devices else None
