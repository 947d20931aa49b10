"""Private copies for running a weight's producer chain ahead of time (observe-weights, fold-weights).

torch's convert runs such chains (get_attr -> ... -> observer or prepack) on the live model: a module the chain
calls, and a tensor an op of the chain writes in place (the fused fake-quantize op updates the statistics it
is given), change in the model. qfx runs them on copies instead and carries what changed into the new
Program, so the result is torch's and the input is left alone. Modules are copied whenever a chain calls
them; tensors only for a chain holding an op that may write its inputs (by its schema, or, for Python
functions, unless known not to), so that the usual chains (quantize a weight, pack it) copy nothing.
"""

from __future__ import annotations

import copy
import functools
import operator
from typing import Any, Iterable, Sequence

import torch

from qfx.ir.frozendict import FrozenDict
from qfx.ir.graph import Node
from qfx.ir.program import Program


class ChainCopies:
    """The objects a set of chains runs on: each module a chain calls, deep-copied on first use; each tensor
    attribute of a chain that may write its inputs, deep-copied on first use; everything else the program's
    own. Copies are shared by all chains, as the live objects are in torch; the objects are ids' keys, so
    the program must be alive as long as this is."""

    def __init__(self, program: Program, chains: Iterable[Sequence[Node]]) -> None:
        self._program = program
        self._modules: dict[int, Any] = {}  # id(original module) -> its copy
        self._tensors: dict[int, Any] = {}  # id(original tensor) -> its copy
        self._memo: dict[int, Any] = {}  # one deepcopy memo: what the originals share, their copies share
        # get_attr targets read through a module a pass replaced: target -> (owner path, what was found)
        self.replaced_reads: dict[str, tuple[str, Any]] = {}
        self._writable = {node.target for chain in chains if any(writes_its_inputs(n) for n in chain)
                          for node in chain if node.op == "get_attr"}

    def module(self, target: str) -> Any:
        """The module to call for a call_module `target`: the program's, copied."""
        original = self._program.modules[target]
        if id(original) not in self._modules:
            self._modules[id(original)] = copy.deepcopy(original, self._memo)
        return self._modules[id(original)]

    def attribute(self, target: str) -> Any:
        """The value of a get_attr `target`, found as torch finds it on the live model (see `current`): a
        copy of a tensor a chain may write, else the program's."""
        value = self.current(target)
        if target not in self._writable or not isinstance(value, torch.Tensor):
            return value
        if id(value) not in self._tensors:
            # (a Parameter stays one, requiring grad as it did)
            self._tensors[id(value)] = copy.deepcopy(value, self._memo)
        return self._tensors[id(value)]

    def current(self, target: str) -> Any:
        """The program's value of a get_attr `target` as torch's walk of attribute names on its live model
        finds it: through the module owning the target where a pass has replaced that module since lift
        (a lowered Linear's `weight` is a method, say; a name the new module lacks raises AttributeError,
        as there), else the attribute table's entry."""
        value = self._program.resolve(target)
        modules = self._program.modules
        if target in modules:
            return value
        atoms = target.split(".")
        # the deepest module on the path owns the target (none: an attribute of the root's own)
        depth = next((i for i in range(len(atoms) - 1, 0, -1) if ".".join(atoms[:i]) in modules), None)
        if depth is None:
            return value
        owner_path = ".".join(atoms[:depth])
        found = modules[owner_path]
        for atom in atoms[depth:]:
            found = getattr(found, atom)
        if found is value:
            return value
        self.replaced_reads[target] = (owner_path, found)
        return found

    def resolve(self, target: str) -> Any:
        """What a get_attr or call_module `target` names now (see `current`): a copy made so far, else the
        program's object."""
        value = self.current(target)
        table = self._modules if target in self._program.modules else self._tensors
        return table.get(id(value), value)

    def applied(self, program: Program) -> Program:
        """`program` with every copy in place of its original, under every name the original has: torch's
        convert goes on with the objects the chains changed. (Every copy, changed or not: ops such as the
        fused fake-quantize write their outputs without counting a new version of them.)"""
        replacements = {path: self._modules[id(m)] for path, m in program.modules.items() if id(m) in self._modules}
        result = program.with_modules(replacements)
        tensors = {target: self._tensors[id(t)] for target, t in result.attributes.items() if id(t) in self._tensors}
        if not tensors:
            return result
        return result.evolve(attributes=FrozenDict({**result.attributes, **tensors}))


def writes_its_inputs(node: Node) -> bool:
    """Whether running `node` may change one of its inputs in place: an in-place method (a name ending in
    one underscore), a call with inplace=True or an out= tensor, an operator that writes (iadd, setitem,
    ...), a torch op whose schema writes a positional argument, or any other Python function (not known
    not to)."""
    if node.op == "call_method":
        return isinstance(node.target, str) and node.target.endswith("_") and not node.target.endswith("__")
    if node.op != "call_function":
        return False
    if any((name == "inplace" and value is True) or name == "out" for name, value in node.kwargs):
        return True
    try:
        return _function_writes(node.target)
    except TypeError:  # an unhashable target: nothing known of it
        return True


@functools.lru_cache(maxsize=512)
def _function_writes(target: Any) -> bool:
    if target is getattr:
        return False
    if getattr(target, "__module__", None) in ("_operator", "operator"):
        name = getattr(target, "__name__", "")
        return name in ("setitem", "delitem") or (name.startswith("i") and hasattr(operator, name[1:]))
    schemas = _schemas(target)
    if schemas is None:
        return True
    # (an `out=` argument, keyword-only, is written only when given: the call's kwargs say so)
    return any(argument.alias_info is not None and argument.alias_info.is_write and not argument.kwarg_only
               for schema in schemas for argument in schema.arguments)


def _schemas(target: Any) -> list | None:
    """The operator schemas of a torch op (an OpOverload, an OpOverloadPacket or a torch.* builtin), or None
    when `target` is none of those."""
    if isinstance(target, torch._ops.OpOverload):
        return [target._schema]
    if isinstance(target, torch._ops.OpOverloadPacket):
        return [getattr(target, overload)._schema for overload in target.overloads()]
    if type(target).__name__ == "builtin_function_or_method" and getattr(target, "__module__", None) == "torch":
        schemas = torch._C._jit_get_schemas_for_operator(f"aten::{target.__name__}")
        return list(schemas) if schemas else None
    return None
