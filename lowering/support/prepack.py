"""Weight prepacking for functional lowering: which prepack op packs a weight for which functional op, and
how the functional's arguments become the prepack op's arguments."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from qfx.ir.errors import ConvertAssertionError, ConvertError

_quantized = torch.ops.quantized

CONV_FUNCTIONALS = frozenset({F.conv1d, F.conv2d, F.conv3d})
CONV_TRANSPOSE_FUNCTIONALS = frozenset({F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d})

_LINEAR_PREPACK_BY_WEIGHT_DTYPE: dict[Any, Callable] = {
    torch.float16: _quantized.linear_prepack_fp16,
    torch.qint8: _quantized.linear_prepack,
}

_CONV_PREPACK: dict[Callable, Callable] = {
    F.conv1d: _quantized.conv1d_prepack,
    F.conv2d: _quantized.conv2d_prepack,
    F.conv3d: _quantized.conv3d_prepack,
    F.conv_transpose1d: _quantized.conv_transpose1d_prepack,
    F.conv_transpose2d: _quantized.conv_transpose2d_prepack,
    F.conv_transpose3d: _quantized.conv_transpose3d_prepack,
}

# Every op whose result weight folding evaluates ahead of time (torch's WEIGHT_PREPACK_OPS).
WEIGHT_PREPACK_OPS: frozenset = frozenset({_LINEAR_PREPACK_BY_WEIGHT_DTYPE[torch.qint8],
                                           _LINEAR_PREPACK_BY_WEIGHT_DTYPE[torch.float16],
                                           *_CONV_PREPACK.values()})


def linear_prepack_op(weight_dtype: Any, node_name: str) -> Callable:
    """The prepack op for a linear weight quantized to `weight_dtype` (qint8 or float16)."""
    op = _LINEAR_PREPACK_BY_WEIGHT_DTYPE.get(weight_dtype)
    if op is None:
        raise ConvertError(f"node '{node_name}': no linear prepack op for weight dtype {weight_dtype} "
                           "(only torch.qint8 and torch.float16 weights can be lowered)")
    return op


def conv_prepack_op(functional: Callable, node_name: str) -> Callable:
    """The prepack op for the weight of a functional conv or conv_transpose."""
    op = _CONV_PREPACK.get(functional)
    if op is None:
        raise ConvertAssertionError(f"node '{node_name}': no prepack op for {functional}")
    return op


def _as_one_tuple(args: list, positions: tuple[int, ...]) -> None:
    """Turn each int among `args` at `positions` into a 1-tuple (1-d prepack ops take tuples only)."""
    for i in positions:
        if i < len(args) and isinstance(args[i], int):
            args[i] = (args[i],)


def conv_prepack_args(functional: Callable, args: list) -> list:
    """The prepack op's positional args from the functional's (weight, bias, stride, padding, ...): 1-d
    stride/padding/dilation (and output_padding) as tuples; for conv_transpose, groups and dilation trade
    places (the functional takes groups first, the prepack op dilation first)."""
    args = list(args)
    if functional is F.conv1d:
        _as_one_tuple(args, (2, 3, 4))
    elif functional is F.conv_transpose1d:
        _as_one_tuple(args, (2, 3, 4, 6))  # (5 is groups, an int either way)
    if functional in CONV_TRANSPOSE_FUNCTIONALS and len(args) > 6:
        args[5], args[6] = args[6], args[5]
    return args
