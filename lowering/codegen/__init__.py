"""codegen: Program -> a new torch.fx.GraphModule, built once, with one recompile of its graph."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch.fx import GraphModule

from qfx.ir.args import CONTAINER_KINDS, Ref, thaw
from qfx.ir.errors import REPORT_IF_TORCH_CONVERTS, CodegenError, QfxError, VerificationError, mirrored_type
from qfx.ir.lift import OBSERVED_ATTRS_KEY
from qfx.ir.program import Absent, Preserved, Program, QuantFacts
from qfx.ir.tracebacks import failing_node

from .graph_module import graph_module
from .owned import own_what_runs_would_change

PRESERVED_ATTRS_KEY = "_user_preserved_attributes"


def codegen(program: Program) -> GraphModule:
    """Emit the GraphModule `program` describes. Modules and tensors are shared, never copied or mutated.

    A failure is a CodegenError (also of the failing error's builtin type) naming the node being emitted;
    nothing reachable from `program` has been changed."""
    try:
        return _emit(program)
    except QfxError:
        raise
    except Exception as exc:
        node, _ = failing_node(exc.__traceback__, program)
        raise mirrored_type(CodegenError, type(exc))(
            f"{type(exc).__name__}: {exc}; {REPORT_IF_TORCH_CONVERTS}", node) from exc


def _emit(program: Program) -> GraphModule:
    graph, table = _fx_graph(program)
    own_what_runs_would_change(program, table)
    gm = graph_module(program, graph, table)
    meta: dict[str, Any] = {}
    if program.quant is not None:  # first, where prepare_fx puts it
        meta[OBSERVED_ATTRS_KEY] = _thaw_quant_facts(program.quant)
    meta.update(program.root.meta)
    preserved = meta.get(PRESERVED_ATTRS_KEY)
    if preserved is not None:
        meta[PRESERVED_ATTRS_KEY] = preserved = {
            name: gm.graph if value is Preserved.OWN_GRAPH else value for name, value in preserved.items()}
    gm.meta.update(meta)
    _install_root_extras(gm, program)
    for name, value in (preserved or {}).items():
        if name == "graph" and value is gm.graph:
            continue  # (setting it again would only compile the same code once more)
        try:
            setattr(gm, name, value)
        except Exception as exc:
            raise mirrored_type(CodegenError, type(exc))(
                f"the preserved attribute '{name}' cannot be set on the converted GraphModule ({exc}); leave it "
                "out of the preserved_attributes of the prepare/convert custom config") from exc
    return gm


def _fx_graph(program: Program) -> tuple[torch.fx.Graph, dict[str, Any]]:
    """The FX graph of `program`, and {get_attr/call_module target: object} in graph order. (A failure
    here is at the node being emitted; one after this is at no node.)"""
    graph = torch.fx.Graph(tracer_cls=program.root.tracer_cls, tracer_extras=dict(program.root.tracer_extras) or None)
    if program.root.codegen is not None:
        graph._codegen = program.root.codegen
    fx_nodes: dict[str, torch.fx.Node] = {}
    resolve = fx_nodes.__getitem__
    table: dict[str, Any] = {}
    modules, attributes = program.modules, program.attributes
    for node in program.graph.nodes:
        try:
            # (thaw inline for the usual node references and leaves: this runs for every argument of every node)
            args = []
            for arg in node.args:
                kind = type(arg)
                args.append(fx_nodes[arg.name] if kind is Ref
                            else thaw(arg, resolve) if kind in CONTAINER_KINDS else arg)
            kwargs = {k: thaw(v, resolve) for k, v in node.kwargs} if node.kwargs else {}
        except KeyError as exc:
            problem = f"node '{node.name}' reads '{exc.args[0]}', which no node before it defines"
            raise _malformed(problem) from None
        if node.name in fx_nodes:
            raise _malformed(f"two nodes are named '{node.name}'")
        fx_nodes[node.name] = _append_node(graph, node.op, node.target, tuple(args), kwargs, node.name, node.type,
                                           node.meta)
        if node.op in ("get_attr", "call_module"):
            target = node.target  # (Program.resolve, inline: this runs for most nodes)
            table[target] = modules[target] if target in modules else attributes[target]
    _restore_namespace(graph, program, fx_nodes)
    return graph, table


def _install_root_extras(gm: GraphModule, program: Program) -> None:
    """What passes asked to be set on the root itself: plain attributes (each dict or list copied, so no
    two built modules share one) and state_dict / load_state_dict hooks, in their order."""
    root = program.root
    for name, value in root.plain_attributes.items():
        setattr(gm, name, _own_copy(value))
    for hook in root.state_dict_hooks:
        if getattr(hook, "_from_public_api", False):  # (torch keeps the two kinds apart)
            gm.register_state_dict_post_hook(hook)
        else:
            gm._register_state_dict_hook(hook)
    for hook in root.load_state_dict_pre_hooks:
        gm.register_load_state_dict_pre_hook(hook)


def _own_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _own_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_own_copy(v) for v in value]
    return value


def _append_node(graph: torch.fx.Graph, op: str, target: Any, args: tuple, kwargs: dict, name: str,
                 type_expr: Any, meta: Mapping[str, Any]) -> torch.fx.Node:
    """Append a node to a graph that has no owning module yet: what Graph.create_node does, minus its scan
    of every argument for raw SymInts (a warning that cannot apply to a graph lifted from FX, and most of
    create_node's cost on large graphs), and minus name allocation: the verifier guarantees IR names are
    unique, and `_restore_namespace` installs the program's name state afterwards. The node's meta is a
    new dict holding the entries of `meta`."""
    if not (callable(target) if op == "call_function" else type(target) is str and op in _FX_OPS):
        # FX's error for it, if any (without arguments: a node made with them would count as a user of its inputs)
        torch.fx.Node(graph, name, op, target, (), {}, type_expr)
    # What torch.fx.Node's constructor does after checking op and target, without its Python frame.
    node = _new_fx_node(torch.fx.Node)
    _init_fx_node(node, graph, name, op, target, type_expr)
    node._update_args_kwargs(args, kwargs)  # (which stores copies: an immutable_dict of the kwargs)
    if meta:  # (the constructor gave the node an empty meta dict of its own)
        node.meta.update(meta)
    graph._graph_namespace._obj_to_name[node] = name  # (associate_name_with_obj, for a node new to it)
    graph._root._prepend(node)  # (graph._insert of a graph without an insertion point: at the end)
    # (the lookup table's insert, with its key)
    graph._find_nodes_lookup_table.table[(op, target if op == "call_function" else None)][node] = None
    graph._len += 1
    return node


_new_fx_node = torch.fx.Node.__new__
_init_fx_node = torch._C._NodeBase.__init__
_FX_OPS = frozenset(torch.fx.node._legal_ops)


def _restore_namespace(graph: torch.fx.Graph, program: Program, names: dict[str, Any]) -> None:
    # Names FX handed out to nodes that no longer exist stay taken, so that later edits by the user
    # name new nodes exactly as they would have on torch's output.
    ns = graph._graph_namespace
    ns._used_names = set(program.namespace.used)
    ns._base_count = dict(program.namespace.base_count)
    if not ns._used_names.issuperset(names):
        missing = [name for name in names if name not in ns._used_names]
        raise _malformed(f"node names the program's namespace never handed out: {', '.join(missing[:4])} (FX "
                         "would hand them out again to new nodes)")


def _malformed(problem: str) -> VerificationError:
    """The error for a program codegen cannot emit as it is (one a pass built without the GraphBuilder's
    or GraphEditor's checks): naming the problem and how to find where it came from."""
    return VerificationError([f"{problem}; a pass built this program wrong: run the pipeline with the Verify "
                              "instrument (or qfx.ir.verify.verify after each pass) to find which"], "in codegen")


def _thaw_quant_facts(facts: QuantFacts) -> Any:
    from torch.ao.quantization.fx.utils import ObservedGraphModuleAttrs

    eq = facts.equalization_node_name_to_qconfig
    sm_in = facts.standalone_module_input_quantized_idxs
    sm_out = facts.standalone_module_output_quantized_idxs
    record = ObservedGraphModuleAttrs(
        node_name_to_qconfig=dict(facts.node_name_to_qconfig),
        node_name_to_scope=dict(facts.node_name_to_scope),
        prepare_custom_config=facts.prepare_custom_config,
        equalization_node_name_to_qconfig=dict(eq) if eq is not None else None,
        qconfig_mapping=facts.qconfig_mapping,
        is_qat=facts.is_qat,
        observed_node_names=set(facts.observed_node_names),
        is_observed_standalone_module=facts.is_observed_standalone_module,
        standalone_module_input_quantized_idxs=list(sm_in) if sm_in is not None else None,
        standalone_module_output_quantized_idxs=list(sm_out) if sm_out is not None else None,
    )
    for field in ("qconfig_mapping", "is_qat"):  # a record without them stays without them
        if getattr(facts, field) is Absent.FIELD:
            delattr(record, field)
    return record
