"""python -m bench.run: qfx against torch, side by side, in one process.

For every (family, blocks, mapping) row it times, alternating qfx and torch runs and taking medians:
  * the foundation: qfx `lift` and `codegen` against torch's `GraphModule(gm, gm.graph)`;
  * convert: qfx's reference, decomposed and lowered convert against torch's (`convert_to_reference_fx`,
    `_convert_to_reference_decomposed_fx`, `convert_fx`), torch working on a fresh deepcopy of the observed
    model each run (made before timing, as torch mutates its input);
  * inference: the forward latency of qfx's lowered model, torch's lowered model and the float model;
and checks that the results are equal (code, state_dict, outputs) and that qfx left its input alone.
The real-architecture rows (bench/arch_models.py, x86 mapping) also time the tensor floor of each convert:
the work no convert can skip (see `floor_seconds`). The other-kinds rows (bench/kinds.py: QAT convnets, a
dynamic recurrent net, embedding tables, a transposed-conv decoder) time reference and lowered convert.
Everything runs on one thread. Results go to rich tables and, with every raw measurement, to a JSON file.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.fx import GraphModule

from qfx.ir.errors import UnsupportedError
from qfx.ir.lift import lift
from qfx.lowering.codegen import codegen
from qfx.passes.instruments import Timing
from qfx.cli import MODES, differences, fingerprint, same_fingerprint

from .arch_models import ARCHITECTURES
from .floor import FloorWork, floor_seconds, floor_work
from .kinds import KINDS, prepare_kind
from .models import FAMILIES, MAPPINGS, Observed, default_cache_dir, float_model, observed_model
from .plot import plot_results

# Blocks per family; observed node counts (MinMax) are about 100, 1,000 and 2,500-5,000.
DEFAULT_SIZES = {"mlp": (50, 500, 2500), "cnn": (14, 140, 357), "transformer": (3, 33, 83)}
QUICK_SIZES = {"mlp": (50,), "cnn": (14,), "transformer": (3,)}
# x86 uses HistogramObserver, whose calculate_qparams makes convert cost 2-100 ms per node (most on the
# deep MLP), so x86 rows run only up to these sizes (50-100 nodes), or these in --quick (20-35 nodes).
X86_MAX_BLOCKS = {"mlp": 25, "cnn": 14, "transformer": 3}
QUICK_X86_BLOCKS = {"mlp": 10, "cnn": 4, "transformer": 1}
# --huge adds MLP rows of 10,003 and 25,003 nodes (MinMax), to show qfx's time per node stays flat.
HUGE_MLP_BLOCKS = (5000, 12500)
QUICK_ARCHITECTURES = ("mobilenet_v3",)
# Modes whose convert has a measured tensor floor on the architecture rows, and that the kinds rows time.
FLOOR_MODES = ("reference", "lowered")
KIND_MODES = FLOOR_MODES
# Inference latency: rounds of forward runs (each model once per round, in carryover-balanced orders: ten
# orders for five models), and the largest graph timed.
LATENCY_RUNS = 20
QUICK_LATENCY_RUNS = 10
LATENCY_MAX_NODES = 1000
# Outputs are compared only up to this size: in torch 2.13 every quantize_per_tensor call costs ~8 ms, so
# running a large reference model takes many seconds. Code and state_dict are compared at every size.
OUTPUT_CHECK_MAX_NODES = 1000

PENDING = "n/a (pending)"


# --------------------------------------------------------------------------------------------------
# Timing


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(seconds, result) of one call, with the garbage collector paused during it."""
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def measure_foundation(observed: Observed, repeat: int) -> dict[str, Any]:
    """lift, codegen (of the lifted program) and torch's GraphModule(gm, gm.graph), alternating."""
    # GraphModule() makes itself the owner of the graph it is given: build from a copy, not the observed model.
    reference = copy.deepcopy(observed.model)
    runs: dict[str, list[float]] = {"lift": [], "codegen": [], "torch_graphmodule": []}
    for _ in range(repeat):
        seconds, program = timed(lift, observed.model)
        runs["lift"].append(seconds)
        seconds, _ = timed(codegen, program)
        runs["codegen"].append(seconds)
        seconds, _ = timed(GraphModule, reference, reference.graph)
        runs["torch_graphmodule"].append(seconds)
    return {"runs": runs, "median": {k: median(v) for k, v in runs.items()}}


def measure_convert(observed: Observed, mode: str, repeat: int,
                    floor: FloorWork | None = None) -> tuple[dict[str, Any], GraphModule | None, GraphModule]:
    """qfx's and torch's convert in `mode`, alternating (and the tensor floor of `floor`, timed in the same
    rounds, on qfx's generated code); equality of the results; purity of qfx. Returns the measurements, qfx's
    last result (None if it failed) and torch's last result."""
    _, ours_fn, theirs_fn = MODES[mode]
    before = fingerprint(observed.model)
    qfx_runs: list[float] = []
    torch_runs: list[float] = []
    floor_runs: list[float] = []
    pass_runs: list[list[tuple[str, float, int, int]]] = []
    status, error = "ok", None
    ours = theirs = None
    # Each convert starts from the same state, as a fresh call would: earlier results dropped and the garbage
    # collected (a lowered ResNet convert ran up to 1.6x slower, qfx's and torch's alike, while the last
    # results were alive). Only the last round's results are kept, for the comparison. What exists before the
    # rounds is frozen meanwhile, so that each collection only walks what the converts made.
    gc.collect()
    gc.freeze()
    try:
        for i in range(repeat):
            keep = i == repeat - 1
            code = None
            if status == "ok":
                timing = Timing()
                try:
                    gc.collect()
                    seconds, result = timed(ours_fn, observed.model, instruments=[timing])
                    qfx_runs.append(seconds)
                    pass_runs.append([(r.name, r.seconds, r.nodes_before, r.nodes_after) for r in timing.records])
                    code, ours = result.code, (result if keep else None)
                    del result
                except UnsupportedError as exc:
                    status, error = "pending", str(exc)
                except Exception as exc:  # report and carry on: one broken row must not sink the bench
                    status, error = "error", f"{type(exc).__name__}: {exc}"
            given = copy.deepcopy(observed.model)  # torch converts in place; made before timing
            gc.collect()
            seconds, result = timed(theirs_fn, given)
            torch_runs.append(seconds)
            theirs = result if keep else None
            del result, given
            if floor is not None and code is not None:
                gc.collect()  # from the state each convert starts from (torch's result may be cyclic garbage)
                floor_runs.append(floor_seconds(floor, code, lowered=mode == "lowered"))
    finally:
        gc.unfreeze()
    result: dict[str, Any] = {
        "status": status,
        "error": error,
        "qfx_runs": qfx_runs,
        "torch_runs": torch_runs,
        "qfx": median(qfx_runs),
        "torch": median(torch_runs),
        "ratio": median(torch_runs) / median(qfx_runs) if qfx_runs else None,
        "passes": _pass_medians(pass_runs),
        "nodes_out": len(ours.graph.nodes) if ours is not None else None,
        "torch_nodes_out": len(theirs.graph.nodes),
    }
    if floor is not None:
        result["floor_runs"] = floor_runs
        result["floor"] = median(floor_runs)
        result["floor_weights"] = len(floor.weights)
        result["over_floor"] = median(qfx_runs) / median(floor_runs) if qfx_runs and floor_runs else None
    if ours is not None:
        check_outputs = observed.nodes <= OUTPUT_CHECK_MAX_NODES
        found = differences(ours, theirs, observed.example_inputs if check_outputs else None)
        result["outputs_compared"] = check_outputs
        result["equal"] = not found
        result["differences"] = found
        result["input_unchanged"] = same_fingerprint(before, fingerprint(observed.model))
    return result, ours, theirs


def measure_latency(observed: Observed, built: dict[str, list[GraphModule]], runs: int) -> dict[str, Any]:
    """Forward latency (seconds) of qfx's lowered models, torch's lowered models and the float model, on the
    row's example inputs, after one untimed call of each. `built` holds each side's models in the order they
    were built, which alternates (qfx, torch, torch, qfx): the model built first in a row runs up to 10%
    slower, whoever built it (moving torch's convert first moves the slowdown to torch's model), so each side
    is timed on one model of each build position and counts its faster one. The rounds go through orders in
    which every model follows every other equally often: a forward right after another model's runs slower
    (its weights were pushed out of the caches), so with a fixed neighbour the model after the float model,
    whose weights are the largest, always paid for it."""
    models = {f"{side}#{i}": model for side in ("qfx", "torch") for i, model in enumerate(built[side], 1)}
    models["float"] = float_model(observed.family, observed.blocks)
    inputs = observed.example_inputs
    names = list(models)
    samples: dict[str, list[float]] = {name: [] for name in names}
    orders = carryover_balanced_orders(len(names))
    with torch.no_grad():
        for model in models.values():
            model(*inputs)
        for round_ in range(runs):
            for index in orders[round_ % len(orders)]:
                samples[names[index]].append(timed(models[names[index]], *inputs)[0])
    per_model = {name: median(v) for name, v in samples.items()}
    medians = {side: min(m for name, m in per_model.items() if name.split("#")[0] == side)
               for side in ("qfx", "torch", "float")}
    return {"runs": samples, "per_model": per_model, "median": medians,
            "qfx_over_torch": medians["qfx"] / medians["torch"]}


def carryover_balanced_orders(n: int) -> list[list[int]]:
    """Orders of range(n) in which each item stands in each position equally often and comes right after each
    other item equally often (a Williams design: n orders for even n, 2n for odd n)."""
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    orders = [[(item + shift) % n for item in first] for shift in range(n)]
    return orders + [order[::-1] for order in orders] if n % 2 else orders


def _pass_medians(runs: list[list[tuple[str, float, int, int]]]) -> list[dict[str, Any]]:
    if not runs:
        return []
    last = runs[-1]
    return [
        {"pass": name, "seconds": median([run[i][1] for run in runs]), "runs": [run[i][1] for run in runs],
         "nodes_before": before, "nodes_after": after}
        for i, (name, _, before, after) in enumerate(last)
    ]


# --------------------------------------------------------------------------------------------------
# The plan


def plan(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """The (family, blocks, mapping) rows to run, in order."""
    rows = []
    for family in args.families:
        if args.sizes is not None:
            sizes = {m: [b for b in args.sizes if m != "x86" or b <= X86_MAX_BLOCKS[family]] for m in MAPPINGS}
        elif args.quick:
            sizes = {"minmax": list(QUICK_SIZES[family]), "x86": [QUICK_X86_BLOCKS[family]]}
        else:
            sizes = {"minmax": list(DEFAULT_SIZES[family]), "x86": [X86_MAX_BLOCKS[family]]}
        if args.huge and family == "mlp" and "minmax" in args.mappings:
            sizes["minmax"] = sorted({*sizes["minmax"], *HUGE_MLP_BLOCKS})
        for blocks in sorted({b for m in args.mappings for b in sizes[m]}):
            rows += [(family, blocks, m) for m in args.mappings if blocks in sizes[m]]
    return rows


def arch_plan(args: argparse.Namespace) -> list[str]:
    """The architectures to run (x86 mapping each)."""
    if args.arch is not None:
        return args.arch
    return list(QUICK_ARCHITECTURES) if args.quick else list(ARCHITECTURES)


def kind_plan(args: argparse.Namespace) -> list[str]:
    """The other kinds of models to run (none with --quick unless named)."""
    if args.kinds is not None:
        return args.kinds
    return [] if args.quick else list(KINDS)


def warm_up() -> None:
    """One untimed pass over everything on a tiny model, so that no row pays for first calls (lazy imports,
    caches)."""
    observed = observed_model("mlp", 2, "minmax", None)
    measure_foundation(observed, 1)
    work = floor_work(observed.model)
    for mode in MODES:
        _, ours, theirs = measure_convert(observed, mode, 1, work)
        if mode == "lowered" and ours is not None:
            measure_latency(observed, latency_models(observed, ours, theirs), 1)


def latency_models(observed: Observed, ours: GraphModule, theirs: GraphModule) -> dict[str, list[GraphModule]]:
    """qfx's and torch's lowered models for `measure_latency`: the last timed round's (qfx's built first),
    then one more of each, built in the other order (torch's first)."""
    _, ours_fn, theirs_fn = MODES["lowered"]
    theirs_again = theirs_fn(copy.deepcopy(observed.model))
    return {"qfx": [ours, ours_fn(observed.model)], "torch": [theirs, theirs_again]}


def run_row(observed: Observed, repeat: int, latency_runs: int, with_floor: bool = False) -> dict[str, Any]:
    """Every measurement for one observed model: foundation, convert in every mode (with the tensor floor of
    the reference and lowered converts when `with_floor`), and the lowered models' latency (up to
    LATENCY_MAX_NODES nodes)."""
    started = time.perf_counter()
    row = {
        "family": observed.family,
        "blocks": observed.blocks,
        "mapping": observed.mapping,
        "nodes": observed.nodes,
        "prepare_seconds": observed.prepare_seconds,
        "prepare_cached": observed.cached,
        "foundation": measure_foundation(observed, repeat),
        "convert": {},
        "latency": None,
    }
    work = floor_work(observed.model) if with_floor else None
    for mode in MODES:
        result, ours, theirs = measure_convert(observed, mode, repeat, work if mode in FLOOR_MODES else None)
        row["convert"][mode] = result
        if mode == "lowered" and ours is not None and latency_runs and observed.nodes <= LATENCY_MAX_NODES:
            row["latency"] = measure_latency(observed, latency_models(observed, ours, theirs), latency_runs)
        del ours, theirs
    row["row_seconds"] = time.perf_counter() - started
    return row


def run_kind_row(observed: Observed, repeat: int) -> dict[str, Any]:
    """Reference and lowered convert of one model of the other kinds (no floor, no latency)."""
    started = time.perf_counter()
    row: dict[str, Any] = {"family": observed.family, "blocks": 0, "mapping": observed.mapping,
                           "nodes": observed.nodes, "prepare_seconds": observed.prepare_seconds, "convert": {}}
    for mode in KIND_MODES:
        row["convert"][mode], _, _ = measure_convert(observed, mode, repeat)
    row["row_seconds"] = time.perf_counter() - started
    return row


# --------------------------------------------------------------------------------------------------
# Presentation


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds for a table cell."""
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def us_per_node(seconds: float | None, nodes: int) -> str:
    """Seconds per node as microseconds for a table cell."""
    return "-" if seconds is None else f"{seconds * 1e6 / nodes:,.1f}"


def _convert_cells(c: dict[str, Any]) -> list[str]:
    # qfx ms, torch ms, ratio, same
    if c["status"] == "pending":
        return [PENDING, ms(c["torch"]), PENDING, "n/a"]
    if c["status"] == "error":
        return ["error", ms(c["torch"]), "-", "-"]
    same = ("yes" if c["outputs_compared"] else "yes*") if c["equal"] else "NO"
    if not c["input_unchanged"]:
        same += " (input changed!)"
    return [ms(c["qfx"]), ms(c["torch"]), f"{c['ratio']:.2f}x", same]


def foundation_table(rows: list[dict[str, Any]], repeat: int) -> Table:
    """lift and codegen against torch's GraphModule(), per row."""
    table = Table(title=escape(f"Foundation: qfx lift / codegen vs torch GraphModule(gm, gm.graph)  "
                               f"[ms, median of {repeat}, alternating]"), title_justify="left")
    for name in ("family", "blocks", "mapping", "nodes"):
        table.add_column(name, justify="left" if name in ("family", "mapping") else "right")
    for name in ("lift", "codegen", "torch GM()", "lift µs/node", "codegen µs/node", "GM() µs/node"):
        table.add_column(name, justify="right")
    for r in rows:
        m = r["foundation"]["median"]
        n = r["nodes"]
        table.add_row(r["family"], str(r["blocks"]), r["mapping"], f"{n:,}", ms(m["lift"]), ms(m["codegen"]),
                      ms(m["torch_graphmodule"]), us_per_node(m["lift"], n), us_per_node(m["codegen"], n),
                      us_per_node(m["torch_graphmodule"], n))
    return table


SHORT = {"reference": "ref", "decomposed": "dec", "lowered": "low"}


def convert_table(rows: list[dict[str, Any]], repeat: int) -> Table:
    """Reference, decomposed and lowered convert, qfx against torch, per row."""
    table = Table(title=escape(f"Convert: qfx vs torch  [ms, median of {repeat}, alternating; torch on a deepcopy "
                               f"made before timing; x = torch/qfx; 'same' = code, state_dict and outputs; "
                               f"yes* = outputs not run above {OUTPUT_CHECK_MAX_NODES:,} nodes]"),
                  title_justify="left")
    for name in ("family", "blocks", "mapping", "nodes"):
        table.add_column(name, justify="left" if name in ("family", "mapping") else "right")
    for mode in MODES:
        for name in ("qfx", "torch", "x", "same"):
            table.add_column(f"{SHORT[mode]} {name}", justify="right")
    for r in rows:
        cells = [r["family"], str(r["blocks"]), r["mapping"], f"{r['nodes']:,}"]
        for mode in MODES:
            cells += _convert_cells(r["convert"][mode])
        table.add_row(*cells)
    return table


def arch_table(rows: list[dict[str, Any]], repeat: int) -> Table:
    """Real architectures: qfx, torch and the tensor floor per mode, with torch/qfx and qfx/floor."""
    table = Table(title=escape(f"Real architectures, x86 mapping, one thread: convert vs torch and the tensor floor  "
                               f"[ms, median of {repeat}, alternating; x = torch/qfx; /floor = qfx/floor; floor = "
                               f"weight min/max + compile of the forward (+ weight quantize + prepack when lowered)]"),
                  title_justify="left")
    table.add_column("model")
    table.add_column("nodes", justify="right")
    table.add_column("weights", justify="right")
    for mode in FLOOR_MODES:
        for name in ("qfx", "torch", "floor", "x", "/floor", "same"):
            table.add_column(f"{SHORT[mode]} {name}", justify="right")
    for r in rows:
        cells = [r["family"], f"{r['nodes']:,}", str(r["convert"]["reference"].get("floor_weights", "-"))]
        for mode in FLOOR_MODES:
            c = r["convert"][mode]
            qfx_ms, torch_ms, ratio, same = _convert_cells(c)
            over = c.get("over_floor")
            cells += [qfx_ms, torch_ms, ms(c.get("floor")), ratio, "-" if over is None else f"{over:.2f}", same]
        table.add_row(*cells)
    return table


def kinds_table(rows: list[dict[str, Any]], repeat: int) -> Table:
    """Other kinds of models: qfx and torch per mode, with torch/qfx."""
    table = Table(title=escape(f"Other kinds of models, one thread: convert vs torch  [ms, median of {repeat}, "
                               "alternating; x = torch/qfx]"), title_justify="left")
    table.add_column("model")
    table.add_column("what")
    table.add_column("nodes", justify="right")
    for mode in KIND_MODES:
        for name in ("qfx", "torch", "x", "same"):
            table.add_column(f"{SHORT[mode]} {name}", justify="right")
    for r in rows:
        cells = [r["family"], KINDS[r["family"]][0], f"{r['nodes']:,}"]
        for mode in KIND_MODES:
            cells += _convert_cells(r["convert"][mode])
        table.add_row(*cells)
    return table


def latency_table(rows: list[dict[str, Any]], runs: int) -> Table | None:
    """Forward latency of the lowered models (qfx's, torch's) and the float model, per row that has it."""
    timed_rows = [r for r in rows if r.get("latency")]
    if not timed_rows:
        return None
    table = Table(title=escape(f"Inference latency, one thread: lowered qfx / lowered torch / float model  [ms per "
                               f"forward, median of {runs} balanced rounds; two models per side, built in turn, the "
                               f"faster counted; same kernels, so qfx/torch should be 1 within noise]"),
                  title_justify="left")
    for name in ("family", "blocks", "mapping", "nodes"):
        table.add_column(name, justify="left" if name in ("family", "mapping") else "right")
    for name in ("qfx lowered", "torch lowered", "float", "qfx/torch", "float/qfx"):
        table.add_column(name, justify="right")
    for r in timed_rows:
        m = r["latency"]["median"]
        blocks = "-" if r["family"] in ARCHITECTURES else str(r["blocks"])
        table.add_row(r["family"], blocks, r["mapping"], f"{r['nodes']:,}", ms(m["qfx"]), ms(m["torch"]), ms(m["float"]), f"{m['qfx'] / m['torch']:.2f}", f"{m['float'] / m['qfx']:.2f}")
    return table


PASS_COLUMN_SHARE = 0.03


def pass_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """Per-pass medians, one table per mode, for the largest size of each family and every architecture."""
    largest: dict[str, int] = {}
    for r in rows:
        largest[r["family"]] = max(largest.get(r["family"], 0), r["blocks"])
    tables = []
    for mode in MODES:
        picked = [r for r in rows if r["blocks"] == largest[r["family"]] and r["convert"][mode]["status"] == "ok"]
        if not picked:
            continue
        names: list[str] = []
        for r in picked:
            for p in r["convert"][mode]["passes"]:
                if p["pass"] not in names and p["seconds"] >= PASS_COLUMN_SHARE * r["convert"][mode]["qfx"]:
                    names.append(p["pass"])
        table = Table(title=escape(f"qfx per pass, {mode} convert, largest size of each family  [ms, median; from the "
                                   f"Timing instrument; passes under {PASS_COLUMN_SHARE:.0%} of every row's total are "
                                   f"summed in 'other passes'; 'rest' = lift + codegen + API]"), title_justify="left")
        for name in ("family", "mapping", "nodes in -> out"):
            table.add_column(name, no_wrap=True)
        for name in (*names, "other passes", "rest", "total"):
            # the pass names break at their dashes, so that the lowered table fits
            table.add_column(name.replace("-", "-\n"), justify="right")
        for r in picked:
            c = r["convert"][mode]
            by_name = {p["pass"]: p["seconds"] for p in c["passes"]}
            rest = c["qfx"] - sum(by_name.values())
            other = sum(seconds for name, seconds in by_name.items() if name not in names)
            table.add_row(r["family"], r["mapping"], f"{r['nodes']:,} -> {c['nodes_out']:,}",
                          *[ms(by_name.get(n)) for n in names], ms(other), ms(rest), ms(c["qfx"]))
        tables.append(table)
    return tables


TARGET_MIN_NODES = 1000
# mode -> (mapping the target applies to, or None for every mapping; least torch/qfx on 1,000+-node graphs)
TARGET_BIG_RATIO = {"reference": ("minmax", 5.0), "decomposed": ("minmax", 3.0), "lowered": (None, 3.0)}
TARGET_ARCH_RATIO = 3.0
TARGET_ARCH_OVER_FLOOR = 2.0
FLAT_TOLERANCE = 1.5  # µs per node of the largest graph within this factor of the smallest 1,000+-node one


def _where(m: tuple[dict[str, Any], str, dict[str, Any]]) -> str:
    return f"{m[0]['family']} {m[0]['nodes']:,} nodes {m[0]['mapping']} {m[1]}"


def target_lines(rows: list[dict[str, Any]], arch_rows: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The issues' speed targets, checked against this run: qfx faster than torch on every row (and on every
    lowered row); at least TARGET_BIG_RATIO on 1,000+-node graphs per mode; on every architecture row, at
    least TARGET_ARCH_RATIO x faster than torch and within TARGET_ARCH_OVER_FLOOR x of the floor; qfx's µs
    per node as graphs grow, flat (within FLAT_TOLERANCE) from 1,000 nodes up."""
    everything = [*rows, *arch_rows]
    measured = [(r, mode, r["convert"][mode]) for r in everything for mode in MODES
                if r["convert"][mode]["status"] == "ok"]
    if not measured:
        return []
    lines = []
    for label, subset in (("every row", measured), ("every lowered row", [m for m in measured if m[1] == "lowered"])):
        if subset:
            slowest = min(subset, key=lambda m: m[2]["ratio"])
            verdict = "yes" if slowest[2]["ratio"] > 1 else "NO"
            lines.append(f"target: faster than torch on {label}: {verdict} (lowest {slowest[2]['ratio']:.2f}x: "
                         f"{_where(slowest)})")
    for mode, (mapping, ratio) in TARGET_BIG_RATIO.items():
        big = [m for m in measured if m[1] == mode and m[0]["nodes"] >= TARGET_MIN_NODES
               and m[0]["family"] in FAMILIES and mapping in (None, m[0]["mapping"])]
        if big:
            short = [m for m in big if m[2]["ratio"] < ratio]
            verdict = "yes" if not short else f"NO on {len(short)} of {len(big)}"
            worst = min(big, key=lambda m: m[2]["ratio"])
            lines.append(f"target: >= {ratio:g}x in {mode} mode on {mapping or 'all'} graphs of {TARGET_MIN_NODES:,}+ "
                         f"nodes: {verdict} (lowest {worst[2]['ratio']:.2f}x: {_where(worst)})")
    arch = [m for m in measured if m[0]["family"] in ARCHITECTURES and m[1] in FLOOR_MODES]
    if arch:
        short = [m for m in arch if m[2]["ratio"] < TARGET_ARCH_RATIO]
        worst = min(arch, key=lambda m: m[2]["ratio"])
        lines.append(f"target: >= {TARGET_ARCH_RATIO:g}x faster than torch on every real-architecture row: "
                     f"{'yes' if not short else f'NO on {len(short)} of {len(arch)}'} (lowest "
                     f"{worst[2]['ratio']:.2f}x: {_where(worst)})")
        floored = [m for m in arch if m[2].get("over_floor") is not None]
        if floored:
            far = [m for m in floored if m[2]["over_floor"] > TARGET_ARCH_OVER_FLOOR]
            worst = max(floored, key=lambda m: m[2]["over_floor"])
            lines.append(f"target: within {TARGET_ARCH_OVER_FLOOR:g}x of the tensor floor on every real-architecture "
                         f"row: {'yes' if not far else f'NO on {len(far)} of {len(floored)}'} (farthest "
                         f"{worst[2]['over_floor']:.2f}x the floor: {_where(worst)})")
    for family in dict.fromkeys(r["family"] for r in rows):
        for mapping in dict.fromkeys(r["mapping"] for r in rows):
            for mode in MODES:
                series = sorted((m[0]["nodes"], m[2]["qfx"] * 1e6 / m[0]["nodes"]) for m in measured
                                if m[0]["family"] == family and m[0]["mapping"] == mapping and m[1] == mode)
                if len(series) > 1:
                    cells = ", ".join(f"{n:,}: {us:,.1f}" for n, us in series)
                    line = f"qfx µs/node as {family} {mapping} {mode} grows: {cells}"
                    big = [us for n, us in series if n >= TARGET_MIN_NODES]
                    if len(big) > 1:
                        growth = big[-1] / big[0]
                        line += (f" (largest / smallest {TARGET_MIN_NODES:,}+: {growth:.2f}, "
                                 f"{'flat' if growth <= FLAT_TOLERANCE else 'NOT flat'} up to {series[-1][0]:,} nodes)")
                    lines.append(line)
    return lines


def row_summary(r: dict[str, Any]) -> str:
    """One line per finished row, printed while the bench runs."""
    named = r["family"] in ARCHITECTURES or r["family"] in KINDS
    label = r["family"] if named else f"{r['family']} blocks={r['blocks']}"
    parts = [f"{label} {r['mapping']}: {r['nodes']:,} nodes"]
    for mode, c in r["convert"].items():
        if c["status"] == "ok":
            parts.append(f"{mode} qfx {ms(c['qfx'])} ms vs torch {ms(c['torch'])} ms ({c['ratio']:.2f}x, "
                         f"{'same' if c['equal'] else 'DIFFERENT'})")
        else:
            parts.append(f"{mode} qfx {PENDING if c['status'] == 'pending' else 'error'}, torch {ms(c['torch'])} ms")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with --repeat defaulted from --quick."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one architecture, 1 repeat (about a minute)")
    parser.add_argument("--families", type=_names(FAMILIES), default=list(FAMILIES),
                        help=f"comma-separated, from {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--sizes", type=_ints, default=None,
                        help="comma-separated block counts for every family (default: per family, ~100 to "
                             f"~5,000 nodes); x86 rows only up to {X86_MAX_BLOCKS} blocks")
    parser.add_argument("--mappings", type=_names(MAPPINGS), default=list(MAPPINGS),
                        help="comma-separated, from minmax, x86 (default: both)")
    parser.add_argument("--arch", type=_arch_names, default=None,
                        help=f"comma-separated real architectures, from {', '.join(ARCHITECTURES)}, or 'none' "
                             f"(default: all; {', '.join(QUICK_ARCHITECTURES)} with --quick)")
    parser.add_argument("--kinds", type=_kind_names, default=None,
                        help=f"comma-separated other kinds of models, from {', '.join(KINDS)}, or 'none' "
                             "(default: all; none with --quick)")
    parser.add_argument("--huge", action="store_true",
                        help=f"add MLP MinMax rows of {', '.join(f'{2 * b + 3:,}' for b in HUGE_MLP_BLOCKS)} nodes "
                             f"(the first run prepares them with prepare_fx, many minutes; then cached)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per measurement (default 3; 1 with --quick)")
    parser.add_argument("--json", type=Path, default=Path("bench/results.json"), help="default: bench/results.json")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help="where observed models are cached between runs (prepare_fx is slow on big graphs)")
    parser.add_argument("--no-cache", action="store_true", help="prepare every model afresh")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _names(known: dict[str, Any]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(known)}")
        return names
    return parse


def _arch_names(text: str) -> list[str]:
    return [] if text.strip() == "none" else _names(ARCHITECTURES)(text)


def _kind_names(text: str) -> list[str]:
    return [] if text.strip() == "none" else _names(KINDS)(text)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("sizes are block counts of at least 1")
    return values


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; print the tables; write the JSON. Exit status 1 if a qfx result differed from
    torch's, changed its input or failed (pending passes are not failures), else 0."""
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The bench for parsed arguments (see `main`), on one thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=200)
    rows_to_run = [(f, b, m, False) for f, b, m in plan(args)] + [(a, 0, "x86", True) for a in arch_plan(args)]
    latency_runs = QUICK_LATENCY_RUNS if args.quick else LATENCY_RUNS
    cache = None if args.no_cache else args.cache_dir
    kinds_to_run = kind_plan(args)
    results: list[dict[str, Any]] = []
    arch_results: list[dict[str, Any]] = []
    kind_results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("warming up", total=len(rows_to_run) + len(kinds_to_run))
        warm_up()
        for family, blocks, mapping, is_arch in rows_to_run:
            label = family if is_arch else f"{family} blocks={blocks} {mapping}"
            progress.update(task, description=f"{label}: preparing")
            observed = observed_model(family, blocks, mapping, cache)
            progress.update(task, description=f"{label} ({observed.nodes:,} nodes): timing")
            row = run_row(observed, args.repeat, latency_runs, with_floor=is_arch)
            (arch_results if is_arch else results).append(row)
            progress.console.print(row_summary(row), markup=False, highlight=False)
            progress.advance(task)
            del observed
        for kind in kinds_to_run:
            progress.update(task, description=f"{kind}: preparing")
            observed = prepare_kind(kind)
            progress.update(task, description=f"{kind} ({observed.nodes:,} nodes): timing")
            row = run_kind_row(observed, args.repeat)
            kind_results.append(row)
            progress.console.print(row_summary(row), markup=False, highlight=False)
            progress.advance(task)
            del observed
    console.print()
    if results:
        console.print(foundation_table(results, args.repeat))
        console.print(convert_table(results, args.repeat))
    if arch_results:
        console.print(arch_table(arch_results, args.repeat))
    if kind_results:
        console.print(kinds_table(kind_results, args.repeat))
    latency = latency_table([*results, *arch_results], latency_runs)
    if latency is not None:
        console.print(latency)
    for line in target_lines(results, arch_results):
        console.print(line, markup=False, highlight=False)
    for table in pass_tables(results + arch_results) or []:
        console.print(table)
    everything = results + arch_results + kind_results
    notes = sorted({c["error"] for r in everything for c in r["convert"].values() if c["status"] != "ok"})
    for note in notes:
        console.print(f"note: qfx said: {note}", markup=False, highlight=False)
    total = time.perf_counter() - started
    payload = {"environment": environment(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                     for k, v in vars(args).items()},
               "total_seconds": total, "rows": results, "architectures": arch_results, "kinds": kind_results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1))
    console.print(f"{len(everything)} rows in {total:.0f} s on {torch.get_num_threads()} thread, "
                  f"load average {payload['environment']['load_average']}; every measurement written to {args.json}",
                  markup=False, highlight=False)
    for line in plot_results(payload, args.json.with_name("convert_time.png")):
        console.print(line, markup=False, highlight=False)
    failed = [c for r in everything for c in r["convert"].values()
              if c["status"] == "error" or (c["status"] == "ok" and not (c["equal"] and c["input_unchanged"]))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
