"""The arithmetic of input-weight equalization on weights and biases (torch's scale_weight_node /
scale_weight_functional), as functions that build new tensors and modules.

The float operations are torch's, in torch's order, so the results are bit-identical.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.ao.quantization.fx._equalize import (
    custom_module_supports_equalization,
    fused_module_supports_equalization,
    nn_module_supports_equalization,
    reshape_scale,
)

from qfx.ir.errors import ConvertError


class EqualizationTypeError(ConvertError, TypeError):
    """A value cannot take the scaled weight the way torch's equalization stores it."""


class EqualizationStructureError(ConvertError, AssertionError):
    """The observed model does not have the shape torch's equalization expects."""


def scaled_weight(weight: torch.Tensor, scale: torch.Tensor, next_scale: torch.Tensor | None) -> torch.Tensor:
    """`weight` divided column-wise (axis 1) by `scale`, then, if given, multiplied row-wise (axis 0) by
    `next_scale`, the scale of the equalized layer that reads this layer's output."""
    result = torch.mul(weight, torch.reciprocal(reshape_scale(scale, 1, weight)))
    if next_scale is None:
        return result
    return torch.mul(result, reshape_scale(next_scale, 0, result))


def scaled_bias(bias: torch.Tensor, next_scale: torch.Tensor) -> torch.Tensor:
    """`bias` multiplied element-wise by the next layer's equalization scale."""
    return torch.mul(bias, reshape_scale(next_scale, 0, bias))


def equalized_module(
    module: nn.Module, scale: torch.Tensor, next_scale: torch.Tensor | None, where: str
) -> nn.Module:
    """A copy of the Linear/Conv `module` (or of the fused module holding it first) with new weight
    Parameters scaled as torch's scale_weight_node does; its bias is scaled only when `next_scale` is
    given. `module` is left untouched. `where` names the node, for errors."""
    new = _clone(module)
    layer = new[0] if fused_module_supports_equalization(new) else new  # type: ignore[index]
    if not (nn_module_supports_equalization(layer) or custom_module_supports_equalization(layer)):
        raise EqualizationStructureError(
            f"Expected operation module to support equalization (nn or custom): node '{where}' calls "
            f"{type(layer).__name__}"
        )
    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise EqualizationStructureError(f"Expected op_module.weight to be a torch.Tensor (node '{where}')")
    layer.weight = nn.Parameter(scaled_weight(weight, scale, next_scale))
    if next_scale is None or layer.bias is None:
        return new
    if not isinstance(layer.bias, torch.Tensor):
        raise EqualizationStructureError(f"Expected op_module.bias to be a torch.Tensor (node '{where}')")
    layer.bias = nn.Parameter(scaled_bias(layer.bias, next_scale))
    return new


def plain_tensor_for(old: object, new: torch.Tensor, name: str) -> torch.Tensor:
    """`new`, checked to be storable where `old` was the way torch stores a scaled functional weight or
    bias (a plain tensor set on its owner): torch refuses to replace a Parameter with one."""
    if isinstance(old, nn.Parameter):
        raise EqualizationTypeError(
            f"cannot assign '{torch.typename(new)}' as parameter '{name.rsplit('.', 1)[-1]}' "
            "(torch.nn.Parameter or None expected)"
        )
    return new


def _clone(module: nn.Module) -> nn.Module:
    # qconfig objects are configuration shared by the whole model: keep them shared in the copy.
    memo: dict[int, object] = {}
    for sub in module.modules():
        qconfig = getattr(sub, "qconfig", None)
        if qconfig is not None:
            memo[id(qconfig)] = qconfig
    return copy.deepcopy(module, memo)
