"""cleanup: what torch's convert does after dead-code elimination.

Drops the observed-graph facts, removes `qconfig` attributes, attached activation observers and observer
hooks from every module the result keeps (unless the caller asked to keep qconfigs), forgets submodules and
attributes the graph no longer uses, and attaches the preserved attributes convert_fx re-attaches.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import torch
from torch.ao.quantization.observer import _is_activation_post_process
from torch.ao.quantization.quantize import _observer_forward_hook, _observer_forward_pre_hook

from qfx.ir.program import OwnModule, Program

from .manager import register
from .support.module_copies import with_instance_dict
from .support.root_attributes import PRESERVED_ATTRS_KEY


def has_own_leftovers(module: torch.nn.Module) -> bool:
    """Whether `module` itself (not counting its children) carries a qconfig, an attached observer or an
    observer hook."""
    return _state_has_leftovers(module.__dict__)


def _state_has_leftovers(state: dict[str, Any]) -> bool:
    # (read from the instance's own tables: Module.__getattr__ would raise and catch for every module)
    if "qconfig" in state or _attached_observer(state) is not None:
        return True
    hooks, pre_hooks = state["_forward_hooks"], state["_forward_pre_hooks"]
    return bool(hooks and any(h is _observer_forward_hook for h in hooks.values())
                or pre_hooks and any(h is _observer_forward_pre_hook for h in pre_hooks.values()))


def _attached_observer(state: dict[str, Any]) -> Any:
    """The activation observer a module with instance dict `state` holds as child or plain attribute."""
    observer = state["_modules"].get("activation_post_process", state.get("activation_post_process"))
    return observer if observer is not None and _is_activation_post_process(observer) else None


def without_quantization_leftovers(module: torch.nn.Module, memo: dict[int, torch.nn.Module]) -> torch.nn.Module:
    """A copy of `module` (sharing its tensors) with torch's `_remove_qconfig` applied to it and its
    descendants; `module` itself is untouched. A module without leftovers in it or below it is returned as
    it is (so each module of a tree is looked at once, whatever its depth)."""
    key = id(module)
    known = memo.get(key)
    if known is not None:
        return known
    own = module.__dict__
    kids = own["_modules"]
    children = None  # a new child table, made only when some child changes
    if kids:
        for name, child in kids.items():
            if child is None:
                continue
            clean_child = without_quantization_leftovers(child, memo)
            if clean_child is not child:
                if children is None:
                    children = dict(kids)
                children[name] = clean_child
    if children is None and not _state_has_leftovers(own):
        memo[key] = module
        return module
    state = own.copy()  # (with tables of its own where it changes them)
    state["_modules"] = children if children is not None else dict(kids)
    state["_forward_hooks"] = _without(own["_forward_hooks"], _observer_forward_hook)
    state["_forward_pre_hooks"] = _without(own["_forward_pre_hooks"], _observer_forward_pre_hook)
    state.pop("qconfig", None)
    clean = with_instance_dict(type(module), state)
    if _attached_observer(state) is not None:
        delattr(clean, "activation_post_process")
    memo[key] = clean
    return clean


def _without(hooks: dict, hook: Any) -> dict:
    """A new hook table of `hooks`' type holding its entries except `hook`."""
    if not hooks:  # the common case, without a generator
        return type(hooks)()
    return type(hooks)((k, h) for k, h in hooks.items() if h is not hook)


