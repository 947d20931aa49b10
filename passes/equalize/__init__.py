"""equalize: apply input-weight equalization at convert time (torch's update_obs_for_equalization then
convert_eq_obs, from torch/ao/quantization/fx/_equalize.py).

Before (after prepare and calibration):

    x -> input_quant_obs -> InputEqObs -> linear1 -> out_obs1 -> InputEqObs2 -> linear2 -> out_obs2

After:

    x_equalization_scale0 (get_attr)
              |
    x -> mul -> input_quant_obs (scaled min/max) -> linear1 (scaled weight) -> out_obs1 -> linear2 -> ...

Needs: a lifted observed program; runs after apply-qconfig-mapping and before observe-weights.
Guarantees: every input-equalization observer node is gone; where its input was not itself an
equalized layer (or a node whose name contains "relu", as torch checks), the input is multiplied by
the scale first and the input observer holds the scaled min/max; each equalized layer's weight is
divided by its scale (and multiplied by the next layer's scale, as is its bias); a functional layer's
weight-equalization observer node is gone and its weight observer is reset. New modules, observers
and tensors replace the old ones in the tables; nothing reachable from the input program changes.
A program without input-equalization observers is returned as is.
"""

from __future__ import annotations

import copy

import torch
from torch.ao.quantization.fx._equalize import _InputEqualizationObserver, _WeightEqualizationObserver
from torch.ao.quantization.observer import ObserverBase

from qfx.ir.args import Ref
from qfx.ir.errors import ConvertKeyError
from qfx.ir.graph import Node
from qfx.ir.program import Program
from qfx.ir.rewrite import GraphBuilder

from .scales import (
    compute_scales,
    is_default_scale,
    is_input_equalization_node,
    next_equalization_scale,
    supports_equalization,
    weight_equalization_node,
)
from .table import ModuleTable
from .weights import (
    EqualizationStructureError,
    equalized_module,
    plain_tensor_for,
    scaled_bias,
    scaled_weight,
)
from ..manager import register
from ..support.module_copies import standin


@register("equalize")
def equalize(program: Program) -> Program:
    """Fold the input-equalization observers into `mul`s and scaled observers, and scale the weights of
    the equalized layers, exactly as torch's convert does when prepare recorded an equalization config."""
    if program.quant is None or program.quant.equalization_node_name_to_qconfig is None:
        return program
    if not any(isinstance(m, _InputEqualizationObserver) for m in program.modules.values()):
        return program  # (the common case, found without building the module table)
    modules = ModuleTable(program)
    if not any(is_input_equalization_node(n, modules) for n in program.graph.nodes):
        return program
    return _Equalizer(program, modules).run()


