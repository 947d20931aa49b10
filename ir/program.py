"""The Program: one immutable value holding everything convert reads and writes."""

from __future__ import annotations

import enum
import functools
from typing import Any, Iterable

import attrs
import torch
from torch.ao.quantization.backend_config import BackendConfig, get_native_backend_config

from .errors import QfxError
from .frozendict import FrozenDict, frozen_dict, frozen_dict_or_none
from .graph import Graph, Node
from .namespace import Namespace
from .users_order import UsersOrder


def _by_identity(table: FrozenDict) -> frozenset:
    # Tables hold modules and tensors, which have no useful `==`; two tables are equal when they hold
    # the same objects under the same names.
    return frozenset((k, id(v)) for k, v in table.items())


@attrs.frozen(slots=True)
class CallingConvention:
    """How a swapped module is called once converted (recorded by swap-modules, applied by insert-qdq).

    `quantized_args` lists argument positions (paths into nested args, e.g. ``(1, 0)`` for ``h`` in
    ``lstm(x, (h, c))``) that the converted module takes quantized: a `dequantize` feeding such a position
    is bypassed. `output` says how its result is made float again: ``"dequantize"`` inserts a dequantize
    right after the call (standalone modules); ``"observer"`` turns any observer that reads the call into a
    dequantize (every statically quantized custom module, LSTM and MultiheadAttention included);
    ``"float"`` changes nothing.
    """

    quantized_args: tuple = ()
    output: str = "float"


class Absent(enum.Enum):
    """A field of prepare's record that the record does not have (torch reads `qconfig_mapping` and
    `is_qat` only when convert is given a qconfig mapping, so a record without them converts otherwise)."""

    FIELD = "absent"

    def __repr__(self) -> str:
        return "<absent>"


@attrs.frozen(slots=True)
class QuantFacts:
    """What prepare_fx recorded for convert (ObservedGraphModuleAttrs), as immutable values.

    Node names key every table. `prepare_custom_config`, `qconfig_mapping` and the qconfigs are torch
    objects that qfx only reads. `qconfig_mapping` and `is_qat` are Absent.FIELD when the record lacks them.
    """

    node_name_to_qconfig: FrozenDict = attrs.field(converter=frozen_dict)
    node_name_to_scope: FrozenDict = attrs.field(converter=frozen_dict)
    prepare_custom_config: Any
    equalization_node_name_to_qconfig: FrozenDict | None = attrs.field(converter=frozen_dict_or_none)
    qconfig_mapping: Any
    is_qat: bool | Absent
    observed_node_names: frozenset = attrs.field(converter=frozenset)
    is_observed_standalone_module: bool = False
    standalone_module_input_quantized_idxs: tuple | None = None
    standalone_module_output_quantized_idxs: tuple | None = None
    # node name -> CallingConvention, for call_module nodes whose converted module takes or returns
    # quantized tensors (written by swap-modules, read by insert-qdq).
    calling_conventions: FrozenDict = attrs.field(factory=FrozenDict, converter=frozen_dict)
    # The one device of the model's parameters and buffers (None: it has none) as convert found it, which
    # torch works out once, before converting anything: written by swap-modules, read by insert-qdq (which
    # works it out itself while it is Absent.FIELD).
    model_device: Any = Absent.FIELD

    def qconfig_of(self, name: str, default: Any = None) -> Any:
        """The qconfig prepare assigned to node `name` (`default` when it assigned none)."""
        return self.node_name_to_qconfig.get(name, default)

    def has_none_qconfig(self, name: str) -> bool:
        """True when the user asked for node `name` not to be quantized (its qconfig is None)."""
        return name in self.node_name_to_qconfig and self.node_name_to_qconfig[name] is None


@functools.cache
def native_backend_config() -> BackendConfig:
    """torch's get_native_backend_config(), the backend config of every convert not given one, built once
    per process (building it takes about 0.5 ms). Every such convert shares it: like everything a Program
    holds, it must not be changed."""
    return get_native_backend_config()


class Preserved(enum.Enum):
    """A preserved attribute's value that only exists once the converted model does."""

    # The observed model's own Graph object: torch's convert rewrites that graph in place, so the
    # attribute it re-attaches is the converted model's graph.
    OWN_GRAPH = "the converted model's own graph"


