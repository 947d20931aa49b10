"""lift: an FX GraphModule (normally prepare_fx's observed model) -> Program, without touching it."""

from __future__ import annotations

import functools
from typing import Any, Callable

import attrs
import torch
from pyrsistent import pvector
from torch.fx import GraphModule

from .args import freeze
from .errors import (
    ConvertAttributeError, ConvertTypeError, ConvertValueError, LiftError, MalformedGraphError, MissingTargetError,
    NotObservedModelError,
)
from .frozendict import FrozenDict
from .graph import Graph, Node
from .namespace import Namespace
from .program import Absent, ConvertOptions, Program, QuantFacts, RootInfo, submodule_table
from .users_order import recorded_users_order
from .validate import check_graph, check_observers, may_hold_meta

OBSERVED_ATTRS_KEY = "_observed_graph_module_attrs"


def lift(gm: Any, *, observed: bool = True, options: ConvertOptions | None = None) -> Program:
    """Build the Program for `gm`. `gm` is only read.

    See `lift_reporting`, which also returns the observers that never saw data."""
    return lift_reporting(gm, observed=observed, options=options)[0]


def lift_reporting(
    gm: Any, *, observed: bool = True, options: ConvertOptions | None = None
) -> tuple[Program, list[str]]:
    """Build the Program for `gm`, and name the observers that never saw data ("'target' (node 'name')",
    in graph order; none unless `observed`). `gm` is only read.

    With `observed=True` (the default), `gm` must come from prepare_fx/prepare_qat_fx; otherwise a
    NotObservedModelError says so, and its observers must hold the state convert reads (not on the meta
    device: DeviceError; buffers there: ObserverStateError; observers that never saw data only warn). With
    `observed=False` any GraphModule is accepted (quant facts are then taken only if present). Either way
    the lifted graph must pass the verifier (MalformedGraphError lists what it breaks).
    """
    require_observed(gm, observed)
    if options is not None and not isinstance(options, ConvertOptions):
        raise LiftError(f"lift's options must be a ConvertOptions (qfx.api.convert_options builds one), got "
                        f"{type(options).__name__}")
    fx_graph = gm.graph
    node_name = _namer(fx_graph)

    nodes = []
    names: list[str] = []
    position: dict[torch.fx.Node, int] = {}  # (of the nodes kept)
    shared: list[torch.fx.Node] = []  # nodes with two or more users
    targets: dict[str, None] = {}
    module_calls: list[tuple[str, str]] = []  # (node name, target) of the call_module nodes
    dead = _dead_after_output(fx_graph)
    for n in fx_graph.nodes:
        if n in dead:
            continue
        position[n] = len(position)
        if len(n.users) > 1:
            shared.append(n)
        try:
            # (the fields behind FX's args and kwargs properties: read for every node)
            args = freeze(tuple(n._args), node_name)
            fx_kwargs = n._kwargs
            kwargs = tuple([(k, freeze(v, node_name)) for k, v in fx_kwargs.items()]) if fx_kwargs else ()
        except _ForeignNode as foreign:
            raise MalformedGraphError(
                [f"node '{n.name}' reads node '{foreign.args[0]}' of another graph"],
                "on the model given to convert (set its arguments to nodes of this graph, then call "
                "graph.lint() and recompile())") from None
        except Exception as exc:  # pragma: no cover - defensive
            raise LiftError(f"node '{n.name}': cannot represent its arguments ({exc})") from exc
        name, op, target = n.name, n.op, n.target
        nodes.append(Node(name, op, target, args, kwargs, n.type, n.meta))  # (Node freezes meta)
        names.append(name)
        if op == "call_module":
            targets[target] = None
            module_calls.append((name, target))
        elif op == "get_attr":
            targets[target] = None

    modules = submodule_table(gm)
    attributes = {}
    for target in targets:
        if target in modules:
            continue
        try:
            value = _getattr_path(gm, target)
        except AttributeError as exc:
            raise MissingTargetError(f"node target '{target}' does not exist on the module: {exc}; restore the "
                                     "attribute, or remove the nodes that read it") from exc
        if isinstance(value, torch.nn.Module):
            raise LiftError(f"'{target}' is a module missing from named_modules(); cannot lift it")
        attributes[target] = value
    module_table, attribute_table = FrozenDict(modules), FrozenDict(attributes)
    uncalibrated: list[str] = []
    if observed:
        uncalibrated = check_observers([(name, target, modules[target]) for name, target in module_calls
                                        if target in modules], may_hold_meta(module_table, attribute_table))

    ns = fx_graph._graph_namespace
    # A node renamed by assigning node.name is missing from FX's namespace; it is taken all the same.
    used = frozenset(ns._used_names)
    if not used.issuperset(names):
        used = used.union(names)
    namespace = Namespace(used, FrozenDict(ns._base_count))
    meta = dict(gm.meta)
    facts = meta.pop(OBSERVED_ATTRS_KEY, None)
    root = RootInfo(
        class_name=type(gm).__name__,
        training=gm.training,
        codegen=fx_graph._codegen,
        tracer_cls=fx_graph._tracer_cls,
        tracer_extras=FrozenDict(fx_graph._tracer_extras or {}),
        meta=FrozenDict(meta),
    )
    if not observed:
        # Rebuilding the module itself (saving it, say), not converting it (torch's convert builds a new
        # GraphModule, which keeps none of these): its state_dict hooks and plain attributes come along.
        root = attrs.evolve(root, state_dict_hooks=tuple(gm._state_dict_hooks.values()),
                            load_state_dict_pre_hooks=_load_pre_hooks(gm),
                            plain_attributes=FrozenDict(_plain_attributes(gm, targets)))
    program = check_graph(Program(
        graph=Graph(pvector(nodes)),
        modules=module_table,
        attributes=attribute_table,
        namespace=namespace,
        root=root,
        quant=_quant_facts(facts, observed),
        options=options or ConvertOptions(),
        users_order=recorded_users_order(position, shared),
    ))
    return program, uncalibrated


