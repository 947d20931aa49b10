"""Where a model runs quantized and where it stays in float: node kinds, float islands and a Graphviz picture.

`node_kinds(program)` gives every node one kind (see KINDS); `float_islands(program)` groups the float
nodes into connected islands; `to_dot(program)` draws the graph with one colour per kind, nested clusters
by module scope and a legend; `render(program, fmt)` turns it into SVG or PNG bytes with the `dot` program.
"""

from __future__ import annotations

import operator
from typing import Any, Mapping

import attrs
import graphviz
import torch
from torch.ao.quantization.fake_quantize import FakeQuantizeBase
from torch.ao.quantization.observer import ObserverBase

from qfx.ir.args import Ref
from qfx.ir.errors import QfxError
from qfx.ir.graph import Node
from qfx.ir.program import Program

# kind -> (fill colour, legend text)
KINDS: dict[str, tuple[str, str]] = {
    "quantize": ("#f4a259", "quantize"),
    "dequantize": ("#f6d55c", "dequantize"),
    "quantized": ("#5bc0be", "quantized module / op"),
    "observed": ("#a3d9a5", "observed (convert quantizes its output)"),
    "observer": ("#d3d3d3", "observer / fake-quantize"),
    "float": ("#ed6a5a", "float island"),
    "io": ("#ffffff", "input / output / constant"),
}

INSTALL_HINT = ("rendering SVG or PNG needs Graphviz's 'dot' program, which is not on PATH: install it "
                "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; conda: conda install "
                "graphviz), or use --format dot")


class GraphvizMissingError(QfxError, RuntimeError):
    """The `dot` program that renders SVG and PNG is not installed."""


_QUANTIZE = {torch.quantize_per_tensor, torch.quantize_per_channel, torch.quantize_per_tensor_dynamic}
_QUANTIZED_MODULE_PREFIXES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized",
                              "torch.ao.nn.quantizable", "torch.ao.nn.sparse.quantized")


def _op_name(target: Any) -> tuple[str, str]:
    """(namespace, op name) of an operator overload or packet; ("", "") for anything else."""
    schema_name = getattr(getattr(target, "_schema", None), "name", None)
    if schema_name is None and isinstance(target, torch._ops.OpOverloadPacket):
        schema_name = target._qualified_op_name
    if not schema_name or "::" not in schema_name:
        return "", ""
    namespace, name = schema_name.split("::", 1)
    return namespace, name


def _direct_kind(program: Program, node: Node) -> str | None:
    """The kind a node has by itself (None when it depends on its neighbours)."""
    if node.op in ("placeholder", "output", "get_attr"):
        return "io"
    if node.op == "call_method" and node.target == "dequantize":
        return "dequantize"
    if node.op == "call_function":
        if node.target in _QUANTIZE:
            return "quantize"
        namespace, name = _op_name(node.target)
        if namespace == "quantized_decomposed":
            if name.startswith("dequantize"):
                return "dequantize"
            if name.startswith("quantize") or name.startswith("choose_qparams"):
                return "quantize"
        if namespace == "quantized":
            return "quantized"
    if node.op == "call_module" and node.target in program.modules:
        module = program.module(node.target)
        if isinstance(module, (ObserverBase, FakeQuantizeBase)):
            return "observer"
        if type(module).__module__.startswith(_QUANTIZED_MODULE_PREFIXES):
            return "quantized"
    return None


def _lowered(program: Program) -> bool:
    """Whether `program` is lowered: it runs quantized ops or modules, and no reference modules."""
    native = False
    for node in program.graph.nodes:
        if node.op == "call_module" and node.target in program.modules:
            home = type(program.module(node.target)).__module__
            if home.startswith(_QUANTIZED_MODULE_PREFIXES):
                if ".reference" in home:
                    return False
                native = True
        elif node.op == "call_function" and _op_name(node.target)[0] == "quantized":
            native = True
    return native


