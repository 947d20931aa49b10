"""Module objects made from another module's instance dict, for code that would otherwise change it."""

from __future__ import annotations

from typing import Any, Mapping

import torch


def with_instance_dict(kind: type, state: dict[str, Any]) -> torch.nn.Module:
    """A new, unconstructed object of module class `kind` whose instance dict is `state` itself (a
    `dict.copy()` of another module's keeps that dict's shared-key layout: far cheaper than filling a new
    object's dict key by key)."""
    made = object.__new__(kind)
    object.__setattr__(made, "__dict__", state)  # (nn.Module.__setattr__ would file it as an attribute)
    return made


def standin(module: torch.nn.Module, **attributes: Any) -> torch.nn.Module:
    """A new object of `module`'s class whose instance dict holds `module`'s entries (its tables shared, to be
    only read) with `attributes` in place of its own: what a constructor-calling method is run on instead of
    `module`, or what is changed instead of it once given tables of its own."""
    kind = type(module)
    made = kind.__new__(kind)
    made.__dict__.update(module.__dict__)
    made.__dict__.update(attributes)
    return made


def as_converted_in_place(path: str, module: torch.nn.Module, table: Mapping[str, Any]) -> torch.nn.Module | None:
    """`module`, the observed model's module at `path`, as torch's in-place convert leaves it, given the
    module table after the swaps: None when torch replaces the module itself (a table entry of another
    class at `path`: it then leaves the old object as it is, out of the model); the table's entry when it
    is of the same class (qfx's copy of a module torch changes in place); else `module`, or a copy of it
    (from `standin`) whose children are theirs as converted (torch sets a swapped child on its parent)."""
    replaced = table.get(path, module)
    if replaced is not module:
        return replaced if type(replaced) is type(module) else None
    return _children_as_converted(path, module, table)


def _children_as_converted(path: str, module: torch.nn.Module, table: Mapping[str, Any]) -> torch.nn.Module:
    children: dict[str, Any] = {}
    changed = False
    for name, child in module._modules.items():
        sub = f"{path}.{name}"
        new = table.get(sub, child)
        if new is child and child is not None:
            new = _children_as_converted(sub, child, table)
        children[name] = new
        changed = changed or new is not child
    return standin(module, _modules=children) if changed else module