_GRAPH_MODULE_STATE = frozenset(vars(GraphModule(torch.nn.Module(), torch.fx.Graph())))


def _plain_attributes(gm: GraphModule, targets: dict[str, None]) -> dict[str, Any]:
    """What was set on `gm` itself beyond a GraphModule's own state and what its nodes read."""
    return {name: value for name, value in vars(gm).items()
            if name not in _GRAPH_MODULE_STATE and name not in targets}


def _load_pre_hooks(gm: GraphModule) -> tuple:
    """`gm`'s load_state_dict pre-hooks as register_load_state_dict_pre_hook takes them (with the module
    first): a hook registered without the module is wrapped to drop it."""
    hooks = []
    for wrapped in gm._load_state_dict_pre_hooks.values():
        hook = getattr(wrapped, "hook", wrapped)
        if getattr(wrapped, "with_module", False):
            hooks.append(hook)
        else:
            hooks.append(functools.partial(_without_module, hook))
    return tuple(hooks)


def _without_module(hook: Any, module: torch.nn.Module, *args: Any) -> Any:
    return hook(*args)


class _ForeignNode(Exception):
    """An argument that is an FX node of another graph (its name is the exception's argument)."""


_FX_NODE = torch.fx.Node


def _namer(graph: torch.fx.Graph) -> Callable[[Any], str | None]:
    """The `node_name` function `freeze` takes, for arguments of `graph`'s nodes: the name of a node of
    `graph`, None for a value that is no node, and _ForeignNode for a node of another graph (torch fails on
    such an argument; left as a constant, it would vanish from the generated code)."""
    names = {id(n): n.name for n in graph.nodes}

    def node_name(value: Any) -> str | None:
        if not isinstance(value, _FX_NODE):
            return None
        name = names.get(id(value))
        if name is None:
            raise _ForeignNode(value.name)
        return name

    return node_name


