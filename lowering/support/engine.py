"""Building torch's quantized modules under the current quantized engine, with typed failures.

The engine (`torch.backends.quantized.engine`) decides how `from_reference` packs weights, and some
engines refuse some modules (qnnpack has no fp16 linear prepack, for one). torch lets that RuntimeError
through; qfx reports it as an `EngineError`, which is a RuntimeError too.

`from_reference` of torch's quantized Linear, Conv, ConvTranspose, Embedding and dynamic LSTM/GRU modules
runs their constructor, which quantizes and packs a placeholder weight of the full size (random ones for
every layer of an RNN), and then packs the real weight over it: half of the packing work is thrown away.
(Quantized BatchNorm's and LayerNorm's constructors make tensors from_reference or the constructor itself
replaces at once, which cost less than the constructor's own Python: there the replay below is what
saves.)
For those classes qfx runs the same `from_reference` through a private subclass whose constructor is
called with the smallest shape the other arguments allow (the placeholder costs nothing) and then records
the real shape attributes in place; the object that comes out is of torch's own class, with the same
attributes in the same order, and only the real weight is packed at its size.

These `from_reference`s read the quantized weight through a view of the reference module whose
`get_quantized_weight` quantizes per channel with `weight_quantize` (the same tensor as torch's, several
times faster); everything else they read is the reference module's own.
"""

from __future__ import annotations

import collections.abc
import contextlib
import functools
from typing import Any, Callable

import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.nn.quantized.modules.conv import _ConvNd
from torch.ao.nn.quantized.reference.modules.utils import ReferenceQuantizedModule

from qfx.ir.errors import ConvertError
from qfx.passes.support.constructor_layouts import (Layout, call_key, holds_placeholder, layout_of, registration_hooks,
                                                    replay)

from .weight_quantize import quantize_per_channel


class EngineError(ConvertError, RuntimeError):
    """The quantized engine cannot build a lowered module or op (torch fails with the same RuntimeError)."""


class EngineNotImplementedError(EngineError, NotImplementedError):
    """An EngineError whose cause is a NotImplementedError (an op with no kernel for these arguments)."""


def quantized_from_reference(q_class: type, ref_module: Any, *args: Any, where: str) -> Any:
    """`q_class.from_reference(ref_module, *args)`, built afresh under the current engine (never cached:
    the packing depends on the engine). A RuntimeError from torch becomes an EngineError naming `where`
    (the node and module path), the engine and the way out."""
    try:
        if q_class in _READS_QUANTIZED_WEIGHT and _per_channel_weight(ref_module):
            ref_module = _quantizing_view(ref_module)
        shrink = _SHAPE_ARGUMENTS.get(q_class)
        if shrink is None or registration_hooks():
            return q_class.from_reference(ref_module, *args)
        module = _placeholder_free(q_class).from_reference(ref_module, *args)
        module.__class__ = q_class
        _check_packed(module, q_class)
        return module
    except RuntimeError as exc:
        engine = torch.backends.quantized.engine
        kind = EngineNotImplementedError if isinstance(exc, NotImplementedError) else EngineError
        raise kind(
            f"{where}: the '{engine}' quantized engine cannot build {q_class.__module__}.{q_class.__qualname__} "
            f"({exc}); pick another engine with torch.backends.quantized.engine, or give this module a "
            f"qconfig that engine supports") from exc


def _quantizing_view(module: Any) -> Any:
    """A reference module (or a fused module of them) as `from_reference` reads it: every attribute and
    child is the module's, read-only, except that a per-channel (affine or float-qparams) qint8/quint8
    weight is quantized by `weight_quantize`.

    The view is an object of a subclass of the module's class whose instance dict holds the module's
    attributes and, below them, its modules, buffers and parameters (in the order nn.Module's `__getattr__`
    would find them): each reads as a plain attribute, where on the module a parameter read first fails
    the ordinary lookup (an AttributeError) and then runs `__getattr__`."""
    view = object.__new__(_quantizing_class(type(module)))
    state = module.__dict__
    attributes = {**state["_modules"], **state["_buffers"], **state["_parameters"], **state}
    object.__setattr__(view, "__dict__", attributes)
    object.__setattr__(view, "_viewed", module)
    return view


