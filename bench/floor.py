"""The tensor floor of a convert: the work no convert of an observed model can skip, to time beside it.

Reference mode: the min/max of every weight a weight observer watches (per channel along its axis, or per
tensor, as that observer does), and compiling the generated forward once. Lowered mode: that, plus quantizing
each weight with its qparams and prepacking it once with the engine's prepack op. Computing qparams is convert
logic, not floor: they are computed once, untimed, by `floor_work`.

Each piece is timed done the fastest exact way known: min and max by qfx's compiled one-pass range kernel,
per channel or per tensor, written into two vectors allocated once (torch's amin and amax along rows read
the weight twice, its aminmax is several times slower), per-channel quantization by qfx's (its compiled
one-pass kernel, where torch quantizes one element at a time; torch's own loop for small weights, where that
is faster), and
prepacking in the mode qfx packs in (below autograd's view tracking where that packs the same); a convert
cannot do them faster without doing less.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable

import attrs
import torch
from torch import nn
from torch.ao.nn.intrinsic import _FusedModule
from torch.fx import GraphModule

from qfx.lowering.support.engine import packing_mode
from qfx.lowering.support.weight_quantize import quantize_per_channel
from qfx.passes.swap_modules.weight_qparams import RangeVectors, observer_rows

PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@attrs.frozen(eq=False)
class WeightWork:
    """One observed weight: the tensor, its observer's channel axis (None: per tensor), its qparams and
    dtype, and how the engine prepacks it (qweight -> packed)."""

    name: str
    weight: torch.Tensor
    axis: int | None
    scale: Any
    zero_point: Any
    dtype: torch.dtype
    prepack: Callable[[torch.Tensor], Any]


@attrs.frozen(eq=False)
class FloorWork:
    """Every weight of an observed model whose module is quantized with a weight observer."""

    weights: tuple[WeightWork, ...]


def _prepack(module: nn.Module) -> Callable[[torch.Tensor], Any]:
    """The engine's prepack op for `module`'s quantized weight, run in the mode qfx packs in (the fastest
    exact one, see qfx.lowering.support.engine.packing_mode)."""
    bias = None if module.bias is None else module.bias.detach()
    if isinstance(module, nn.Linear):
        def op(q: torch.Tensor) -> Any:
            return torch.ops.quantized.linear_prepack(q, bias)
    else:
        conv = {nn.Conv1d: torch.ops.quantized.conv1d_prepack, nn.Conv2d: torch.ops.quantized.conv2d_prepack,
                nn.Conv3d: torch.ops.quantized.conv3d_prepack}[type(module)]
        args = (list(module.stride), list(module.padding), list(module.dilation), module.groups)

        def op(q: torch.Tensor) -> Any:
            return conv(q, bias, *args)

    def pack(q: torch.Tensor) -> Any:
        with packing_mode(q, bias):
            return op(q)

    return pack


def floor_work(observed: GraphModule) -> FloorWork:
    """The weights of `observed` (a prepare_fx output) that convert must observe: one per call_module node
    whose qconfig (prepare's node_name_to_qconfig, else the module's `qconfig`) is set and whose module is,
    or fuses, a Linear or Conv1/2/3d; with its observer's axis and qparams, computed here on copies (the
    observed model is not changed)."""
    attrs_ = observed.meta.get("_observed_graph_module_attrs")
    by_node = getattr(attrs_, "node_name_to_qconfig", None) or {}
    found: list[WeightWork] = []
    seen: set[int] = set()
    for node in observed.graph.nodes:
        if node.op != "call_module":
            continue
        module = observed.get_submodule(node.target)
        qconfig = by_node.get(node.name, getattr(module, "qconfig", None))
        inner = module[0] if isinstance(module, _FusedModule) else module
        if qconfig is None or type(inner) not in WEIGHTED or id(inner) in seen:
            continue
        seen.add(id(inner))
        weight = inner.weight.detach()
        observer = qconfig.weight()
        observer(weight.clone())
        scale, zero_point = observer.calculate_qparams()
        axis = observer.ch_axis if observer.qscheme in PER_CHANNEL else None
        if axis is None:
            scale, zero_point = float(scale), int(zero_point)
        found.append(WeightWork(node.target, weight, axis, scale, zero_point, observer.dtype, _prepack(inner)))
    return FloorWork(tuple(found))


def _weight_ranges(work: FloorWork) -> None:
    """Every weight's min and max along its observer's axis (or whole), written end to end into two vectors
    by the range kernel where it takes the weight, else by torch's reductions."""
    channels = [1 if w.axis is None else w.weight.shape[w.axis] for w in work.weights]
    vectors = RangeVectors(sum(channels))
    at = 0
    for w, count in zip(work.weights, channels):
        rows = observer_rows(w.weight, w.axis)
        if rows is None:
            torch.aminmax(w.weight)
        elif not vectors.write(at, rows):
            rows.amin(dim=1), rows.amax(dim=1)
        at += count


def floor_seconds(work: FloorWork, code: str, lowered: bool) -> float:
    """Seconds (garbage collector paused) to do the floor of one convert: per weight, its min/max along its
    observer's axis (or whole); compile `code` (the generated forward) once; when `lowered`, also quantize
    each weight with its qparams and prepack it."""
    gc.disable()
    try:
        start = time.perf_counter()
        _weight_ranges(work)
        compile(code, "<floor>", "exec", dont_inherit=True)  # (as GraphModule compiles it)
        if lowered:
            for w in work.weights:
                if w.axis is None:
                    q = torch.quantize_per_tensor(w.weight, w.scale, w.zero_point, w.dtype)
                else:
                    q = quantize_per_channel(w.weight, w.scale, w.zero_point, w.axis, w.dtype)
                w.prepack(q)
        return time.perf_counter() - start
    finally:
        gc.enable()