def _quant_facts(facts: Any, observed: bool) -> QuantFacts | None:
    """The quant facts of prepare's meta entry `facts`; None for none in an unobserved model."""
    if facts is None and not observed:
        return None
    try:
        return lift_quant_facts(facts)
    except AttributeError as exc:  # (torch reads them as attributes too)
        raise ConvertAttributeError(
            f"the model's meta['{OBSERVED_ATTRS_KEY}'] is {type(facts).__name__}, not the "
            f"ObservedGraphModuleAttrs prepare_fx records ({exc}); convert the model prepare_fx returned, "
            "without editing its meta") from None
    except (TypeError, ValueError) as exc:  # a table or name set that is not one (None, a number, a string)
        kind = ConvertTypeError if isinstance(exc, TypeError) else ConvertValueError
        raise kind(
            f"the model's meta['{OBSERVED_ATTRS_KEY}'] holds a field of the wrong kind ({type(exc).__name__}: "
            f"{exc}): node_name_to_qconfig, node_name_to_scope and equalization_node_name_to_qconfig must be "
            "dicts by node name, observed_node_names a set of node names; convert the model prepare_fx "
            "returned, without editing its meta") from None


def require_observed(gm: Any, observed: bool = True) -> None:
    """Raise NotObservedModelError unless `gm` is a GraphModule that prepare_fx produced (with
    `observed=False`: any GraphModule). torch's convert asserts this before it reads its other arguments."""
    if not isinstance(gm, GraphModule):
        raise NotObservedModelError(
            f"incoming model must be produced by prepare_fx: expected a torch.fx.GraphModule, got {type(gm).__name__}; "
            "run torch.ao.quantization.quantize_fx.prepare_fx on the model (and calibrate it) first"
        )
    if observed and OBSERVED_ATTRS_KEY not in getattr(gm, "meta", {}):
        raise NotObservedModelError(
            f"incoming model must be produced by prepare_fx: this GraphModule ({type(gm).__name__}) has no "
            f"'{OBSERVED_ATTRS_KEY}' in its meta; run prepare_fx (and calibrate) before converting"
        )


def _dead_after_output(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The unused pure calls after the output node (where graph.call_function puts a node by default), which
    torch's convert passes over and its dead-code elimination then removes; their names stay taken."""
    dead: set[torch.fx.Node] = set()
    for n in reversed(graph.nodes):
        if n.op == "output":
            return dead
        if n.op in ("call_function", "call_method") and not n.is_impure() and all(u in dead for u in n.users):
            dead.add(n)
    return set()  # no output node: the verifier names that


def lift_quant_facts(attrs_obj: Any) -> QuantFacts:
    """Immutable copy of prepare's ObservedGraphModuleAttrs."""
    eq = attrs_obj.equalization_node_name_to_qconfig
    sm_in = attrs_obj.standalone_module_input_quantized_idxs
    sm_out = attrs_obj.standalone_module_output_quantized_idxs
    return QuantFacts(
        node_name_to_qconfig=FrozenDict(attrs_obj.node_name_to_qconfig),
        node_name_to_scope=FrozenDict(attrs_obj.node_name_to_scope),
        prepare_custom_config=attrs_obj.prepare_custom_config,
        equalization_node_name_to_qconfig=FrozenDict(eq) if eq is not None else None,
        qconfig_mapping=getattr(attrs_obj, "qconfig_mapping", Absent.FIELD),
        is_qat=getattr(attrs_obj, "is_qat", Absent.FIELD),
        observed_node_names=frozenset(attrs_obj.observed_node_names),
        is_observed_standalone_module=attrs_obj.is_observed_standalone_module,
        standalone_module_input_quantized_idxs=tuple(sm_in) if sm_in is not None else None,
        standalone_module_output_quantized_idxs=tuple(sm_out) if sm_out is not None else None,
    )


def _getattr_path(obj: Any, target: str) -> Any:
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj
