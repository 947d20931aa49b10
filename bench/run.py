"""python -m bench.run: qfx against torch, side by side, in one process.

For every (family, blocks, mapping) row it times, alternating qfx and torch runs and taking medians:
  * the foundation: qfx `lift` and `codegen` against torch's `GraphModule(gm, gm.graph)`;
  * convert: qfx's reference and decomposed convert against torch's, torch working on a fresh deepcopy
    of the observed model each run (made before timing, as torch mutates its input);
and checks that the results are equal (code, state_dict, outputs) and that qfx left its input alone.
Results go to a rich table and, with every raw measurement, to a JSON file.
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

from .models import FAMILIES, MAPPINGS, Observed, default_cache_dir, observed_model
from .plot import plot_results

# Blocks per family; observed node counts (MinMax) are about 100, 1,000 and 2,500-5,000.
DEFAULT_SIZES = {"mlp": (50, 500, 2500), "cnn": (14, 140, 357), "transformer": (3, 33, 83)}
QUICK_SIZES = {"mlp": (50,), "cnn": (14,), "transformer": (3,)}
# x86 uses HistogramObserver, whose calculate_qparams makes convert cost 2-100 ms per node (most on the
# deep MLP), so x86 rows run only up to these sizes (50-100 nodes), or these in --quick (20-35 nodes).
X86_MAX_BLOCKS = {"mlp": 25, "cnn": 14, "transformer": 3}
QUICK_X86_BLOCKS = {"mlp": 10, "cnn": 4, "transformer": 1}
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


def measure_convert(observed: Observed, mode: str, repeat: int) -> dict[str, Any]:
    """qfx's and torch's convert in `mode`, alternating; equality of the results; purity of qfx."""
    _, ours_fn, theirs_fn = MODES[mode]
    copies: list[GraphModule | None] = [copy.deepcopy(observed.model) for _ in range(repeat)]
    before = fingerprint(observed.model)
    qfx_runs: list[float] = []
    torch_runs: list[float] = []
    pass_runs: list[list[tuple[str, float, int, int]]] = []
    status, error = "ok", None
    ours = theirs = None
    for i in range(repeat):
        if status == "ok":
            timing = Timing()
            try:
                seconds, ours = timed(ours_fn, observed.model, instruments=[timing])
                qfx_runs.append(seconds)
                pass_runs.append([(r.name, r.seconds, r.nodes_before, r.nodes_after) for r in timing.records])
            except UnsupportedError as exc:
                status, error = "pending", str(exc)
            except Exception as exc:  # report and carry on: one broken row must not sink the bench
                status, error = "error", f"{type(exc).__name__}: {exc}"
        seconds, theirs = timed(theirs_fn, copies[i])
        torch_runs.append(seconds)
        copies[i] = None
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
    if ours is not None:
        check_outputs = observed.nodes <= OUTPUT_CHECK_MAX_NODES
        found = differences(ours, theirs, observed.example_inputs if check_outputs else None)
        result["outputs_compared"] = check_outputs
        result["equal"] = not found
        result["differences"] = found
        result["input_unchanged"] = same_fingerprint(before, fingerprint(observed.model))
    return result


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
        for blocks in sorted({b for m in args.mappings for b in sizes[m]}):
            rows += [(family, blocks, m) for m in args.mappings if blocks in sizes[m]]
    return rows


def warm_up() -> None:
    """One untimed pass over everything on a tiny model, so that no row pays for first calls (lazy imports,
    caches)."""
    observed = observed_model("mlp", 2, "minmax", None)
    measure_foundation(observed, 1)
    for mode in MODES:
        measure_convert(observed, mode, 1)


def run_row(observed: Observed, repeat: int) -> dict[str, Any]:
    """Every measurement for one observed model."""
    started = time.perf_counter()
    row = {
        "family": observed.family,
        "blocks": observed.blocks,
        "mapping": observed.mapping,
        "nodes": observed.nodes,
        "prepare_seconds": observed.prepare_seconds,
        "prepare_cached": observed.cached,
        "foundation": measure_foundation(observed, repeat),
        "convert": {mode: measure_convert(observed, mode, repeat) for mode in MODES},
    }
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


def convert_table(rows: list[dict[str, Any]], repeat: int) -> Table:
    """Reference and decomposed convert, qfx against torch, per row."""
    table = Table(title=escape(f"Convert: qfx vs torch  [ms, median of {repeat}, alternating; torch on a deepcopy "
                               f"made before timing; ratio = torch/qfx; 'same' = code, state_dict and outputs; "
                               f"yes* = outputs not run above {OUTPUT_CHECK_MAX_NODES:,} nodes]"),
                  title_justify="left")
    for name in ("family", "blocks", "mapping", "nodes"):
        table.add_column(name, justify="left" if name in ("family", "mapping") else "right")
    for mode in ("ref", "dec"):
        for name in ("qfx", "torch", "ratio", "same"):
            table.add_column(f"{mode} {name}", justify="right")
    for r in rows:
        cells = [r["family"], str(r["blocks"]), r["mapping"], f"{r['nodes']:,}"]
        for mode in MODES:
            cells += _convert_cells(r["convert"][mode])
        table.add_row(*cells)
    return table


def pass_table(rows: list[dict[str, Any]]) -> Table | None:
    """Per-pass medians for the largest size of each family."""
    largest = {}
    for r in rows:
        largest[r["family"]] = max(largest.get(r["family"], 0), r["blocks"])
    picked = [(r, mode) for r in rows if r["blocks"] == largest[r["family"]]
              for mode in MODES if r["convert"][mode]["status"] == "ok"]
    if not picked:
        return None
    names: list[str] = []
    for r, mode in picked:
        for p in r["convert"][mode]["passes"]:
            if p["pass"] not in names:
                names.append(p["pass"])
    table = Table(title=escape("qfx per pass, largest size of each family  [ms, median; from the Timing "
                               "instrument; 'rest' = lift + codegen + API]"), title_justify="left")
    for name in ("family", "mapping", "mode", "nodes in -> out"):
        table.add_column(name)
    for name in (*names, "rest", "total"):
        table.add_column(name, justify="right")
    for r, mode in picked:
        c = r["convert"][mode]
        by_name = {p["pass"]: p["seconds"] for p in c["passes"]}
        rest = c["qfx"] - sum(by_name.values())
        table.add_row(r["family"], r["mapping"], mode, f"{r['nodes']:,} -> {c['nodes_out']:,}",
                      *[ms(by_name.get(n)) for n in names], ms(rest), ms(c["qfx"]))
    return table


TARGET_RATIO = 3.0
TARGET_MIN_NODES = 1000


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's speed targets, checked against this run: qfx faster than torch on every row; at least
    TARGET_RATIO x on MinMax rows of TARGET_MIN_NODES+ nodes; qfx's time per node as graphs grow."""
    measured = [(r, mode, r["convert"][mode]) for r in rows for mode in MODES if r["convert"][mode]["status"] == "ok"]
    if not measured:
        return []
    lines = []
    slowest = min(measured, key=lambda m: m[2]["ratio"])
    verdict = "yes" if slowest[2]["ratio"] > 1 else "NO"
    lines.append(f"faster than torch on every row: {verdict} (lowest ratio {slowest[2]['ratio']:.2f}x: "
                 f"{slowest[0]['family']} {slowest[0]['nodes']:,} nodes {slowest[0]['mapping']} {slowest[1]})")
    big = [m for m in measured if m[0]["mapping"] == "minmax" and m[0]["nodes"] >= TARGET_MIN_NODES]
    if big:
        short = [m for m in big if m[2]["ratio"] < TARGET_RATIO]
        verdict = "yes" if not short else f"NO on {len(short)} of {len(big)}"
        worst = min(big, key=lambda m: m[2]["ratio"])
        lines.append(f">= {TARGET_RATIO:g}x on MinMax rows of {TARGET_MIN_NODES:,}+ nodes: {verdict} (lowest "
                     f"{worst[2]['ratio']:.2f}x: {worst[0]['family']} {worst[0]['nodes']:,} nodes {worst[1]})")
    for family in dict.fromkeys(r["family"] for r in rows):
        for mapping in dict.fromkeys(r["mapping"] for r in rows):
            for mode in MODES:
                series = [(m[0]["nodes"], m[2]["qfx"] * 1e6 / m[0]["nodes"]) for m in measured
                          if m[0]["family"] == family and m[0]["mapping"] == mapping and m[1] == mode]
                if len(series) > 1:
                    cells = ", ".join(f"{n:,}: {us:,.0f}" for n, us in sorted(series))
                    lines.append(f"qfx µs/node as {family} {mapping} {mode} grows: {cells}")
    return lines


