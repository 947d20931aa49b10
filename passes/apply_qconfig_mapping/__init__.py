"""apply-qconfig-mapping: narrow prepare's per-node qconfigs with the QConfigMapping given to convert.

Mirrors the `if qconfig_mapping:` block of torch's convert: a convert-time mapping may only switch
quantization off (map keys to None) where prepare configured it; it may not change a qconfig. The result is
a new `node_name_to_qconfig` for the later passes. Modules keep prepare's `.qconfig` attributes, as torch's
output does (torch computes the new table on a copy of the modules).
"""

from __future__ import annotations

import copy
from typing import Iterable, Mapping

import attrs
from torch.ao.quantization.fx.qconfig_mapping_utils import _update_qconfig_for_qat
from torch.ao.quantization.qconfig import QConfigAny, qconfig_equals
from torch.ao.quantization.qconfig_mapping import (
    _MODULE_NAME_DICT_KEY,
    _MODULE_NAME_REGEX_DICT_KEY,
    _OBJECT_TYPE_DICT_KEY,
    QConfigMapping,
)

from qfx.ir.errors import ConvertAttributeError, ConvertError
from qfx.ir.program import Absent, Program

from ..manager import register
from .qconfig_assign import FusedQConfigError, assign_qconfigs, extend_for_fused_modules

__all__ = ["FusedQConfigError", "QConfigMismatchError", "apply_qconfig_mapping"]


class QConfigMismatchError(ConvertError, AssertionError):
    """The convert-time QConfigMapping changes (rather than only removes) what prepare configured.

    torch raises AssertionError with the same text."""


def check_only_narrows(prepared: QConfigMapping, convert: QConfigMapping) -> None:
    """Raise QConfigMismatchError unless `convert` keeps prepare's global qconfig and, for every object
    type, module name and module-name regex prepare configured, has the same key with the same qconfig
    or None (torch's `_compare_prepare_convert_qconfig_mappings`, same messages and order)."""
    if not qconfig_equals(prepared.global_qconfig, convert.global_qconfig):
        raise QConfigMismatchError(
            "Expected global qconfigs to be the same in the prepare and convert quantization configs"
        )
    tables = (
        (_OBJECT_TYPE_DICT_KEY, prepared.object_type_qconfigs, convert.object_type_qconfigs),
        (_MODULE_NAME_DICT_KEY, prepared.module_name_qconfigs, convert.module_name_qconfigs),
        (_MODULE_NAME_REGEX_DICT_KEY, prepared.module_name_regex_qconfigs, convert.module_name_regex_qconfigs),
    )
    for kind, before, after in tables:
        for key, old in before.items():
            if key not in after:
                raise QConfigMismatchError(
                    f"Missing key {kind} {key} in convert QConfigMapping when it was present in prepare"
                )
            new = after[key]
            if new is not None and not qconfig_equals(old, new):
                raise QConfigMismatchError(
                    "Expected convert QConfigMapping to have the same qconfig as prepare for key "
                    f"{kind} {key}; prepare: {old}; convert: {new}"
                )


def check_node_qconfigs_narrow(
    prepared: Mapping[str, QConfigAny], convert: Mapping[str, QConfigAny], order: Iterable[str]
) -> None:
    """Raise QConfigMismatchError unless every node prepare gave a qconfig keeps it or gets None.

    Nodes are checked in `order` (graph order, which is the order prepare recorded them in), then any
    remaining ones by name, so the first violation reported is torch's."""
    names = [name for name in order if name in prepared]
    listed = set(names)
    names += sorted(name for name in prepared if name not in listed)
    for name in names:
        if name not in convert:
            raise QConfigMismatchError(f"Expected key {name} in convert node_name_to_qconfig")
        old, new = prepared[name], convert[name]
        if new is not None and not qconfig_equals(old, new):
            raise QConfigMismatchError(
                f"Expected k {name} to have the same value in prepare and convert QConfigMappings, "
                f"but {old} was updated to {new}"
            )


@register("apply-qconfig-mapping")
def apply_qconfig_mapping(program: Program) -> Program:
    """Apply the convert-time `options.qconfig_mapping` to prepare's per-node qconfigs.

    Without a convert-time mapping, returns `program` itself. Otherwise returns a program whose
    `quant.node_name_to_qconfig` is the table torch's convert computes (every node, observers excepted;
    None where quantization is now skipped). Raises QConfigMismatchError (an AssertionError) where torch
    asserts that the mapping only narrows prepare's, and FusedQConfigError (a LookupError) when the parts of
    a fused module get different object-type qconfigs. Must run before modules are swapped (it reads the
    observed module types). Nothing reachable from `program` is modified.
    """
    requested = program.options.qconfig_mapping
    if requested is None:
        return program
    facts = program.quant
    if facts is None:
        raise ConvertError("a qconfig_mapping was passed to convert, but the program carries no quantization "
                           "facts; lift a model produced by prepare_fx")
    for field in ("qconfig_mapping", "is_qat"):  # (torch reads both, in this order, only here)
        if getattr(facts, field) is Absent.FIELD:
            raise ConvertAttributeError(
                f"a qconfig_mapping was passed to convert, but the model's record from prepare has no "
                f"'{field}' (a model prepared by another torch version?); pass qconfig_mapping=None, or "
                "prepare the model again")
    # torch's helpers below edit the mapping they are given: work on a private copy.
    mapping = copy.deepcopy(requested)
    if facts.is_qat:
        _update_qconfig_for_qat(mapping, program.options.backend_config)
    extend_for_fused_modules(program, mapping)
    if facts.qconfig_mapping is None:  # (torch reads its global qconfig: an AttributeError)
        raise ConvertAttributeError(
            "a qconfig_mapping was passed to convert, but the model carries no QConfigMapping from prepare "
            "to compare it with; pass qconfig_mapping=None, or convert a model produced by prepare_fx"
        )
    check_only_narrows(facts.qconfig_mapping, mapping)
    table = assign_qconfigs(program, mapping)
    check_node_qconfigs_narrow(facts.node_name_to_qconfig, table, (n.name for n in program.graph.nodes))
    return program.evolve(quant=attrs.evolve(facts, node_name_to_qconfig=table))