@attrs.frozen(slots=True, eq=False)
class OwnModule:
    """A preserved attribute that is the observed model's own child module `path`. torch's convert rewrites
    that module in place and re-attaches it: `module` is the observed module until swap-modules makes it
    the module as that convert leaves it; cleanup then removes its quantization leftovers, unless torch
    replaced the module itself (`in_model` False: torch leaves the old object as it is)."""

    path: str
    module: Any
    in_model: bool = True


@attrs.frozen(slots=True)
class ConvertOptions:
    """The arguments of convert that passes read (torch's `convert` signature)."""

    is_reference: bool = True
    is_decomposed: bool = False
    is_standalone_module: bool = False
    remove_qconfig: bool = True
    keep_original_weights: bool = False
    backend_config: Any = None
    convert_custom_config: Any = None
    qconfig_mapping: Any = None
    # Attributes convert_fx re-attaches to the result (name -> value, read from the observed model; a
    # `Preserved` member for a value codegen supplies).
    preserved_attributes: FrozenDict | None = attrs.field(default=None, converter=frozen_dict_or_none)


@attrs.frozen(slots=True, eq=False)
class RootInfo:
    """Facts about the root GraphModule that codegen needs to rebuild it."""

    class_name: str = "GraphModule"
    training: bool = False
    codegen: Any = None
    tracer_cls: Any = None
    tracer_extras: FrozenDict = attrs.field(factory=FrozenDict, converter=frozen_dict)
    meta: FrozenDict = attrs.field(factory=FrozenDict, converter=frozen_dict)
    # Hooks registered on the root once it is built: state_dict hooks (Module._register_state_dict_hook)
    # and load_state_dict pre-hooks (Module.register_load_state_dict_pre_hook), in registration order.
    state_dict_hooks: tuple = ()
    load_state_dict_pre_hooks: tuple = ()
    # Plain attributes set on the root (setattr) that no node reads, name -> value, in setting order.
    # codegen gives each built module its own shallow copy of a dict or list value.
    plain_attributes: FrozenDict = attrs.field(factory=FrozenDict, converter=frozen_dict)


@attrs.frozen(slots=False, hash=False, repr=False)
class Program:
    """A graph with its submodule table, constants, name state, quantization facts and options.

    `modules` maps every qualified submodule name (as `named_modules(remove_duplicate=False)` lists them,
    root excluded) to its module; `attributes` maps each non-module `get_attr` target to its value.
    Values in both tables are never mutated by qfx; a pass that needs a different one stores a new object.
    """

    # Equal programs must hash equally, and their tables are dicts: programs are not hashable.
    __hash__ = None  # type: ignore[assignment]

    graph: Graph
    modules: FrozenDict = attrs.field(factory=FrozenDict, converter=frozen_dict, eq=_by_identity)
    attributes: FrozenDict = attrs.field(factory=FrozenDict, converter=frozen_dict, eq=_by_identity)
    namespace: Namespace = attrs.field(factory=Namespace)
    root: RootInfo = attrs.field(factory=RootInfo, eq=False)
    quant: QuantFacts | None = None
    options: ConvertOptions = attrs.field(factory=ConvertOptions)
    # For nodes whose users FX lists in another order than their execution order: node name -> users in
    # FX's order (names that no longer read the node are skipped by readers; see ir/users_order.py).
    users_order: FrozenDict = attrs.field(factory=FrozenDict, converter=frozen_dict)

    def evolve(self, **changes: Any) -> "Program":
        """A copy with the given fields changed."""
        return attrs.evolve(self, **changes)

    def with_nodes(self, nodes: Iterable[Node], namespace: Namespace | None = None) -> "Program":
        """A copy whose graph holds `nodes` (and whose name state is `namespace`, if given)."""
        return attrs.evolve(self, graph=Graph(nodes), namespace=namespace or self.namespace)

    def module(self, target: str) -> Any:
        """The submodule at qualified name `target`."""
        return self.modules[target]

    def with_modules(self, replacements: dict[str, Any]) -> "Program":
        """A copy where each path in `replacements` holds the new module; the old module's descendants
        leave the table and the new module's descendants enter it."""
        if not replacements:
            return self
        for path, new in replacements.items():
            if not isinstance(new, torch.nn.Module):
                raise QfxError(f"with_modules: '{path}' must be given a torch.nn.Module, got {type(new).__name__}")
        table = dict(self.modules)
        for path, new in replacements.items():
            old = self.modules.get(path)
            if old is not None:
                for sub, _ in _descendants(old):
                    key = f"{path}.{sub}"
                    if key in table:
                        del table[key]
            table[path] = new
            for sub, child in _descendants(new):
                table[f"{path}.{sub}"] = child
        return attrs.evolve(self, modules=FrozenDict(table))

    def without_modules(self, paths: Iterable[str]) -> "Program":
        """A copy without the given submodules (and their descendants); `paths` may be one path."""
        paths = {paths} if isinstance(paths, str) else set(paths)
        if not paths:
            return self
        keep = {k: v for k, v in self.modules.items()
                if not any(k == p or k.startswith(p + ".") for p in paths)}
        return attrs.evolve(self, modules=FrozenDict(keep))

    def fx_users(self, name: str) -> list[str]:
        """The users of node `name` in the order FX's `node.users` lists them on the lifted graph (see
        ir/users_order.py: readers that no longer read it are left out, new ones follow in execution
        order)."""
        return UsersOrder(self.graph, self.users_order).users(name)

    def resolve(self, target: str) -> Any:
        """The object a get_attr or call_module `target` names."""
        if target in self.modules:
            return self.modules[target]
        return self.attributes[target]

    def __repr__(self) -> str:
        return f"Program({len(self.graph)} nodes, {len(self.modules)} modules, {len(self.attributes)} attributes)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # IPython's and hypothesis's pretty printers show attrs classes field by field: a falsifying Program
        # would print its whole graph and tables (hundreds of kB). qfx.ir.printer prints the IR on request.
        printer.text(repr(self))


