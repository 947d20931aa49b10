"""A deterministic, readable text form of a Program (equal programs print equally)."""

from __future__ import annotations

from .args import render, render_leaf
from .errors import QfxError
from .program import Program


def print_program(program: Program, *, tables: bool = True) -> str:
    """Render `program`: one line per node, then (optionally) the module and attribute tables."""
    if not isinstance(program, Program):
        raise QfxError(f"print_program takes a Program (lift a GraphModule with qfx.ir.lift first), got "
                       f"{type(program).__name__}")
    lines = ["graph {"]
    for node in program.graph.nodes:
        target = node.target if isinstance(node.target, str) else render_leaf(node.target)
        parts = [render(a) for a in node.args] + [f"{k}={render(v)}" for k, v in node.kwargs]
        if node.op == "placeholder":
            lines.append(f"  %{node.name} = placeholder[{target}]")
        elif node.op == "output":
            lines.append(f"  output({', '.join(parts)})")
        else:
            lines.append(f"  %{node.name} = {node.op}[{target}]({', '.join(parts)})")
    lines.append("}")
    if tables:
        used = {n.target for n in program.graph.nodes if n.op in ("call_module", "get_attr")}
        for name in sorted(used):
            value = program.resolve(name) if (name in program.modules or name in program.attributes) else None
            lines.append(f"@{name} = {_describe(value)}")
    return "\n".join(lines) + "\n"


def _describe(value: object) -> str:
    import torch

    if isinstance(value, torch.nn.Module):
        return type(value).__qualname__
    return render_leaf(value)
