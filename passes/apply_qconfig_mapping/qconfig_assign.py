"""Which qconfig a QConfigMapping gives each node of a Program (torch's per-node qconfig rules, over the IR).

Two jobs, both read-only on the Program:

* `extend_for_fused_modules` — the object-type entries a fused module (ConvReLU2d, LinearReLU, ...)
  inherits from the modules it fuses (torch's `_update_qconfig_for_fusion`).
* `assign_qconfigs` — the qconfig of every node (torch's `_generate_node_name_to_qconfig`), without
  setting `.qconfig` on any module.

The precedence lookups themselves (object type < module-name regex < module name < module/type/index
order) are torch's pure helpers from `qconfig_mapping_utils`, reused as they are.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.quantization.fx.qconfig_mapping_utils import (
    _get_object_type_qconfig,
    _maybe_adjust_qconfig_for_module_name_object_type_order,
    _maybe_adjust_qconfig_for_module_type_or_name,
)
from torch.ao.quantization.observer import _is_activation_post_process
from torch.ao.quantization.qconfig import QConfigAny, _add_module_to_qconfig_obs_ctr, qconfig_equals
from torch.ao.quantization.qconfig_mapping import QConfigMapping

from qfx.ir.errors import ConvertError, ConvertKeyError
from qfx.ir.graph import Node
from qfx.ir.program import Program


class FusedQConfigError(ConvertError, LookupError):
    """The modules inside one fused module were given different qconfigs by object type (torch: LookupError)."""


class _RootModule:
    """Stands for the type of the root GraphModule in object-type lookups.

    torch looks up `type(root)`, a class FX creates for each GraphModule instance, so no mapping entry made
    before the observed model existed can name it; this placeholder matches no entry either.
    """


def extend_for_fused_modules(program: Program, mapping: QConfigMapping) -> None:
    """Give each fused module type called in `program` the object-type qconfig of its first part.

    Mutates `mapping` (the caller's private copy) exactly as torch's `_update_qconfig_for_fusion`:
    for every call_module node on a fused module, all of its parts must share one object-type qconfig
    (else FusedQConfigError with torch's text); when that qconfig is not None it is recorded for the fused
    module's type. `program` is only read.
    """
    by_type = mapping.object_type_qconfigs
    if not by_type:
        return
    for node in program.graph.nodes:
        if node.op != "call_module":
            continue
        fused = program.modules.get(node.target)
        if not isinstance(fused, _FusedModule):
            continue
        first, *rest = list(fused._modules.values())
        shared = by_type.get(type(first), None)
        for part in rest:
            if not qconfig_equals(by_type.get(type(part), None), shared):
                raise FusedQConfigError(
                    "During fusion, we need to specify the same "
                    f"qconfigs for all module types in {type(fused)} "
                    f"offending type: {type(part)}"
                )
        if shared is not None:
            by_type[type(fused)] = shared


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _scope(program: Program, node: Node) -> tuple[str, Any]:
    scopes = program.quant.node_name_to_scope if program.quant is not None else {}
    try:
        return scopes[node.name]
    except KeyError:
        raise ConvertKeyError(
            f"node '{node.name}' ({node.op} {node.target}) has no entry in prepare's node_name_to_scope, so the "
            "convert-time qconfig_mapping cannot be applied to it; convert the model prepare_fx returned, "
            "without editing its graph"
        ) from None


def _module_type(program: Program, path: str) -> Any:
    if path == "":
        return _RootModule
    try:
        return type(program.modules[path])
    except KeyError:
        raise ConvertKeyError(
            f"'{path}' is not a submodule of the observed model, but a get_attr node reads an attribute of it; "
            "convert the model prepare_fx returned, without editing its graph"
        ) from None


def assign_qconfigs(program: Program, mapping: QConfigMapping) -> dict[str, QConfigAny]:
    """The qconfig `mapping` gives each node of `program`, in graph order, as torch computes it at convert.

    Every node gets an entry except call_module nodes of observers/fake-quantizes. As in torch, the
    qconfig of a node that reads or calls a module is rebuilt so its observer constructors create
    observers on that module's device (`_add_module_to_qconfig_obs_ctr`); the module is only read.
    `mapping` is only read.
    """
    fallback = mapping.global_qconfig
    # (scope path -> callable or module type -> how many seen so far), for module_name_object_type_order.
    seen: defaultdict[str, defaultdict[Callable, int]] = defaultdict(lambda: defaultdict(int))

    def nth_call(path: str, kind: Any) -> int:
        index = seen[path][kind]
        seen[path][kind] = index + 1
        return index

    result: dict[str, QConfigAny] = {}
    for node in program.graph.nodes:
        if node.op == "get_attr":
            owner = _parent(node.target)
            qconfig = _maybe_adjust_qconfig_for_module_type_or_name(
                mapping, _module_type(program, owner), owner, fallback
            )
        elif node.op == "call_function":
            path, scope_type = _scope(program, node)
            qconfig = _get_object_type_qconfig(mapping, node.target, fallback)
            qconfig = _maybe_adjust_qconfig_for_module_type_or_name(mapping, scope_type, path, qconfig)
            qconfig = _maybe_adjust_qconfig_for_module_name_object_type_order(
                mapping, path, node.target, nth_call(path, node.target), qconfig
            )
        elif node.op == "call_method":
            path, scope_type = _scope(program, node)
            # The method name acts as an object type ("reshape"); the enclosing module's entries override it.
            qconfig = _maybe_adjust_qconfig_for_module_type_or_name(mapping, node.target, path, fallback)
            qconfig = _maybe_adjust_qconfig_for_module_type_or_name(mapping, scope_type, path, qconfig)
        elif node.op == "call_module":
            module = program.modules[node.target]
            if _is_activation_post_process(module):
                continue
            qconfig = _maybe_adjust_qconfig_for_module_type_or_name(mapping, type(module), node.target, fallback)
            path, scope_type = _scope(program, node)
            # A module call is counted among the calls of its parent module, under its scope type.
            parent = _parent(path)
            qconfig = _maybe_adjust_qconfig_for_module_name_object_type_order(
                mapping, parent, scope_type, nth_call(parent, scope_type), qconfig
            )
        else:
            result[node.name] = None
            continue
        # torch looks the target up among the modules for every kind of node (a method name can be a
        # top-level submodule's name too).
        target_module = program.modules.get(node.target) if isinstance(node.target, str) else None
        result[node.name] = _add_module_to_qconfig_obs_ctr(qconfig, target_module)
    return result