def row_summary(r: dict[str, Any]) -> str:
    """One line per finished row, printed while the bench runs."""
    parts = [f"{r['family']} blocks={r['blocks']} {r['mapping']}: {r['nodes']:,} nodes"]
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
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat (under a minute)")
    parser.add_argument("--families", type=_names(FAMILIES), default=list(FAMILIES),
                        help=f"comma-separated, from {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--sizes", type=_ints, default=None,
                        help="comma-separated block counts for every family (default: per family, ~100 to "
                             f"~5,000 nodes); x86 rows only up to {X86_MAX_BLOCKS} blocks")
    parser.add_argument("--mappings", type=_names(MAPPINGS), default=list(MAPPINGS),
                        help="comma-separated, from minmax, x86 (default: both)")
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
    """The bench for parsed arguments (see `main`)."""
    console = Console() if sys.stdout.isatty() else Console(width=180)
    rows_to_run = plan(args)
    cache = None if args.no_cache else args.cache_dir
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("warming up", total=len(rows_to_run))
        warm_up()
        for family, blocks, mapping in rows_to_run:
            label = f"{family} blocks={blocks} {mapping}"
            progress.update(task, description=f"{label}: preparing")
            observed = observed_model(family, blocks, mapping, cache)
            progress.update(task, description=f"{label} ({observed.nodes:,} nodes): timing")
            row = run_row(observed, args.repeat)
            results.append(row)
            progress.console.print(row_summary(row), markup=False, highlight=False)
            progress.advance(task)
            del observed
    console.print()
    console.print(foundation_table(results, args.repeat))
    console.print(convert_table(results, args.repeat))
    for line in target_lines(results):
        console.print(line, markup=False, highlight=False)
    passes = pass_table(results)
    if passes is not None:
        console.print(passes)
    else:
        console.print(f"qfx per-pass breakdown: {PENDING}")
    notes = sorted({c["error"] for r in results for c in r["convert"].values() if c["status"] != "ok"})
    for note in notes:
        console.print(f"note: qfx said: {note}", markup=False, highlight=False)
    total = time.perf_counter() - started
    payload = {"environment": environment(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                     for k, v in vars(args).items()},
               "total_seconds": total, "rows": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1))
    console.print(f"{len(results)} rows in {total:.0f} s; every measurement written to {args.json}",
                  markup=False, highlight=False)
    for line in plot_results(payload, args.json.with_name("convert_time.png")):
        console.print(line, markup=False, highlight=False)
    failed = [c for r in results for c in r["convert"].values()
              if c["status"] == "error" or (c["status"] == "ok" and not (c["equal"] and c["input_unchanged"]))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