def _descendants(module: Any) -> list[tuple[str, Any]]:
    """`submodule_table(module)`'s entries. A module with nn.Module's named_modules and no children (what
    most swaps put in and take out) has none, known without a walk."""
    if getattr(type(module), "named_modules", None) is _PLAIN_NAMED_MODULES:
        children = module._modules
        if not children:
            return []
        # one level of childless children (a fused module's parts): listed without the walk
        found = []
        for name, child in children.items():
            if child is None:
                continue
            if child._modules or getattr(type(child), "named_modules", None) is not _PLAIN_NAMED_MODULES:
                break
            found.append((name, child))
        else:
            return found
    return list(submodule_table(module).items())


def submodule_table(module: Any) -> dict[str, Any]:
    """`module.named_modules(remove_duplicate=False)` without the module itself (nor any other entry named
    ""), as a dict by qualified name in its order. Walked directly instead of through torch's nested
    generators, whose cost grows with depth, unless some module in the tree has a named_modules of its own
    (then that of `module` is asked)."""
    table: dict[str, Any] = {}
    if _is_plain(type(module), {}) and _add_descendants(table, "", module._modules, {}):
        return table
    return {name: sub for name, sub in module.named_modules(remove_duplicate=False) if name}


_PLAIN_NAMED_MODULES = torch.nn.Module.named_modules


def _is_plain(kind: type, plain_classes: dict[type, bool]) -> bool:
    """Whether class `kind` has nn.Module's named_modules (remembered in `plain_classes`)."""
    is_plain = plain_classes.get(kind)
    if is_plain is None:
        is_plain = plain_classes[kind] = getattr(kind, "named_modules", None) is _PLAIN_NAMED_MODULES
    return is_plain


def _add_descendants(table: dict[str, Any], path: str, children: dict[str, Any],
                     plain_classes: dict[type, bool]) -> bool:
    """Enter the descendants of the module at `path` (whose `_modules` are `children`) into `table`, in
    named_modules' order; False (the table half filled) on meeting a module with a named_modules of its own."""
    dot = f"{path}." if path else ""  # (named_modules' own prefix rule)
    for name, child in children.items():
        if child is None:
            continue
        if not _is_plain(type(child), plain_classes):
            return False
        child_path = dot + name
        if child_path:
            table[child_path] = child
        grandchildren = child._modules
        if grandchildren and not _add_descendants(table, child_path, grandchildren, plain_classes):
            return False
    return True
