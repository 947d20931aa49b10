"""verify: check that a Program is well formed, reporting every violation at once."""

from __future__ import annotations

from typing import Mapping

from .errors import VerificationError
from .graph import OPS
from .program import Program


def problems(program: Program) -> list[str]:
    """Every invariant `program` breaks, as readable lines (empty when it is well formed)."""
    if not isinstance(program, Program):
        return [f"not a Program but {type(program).__name__} (lift a GraphModule with qfx.ir.lift first)"]
    out: list[str] = []
    graph = program.graph
    defined: set[str] = set()
    outputs = 0
    used = program.namespace.used
    last = len(graph.nodes) - 1
    modules, attributes = program.modules, program.attributes
    for i, node in enumerate(graph.nodes):
        op, name, target = node.op, node.name, node.target
        reads = node.input_name_tuple()
        # (a well-formed node is passed by one test; the others are then looked at problem by problem)
        if (name in used and name not in defined and type(name) is str and name and defined.issuperset(reads)
                and _target_fits(op, target, modules, attributes) and (op != "output" or i == last)):
            outputs += op == "output"
            defined.add(name)
            continue
        found: list[str] = []  # this node's problems, named below (naming every node would cost more)
        if op not in OPS:
            found.append("unknown op")
        if name in defined:
            found.append("duplicate name")
        if name not in used:
            found.append("name not recorded in the namespace")
        if not isinstance(name, str) or not name:
            found.append("name must be a non-empty string")
        for read in reads:
            if read not in defined:
                state = "later" if read in graph.by_name else "nowhere"
                found.append(f"reads '%{read}', which is defined {state}")
        if op == "call_module" or op == "get_attr":
            if not isinstance(target, str):
                found.append("target must be a qualified name")
            elif op == "call_module" and target not in modules:
                found.append(f"no submodule '{target}' in the module table")
            elif op == "get_attr" and target not in modules and target not in attributes:
                found.append(f"no attribute '{target}' in the tables")
        elif (op == "call_method" or op == "placeholder") and not isinstance(target, str):
            found.append("target must be a string")
        elif op == "call_function" and not callable(target):
            found.append("target is not callable")
        if op == "output":
            outputs += 1
            if i != last:
                found.append("the output node must be last")
        if found:
            where = f"node '{name}' (#{i}, {op} {target!r})"
            out.extend(f"{where}: {problem}" for problem in found)
        defined.add(name)
    if outputs != 1:
        out.append(f"graph has {outputs} output nodes; exactly one is required")
    # The quant facts' node names are not checked against the graph: prepare records them while tracing,
    # before fusion erases nodes, and a user's dead-code elimination followed by a deepcopy (which rebuilds
    # the graph's namespace from the nodes left) leaves names FX no longer knows; torch converts such models.
    return out


def _target_fits(op: str, target: object, modules: Mapping[str, object], attributes: Mapping[str, object]) -> bool:
    """Whether `target` is one an `op` node may have (False also for an unknown op): the quick test of
    well-formed nodes; `problems` names what is wrong with the others."""
    if op == "call_function":
        return callable(target)
    if op == "call_module":
        return type(target) is str and target in modules
    if op == "get_attr":
        return type(target) is str and (target in modules or target in attributes)
    if op == "output":
        return True
    return (op == "call_method" or op == "placeholder") and type(target) is str


def verify(program: Program, where: str = "") -> Program:
    """Return `program` if it is well formed; otherwise raise VerificationError listing every problem."""
    found = problems(program)
    if found:
        raise VerificationError(found, where)
    return program