@functools.cache
def _quantizing_class(module_class: type) -> type:
    """The class of `_quantizing_view`s of `module_class` modules."""

    def get_quantized_weight(self: Any) -> torch.Tensor:
        if (isinstance(self, ReferenceQuantizedModule) and not self.is_decomposed
                and self.weight_qscheme in _PER_CHANNEL
                and isinstance(self.weight_scale, torch.Tensor)
                and isinstance(self.weight_zero_point, torch.Tensor)):
            return quantize_per_channel(self.weight, self.weight_scale, self.weight_zero_point,
                                        self.weight_axis_int, self.weight_dtype)
        return self._viewed.get_quantized_weight()

    def __getitem__(self: Any, index: Any) -> Any:
        return _quantizing_view(self._viewed[index])

    def __setattr__(self: Any, name: str, value: Any) -> None:
        raise AttributeError(f"'{module_class.__name__}' viewed by from_reference: cannot set '{name}'")

    def __delattr__(self: Any, name: str) -> None:
        raise AttributeError(f"'{module_class.__name__}' viewed by from_reference: cannot delete '{name}'")

    namespace = {"__slots__": ("_viewed",), "get_quantized_weight": get_quantized_weight,
                 "__getitem__": __getitem__, "__setattr__": __setattr__, "__delattr__": __delattr__,
                 "__module__": __name__, "__qualname__": f"_quantizing_class.<{module_class.__qualname__}>"}
    return type(module_class.__name__, (module_class,), namespace)


def _per_channel_weight(ref_module: Any) -> bool:
    """Whether `ref_module` (or the first module of a fused one, except those with a BatchNorm) holds a
    per-channel weight: the case `_quantizing_view` speeds up."""
    if isinstance(ref_module, _FusedModule):
        if type(ref_module) in _BN_FUSED:
            return False
        ref_module = ref_module[0]
    return getattr(ref_module, "weight_qscheme", None) in _PER_CHANNEL


# The schemes whose weights reference modules quantize with torch.quantize_per_channel.
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_affine_float_qparams)


# torch's fused modules that must not reach from_reference with their BatchNorm (it checks their type).
_BN_FUSED = (nni.ConvBn1d, nni.ConvBn2d, nni.ConvBn3d, nni.ConvBnReLU1d, nni.ConvBnReLU2d, nni.ConvBnReLU3d,
             nni.LinearBn1d)


# A constructor's arguments -> (the arguments for the smallest placeholder, the real shape attributes, what
# to do once built, or None), or None when they cannot be shrunk.
Shrunk = tuple[tuple, dict[str, Any], Callable[[Any], None] | None]
Shrink = Callable[[tuple, dict], Shrunk | None]


def _shrink_linear(args: tuple, kwargs: dict) -> Shrunk | None:
    """(in_features, out_features, ...) -> constructor arguments for a 1x1 placeholder, and the real sizes."""
    if len(args) < 2:
        return None
    in_features, out_features, *rest = args
    return (1, 1, *rest), {"in_features": in_features, "out_features": out_features}, None


def _shrink_rnn(args: tuple, kwargs: dict) -> Shrunk | None:
    """(input_size, hidden_size, ...) of a dynamic quantized LSTM or GRU -> arguments for one-feature
    placeholder cells, and the real sizes. (The constructor quantizes and packs random placeholder weights
    for every layer and direction; from_reference's set_weight_bias replaces all of them.)"""
    if len(args) < 2:
        return None
    input_size, hidden_size, *rest = args
    return (1, 1, *rest), {"input_size": input_size, "hidden_size": hidden_size}, None


