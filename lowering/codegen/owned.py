"""What a built module must own instead of sharing with the program's source model: the state its forward
changes. codegen shares modules and tensors with the observed model (nothing is copied that a run only
reads); a run that records statistics or updates a buffer in place must do so in the new module, never in
the model it was converted from, as torch's result (that model itself, converted in place) does in its own.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
from torch.ao.quantization import FakeQuantizeBase, ObserverBase
from torch.nn.modules.batchnorm import _NormBase

from qfx.ir.args import Ref
from qfx.ir.program import Program

_OBSERVING = (ObserverBase, FakeQuantizeBase)
_RECORDING = (*_OBSERVING, _NormBase)
# Where torch's quantized modules live: a norm whose forward is theirs runs a quantized kernel, which reads
# the running statistics and never updates them (whatever its training flag says; from_float leaves a new
# quantized batch norm in training mode).
_QUANTIZED_KERNEL_PACKAGES = ("torch.ao.nn.quantized.", "torch.ao.nn.intrinsic.quantized.")


def own_what_runs_would_change(program: Program, table: dict[str, Any]) -> None:
    """Replace, in `table` ({get_attr/call_module target: object}, the built module's contents), what
    running the program would change with copies: each module holding an observer or fake-quantize (a
    pipeline that stops before insert-qdq leaves them in; a QAT module holds its weight's) or a norm that
    updates running statistics (a batch norm kept in float, in a model converted in training mode), each
    tensor of an observer, and each tensor the graph writes in place (a fake-quantize op kept live, updating
    its running min/max and qparams). One memo keeps what was shared shared, between targets too. (A module
    switched to training mode later, by `.train()`, is edited, as any shared module can be.)"""
    memo: dict[int, Any] = {}
    if any(issubclass(kind, _RECORDING) for kind in {type(m) for m in program.modules.values()}):
        for target, value in table.items():
            if isinstance(value, torch.nn.Module):
                if any(_records(m) for m in value.modules()):
                    table[target] = copy.deepcopy(value, memo)
                continue
            owner, path = _observer_holding(program, target)
            if owner is not None:
                found = copy.deepcopy(owner, memo)
                for name in path:
                    found = getattr(found, name)
                table[target] = found
    for target in _written_attributes(program):
        value = table.get(target)
        if isinstance(value, torch.Tensor):
            table[target] = copy.deepcopy(value, memo)


def _records(module: torch.nn.Module) -> bool:
    """Whether running `module` changes its state: an observer or fake-quantize, or a float batch or
    instance norm in training mode that tracks running statistics."""
    return isinstance(module, _OBSERVING) or (isinstance(module, _NormBase) and module.training
                                              and module.track_running_stats
                                              and not _runs_quantized_kernel(type(module)))


def _runs_quantized_kernel(kind: type) -> bool:
    """Whether the forward of module class `kind` is that of one of torch's quantized modules."""
    return getattr(kind.forward, "__module__", "").startswith(_QUANTIZED_KERNEL_PACKAGES)


def _observer_holding(program: Program, target: str) -> tuple[Any, list[str]]:
    """The innermost observer or fake-quantize module of `program` whose attribute `target` is, and the
    path from it; (None, []) when no such module holds it."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        owner = program.modules.get(".".join(parts[:cut]))
        if isinstance(owner, _OBSERVING):
            return owner, parts[cut:]
    return None, []


def _written_attributes(program: Program) -> list[str]:
    """The get_attr targets whose values the graph writes in place: passed to an op whose schema marks that
    argument written, or the object of an in-place method (`add_`, `__setitem__`, `__iadd__`). A value that
    went through an observer is still the attribute (an observer returns what it was given; so does a
    fake-quantize with fake quantization off)."""
    attribute_of: dict[str, str] = {}
    for node in program.graph.nodes:
        if node.op == "get_attr":
            attribute_of[node.name] = node.target
        elif (node.op == "call_module" and node.args and isinstance(node.args[0], Ref)
              and node.args[0].name in attribute_of and isinstance(program.modules.get(node.target), _OBSERVING)):
            attribute_of[node.name] = attribute_of[node.args[0].name]
    if not attribute_of:
        return []
    written: list[str] = []
    for node in program.graph.nodes:
        if node.op == "call_function":
            if not _writing_schemas(node.target):  # (most operators write nothing: asked before binding)
                continue
            keywords = dict(node.kwargs)
            for index, name in _written_arguments(node.target, len(node.args), frozenset(keywords)):
                positional = index is not None and index < len(node.args)
                arg = node.args[index] if positional else keywords.get(name)
                if isinstance(arg, Ref) and arg.name in attribute_of:
                    written.append(attribute_of[arg.name])
        elif (node.op == "call_method" and node.args and isinstance(node.args[0], Ref)
              and node.args[0].name in attribute_of and _in_place_method(node.target)):
            written.append(attribute_of[node.args[0].name])
    return written


_IN_PLACE_DUNDERS = frozenset({
    "__setitem__", "__delitem__", "__iadd__", "__isub__", "__imul__", "__imatmul__", "__itruediv__",
    "__ifloordiv__", "__imod__", "__ipow__", "__ilshift__", "__irshift__", "__iand__", "__ixor__", "__ior__"})


def _in_place_method(name: Any) -> bool:
    """Whether the tensor method `name` changes its tensor: torch's in-place methods end in one underscore
    (`add_`), and item assignment and augmented assignment write too."""
    return isinstance(name, str) and (name in _IN_PLACE_DUNDERS
                                      or (name.endswith("_") and not name.startswith("_")))


class _Schema(NamedTuple):
    """What deciding which arguments a call may write needs of one operator schema."""

    positional: int  # how many arguments may be passed by position
    names: frozenset[str]
    required: tuple[tuple[int | None, str], ...]  # (position, or None if keyword-only; name) without a default
    written: tuple[tuple[int | None, str], ...]  # the same, of the arguments it writes in place (Tensor(a!))

    def binds(self, positional: int, keywords: frozenset[str]) -> bool:
        """Whether a call with `positional` positional arguments and these keyword names can bind to it."""
        return (positional <= self.positional and keywords <= self.names
                and all((index is not None and index < positional) or name in keywords
                        for index, name in self.required))


_SCHEMAS: dict[Any, tuple[_Schema, ...]] = {}
# (operator, positional count, keyword names) -> _written_arguments' answer, for torch's operators only
_WRITTEN: dict[tuple[Any, int, frozenset[str]], tuple[tuple[int | None, str], ...]] = {}


def _written_arguments(target: Any, positional: int, keywords: frozenset[str]) -> tuple[tuple[int | None, str], ...]:
    """(position, or None for a keyword-only one; name) of each argument that a schema of the operator
    `target` a call with `positional` positional arguments and these keyword names can bind to writes in
    place (Tensor(a!)); none for anything that is not a torch operator."""
    schemas = _writing_schemas(target)
    if not schemas:
        return ()
    key = (target, positional, keywords)
    found = _WRITTEN.get(key)
    if found is None:
        found = _WRITTEN[key] = tuple(dict.fromkeys(
            argument for schema in schemas if schema.binds(positional, keywords) for argument in schema.written))
    return found


def _writing_schemas(target: Any) -> tuple[_Schema, ...]:
    """The schemas of the operator `target` that write an argument in place (none for anything that is not
    a torch operator)."""
    try:
        return _SCHEMAS[target]
    except (KeyError, TypeError):  # (not asked yet, or an unhashable callable)
        pass
    if isinstance(target, torch._ops.OpOverload):
        schemas = [target._schema]
    elif isinstance(target, torch._ops.OpOverloadPacket):
        schemas = [getattr(target, overload)._schema for overload in target.overloads()]
    elif getattr(target, "__module__", None) == "torch" and callable(target):
        schemas = torch._C._jit_get_schemas_for_operator(f"aten::{target.__name__}")
    else:
        return ()  # (not remembered: the table holds torch's operators only, not the user's functions)
    found = _SCHEMAS[target] = tuple(summary for summary in map(_summary, schemas) if summary.written)
    return found


def _summary(schema: Any) -> _Schema:
    arguments = [(None if a.kwarg_only else index, a) for index, a in enumerate(schema.arguments)]
    return _Schema(
        positional=sum(a.kwarg_only is False for a in schema.arguments),
        names=frozenset(a.name for a in schema.arguments),
        required=tuple((index, a.name) for index, a in arguments if not a.has_default_value()),
        written=tuple((index, a.name) for index, a in arguments
                      if a.alias_info is not None and a.alias_info.is_write),
    )
