"""The GraphModule around a built FX graph: the module tree and attributes torch's GraphModule(root, graph)
would lay out, and the forward compiled from our own Python source.

`GraphModule(root, graph)` copies each get_attr/call_module target from `root` into a new module tree, in
graph order, creating empty parent modules on the way (torch.fx.graph_module._copy_attr); that order is
the order of the module tree and of the state_dict. `graph_module` gives the same tree: it installs the
targets into the new GraphModule's tables directly where that is plainly what `_copy_attr` would do, and
hands any other target to `_copy_attr` itself (through a view of the table that looks like a root module).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import torch
from torch.fx import GraphModule
from torch.fx.graph import CodeGen, PythonCode
from torch.fx.graph_module import _copy_attr

from qfx.ir.program import Program
from qfx.passes.support.constructor_layouts import layout_of, registration_hooks, replay

from .pysource import python_code, serving


class _TableView(torch.nn.Module):
    """A stand-in root whose attribute paths resolve through a flat {qualified name: object} table.

    GraphModule(root, graph) copies exactly the graph's targets from `root`, creating empty parent modules
    on the way, in graph order; presenting the table this way makes it lay out the module tree and the
    state_dict the way torch lays out the module it builds from a mutated model.
    """

    def __init__(self, table: dict[str, Any], views: dict[str, "_TableView"], prefix: str, training: bool) -> None:
        super().__init__()
        self.training = training
        self.__dict__["_qfx_table"] = table
        self.__dict__["_qfx_views"] = views  # one view per intermediate path, shared by all views
        self.__dict__["_qfx_prefix"] = prefix

    def __getattr__(self, item: str) -> Any:
        d = self.__dict__
        key = d["_qfx_prefix"] + item
        if key in d["_qfx_table"]:
            return d["_qfx_table"][key]
        views = d["_qfx_views"]
        if key in views:
            view = views[key]
            if view is None:
                view = views[key] = _TableView(d["_qfx_table"], views, key + ".", self.training)
            return view
        raise AttributeError(f"no attribute '{key}' in the program's tables")


def _table_root(table: dict[str, Any], training: bool) -> _TableView:
    """The view of `table` ({qualified name: object}) as a root module with the given training flag."""
    views: dict[str, Any] = dict.fromkeys(
        ".".join(parts[:i]) for t in table for parts in [t.split(".")] for i in range(1, len(parts))
    )
    return _TableView(table, views, "", training)


def graph_module(program: Program, graph: torch.fx.Graph, table: dict[str, Any]) -> GraphModule:
    """A new GraphModule of `graph` (built from `program`, which must own no other module), whose tree
    holds `table` ({get_attr/call_module target: object}, in graph order) exactly as
    GraphModule(root, graph) would lay it out. The objects are shared, not copied."""
    code = python_code(program)  # GraphModule's recompile asks the graph for its code: ours is the same
    if not _direct_install_possible(program):
        gm = GraphModule.__new__(GraphModule)
        with serving(graph, code), _recompiled_alone(gm):
            GraphModule.__init__(gm, _table_root(table, program.root.training), graph,
                                 class_name=program.root.class_name)
        return gm
    # An empty graph with the same tracer facts: GraphModule() records those and compiles a `pass` body
    # (whose code FX generates once per process: it is replaced below).
    empty = torch.fx.Graph(tracer_cls=graph._tracer_cls, tracer_extras=graph._tracer_extras)
    root = torch.nn.Module()
    root.training = program.root.training
    with serving(empty, None if code is None else _empty_graph_code()):
        gm = GraphModule(root, empty, class_name=program.root.class_name)
    on_class = _ClassAttributes()
    new_parent = _empty_modules()
    source: _TableView | None = None  # (made for the first target `_install` leaves to `_copy_attr`)
    for target in table:
        if not _install(gm, target, table, on_class, new_parent):
            if source is None:
                source = _table_root(table, program.root.training)
            _copy_attr(source, gm, target)
    with serving(graph, code), _recompiled_alone(gm):
        gm.graph = graph
    return gm


@functools.cache
def _empty_graph_code() -> PythonCode:
    """The code FX generates for an empty graph with the default CodeGen, as GraphModule's recompile asks
    for it (the same for every such graph while FX's options are the defaults, which they are wherever
    `python_code` emits a program's code; recompile copies the globals before it runs the code)."""
    return torch.fx.Graph().python_code(root_module="self")


@contextlib.contextmanager
def _recompiled_alone(gm: GraphModule) -> Iterator[None]:
    """While active, recompiling `gm` leaves its GraphModule children alone. GraphModule.recompile also
    recompiles every GraphModule child; a child here is either one codegen built and compiled already, or a
    module shared with the observed model, whose forward and code must stay as they are. (Every
    GraphModule has a class of its own, made by GraphModule.__new__: the override is `gm`'s only.)"""
    own_class = type(gm)
    own_class._recompile_submodules = _no_submodules
    try:
        yield
    finally:
        del own_class._recompile_submodules


def _no_submodules(self: GraphModule) -> list:
    return []


def _direct_install_possible(program: Program) -> bool:
    """Installing into the tables skips Module.__setattr__'s registration hooks, and the empty graph's
    code must compile with the default CodeGen: only without global hooks and with a plain CodeGen."""
    codegen = program.root.codegen
    if codegen is not None and type(codegen) is not CodeGen:
        return False
    return not registration_hooks()


class _ClassAttributes:
    """`hasattr(kind, name)` for module classes, answered from the names their classes and metaclasses
    define, collected once per class for one GraphModule's build (the targets are mostly distinct names,
    each of which hasattr would look up along the whole MRO and fail)."""

    def __init__(self) -> None:
        self._names: dict[type, frozenset[str] | None] = {}

    def holds(self, kind: type, name: str) -> bool:
        names = self._names.get(kind, ())
        if names == ():
            names = self._names[kind] = _defined_names(kind)
        return hasattr(kind, name) if names is None else name in names


def _defined_names(kind: type) -> frozenset[str] | None:
    """Every name `kind` and its metaclass define along their MROs; None when a metaclass answers attribute
    lookups itself (its __getattr__), so that only hasattr can tell."""
    meta = type(kind)
    if any("__getattr__" in vars(m) for m in meta.__mro__):
        return None
    return frozenset().union(*(vars(c) for c in kind.__mro__), *(vars(m) for m in meta.__mro__))


def _free(module: torch.nn.Module, name: str, on_class: _ClassAttributes) -> bool:
    """Whether `name` is unused on `module` in every place attribute lookup and Module.__setattr__ look
    (`on_class` knows what the classes hold, for this GraphModule's build)."""
    state = module.__dict__
    if (name in state or name in state["_parameters"] or name in state["_buffers"]
            or name in state["_modules"]):
        return False
    return not on_class.holds(type(module), name)


def _empty_modules() -> Callable[[], torch.nn.Module]:
    """A maker of empty modules equal to `torch.nn.Module()` (the parents `_copy_attr` creates), filled from
    the instance dict of one such module instead of running its constructor each time (a deeply nested
    model has a parent per level of every path)."""
    layout = layout_of(torch.nn.Module().__dict__)
    if layout is None:
        return torch.nn.Module

    def make() -> torch.nn.Module:
        module = torch.nn.Module.__new__(torch.nn.Module)
        replay(layout, module.__dict__)
        return module

    return make


def _install(gm: GraphModule, target: str, table: dict[str, Any], on_class: _ClassAttributes,
             new_parent: Callable[[], torch.nn.Module]) -> bool:
    """Do what `_copy_attr(root, gm, target)` does when that is plainly putting entries into module tables;
    False (having changed nothing) when `target` needs `_copy_attr` itself."""
    *prefix, field = target.split(".")
    to_module: torch.nn.Module = gm
    path = ""
    created: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for item in prefix:
        path = f"{path}.{item}" if path else item
        existing = to_module._modules.get(item)
        if existing is not None:
            if existing is table.get(path):
                return True  # the whole parent was installed already, and with it this target
            to_module = existing
            continue
        if not _free(to_module, item, on_class):
            return False
        parent = new_parent()
        created.append((to_module, item, parent))
        to_module = parent
    value = table[target]
    if isinstance(value, torch.Tensor):
        # (what isinstance(value, Parameter) answers for a plain tensor, without the Python __instancecheck__
        # of Parameter's metaclass: most targets are such tensors, the qparams the passes add)
        is_parameter = (bool(getattr(value, "_is_param", False)) if type(value) is torch.Tensor
                        else isinstance(value, torch.nn.Parameter))
        if not _free(to_module, field, on_class) or (is_parameter and value.grad_fn is not None):
            return False
        slot = to_module._parameters if is_parameter else to_module._buffers
    elif isinstance(value, torch.nn.Module):
        if not _free(to_module, field, on_class):
            return False
        slot = to_module._modules
    else:
        return False
    for parent, item, child in created:
        parent._modules[item] = child
    slot[field] = value
    return True