def _shrink_embedding(args: tuple, kwargs: dict) -> Shrunk | None:
    """(num_embeddings, embedding_dim, ..., _weight, ...) with a weight of that shape (the eighth argument of
    both the Embedding and the EmbeddingBag constructor, as from_reference passes it) -> the arguments for
    a small placeholder without a weight, the real sizes, and packing the weight once built. The constructor
    packs a placeholder of the full size whatever the weight (EmbeddingPackedParams builds one), then packs
    the weight over it; a missing or misshapen weight runs the constructor itself (and its check)."""
    if len(args) < 8 or "_weight" in kwargs:
        return None
    num_embeddings, embedding_dim, weight = args[0], args[1], args[7]
    if not isinstance(weight, torch.Tensor) or list(weight.shape) != [num_embeddings, embedding_dim]:
        return None
    # (8 columns: a valid packed row for every embedding dtype; 4-bit rows pack two values a byte)
    small = (1, 8, *args[2:7], None, *args[8:])
    return small, {"num_embeddings": num_embeddings, "embedding_dim": embedding_dim}, \
        lambda module: module._packed_params.set_weight(weight)


def _shrink_batchnorm(args: tuple, kwargs: dict) -> Shrunk | None:
    """(num_features, eps, momentum) of a quantized BatchNorm -> arguments for a one-feature module, and the
    real size. from_reference assigns the float module's weight, bias and running statistics over the
    constructor's; its scalar buffers (the batch count, scale and zero point) are the same at any size."""
    if len(args) < 1:
        return None
    num_features, *rest = args
    return (1, *rest), {"num_features": num_features}, None


def _shrink_layernorm(args: tuple, kwargs: dict) -> Shrunk | None:
    """(normalized_shape, weight, bias, scale, zero_point, eps, elementwise_affine), as from_reference
    passes them to a quantized LayerNorm (a float scale, an int zero point) -> the arguments without the
    weight, bias and qparams, and assigning those once built as the constructor does. (Its float
    LayerNorm constructor makes placeholder parameters of the full size, which the constructor assigns over
    at once: a replay leaves them out.)"""
    if len(args) != 7 or kwargs or type(args[3]) is not float or type(args[4]) is not int:
        return None
    normalized_shape, weight, bias, scale, zero_point, eps, elementwise_affine = args

    def finish(module: Any) -> None:  # (the constructor's assignments, over the entries the replay made)
        module.weight = weight
        module.bias = bias
        module.scale = torch.tensor(scale)
        module.zero_point = torch.tensor(zero_point)

    return (normalized_shape, None, None, 1.0, 0, eps, elementwise_affine), {}, finish


