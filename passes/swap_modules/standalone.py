"""Standalone modules for swap-modules: an observed standalone GraphModule is converted on its own.

Mirrors torch.ao.quantization.fx.convert.convert_standalone_module: torch calls its public
convert_to_reference_fx (or convert_fx) on the observed submodule with the parent's backend config and
otherwise default arguments; qfx lifts the submodule with those options, runs the same convert pipeline on
that Program and generates a new GraphModule. The parent graph's rewiring
(quantized inputs skip their dequantize, a quantized output gets one) is recorded as a CallingConvention.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
from torch.ao.quantization.fx.graph_module import _is_observed_standalone_module

from qfx.ir.args import Ref
from qfx.ir.errors import ConvertAttributeError, ConvertError, PassError, QfxError
from qfx.ir.graph import Node
from qfx.ir.lift import OBSERVED_ATTRS_KEY, lift
from qfx.ir.program import CallingConvention, ConvertOptions

from .module_lookup import ModuleLookup


class StandaloneOutputError(ConvertError, AssertionError):
    """An observed standalone module keeps an output other than output 0 quantized."""


@attrs.frozen
class StandaloneSwap:
    """The converted standalone module and how insert-qdq must wire its call."""

    module: torch.nn.Module
    convention: CallingConvention


class StandaloneTest:
    """torch's `_is_observed_standalone_module` (True for a GraphModule that prepare_fx produced for a
    standalone module), for one pass run: a module that certainly has no `meta` is answered without torch's
    hasattr probe."""

    def __init__(self, lookup: ModuleLookup) -> None:
        self._lookup = lookup

    def __call__(self, module: Any) -> bool:
        if self._lookup.lacks(module, "meta"):
            return False  # torch's test starts with hasattr(module, "meta")
        return _is_observed_standalone_module(module)


def convert_standalone(node: Node, observed: torch.fx.GraphModule, options: ConvertOptions) -> StandaloneSwap:
    """Convert the observed standalone module `observed` that `node` calls; `observed` is only read.

    The quantized argument positions are the submodule's input_quantized_idxs that `node` passes; its
    result is dequantized after the call when the submodule keeps output 0 quantized.
    """
    facts = observed.meta[OBSERVED_ATTRS_KEY]
    quantized_inputs = set(facts.standalone_module_input_quantized_idxs)
    quantized_outputs = list(facts.standalone_module_output_quantized_idxs)
    for i, arg in enumerate(node.args):
        if i in quantized_inputs and not isinstance(arg, Ref):  # (torch reads its `.op`: an AttributeError)
            raise ConvertAttributeError(
                f"standalone module '{node.target}' (node '{node.name}'): argument {i} is {arg!r}, not a node, "
                f"but the module takes it quantized; pass a tensor, or leave {i} out of its input_quantized_indexes")
    if quantized_outputs and quantized_outputs[0] != 0:
        raise StandaloneOutputError(
            f"standalone module '{node.target}' (node '{node.name}'): "
            "Currently only quantized output idxs = [0] is supported"
        )
    convention = CallingConvention(
        quantized_args=tuple((i,) for i in range(len(node.args)) if i in quantized_inputs),
        output="dequantize" if quantized_outputs else "float",
    )
    return StandaloneSwap(_convert_submodule(observed, options), convention)


def _convert_submodule(observed: torch.fx.GraphModule, options: ConvertOptions) -> torch.fx.GraphModule:
    """What torch's convert_to_reference_fx(observed, backend_config=...) returns (convert_fx when lowering):
    default convert custom config (so no attributes to preserve, but the empty preserved-attributes record),
    qconfigs removed."""
    # Imported here: the pipeline module imports the passes package, which imports this module.
    from qfx.lowering.codegen import codegen

    from ..pipelines import pipeline_for

    sub_options = ConvertOptions(
        is_reference=options.is_reference,
        backend_config=options.backend_config,
        convert_custom_config=ConvertCustomConfig(),
        preserved_attributes={},
    )
    try:
        return codegen(pipeline_for(sub_options).run(lift(observed, options=sub_options)))
    except PassError as exc:
        if isinstance(exc.__cause__, QfxError):  # surface the user-facing error itself, as the API does
            raise exc.__cause__ from exc
        raise
