"""What `qfx convert` reports about a converted model: ops quantized and in float, output error against the
float model (max abs error, SQNR in dB), and float vs quantized latency."""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from typing import Any, Iterator

import attrs
import torch
from torch.fx import GraphModule

from qfx.compare import copy_to_run, fresh_inputs, run_or_error
from qfx.graphview import float_islands, node_kinds
from qfx.ir.lift import lift

LATENCY_RUNS = 20


@attrs.frozen
class OpCounts:
    """How many ops of a converted model run quantized, and how many (in how many islands) run in float."""

    quantized: int
    float: int
    islands: int
    float_nodes: tuple[str, ...]
    observers: int = 0  # observers / fake-quantizes left in (a pipeline that stops before insert-qdq)


def count_ops(model: GraphModule, observed: GraphModule, lowered: bool | None = None) -> OpCounts:
    """Count the call nodes of `model` (converted from `observed`, whose qconfigs say what the user kept in
    float; `lowered`: whether lowering passes ran, see node_kinds) that run quantized (quantized modules and
    ops, ops on quantized values, reference patterns) and in float; quantize/dequantize nodes and shape
    queries count as neither."""
    program = lift(model, observed=False)
    kinds = node_kinds(program, lift(observed).quant.node_name_to_qconfig, lowered)
    floats = tuple(n for n, k in kinds.items() if k == "float")
    return OpCounts(sum(1 for k in kinds.values() if k == "quantized"), len(floats),
                    len(float_islands(program, kinds)), floats, sum(1 for k in kinds.values() if k == "observer"))


def _leaves(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value.dequantize() if value.is_quantized else value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)


@attrs.frozen
class OutputError:
    """Quantized outputs against float outputs over all batches: max abs error and SQNR (dB); or, when the
    quantized model failed on a batch, NaN for both and that failure ("Type: message")."""

    max_abs: float
    sqnr_db: float
    failure: str | None = None


def output_error(float_model: torch.nn.Module, quantized: torch.nn.Module, batches: tuple[tuple, ...]) -> OutputError:
    """Run both models (copies, in eval mode) on every batch and compare every floating-point output (NaN
    for both figures when an output holds NaN). A failure of the float model is raised; one of the quantized
    model (a quantized op refusing what its float op took) is returned in `failure`."""
    float_model, quantized = copy.deepcopy(float_model).eval(), copy_to_run(quantized)
    signal = noise = 0.0
    max_abs = 0.0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in batches:
            expected = float_model(*fresh_inputs(batch))
            got, failure = run_or_error(quantized, batch)
            if failure is not None:
                return OutputError(math.nan, math.nan, failure)
            for x, q in zip(_leaves(expected), _leaves(got)):
                if not x.dtype.is_floating_point:
                    continue
                x, q = x.double(), q.double()
                signal += float((x * x).sum())
                noise += float(((x - q) ** 2).sum())
                if x.numel():
                    worst = float((x - q).abs().max())
                    max_abs = worst if math.isnan(worst) or worst > max_abs else max_abs  # (NaN sticks)
    if math.isnan(signal) or math.isnan(noise):  # NaN outputs (of either model): no error can be measured
        return OutputError(math.nan, math.nan)
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return OutputError(max_abs, sqnr)


def latency_ms(model: torch.nn.Module, inputs: tuple, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one forward of `model` (a copy) on `inputs` (a copy), after one warm-up run."""
    model, inputs = copy_to_run(model), fresh_inputs(inputs)
    times = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(*inputs)
        for _ in range(runs):
            start = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