def node_kinds(program: Program, qconfigs: Mapping[str, Any] | None = None,
               lowered: bool | None = None) -> dict[str, str]:
    """Every node's kind, by name: one of KINDS. A node runs quantized when it is a quantized module or op,
    reads only quantized values (e.g. a flatten on a quantized tensor), or sits in a reference pattern
    (dequantize -> op [-> op] -> quantize) of a program not yet lowered (in a lowered one such an op runs in
    float); it is "observed" when prepare put an observer on its output. Taking an item out of an input
    (`x["image"]`, `inputs[0]`, a slice `x[:, :4]`: a view) is input, as the placeholder itself, and asking
    a tensor its shape (`x.size(0)`, `x.shape[0] // 2`) computes nothing in either precision: both are "io".
    `qconfigs` (node name -> qconfig; default: the program's own quant facts, which convert drops, so pass
    the observed program's) marks the nodes the user kept in float (qconfig None) as float. `lowered` says
    whether the program went through lowering (default: guessed from its quantized modules and ops, which
    a lowered model without any, only pools and concatenations, say, does not show)."""
    if qconfigs is None:
        qconfigs = program.quant.node_name_to_qconfig if program.quant is not None else {}
    kinds: dict[str, str] = {}
    users = program.graph.users
    by_name = program.graph.by_name
    inputs: set[str] = set()  # placeholders and items taken out of them
    shapes: set[str] = set()  # shape queries and arithmetic on their results
    tensor_inputs_of: dict[str, list[str]] = {}
    for node in program.graph.nodes:
        kind = _direct_kind(program, node)
        if node.op == "placeholder" or _takes_item_of(node, inputs):
            inputs.add(node.name)
            kind = "io"
        elif _asks_shape(node, shapes):
            shapes.add(node.name)
            kind = "io"
        # (a get_attr is a constant, not a value flowing through the graph)
        tensor_inputs = tensor_inputs_of[node.name] = [
            name for name in node.input_names() if name in by_name and (kinds[name] != "io" or name in inputs)]
        if kind is None:
            if _kept_in_float(node.name, qconfigs):
                kind = "float"
            elif tensor_inputs and all(kinds[i] in ("quantize", "quantized") for i in tensor_inputs):
                kind = "quantized"
            elif any(_direct_kind(program, by_name[u]) == "observer" for u in users.get(node.name, ())):
                kind = "observed"
            else:
                kind = "float"
        kinds[node.name] = kind
    # Reference patterns: an op whose every value comes from a dequantize (or from such an op) and whose every
    # user quantizes its result, or is itself such an op, runs quantized (dequantize -> add -> relu ->
    # quantize_per_tensor). Not in a lowered program: lowering rewrote every pattern it could, so one still
    # there runs in float.
    if _lowered(program) if lowered is None else lowered:
        return kinds
    dequantized: set[str] = set()
    for node in program.graph.nodes:
        tensor_inputs = tensor_inputs_of[node.name]
        if (kinds[node.name] == "float" and tensor_inputs and not _kept_in_float(node.name, qconfigs)
                and all(kinds[i] == "dequantize" or i in dequantized for i in tensor_inputs)):
            dequantized.add(node.name)
    for node in reversed(program.graph.nodes):
        node_users = users.get(node.name, ())
        if node.name in dequantized and node_users and all(
                kinds[u] == "quantize" or (kinds[u] == "quantized" and _direct_kind(program, by_name[u]) is None)
                for u in node_users):
            kinds[node.name] = "quantized"
    return kinds


def _kept_in_float(name: str, qconfigs: Mapping[str, Any]) -> bool:
    return name in qconfigs and qconfigs[name] is None


_SHAPE_METHODS = frozenset({"size", "dim", "numel", "nelement", "stride", "element_size", "is_contiguous",
                            "get_device", "is_floating_point"})
_SHAPE_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device", "layout", "is_quantized", "requires_grad"})