class _Equalizer:
    """One run of torch's convert_eq_obs over the graph, building a new program."""

    def __init__(self, program: Program, modules: ModuleTable) -> None:
        self.program = program
        self.graph = program.graph
        self.modules = modules
        self.weight_observers = compute_scales(program, modules)
        self.attributes = dict(program.attributes)
        self.builder = GraphBuilder(program)
        # torch erases a functional layer's weight-equalization observer node when it reaches the layer;
        # the layer is that node's only reader, so dropping it where it stands gives the same graph.
        self.dropped_weight_observers = {
            eq.name: _ref_arg(eq, 0)
            for name in self.weight_observers
            if self.graph[name].op == "call_function"
            for eq in [weight_equalization_node(self.graph[name], self.graph, modules)]
            if eq is not None
        }

    def run(self) -> Program:
        for node in self.graph.nodes:
            if is_input_equalization_node(node, self.modules):
                self.fold_input_observer(node)
                continue
            if node.name in self.dropped_weight_observers:
                self.builder.replace_uses(node.name, self.dropped_weight_observers[node.name])
                continue
            weight_obs = self.weight_observers.get(node.name)
            if weight_obs is not None:
                self.scale_layer(node, weight_obs)
            self.builder.keep(node)
        old = self.program.attributes
        changed = {k: v for k, v in self.attributes.items() if old.get(k) is not v}
        return self.builder.finish(
            modules=self.program.with_modules(self.modules.replacements()).modules,
            attributes={**old, **changed},
        )

    # -- input side ------------------------------------------------------------------------------

    def fold_input_observer(self, eq_node: Node) -> None:
        """Drop the input-equalization observer `eq_node`; unless its input comes straight from an
        equalized layer (or a node named like a relu), multiply that input by the scale before the input observer and
        give the observer the scaled min/max."""
        obs = self.builder.emitted(_ref_arg(eq_node, 0).name)
        if obs is None:
            raise EqualizationStructureError(
                f"Expected the input of equalization observer '{eq_node.name}' to be an input observer"
            )
        # the observer's current input (a `mul` this pass inserted, if two equalization observers share it)
        prev = self.builder.emitted(_ref_arg(obs, 0).name)
        if not (supports_equalization(prev, self.modules) or "relu" in prev.name):
            self.scale_input_observer(eq_node, obs)
            self.insert_scale_mul(eq_node, obs, prev)
        self.builder.replace_uses(eq_node.name, Ref(obs.name))

    def scale_input_observer(self, eq_node: Node, obs: Node) -> None:
        """torch's scale_input_observer, on a copy of the observer."""
        eq_obs: _InputEqualizationObserver = self.modules[eq_node.target]
        target = str(obs.target)
        if target not in self.modules:  # (torch looks it up in its table of modules: a KeyError)
            raise ConvertKeyError(
                f"equalization observer '{eq_node.name}' reads node '{obs.name}' ({obs.op} {target}), which is "
                "not an input observer module; prepare the model without an _equalization_config entry for the "
                "layer it feeds")
        old = self.modules[target]
        if not isinstance(old, ObserverBase):
            return
        min_scaled, max_scaled = eq_obs.calculate_scaled_minmax()
        if min_scaled is None and max_scaled is None:
            return
        new = copy.deepcopy(old)
        new.min_val = min_scaled
        new.max_val = max_scaled
        self.modules.replace(obs.target, new)

    def insert_scale_mul(self, eq_node: Node, obs: Node, prev: Node) -> None:
        """Insert `get_attr <prev>_equalization_scale0` and `mul(prev, scale)` right before the input
        observer `obs`, and make `obs` read the product."""
        # torch probes for a free name on a dict, never on the model, so the suffix is always 0.
        attr = prev.name.replace(".", "_") + "_equalization_scale0"
        self.attributes[attr] = self.modules[eq_node.target].equalization_scale
        scale = self.builder.insert_before(obs.name, "get_attr", attr)
        product = self.builder.insert_before(obs.name, "call_function", torch.mul, (Ref(prev.name), scale))
        self.builder.replace_input(obs.name, prev.name, product)

    # -- layer side -------------------------------------------------------------------------------

    def scale_layer(self, node: Node, weight_obs: _WeightEqualizationObserver) -> None:
        """Scale the weights of the equalized layer `node`; for a functional layer also reset its weight
        observer and drop its weight-equalization observer node."""
        scale = weight_obs.equalization_scale
        scale = None if is_default_scale(scale) else scale
        next_scale = next_equalization_scale(self.program, node, self.modules)
        if node.op == "call_module":
            if scale is not None:
                module = equalized_module(self.modules[node.target], scale, next_scale, node.name)
                self.modules.replace(node.target, module)
            return
        weight_eq = weight_equalization_node(node, self.graph, self.modules)
        if weight_eq is None:
            return
        weight_obs_node = self.graph[_ref_arg(weight_eq, 0).name]
        if scale is not None:
            self.scale_functional_weights(node, weight_obs_node, scale, next_scale)
        self.reset_observer(weight_obs_node)

    def scale_functional_weights(
        self, node: Node, weight_obs_node: Node, scale: torch.Tensor, next_scale: torch.Tensor | None
    ) -> None:
        """torch's scale_weight_functional: new weight (and, with a next scale, bias) tensors."""
        if not isinstance(self.modules.get(weight_obs_node.target), ObserverBase):
            raise EqualizationStructureError(
                "Expected weight_quant_obs_node to be a Node whose module is an ObserverBase "
                f"(node '{weight_obs_node.name}')"
            )
        weight_node = self.graph[_ref_arg(weight_obs_node, 0).name]
        if weight_node.op != "get_attr":
            raise EqualizationStructureError(
                f"Expected weight node to be a 'get_attr' Node (node '{weight_node.name}')"
            )
        weight = self.attribute(weight_node.target)
        new_weight = scaled_weight(weight, scale, next_scale)
        self.store(weight_node.target, plain_tensor_for(weight, new_weight, weight_node.target))
        if next_scale is None:
            return
        bias_node = next(
            (self.graph[a.name] for a in node.args
             if isinstance(a, Ref) and self.graph[a.name].op == "get_attr" and "bias" in a.name),
            None,
        )
        if bias_node is None:
            return
        bias = self.attribute(bias_node.target)
        self.store(bias_node.target, plain_tensor_for(bias, scaled_bias(bias, next_scale), bias_node.target))

    def store(self, target: str, value: torch.Tensor) -> None:
        """torch's setattr of a scaled functional weight or bias on the module that owns `target`: the
        attribute table's entry, and, for a submodule's tensor, a copy of that submodule holding it (the
        passes after this one read such tensors through their owner, as torch reads its live model)."""
        self.attributes[target] = value
        owner_path, _, name = target.rpartition(".")
        owner = self.modules.get(owner_path) if owner_path else None
        if owner is None:
            return
        own = standin(owner, _parameters=dict(owner._parameters), _buffers=dict(owner._buffers))
        setattr(own, name, value)
        self.modules.replace(owner_path, own)

    def reset_observer(self, obs_node: Node) -> None:
        """torch's clear_weight_quant_obs_node: the weight observer forgets its min/max (on a copy)."""
        old = self.modules.get(obs_node.target)
        if not isinstance(old, ObserverBase):
            raise EqualizationStructureError(
                "Expected the module at weight_quant_obs_node to be an ObserverBase "
                f"(node '{obs_node.name}')"
            )
        new = copy.deepcopy(old)
        new.reset_min_max_vals()
        self.modules.replace(obs_node.target, new)

    def attribute(self, target: str) -> torch.Tensor:
        """The current value of the constant a get_attr reads."""
        if target not in self.attributes:
            raise EqualizationStructureError(f"Expected '{target}' to be a tensor attribute of the model")
        return self.attributes[target]


def _ref_arg(node: Node, index: int) -> Ref:
    """The node reference at positional argument `index` of `node` (torch's equalization expects one)."""
    arg = node.args[index] if len(node.args) > index else None
    if not isinstance(arg, Ref):
        raise EqualizationStructureError(
            f"Expected argument {index} of node '{node.name}' to be a node, got {arg!r}"
        )
    return arg
