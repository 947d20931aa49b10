"""Custom modules for swap-modules: observed custom module -> quantized custom module.

Mirrors torch.ao.quantization.fx.convert.convert_custom_module. Torch also rewires the graph around a
statically quantized custom module (its inputs skip their dequantize, its output observer becomes a
dequantize); here that is recorded as a CallingConvention for insert-qdq to apply.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import torch
from torch.ao.quantization.observer import _is_activation_post_process
from torch.ao.quantization.quant_type import QuantType
from torch.ao.quantization.utils import activation_is_statically_quantized, get_swapped_custom_module_class

from qfx.ir.args import Ref, TupleArg
from qfx.ir.errors import ConvertError, ConvertIndexError
from qfx.ir.graph import Node
from qfx.ir.program import CallingConvention, Program

from .weighted import module_qconfig

LSTM_ARGS = ((0,), (1, 0), (1, 1))
MHA_ARGS = ((0,), (1,), (2,))


class CustomModuleError(ConvertError, AssertionError):
    """A custom module call or its configuration does not have the shape convert requires."""


@attrs.frozen
class CustomSwap:
    """The quantized module for one custom module call and how insert-qdq must wire the call."""

    module: torch.nn.Module
    convention: CallingConvention | None


# The quant types whose entries torch's convert takes custom module classes from (others are ignored).
_CUSTOM_QUANT_TYPES = (QuantType.STATIC, QuantType.DYNAMIC, QuantType.WEIGHT_ONLY)


def custom_module_classes(mapping: dict) -> frozenset:
    """Every observed custom module class in an observed-to-quantized mapping, under the static, dynamic
    and weight-only quant types (what torch's convert looks for)."""
    return frozenset(cls for quant_type in _CUSTOM_QUANT_TYPES for cls in mapping.get(quant_type, {}))


def convert_custom(node: Node, observed: torch.nn.Module, program: Program, mapping: dict) -> CustomSwap:
    """Quantize the observed custom module `observed` that `node` calls.

    `observed` must be a copy the caller owns: for a statically quantized module that is neither an LSTM
    nor a MultiheadAttention, the observer reading the call's output is attached to it (as a deep copy)
    as `activation_post_process`, as torch attaches it to the live module. The quantized class comes from
    `mapping` for the qconfig's quant type and is built with `from_observed`.
    """
    qconfig = module_qconfig(observed, node.target)
    if qconfig is None:
        raise _error(node, "qconfig must be provided to determine activation dtype")
    convention = None
    if activation_is_statically_quantized(qconfig):
        # Whatever the module, torch turns an observer reading the call into a dequantize ("observer").
        # An LSTM's readers are getitems followed by DeQuantStubs, which insert-qdq handles anyway.
        if isinstance(observed, torch.ao.nn.quantizable.LSTM):
            _check_lstm_args(node)
            convention = CallingConvention(quantized_args=LSTM_ARGS, output="observer")
        elif isinstance(observed, torch.ao.nn.quantizable.MultiheadAttention):
            _check_mha_args(node)
            convention = CallingConvention(quantized_args=MHA_ARGS, output="observer")
        else:
            if not node.args:  # (torch reads args[0]: an IndexError)
                raise ConvertIndexError(f"custom module node '{node.name}' ({node.target}) has no positional "
                                        "argument; call the module with its input as a positional argument")
            if not isinstance(node.args[0], Ref):
                raise _error(node, "Expected arg to be a Node")
            observer = output_observer(node, program)
            if observer is None:
                raise _error(node, "Expected activation_post_process to be present for observed custom module")
            observed.activation_post_process = copy.deepcopy(observer)
            convention = CallingConvention(quantized_args=((0,),), output="observer")
    try:
        quantized_class = get_swapped_custom_module_class(observed, mapping, qconfig)
    except AssertionError as exc:
        raise _error(node, str(exc)) from None
    return CustomSwap(quantized_class.from_observed(observed), convention)


def output_observer(node: Node, program: Program) -> torch.nn.Module | None:
    """The observer module of the first reader of `node` that is a call to an activation post process."""
    for user in program.graph.users.get(node.name, ()):
        reader = program.graph[user]
        if reader.op == "call_module":
            module = program.modules.get(reader.target)
            if module is not None and _is_activation_post_process(module):
                return module
    return None


def _check_lstm_args(node: Node) -> None:
    """torch's check that an LSTM custom module is called as (input, (hidden0, hidden1)) with nodes."""
    args = node.args
    hidden = args[1] if len(args) == 2 else None
    if not (_is_tuple(hidden) and len(_items(hidden)) == 2):
        raise _error(node, "Expected LSTM custom module inputs to be (input, (hidden0, hidden1))")
    for what, arg in (("inputs", args[0]), ("hidden0", _items(hidden)[0]), ("hidden1", _items(hidden)[1])):
        if not isinstance(arg, Ref):
            raise _error(node, f"Expected {what} to be a Node")


def _check_mha_args(node: Node) -> None:
    """torch's check that a MultiheadAttention custom module is called as (query, key, value) with nodes."""
    if len(node.args) != 3:
        raise _error(node, "Expected MHA custom module inputs to be (query, key, value)")
    for what, arg in zip(("query", "key", "value"), node.args):
        if not isinstance(arg, Ref):
            raise _error(node, f"Expected {what} to be a Node")


def _error(node: Node, torch_text: str) -> CustomModuleError:
    return CustomModuleError(f"custom module '{node.target}' (node '{node.name}'): {torch_text}")


def _is_tuple(arg: Any) -> bool:
    return type(arg) is tuple or isinstance(arg, TupleArg)


def _items(arg: Any) -> tuple:
    return arg.items if isinstance(arg, TupleArg) else arg