@register("cleanup")
def cleanup(program: Program) -> Program:
    """Finish a converted program as torch does after its convert loop.

    Guarantees: `quant` is None; the module and attribute tables hold only what the graph's targets reach;
    with `options.remove_qconfig`, no kept module carries a qconfig or observer leftovers; the root meta
    holds only the preserved attributes (when convert_fx-style preservation was asked for)."""
    target_set = {n.target for n in program.graph.nodes if n.op in ("call_module", "get_attr")}
    memo: dict[int, torch.nn.Module] = {}
    if program.options.remove_qconfig:
        modules = _kept_without_leftovers(program.modules, target_set, memo)
    else:
        under_target = _Descendants({t for t in target_set if t in program.modules}).holds
        modules = {path: module for path, module in program.modules.items()
                   if path in target_set or under_target(path)}
    attributes = {k: v for k, v in program.attributes.items() if k in target_set}
    meta: dict[str, Any] = {}
    if program.options.preserved_attributes is not None:
        meta[PRESERVED_ATTRS_KEY] = {name: _preserved_value(program, value, memo)
                                     for name, value in program.options.preserved_attributes.items()}
    # (the hooks and plain attributes that weight folding set on the root stay)
    root = attrs.evolve(program.root, class_name="GraphModule", meta=meta)
    return program.evolve(modules=modules, attributes=attributes, root=root, quant=None)


def _preserved_value(program: Program, value: Any, memo: dict[int, torch.nn.Module]) -> Any:
    """What a preserved attribute re-attaches: an observed submodule without its leftovers, as torch's
    convert leaves it (the same object as the table's where the table holds it: `memo` is the table's)."""
    if not isinstance(value, OwnModule):
        return value
    if value.in_model and program.options.remove_qconfig:
        return without_quantization_leftovers(value.module, memo)
    return value.module


class _Descendants:
    """Whether a path is a strict descendant of one of `roots`; each ancestor's answer is kept, so a table
    of every module of a deeply nested model is answered in time linear in its size."""

    def __init__(self, roots: set[str]) -> None:
        self._roots = roots
        self._below: dict[str, bool] = {}  # path -> whether it is one of the roots or below one

    def holds(self, path: str) -> bool:
        """Whether `path` lies strictly below one of the roots."""
        end = path.rfind(".")
        if end <= 0:
            return False
        parent = path[:end]
        below = self._below.get(parent)
        if below is None:
            below = self._below[parent] = parent in self._roots or self.holds(parent)
        return below


def _kept_without_leftovers(table: Mapping[str, torch.nn.Module], targets: set[str],
                            memo: dict[int, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """The entries of module table `table` that `targets` reach (a target or below a module target), in
    the table's order, each without its quantization leftovers (copies made through `memo`).

    An entry that lies in the tree of another kept entry is the object that entry's cleaned tree holds at
    its path (found from its nearest kept ancestor entry); one that tree does not reach is cleaned on its
    own. Shorter paths first: an ancestor's path is a prefix of its descendants', so every ancestor is
    settled before them, and an entry whose parent is kept needs neither the reach test nor a cleaning of
    its own (its parent's cleaning made it)."""
    under_target = _Descendants({t for t in targets if t in table}).holds
    kept: dict[str, torch.nn.Module] = {}
    for path in sorted(table, key=len):
        parent_path, dot, name = path.rpartition(".")
        parent = kept.get(parent_path)
        if parent is not None:  # the usual case: below a kept entry
            child = parent._modules.get(name)
            kept[path] = child if child is not None else without_quantization_leftovers(table[path], memo)
        elif path in targets or dot and under_target(path):
            held = _held_below_kept_ancestor(path, kept) if parent_path not in table else None
            kept[path] = held if held is not None else without_quantization_leftovers(table[path], memo)
    return {path: kept[path] for path in table if path in kept}


def _held_below_kept_ancestor(path: str, kept: dict[str, torch.nn.Module]) -> torch.nn.Module | None:
    """The module the nearest entry of `kept` above `path` holds at `path` in its tree, if any."""
    end = path.rfind(".")
    while end > 0 and path[:end] not in kept:
        end = path.rfind(".", 0, end)
    if end <= 0:
        return None
    module: torch.nn.Module | None = kept[path[:end]]
    for name in path[end + 1:].split("."):
        module = module._modules.get(name)
        if module is None:
            return None
    return module