def _asks_shape(node: Node, shapes: set[str]) -> bool:
    """Whether `node` reads a tensor's metadata (`x.size(0)`, `x.shape`, `x.dim()`) or computes with such
    readings only (`x.shape[0] // 2`, `len(...)` of a shape)."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op != "call_function":
        return False
    if node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRIBUTES
    if node.target is len:
        return True
    if getattr(node.target, "__module__", None) in ("_operator", "builtins", "math"):
        read = node.input_name_tuple()
        return bool(read) and all(name in shapes for name in read)
    return False


def _takes_item_of(node: Node, inputs: set[str]) -> bool:
    """Whether `node` is `value[key]` of a value in `inputs` (a dict or tuple input being unpacked)."""
    return (node.op == "call_function" and node.target is operator.getitem and bool(node.args)
            and isinstance(node.args[0], Ref) and node.args[0].name in inputs)


def float_islands(program: Program, kinds: dict[str, str] | None = None) -> list[list[str]]:
    """The float nodes grouped into islands (connected through edges between float nodes), in graph order."""
    kinds = node_kinds(program) if kinds is None else kinds
    island_of: dict[str, int] = {}
    islands: list[list[str]] = []
    users = program.graph.users
    for node in program.graph.nodes:
        if kinds[node.name] != "float" or node.name in island_of:
            continue
        island: list[str] = []
        stack = [node.name]
        island_of[node.name] = len(islands)
        while stack:
            name = stack.pop()
            island.append(name)
            neighbours = list(program.graph[name].input_names()) + list(users.get(name, ()))
            for other in neighbours:
                if other in kinds and kinds[other] == "float" and other not in island_of:
                    island_of[other] = len(islands)
                    stack.append(other)
        position = program.graph.position
        islands.append(sorted(island, key=position.__getitem__))
    return islands


def summary(program: Program, kinds: dict[str, str] | None = None) -> str:
    """A plain-text summary: how many nodes of each kind, then each float island with its nodes."""
    kinds = node_kinds(program) if kinds is None else kinds
    counts = {kind: sum(1 for k in kinds.values() if k == kind) for kind in KINDS}
    lines = ["nodes: " + ", ".join(_counted(counts[k], k) for k in KINDS if counts[k] and k != "io")]
    islands = float_islands(program, kinds)
    if not islands:
        lines.append(f"float islands: none (every op runs quantized{' or is observed' if counts['observed'] else ''})")
    else:
        lines.append(f"float islands: {len(islands)}")
        for i, island in enumerate(islands, 1):
            described = ", ".join(f"{n} ({_label_target(program.graph[n])})" for n in island)
            lines.append(f"  island {i} ({len(island)} node{'s' if len(island) > 1 else ''}): {described}")
    return "\n".join(lines)


# kind -> (one node, several nodes), for the summary's counts
_COUNTED: dict[str, tuple[str, str]] = {
    "quantize": ("quantize", "quantizes"),
    "dequantize": ("dequantize", "dequantizes"),
    "quantized": ("quantized module / op", "quantized modules / ops"),
    "observed": ("observed", "observed"),
    "observer": ("observer / fake-quantize", "observers / fake-quantizes"),
    "float": ("float", "float"),
}


def _counted(count: int, kind: str) -> str:
    one, several = _COUNTED[kind]
    return f"{count} {one if count == 1 else several}"


def _label_target(node: Node) -> str:
    if isinstance(node.target, str):
        return node.target
    return getattr(node.target, "__name__", None) or str(node.target)


def _scope(program: Program, node: Node) -> str:
    """The module path a node belongs to ('' for the root)."""
    if node.op == "call_module":
        return node.target.rpartition(".")[0] if isinstance(node.target, str) else ""
    quant = program.quant
    if quant is not None and node.name in quant.node_name_to_scope:
        path = quant.node_name_to_scope[node.name][0]
        return path or ""
    stack = node.meta.get("nn_module_stack") if node.meta else None
    if stack:
        return list(stack.values())[-1][0] if isinstance(list(stack.values())[-1], tuple) else ""
    return ""


@attrs.frozen
class _Cluster:
    path: str
    nodes: list = attrs.field(factory=list)
    children: dict = attrs.field(factory=dict)


def to_dot(program: Program, title: str = "", kinds: dict[str, str] | None = None) -> graphviz.Digraph:
    """The program as a Graphviz digraph: one box per node coloured by `kinds` (default: node_kinds(program)),
    edges along data flow, nested clusters by module scope and a legend of the colours."""
    kinds = node_kinds(program) if kinds is None else kinds
    dot = graphviz.Digraph("qfx", graph_attr={"rankdir": "TB", "fontname": "Helvetica", "label": title,
                                              "labelloc": "t", "fontsize": "16"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                                      "fontsize": "10"})
    root = _Cluster("")
    for node in program.graph.nodes:
        cluster = root
        path = ""
        for atom in [a for a in _scope(program, node).split(".") if a]:
            path = f"{path}.{atom}" if path else atom
            cluster = cluster.children.setdefault(atom, _Cluster(path))
        cluster.nodes.append(node)

    def emit(graph: graphviz.Digraph, cluster: _Cluster) -> None:
        for node in cluster.nodes:
            colour = KINDS[kinds[node.name]][0]
            graph.node(node.name, f"{node.name}\n{_label_target(node)}", fillcolor=colour)
        for child in cluster.children.values():
            with graph.subgraph(name=f"cluster_{child.path}") as sub:
                sub.attr(label=child.path, style="rounded,dashed", color="#888888", fontsize="11")
                emit(sub, child)

    emit(dot, root)
    for node in program.graph.nodes:
        for name in dict.fromkeys(node.input_names()):
            dot.edge(name, node.name)
    with dot.subgraph(name="cluster_legend") as legend:
        legend.attr(label="legend", style="rounded", color="#444444", fontsize="11")
        previous = None
        for kind, (colour, text) in KINDS.items():
            key = f"legend_{kind}"
            legend.node(key, text, fillcolor=colour)
            if previous is not None:
                legend.edge(previous, key, style="invis")
            previous = key
    return dot


def render(program: Program, fmt: str, title: str = "", kinds: dict[str, str] | None = None) -> bytes:
    """SVG or PNG bytes of `to_dot(program, title, kinds)`. Raises GraphvizMissingError when `dot` is not
    installed."""
    try:
        return to_dot(program, title, kinds).pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizMissingError(INSTALL_HINT) from exc
