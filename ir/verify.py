"""verify: check that a Program is well formed, reporting every violation at once."""

from __future__ import annotations

from torch.fx.graph import _illegal_names, _name_regex

from .errors import VerificationError
from .graph import OPS
from .program import Program


def problems(program: Program) -> list[str]:
    """Every invariant `program` breaks, as readable lines (empty when it is well formed)."""
    out: list[str] = []
    graph = program.graph
    defined: set[str] = set()
    outputs = 0
    used = program.namespace.used
    for i, node in enumerate(graph.nodes):
        where = f"node '{node.name}' (#{i}, {node.op} {node.target!r})"
        if node.op not in OPS:
            out.append(f"{where}: unknown op")
        if node.name in defined:
            out.append(f"{where}: duplicate name")
        if node.name not in used:
            out.append(f"{where}: name not recorded in the namespace")
        if not _is_fx_name(node.name):
            out.append(f"{where}: not a name FX would give a node (an identifier that shadows no keyword, "
                       "builtin or FX global)")
        for name in node.inputs():
            if name not in defined:
                state = "later" if name in graph.by_name else "nowhere"
                out.append(f"{where}: reads '%{name}', which is defined {state}")
        if node.op in ("call_module", "get_attr"):
            if not isinstance(node.target, str):
                out.append(f"{where}: target must be a qualified name")
            elif node.op == "call_module" and node.target not in program.modules:
                out.append(f"{where}: no submodule '{node.target}' in the module table")
            elif node.op == "get_attr" and node.target not in program.modules and node.target not in program.attributes:
                out.append(f"{where}: no attribute '{node.target}' in the tables")
        elif node.op in ("call_method", "placeholder") and not isinstance(node.target, str):
            out.append(f"{where}: target must be a string")
        elif node.op == "call_function" and not callable(node.target):
            out.append(f"{where}: target is not callable")
        if node.op == "output":
            outputs += 1
            if i != len(graph.nodes) - 1:
                out.append(f"{where}: the output node must be last")
        defined.add(node.name)
    if outputs != 1:
        out.append(f"graph has {outputs} output nodes; exactly one is required")
    if program.quant is not None:
        # Quant facts were recorded against every graph the program has had: a name retired when the graph
        # was rebuilt afresh (weight folding) is still a name that once was a node.
        ever_named = program.namespace.ever_named
        # node_name_to_scope is not checked: prepare records it while tracing, before fusion erases nodes
        # (Linear+ReLU fused leaves the ReLU's name in it), so it legitimately names nodes FX never saw here.
        for name in program.quant.node_name_to_qconfig:
            if not ever_named(name):
                out.append(f"quant facts: node_name_to_qconfig names '{name}', which was never a node of this graph")
        for name in program.quant.observed_node_names:
            if not ever_named(name):
                out.append(f"quant facts: observed_node_names has '{name}', which was never a node of this graph")
    return out


def verify(program: Program, where: str = "") -> Program:
    """Return `program` if it is well formed; otherwise raise VerificationError listing every problem."""
    found = problems(program)
    if found:
        raise VerificationError(found, where)
    return program


def _is_fx_name(name: str) -> bool:
    """Whether FX's namespace would hand out `name` unchanged (codegen relies on it, not renaming nodes)."""
    return isinstance(name, str) and _name_regex.match(name) is not None and name not in _illegal_names
