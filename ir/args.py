"""Immutable node arguments: FX args with nodes replaced by name references.

FX argument trees hold tuples, lists, dicts, slices and leaves (literals, dtypes, devices, ...).
We keep plain tuples and leaves as they are, and wrap the mutable containers in frozen values so a
whole argument tree can be shared between program versions and compared structurally.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator

import attrs


@attrs.frozen(slots=True, init=False)
class Ref:
    """A reference to the node called `name` in the same graph."""

    name: str

    def __init__(self, name: str) -> None:
        _set_ref_name(self, name)  # the slot's own setter: cheaper than attrs' frozen-attribute call

    def __repr__(self) -> str:
        return f"%{self.name}"


_set_ref_name = Ref.__dict__["name"].__set__


@attrs.frozen(slots=True)
class ListArg:
    """An FX list argument (FX stores lists as immutable_list; both print as lists)."""

    items: tuple


@attrs.frozen(slots=True)
class DictArg:
    """An FX dict argument, as ordered key/value pairs."""

    items: tuple  # tuple[tuple[Any, Any], ...]


@attrs.frozen(slots=True)
class TupleArg:
    """A tuple subclass argument (namedtuple, torch.Size); plain tuples stay tuples."""

    kind: type
    items: tuple


@attrs.frozen(slots=True)
class SliceArg:
    """A slice argument whose bounds may reference nodes."""

    start: Any
    stop: Any
    step: Any


Arg = Any


def freeze(value: Any, node_name: Callable[[Any], str | None]) -> Arg:
    """Return the immutable form of an FX argument; `node_name(x)` names x if x is an FX node."""
    kind = type(value)
    if kind is tuple:  # (never a node: asked first, as node arguments are tuples)
        return tuple([v if type(v) in _LEAVES else freeze(v, node_name) for v in value])
    name = node_name(value)
    if name is not None:
        return Ref(name)
    if isinstance(value, list):
        return ListArg(tuple([freeze(v, node_name) for v in value]))
    if isinstance(value, dict):
        return DictArg(tuple([(k, freeze(v, node_name)) for k, v in value.items()]))
    if isinstance(value, tuple):
        return TupleArg(kind, tuple([freeze(v, node_name) for v in value]))
    if kind is slice:
        return SliceArg(freeze(value.start, node_name), freeze(value.stop, node_name), freeze(value.step, node_name))
    return value


def thaw(value: Arg, resolve: Callable[[str], Any]) -> Any:
    """Inverse of `freeze`: rebuild the FX argument, resolving each Ref through `resolve`."""
    kind = type(value)
    if kind is Ref:
        return resolve(value.name)
    if kind is tuple:
        return tuple([resolve(v.name) if (item := type(v)) is Ref else thaw(v, resolve) if item in CONTAINER_KINDS
                      else v for v in value])
    if kind is ListArg:
        return [thaw(v, resolve) for v in value.items]
    if kind is DictArg:
        return {k: thaw(v, resolve) for k, v in value.items}
    if kind is TupleArg:
        items = [thaw(v, resolve) for v in value.items]
        if hasattr(value.kind, "_fields"):  # namedtuple
            return value.kind(*items)
        return value.kind(items)
    if kind is SliceArg:
        return slice(thaw(value.start, resolve), thaw(value.stop, resolve), thaw(value.step, resolve))
    return value


def refs(value: Arg) -> Iterator[str]:
    """Yield the node names referenced anywhere in an argument tree, in order."""
    return iter(ref_names(value))


def ref_names(value: Arg, out: list[str] | None = None) -> list[str]:
    """The node names referenced anywhere in an argument tree, in order, appended to `out` (or a new list)."""
    if out is None:
        out = []
    kind = type(value)
    if kind is Ref:
        out.append(value.name)
    elif kind is tuple or kind is ListArg or kind is TupleArg:
        for v in value if kind is tuple else value.items:
            # (references and leaves handled here: most items are one of the two)
            item = type(v)
            if item is Ref:
                out.append(v.name)
            elif item in CONTAINER_KINDS:
                ref_names(v, out)
    elif kind is DictArg:
        for _, v in value.items:
            ref_names(v, out)
    elif kind is SliceArg:
        ref_names(value.start, out)
        ref_names(value.stop, out)
        ref_names(value.step, out)
    return out


def map_refs(value: Arg, fn: Callable[[Ref], Arg]) -> Arg:
    """Return `value` with every Ref r replaced by fn(r); unchanged subtrees are shared."""
    kind = type(value)
    if kind is Ref:
        return fn(value)
    if kind is tuple:
        return _map_items(value, fn)
    if kind is ListArg:
        return ListArg(_map_items(value.items, fn))
    if kind is TupleArg:
        return TupleArg(value.kind, _map_items(value.items, fn))
    if kind is DictArg:
        return DictArg(tuple([(k, map_refs(v, fn)) for k, v in value.items]))
    if kind is SliceArg:
        return SliceArg(map_refs(value.start, fn), map_refs(value.stop, fn), map_refs(value.step, fn))
    return value


def _map_items(items: tuple, fn: Callable[[Ref], Arg]) -> tuple:
    # (leaves are kept as they are without a call: most items are references or leaves)
    return tuple([map_refs(v, fn) if type(v) in _MAY_HOLD_REFS else v for v in items])


# The argument types that may hold references, and those plus Ref itself (every other value is a leaf).
CONTAINER_KINDS = frozenset({tuple, ListArg, TupleArg, DictArg, SliceArg})
_MAY_HOLD_REFS = CONTAINER_KINDS | {Ref}
# Plain values FX arguments often hold, which freeze keeps as they are.
_LEAVES = frozenset({int, float, bool, str, type(None)})


def render(value: Arg) -> str:
    """A deterministic, readable text form of an argument tree (used by the printer)."""
    kind = type(value)
    if kind is Ref:
        return f"%{value.name}"
    if kind is tuple:
        inner = ", ".join(render(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if kind is ListArg:
        return "[" + ", ".join(render(v) for v in value.items) + "]"
    if kind is TupleArg:
        return f"{value.kind.__name__}(" + ", ".join(render(v) for v in value.items) + ")"
    if kind is DictArg:
        return "{" + ", ".join(f"{k!r}: {render(v)}" for k, v in value.items) + "}"
    if kind is SliceArg:
        return f"slice({render(value.start)}, {render(value.stop)}, {render(value.step)})"
    if value is Ellipsis:
        return "..."
    return render_leaf(value)


def render_leaf(value: Any) -> str:
    """Text for a leaf argument or target: stable across runs (no object addresses)."""
    import torch

    if callable(value) and not isinstance(value, type):
        return qualified_name(value)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, torch.ScriptObject):  # packed weights and other torch classes
        return f"ScriptObject({value._type().qualified_name()})"
    return _ADDRESS.sub("", repr(value))  # (a default repr names the object's address)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def qualified_name(fn: Any) -> str:
    """A stable dotted name for a callable target."""
    import torch

    if isinstance(fn, torch._ops.OpOverload):
        return f"torch.ops.{fn.namespace}.{fn._schema.name.split('::')[-1]}.{fn._overloadname}"
    if isinstance(fn, torch._ops.OpOverloadPacket):
        return f"torch.ops.{fn._qualified_op_name.replace('::', '.')}"
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    if module in ("_operator", "builtins"):
        module = "operator" if module == "_operator" else ""
    if module.startswith("torch._C._nn"):
        module = "torch._C._nn"
    if module == "torch" and name.startswith("_VariableFunctionsClass."):  # torch.relu, torch.cat, ...
        name = name[len("_VariableFunctionsClass."):]
    return f"{module}.{name}" if module else name