def _shrink_conv(args: tuple, kwargs: dict) -> Shrunk | None:
    """(in_channels, out_channels, kernel_size, stride, padding, dilation or output_padding, groups, ...)
    -> arguments for a placeholder with one channel per group and a unit kernel, and the real sizes (the
    kernel as the constructor normalises an iterable one: a tuple of it). The conv and transposed conv
    constructors both take groups seventh."""
    if len(args) < 3 or not isinstance(args[2], collections.abc.Iterable):
        return None
    in_channels, out_channels, kernel_size, *rest = args
    groups = rest[3] if len(rest) > 3 else kwargs.get("groups", 1)
    kernel = tuple(kernel_size)
    real = {"in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel}
    return (groups, groups, (1,) * len(kernel), *rest), real, None


_SHAPE_ARGUMENTS: dict[type, Shrink] = {
    **{cls: _shrink_linear for cls in (nnq.Linear, nniq.LinearReLU, nniq.LinearLeakyReLU, nniq.LinearTanh,
                                       nnqd.Linear, nniqd.LinearReLU)},
    **{cls: _shrink_conv for cls in (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nniq.ConvReLU1d, nniq.ConvReLU2d,
                                     nniq.ConvReLU3d, nniq.ConvAdd2d, nniq.ConvAddReLU2d, nnq.ConvTranspose1d,
                                     nnq.ConvTranspose2d, nnq.ConvTranspose3d)},
    nnq.Embedding: _shrink_embedding,
    nnq.EmbeddingBag: _shrink_embedding,
    nnqd.LSTM: _shrink_rnn,
    nnqd.GRU: _shrink_rnn,
    **{cls: _shrink_batchnorm for cls in (nnq.BatchNorm2d, nnq.BatchNorm3d, nniq.BNReLU2d, nniq.BNReLU3d)},
    nnq.LayerNorm: _shrink_layernorm,
}


# Classes whose from_reference reads the weight with get_quantized_weight and nothing it could not read
# through a _quantizing_view.
_READS_QUANTIZED_WEIGHT = frozenset(c for c, shrink in _SHAPE_ARGUMENTS.items()
                                    if shrink not in (_shrink_rnn, _shrink_batchnorm, _shrink_layernorm))


@functools.cache
def _placeholder_free(q_class: type) -> type:
    """A subclass of `q_class` whose constructor packs its placeholder weight at the smallest shape, then
    stores the real shape attributes where the constructor put the placeholder's (same keys, same order).

    A constructor run with the same (shrunk) arguments builds the same instance dict, so its layout
    (`qfx.passes.support.constructor_layouts`, with the packed weight as the slot left None) is remembered
    and replayed for the next module with those arguments instead of running the constructor again.

    Conv classes pack no placeholder at all: their constructor's own set_weight_bias (the only one before
    `scale` is set) stores None where the packed params go, and `from_reference` packs the real weight
    right after. Plain attribute values go straight into the instance dict, which is all Module.__setattr__
    does with a value that is neither a tensor nor a module, under a name none of its tables holds."""
    shrink = _SHAPE_ARGUMENTS[q_class]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        shrunk = shrink(args, kwargs)
        if shrunk is None:
            q_class.__init__(self, *args, **kwargs)
            return
        small_args, real, finish = shrunk
        key = call_key(small_args, kwargs)
        layout = _LAYOUTS.get((q_class, key)) if key is not None else None
        state = self.__dict__
        if layout is None:
            q_class.__init__(self, *small_args, **kwargs)
            if key is not None and len(_LAYOUTS) < _MAX_LAYOUTS:
                _LAYOUTS[(q_class, key)] = layout_of(state, parameters=True, buffers=True,
                                                     slot=(_PACKED, torch.ScriptObject)) or ()
        elif layout:
            replay(layout, state)
        else:  # the constructor's result cannot be replayed: run it
            q_class.__init__(self, *small_args, **kwargs)
        for name, value in real.items():
            if name not in state:
                raise EngineError(f"{q_class.__qualname__}: its constructor did not set '{name}' as qfx expects")
            state[name] = value
        if finish is not None:
            finish(self)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        state = self.__dict__
        if (isinstance(value, (torch.Tensor, torch.nn.Module))
                or name in state.get("_parameters", ()) or name in state.get("_buffers", ())
                or name in state.get("_modules", ())):
            if not _replace_registered(state, name, value):
                q_class.__setattr__(self, name, value)
        else:
            object.__setattr__(self, name, value)

    conv = issubclass(q_class, _ConvNd)

    def set_weight_bias(self: Any, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        if conv and "scale" not in self.__dict__:
            self.__dict__["_packed_params"] = None  # the constructor's placeholder, packed over at once
            return
        with packing_mode(weight, bias):
            q_class.set_weight_bias(self, weight, bias)

    namespace: dict[str, Any] = {"__init__": __init__, "__setattr__": __setattr__, "__module__": __name__,
                                 "__qualname__": f"_placeholder_free.<{q_class.__qualname__}>"}
    if shrink in (_shrink_linear, _shrink_conv):  # their set_weight_bias(weight, bias) packs one weight
        namespace["set_weight_bias"] = set_weight_bias
    return type(q_class.__name__, (q_class,), namespace)


def _replace_registered(state: dict[str, Any], name: str, value: Any) -> bool:
    """Store `value` in place of the parameter or buffer `name` of the module whose instance dict is
    `state`, as Module.__setattr__ would, where that is plainly replacing a table entry: a leaf Parameter
    over a parameter, a plain tensor over a buffer (from_reference assigns the float module's weight, bias
    and statistics over the constructor's). False, having changed nothing, otherwise. Only for modules
    built without registration hooks, of torch's classes (their register_parameter and register_buffer
    are nn.Module's)."""
    parameters, buffers, modules = state.get("_parameters"), state.get("_buffers"), state.get("_modules")
    if parameters is None or buffers is None or modules is None or name in modules:
        return False
    kind = type(value)
    if kind is torch.nn.Parameter:  # (Module.__setattr__ would also drop the name from every other table)
        plain = (name in parameters and value.grad_fn is None and name not in buffers and name not in state
                 and name not in state["_non_persistent_buffers_set"])
        table = parameters
    elif kind is torch.Tensor:  # (not a Buffer: it carries its own persistence)
        plain = name in buffers and name not in parameters and not isinstance(value, torch.nn.Buffer)
        table = buffers
    else:
        return False
    if plain:
        table[name] = value
    return plain


# Engines whose prepack ops keep a contiguous float32 CPU bias as the very tensor they were given.
_KEEP_GIVEN_BIAS = ("fbgemm", "x86", "onednn")


def packing_mode(weight: Any, bias: Any) -> contextlib.AbstractContextManager:
    """The mode to run a linear or conv prepack op of `weight` and `bias` in: below autograd's view
    tracking (ADInplaceOrView) where that packs the very same params, else the current mode.

    Prepack ops read every output channel's scale and zero point with a tensor select and `item()` (tens
    of thousands of them on a ResNet); outside that mode each select records the view it makes for
    autograd, 10-20% of the packing time of a ResNet under fbgemm and oneDNN. The kernels are the same
    either way, and so is every tensor the packed params keep, except a copy of a tensor that requires
    grad (a strided bias, any bias under qnnpack, a float weight): packed in the current mode, that copy
    carries autograd's history. So the mode applies when the weight requires no grad (a quantized one never
    does) and the bias is None or requires no grad, or is kept as it is given (a contiguous float32 CPU
    tensor under fbgemm, x86 and oneDNN)."""
    if getattr(weight, "requires_grad", True) or not (bias is None or isinstance(bias, torch.Tensor)):
        return contextlib.nullcontext()
    if bias is None or not bias.requires_grad or (
            torch.backends.quantized.engine in _KEEP_GIVEN_BIAS and bias.dtype == torch.float32
            and bias.is_cpu and bias.is_contiguous()):
        return torch._C._AutoDispatchBelowADInplaceOrView()
    return contextlib.nullcontext()


# The instance dicts constructors built, by (class, constructor arguments) (see constructor_layouts).
_LAYOUTS: dict[tuple[type, tuple], Layout] = {}
_MAX_LAYOUTS = 512
_PACKED = "_packed_params"  # where constructors keep packed weights, which from_reference packs anew


def _check_packed(module: torch.nn.Module, q_class: type) -> None:
    """Every packed-weight slot of the built module holds packed params (from_reference packed them), and
    every parameter or buffer a replayed constructor left as a placeholder was assigned."""
    for sub in (module,) if not module._modules else module.modules():
        if _PACKED in sub.__dict__ and sub.__dict__[_PACKED] is None:
            raise EngineError(f"{q_class.__qualname__}: from_reference did not pack its weight as qfx expects")
    if holds_placeholder(module):
        raise EngineError(f"{q_class.__qualname__}: from_reference did not assign a parameter or buffer of its "
                          "constructor as qfx expects")
