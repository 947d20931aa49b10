"""The constructor attributes a reference module gets from `from_float`, computed without constructing it.

`from_float` of torch's reference Linear, Conv, ConvTranspose, Embedding and EmbeddingBag passes some of the
float module's attributes to the class constructor, which stores them, normalises some (`kernel_size=3`
becomes `(3, 3)`, a negative `padding_idx` is counted from the end) and derives others
(`_reversed_padding_repeated_twice`). `constructor_attributes` does that arithmetic directly, for torch's
constructors as they are in the pinned torch version; the reference-module builder compares the result
with the float module's own attributes (and, once per class, with a real `from_float` on a meta stand-in).

It answers None wherever the constructor would raise or warn (invalid groups or padding, a weight with a
zero or negative size, which only warns) or a value is not plainly numbers, strings, tuples and lists:
those modules take `from_float` itself, so its errors and warnings are torch's.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Callable

import torch.ao.nn.quantized.reference as ref

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_PADDING_STRINGS = ("same", "valid")


def constructor_attributes(reference_class: type, state: dict[str, Any]) -> dict[str, Any] | None:
    """The constructor attributes `reference_class.from_float` gives a float module whose instance
    dictionary is `state` (read only), in the order the constructor sets them; None when unknown or when the
    constructor would raise or warn."""
    derive = _DERIVATIONS.get(reference_class)
    if derive is None:
        return None
    try:
        return derive(state)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _positive(*values: Any) -> bool:
    """Whether every value is a plain positive int (a size torch.empty takes and initialising fills)."""
    for v in values:
        if type(v) is not int or v <= 0:
            return False
    return True


def _linear(state: dict[str, Any]) -> dict[str, Any] | None:
    in_features, out_features = state["in_features"], state["out_features"]
    if not _positive(in_features, out_features):
        return None
    return {"in_features": in_features, "out_features": out_features}


def _per_dimension(value: Any, dims: int) -> tuple:
    """torch's _single/_pair/_triple: a tuple of an iterable's items, else the value repeated."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    if isinstance(value, (int, float, bool)):
        return (value,) * dims
    raise TypeError  # other iterables (strings, tensors) are not what a constructor attribute plainly is


def _convolution(dims: int, transposed: bool) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    zeros = (0,) * dims  # the output padding of a convolution that is not transposed

    def derive(state: dict[str, Any]) -> dict[str, Any] | None:
        in_channels, out_channels, groups = state["in_channels"], state["out_channels"], state["groups"]
        kernel_size = _per_dimension(state["kernel_size"], dims)
        stride = _per_dimension(state["stride"], dims)
        dilation = _per_dimension(state["dilation"], dims)
        padding = state["padding"]
        padding_mode = state["padding_mode"]
        if type(padding) is str:
            if transposed or padding not in _PADDING_STRINGS or (padding == "same" and any(s != 1 for s in stride)):
                return None
        else:
            padding = _per_dimension(padding, dims)
        if padding_mode not in _PADDING_MODES or (transposed and padding_mode != "zeros"):
            return None
        if len(kernel_size) != dims or len(stride) != dims or len(dilation) != dims or (
                type(padding) is tuple and len(padding) != dims):
            return None  # the constructor would pair them up as far as they go; such modules are not built here
        if not _positive(in_channels, out_channels, groups, *kernel_size):
            return None
        if in_channels % groups or out_channels % groups:
            return None
        output_padding = _per_dimension(state["output_padding"], dims) if transposed else zeros
        return {
            "in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel_size,
            "stride": stride, "padding": padding, "dilation": dilation, "transposed": transposed,
            "output_padding": output_padding, "groups": groups, "padding_mode": padding_mode,
            "_reversed_padding_repeated_twice": _reversed_padding(padding, kernel_size, dilation),
        }

    return derive


def _reversed_padding(padding: Any, kernel_size: tuple, dilation: tuple) -> tuple | list:
    """The F.pad padding _ConvNd derives: per dimension, last first, (left, right); a list for a padding
    string ('same' splits the total padding dilation * (kernel - 1), the smaller half left)."""
    if type(padding) is not str:
        last_first = padding[::-1]
        return tuple(chain.from_iterable(zip(last_first, last_first)))
    pads = [0, 0] * len(kernel_size)
    if padding == "same":
        for i, (d, k) in enumerate(zip(reversed(dilation), reversed(kernel_size))):
            total = d * (k - 1)
            pads[2 * i], pads[2 * i + 1] = total // 2, total - total // 2
    return pads


def _padding_index(padding_idx: Any, num_embeddings: int) -> Any:
    """nn.Embedding's padding_idx, a negative one counted from the end; raises ValueError where the
    constructor refuses it."""
    if padding_idx is None:
        return None
    if padding_idx > 0 and padding_idx >= num_embeddings or padding_idx < 0 and padding_idx < -num_embeddings:
        raise ValueError
    return num_embeddings + padding_idx if padding_idx < 0 else padding_idx


def _embedding_sizes(state: dict[str, Any]) -> tuple[int, int]:
    """num_embeddings and embedding_dim, which from_float's `_weight` must match in shape."""
    num, dim = state["num_embeddings"], state["embedding_dim"]
    weight = state["_parameters"]["weight"]
    if not _positive(num, dim) or weight is None or list(weight.shape) != [num, dim]:
        raise ValueError
    return num, dim


def _embedding(state: dict[str, Any]) -> dict[str, Any]:
    num, dim = _embedding_sizes(state)
    return {"num_embeddings": num, "embedding_dim": dim, "padding_idx": _padding_index(state["padding_idx"], num),
            "max_norm": state["max_norm"], "norm_type": state["norm_type"],
            "scale_grad_by_freq": state["scale_grad_by_freq"], "sparse": state["sparse"]}


def _embedding_bag(state: dict[str, Any]) -> dict[str, Any]:
    num, dim = _embedding_sizes(state)
    return {"num_embeddings": num, "embedding_dim": dim, "max_norm": state["max_norm"],
            "norm_type": state["norm_type"], "scale_grad_by_freq": state["scale_grad_by_freq"],
            "padding_idx": _padding_index(state["padding_idx"], num), "mode": state["mode"],
            "sparse": state["sparse"], "include_last_offset": state["include_last_offset"]}


_DERIVATIONS: dict[type, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    ref.Linear: _linear,
    ref.Conv1d: _convolution(1, False),
    ref.Conv2d: _convolution(2, False),
    ref.Conv3d: _convolution(3, False),
    ref.ConvTranspose1d: _convolution(1, True),
    ref.ConvTranspose2d: _convolution(2, True),
    ref.ConvTranspose3d: _convolution(3, True),
    ref.Embedding: _embedding,
    ref.EmbeddingBag: _embedding_bag,
}
