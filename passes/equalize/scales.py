"""Which layers are equalized and by what scale: torch's update_obs_for_equalization and the graph
queries of torch/ao/quantization/fx/_equalize.py, over the IR and on copies of the observers.

Graph shape after prepare (for a module layer and for a functional one):

    x -> input_quant_obs -> InputEqObs -> linear
    get_attr(w) -> weight_quant_obs -> WeightEqObs -> F.linear(..., weight, bias)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization.fx._equalize import (
    _InputEqualizationObserver,
    _WeightEqualizationObserver,
    calculate_equalization_scale,
    custom_module_supports_equalization,
    fused_module_supports_equalization,
    nn_module_supports_equalization,
)
from torch.ao.quantization.observer import ObserverBase

from qfx.ir.args import Ref
from qfx.ir.errors import ConvertError, ConvertKeyError
from qfx.ir.graph import Graph, Node
from qfx.ir.program import Program

from .table import ModuleTable
from .weights import EqualizationStructureError

EQUALIZABLE_FUNCTIONS = (F.linear, F.conv1d, F.conv2d, F.conv3d)


class EqualizationShapeError(ConvertError, ValueError):
    """An input and the weight of a layer to equalize disagree on the number of columns (channels)."""


def supports_equalization(node: Node, modules: ModuleTable) -> bool:
    """Mirror of torch's node_supports_equalization: Linear/Conv modules (plain, fused with ReLU, or
    registered custom) and F.linear / F.conv calls."""
    if node.op == "call_module":
        module = modules[node.target]
        return (
            nn_module_supports_equalization(module)
            or fused_module_supports_equalization(module)
            or custom_module_supports_equalization(module)
        )
    if node.op == "call_function":
        return node.target in EQUALIZABLE_FUNCTIONS
    return False


def calls_module_of_type(node: Node, modules: ModuleTable, kind: type | tuple[type, ...]) -> bool:
    """True when `node` calls a submodule that is an instance of `kind`."""
    return node.op == "call_module" and isinstance(modules.get(node.target), kind)


def is_input_equalization_node(node: Node, modules: ModuleTable) -> bool:
    """True when `node` runs an input-equalization observer."""
    return calls_module_of_type(node, modules, _InputEqualizationObserver)


def arg_is_weight(node: Node, arg: Any) -> bool:
    """Mirror of torch's node_arg_is_weight: `arg` sits at the weight index prepare recorded for `node`
    (meta 'target_dtype_info'), or is its `weight` keyword argument."""
    info = node.meta.get("target_dtype_info")
    index = info.get("weight_index", None) if info is not None else None
    if index is not None and index < len(node.args) and node.args[index] == arg:
        return True
    return node.kwarg("weight") == arg


def weight_equalization_node(op_node: Node, graph: Graph, modules: ModuleTable) -> Node | None:
    """The weight-equalization observer node feeding the weight of the functional `op_node`, if any."""
    for arg in op_node.args:
        if isinstance(arg, Ref) and arg_is_weight(op_node, arg):
            candidate = graph[arg.name]
            if calls_module_of_type(candidate, modules, _WeightEqualizationObserver):
                return candidate
    return None


def first_user(
    program: Program, node: Node, modules: ModuleTable, module_type: type | None = None, function: Any = None
) -> Node | None:
    """Mirror of torch's maybe_get_next_module: the first reader of `node` that calls a module of
    `module_type` or the function `function`, in the order FX lists the readers (prepare leaves them out
    of graph order where it set a reader's arguments again)."""
    for name in program.fx_users(node.name):
        user = program.graph[name]
        if module_type is not None and calls_module_of_type(user, modules, module_type):
            return user
        if user.op == "call_function" and function is not None and user.target == function:
            return user
    return None


def next_equalization_scale(program: Program, node: Node, modules: ModuleTable) -> torch.Tensor | None:
    """Mirror of torch's maybe_get_next_equalization_scale: the scale of the input-equalization observer
    of the equalized layer reading `node`'s output (through an optional ReLU and one observer), or None
    when there is none or its scale is the default 1."""
    relu = first_user(program, node, modules, module_type=nn.ReLU)
    if relu is None:
        relu = first_user(program, node, modules, function=F.relu)
    obs = first_user(program, node if relu is None else relu, modules, module_type=ObserverBase)
    if obs is None:
        return None
    eq_node = first_user(program, obs, modules, module_type=_InputEqualizationObserver)
    if eq_node is None:
        return None
    # torch looks the observer up by the node's name (not its target); they coincide after prepare.
    if eq_node.name not in modules:  # (torch's lookup: a KeyError)
        raise ConvertKeyError(f"equalization observer node '{eq_node.name}' is not named after its submodule "
                              f"('{eq_node.target}'); convert the model prepare_fx returned, without renaming nodes")
    eq_obs = modules[eq_node.name]
    if not isinstance(eq_obs, _InputEqualizationObserver):
        raise EqualizationStructureError(
            "Expected the following equalization observer to be an _InputEqualizationObserver: node "
            f"'{eq_node.name}' is not the name of such a submodule"
        )
    return None if is_default_scale(eq_obs.equalization_scale) else eq_obs.equalization_scale


def is_default_scale(scale: torch.Tensor) -> bool:
    """True for the 'not computed' scale torch uses, a one-element tensor equal to 1."""
    return bool(scale.nelement() == 1 and scale == torch.tensor(1))


def compute_scales(program: Program, modules: ModuleTable) -> dict[str, _WeightEqualizationObserver]:
    """Compute the equalization scale of every equalized layer, as torch's update_obs_for_equalization.

    Each input-equalization observer, and the weight-equalization observer of each functional layer, is
    replaced in `modules` by a copy holding its scale; module layers get a new weight-equalization
    observer from their equalization qconfig, run on their weight. Returns the weight-equalization
    observer of each equalized layer, by layer node name. Nothing reachable from `program` changes.
    """
    graph = program.graph
    by_layer: dict[str, _WeightEqualizationObserver] = {}
    for node in graph.nodes:
        if not is_input_equalization_node(node, modules):
            continue
        layer, weight_obs = _layer_and_weight_observer(node, program, modules)
        if layer is None or weight_obs is None:
            continue
        input_obs = copy.deepcopy(modules[node.target])
        try:
            scale = calculate_equalization_scale(input_obs, weight_obs)
        except ValueError as exc:
            raise EqualizationShapeError(f"{exc} (equalizing node '{layer.name}')") from exc
        input_obs.set_equalization_scale(scale)
        weight_obs.set_equalization_scale(scale)
        modules.replace(node.target, input_obs)
        by_layer[layer.name] = weight_obs
    return by_layer


def _layer_and_weight_observer(
    eq_node: Node, program: Program, modules: ModuleTable
) -> tuple[Node | None, _WeightEqualizationObserver | None]:
    """torch's get_op_node_and_weight_eq_obs, plus the weight observer's calibration for module layers."""
    graph = program.graph
    layer = next((graph[u] for u in program.fx_users(eq_node.name) if supports_equalization(graph[u], modules)),
                 None)
    if layer is None:
        raise EqualizationStructureError(
            f"Expected an operation node after the input equalization observer '{eq_node.name}'"
        )
    if layer.op == "call_module":
        qconfigs = program.quant.equalization_node_name_to_qconfig if program.quant else None
        if qconfigs is None:
            raise EqualizationStructureError(
                "Expected 'equalization_node_name_to_qconfig' attribute in observed graph module"
            )
        eq_qconfig = qconfigs.get(layer.name)
        if eq_qconfig is None:
            raise EqualizationStructureError(f"No equalization qconfig found for op node {layer.name}")
        weight_obs = eq_qconfig.weight()
        if not isinstance(weight_obs, _WeightEqualizationObserver):
            raise EqualizationStructureError(
                "Expected weight equalization observer to be a _WeightEqualizationObserver "
                f"(equalization qconfig of node '{layer.name}')"
            )
        module = modules[layer.target]
        if fused_module_supports_equalization(module):
            module = module[0]
            if not nn_module_supports_equalization(module):
                raise EqualizationStructureError(
                    f"Expected fused module to support equalization (node '{layer.name}')"
                )
        weight_obs(module.weight)  # a fresh observer: running it changes nothing in the program
        return layer, weight_obs
    weight_node = weight_equalization_node(layer, graph, modules)
    if weight_node is None:
        return None, None
    weight_obs = copy.deepcopy(modules[weight_node.target])
    modules.replace(weight_node.target, weight_obs)
    return layer, weight_obs
