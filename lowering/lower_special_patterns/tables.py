"""The op families special-pattern lowering recognises, and what it turns their modules and ops into.

Each family lists the functions, method names and module classes of torch's native-backend lowering
checkers (`is_fixed_qparams_node`, `is_default_node`, `is_copy_node`, `is_general_tensor_shape_node`,
`is_other_node`).
"""

from __future__ import annotations

import operator
from typing import Any

import attrs
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
import torch.nn.functional as F

from qfx.ir.graph import Node
from qfx.ir.program import Program

from ..support.patterns import module_of


@attrs.frozen
class OpFamily:
    """Ops named three ways: call_function targets, call_method names, call_module classes."""

    functions: frozenset[Any] = frozenset()
    methods: frozenset[str] = frozenset()
    modules: frozenset[type] = frozenset()

    def __or__(self, other: "OpFamily") -> "OpFamily":
        return OpFamily(self.functions | other.functions, self.methods | other.methods,
                        self.modules | other.modules)

    def holds(self, program: Program, node: Node) -> bool:
        """Whether `node` calls one of this family's ops (a module by its exact class)."""
        if node.op == "call_function":
            return _member(node.target, self.functions)
        if node.op == "call_method":
            return node.target in self.methods
        if node.op == "call_module":
            return type(module_of(program, node)) in self.modules
        return False


def _member(target: Any, table: frozenset[Any]) -> bool:
    try:
        return target in table
    except TypeError:  # an unhashable call_function target is in no table
        return False


# ops whose quantized output has fixed qparams
FIXED_QPARAMS = OpFamily(
    functions=frozenset({F.hardsigmoid, F.sigmoid, torch.sigmoid, torch.tanh}),
    methods=frozenset({"hardsigmoid", "hardsigmoid_", "sigmoid", "sigmoid_", "tanh", "tanh_"}),
    modules=frozenset({nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softmax}),
)

# ops with their own quantized kernel or module, given the output qparams
DEFAULT = OpFamily(
    functions=frozenset({F.elu, F.hardswish, F.instance_norm, F.layer_norm, F.leaky_relu, F.dropout}),
    modules=frozenset({
        nnqr.ConvTranspose1d, nnqr.ConvTranspose2d, nnqr.ConvTranspose3d,
        nn.ELU, nn.LeakyReLU, nn.Hardswish,
        nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm,
        nn.Dropout, nn.PReLU, nn.BatchNorm2d, nn.BatchNorm3d, nni.BNReLU2d, nni.BNReLU3d,
    }),
)

# ops that run on quantized tensors as they are, output qparams copied from the input
COPY = OpFamily(
    functions=frozenset({
        torch.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.hardtanh, F.hardtanh_,
        F.interpolate, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.relu, F.relu6, torch.avg_pool1d,
        torch._C._nn.avg_pool2d, torch._C._nn.avg_pool3d, torch.clamp, torch.flatten, torch.mean,
        operator.floordiv, torch.channel_shuffle,  # (F.channel_shuffle is the same function)
    }),
    methods=frozenset({"clamp", "mean", "relu", "relu_"}),
    modules=frozenset({
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AvgPool1d, nn.AvgPool2d,
        nn.AvgPool3d, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.ReLU, nn.ReLU6,
        nn.ChannelShuffle,
    }),
)

# ops that only move or view elements
GENERAL_TENSOR_SHAPE = OpFamily(
    functions=frozenset({
        torch.narrow, torch.transpose, torch.repeat_interleave, torch.squeeze, torch.stack, torch.unsqueeze,
        F.pixel_shuffle, F.pixel_unshuffle,
    }),
    methods=frozenset({
        "contiguous", "detach", "detach_", "permute", "repeat", "repeat_interleave", "reshape", "resize_",
        "shape", "size", "squeeze", "squeeze_", "transpose", "unsqueeze", "unsqueeze_", "view",
    }),
    modules=frozenset({nn.Identity, nn.PixelShuffle, nn.PixelUnshuffle}),
)

OTHER = OpFamily(functions=frozenset({torch.cat}))

# every op this pass lowers
SPECIAL = FIXED_QPARAMS | DEFAULT | COPY | GENERAL_TENSOR_SHAPE | OTHER

# reference (or float) module class -> the quantized class whose from_reference replaces it
QUANTIZED_MODULE: dict[type, type] = {
    nn.BatchNorm2d: nnq.BatchNorm2d,
    nn.BatchNorm3d: nnq.BatchNorm3d,
    nnqr.ConvTranspose1d: nnq.ConvTranspose1d,
    nnqr.ConvTranspose2d: nnq.ConvTranspose2d,
    nnqr.ConvTranspose3d: nnq.ConvTranspose3d,
    nn.ELU: nnq.ELU,
    nn.LeakyReLU: nnq.LeakyReLU,
    nn.Hardswish: nnq.Hardswish,
    nn.InstanceNorm1d: nnq.InstanceNorm1d,
    nn.InstanceNorm2d: nnq.InstanceNorm2d,
    nn.InstanceNorm3d: nnq.InstanceNorm3d,
    nn.LayerNorm: nnq.LayerNorm,
    nn.Dropout: nnq.Dropout,
    nn.Softmax: nnq.Softmax,
    nn.PReLU: nnq.PReLU,
    nni.BNReLU2d: nniq.BNReLU2d,
    nni.BNReLU3d: nniq.BNReLU3d,
}

# quantized functional op -> keyword arguments of the float call it does not take
SKIPPED_KWARGS: dict[Any, frozenset[str]] = {
    torch.ops.quantized.hardswish: frozenset({"inplace"}),
    torch.ops.quantized.elu: frozenset({"inplace"}),
    torch.ops.quantized.dropout: frozenset({"inplace"}),
    torch.ops.quantized.instance_norm: frozenset({"running_mean", "running_var", "use_input_stats", "momentum"}),
}
