"""The convert-time plot of a bench run: time against node count on log-log axes, qfx and torch, one panel
per convert mode, and the fitted scaling exponent (time ~ nodes^k) of each family.

    .venv/bin/python -m bench.plot [bench/results.json] [-o bench/convert_time.png]

`make bench` draws it after every run (bench/run.py calls `plot_results`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

IMPLEMENTATIONS = ("qfx", "torch")
MARKERS = {"qfx": "o", "torch": "s"}
LINESTYLES = {"qfx": "-", "torch": "--"}


def series(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str, str], list[tuple[int, float]]]:
    """(mode, family, mapping, implementation) -> [(nodes, seconds)] sorted by nodes, from bench rows whose
    convert ran ("status" ok and a time for that implementation)."""
    found: dict[tuple[str, str, str, str], list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        for mode, cell in row.get("convert", {}).items():
            if cell.get("status") != "ok":
                continue
            for impl in IMPLEMENTATIONS:
                seconds = cell.get(impl)
                if seconds:
                    found[(mode, row["family"], row["mapping"], impl)].append((row["nodes"], seconds))
    return {key: sorted(points) for key, points in found.items()}


def scaling_exponent(points: Sequence[tuple[int, float]]) -> float | None:
    """The least-squares slope of log(time) against log(nodes): k in time ~ nodes^k. None with fewer than
    two distinct node counts."""
    if len({n for n, _ in points}) < 2:
        return None
    x = np.log([n for n, _ in points])
    y = np.log([s for _, s in points])
    slope, _ = np.polyfit(x, y, 1)
    return float(slope)


def exponent_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per (family, mapping, mode): the fitted exponent of qfx and of torch."""
    found = series(rows)
    lines = []
    for mode, family, mapping in sorted({(m, f, p) for m, f, p, _ in found}):
        parts = []
        for impl in IMPLEMENTATIONS:
            k = scaling_exponent(found.get((mode, family, mapping, impl), []))
            parts.append(f"{impl} {'n/a (one size)' if k is None else f'{k:.2f}'}")
        lines.append(f"scaling exponent (time ~ nodes^k), {family} {mapping} {mode}: {', '.join(parts)}")
    return lines


def draw(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Draw the log-log plot of `rows` (bench/results.json's "rows") to the PNG `path`; returns the path."""
    found = series(rows)
    modes = sorted({mode for mode, *_ in found}) or ["(no convert results)"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = sorted({(f, p) for _, f, p, _ in found})
    for ax, mode in zip(axes[0], modes):
        for i, (family, mapping) in enumerate(groups):
            for impl in IMPLEMENTATIONS:
                points = found.get((mode, family, mapping, impl))
                if not points:
                    continue
                ax.plot([n for n, _ in points], [s * 1e3 for _, s in points], marker=MARKERS[impl],
                        linestyle=LINESTYLES[impl], color=colours[i % len(colours)],
                        label=f"{impl} {family} {mapping}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{mode} convert")
        ax.set_xlabel("nodes in the observed graph")
        ax.set_ylabel("convert time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_results(payload: dict[str, Any], path: str | Path) -> list[str]:
    """Draw `payload` (what bench/run.py writes to results.json) to `path` and return the exponent lines."""
    rows = payload.get("rows", [])
    draw(rows, path)
    return exponent_lines(rows) + [f"convert time plot written to {path}"]


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw the plot from a results file."""
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m bench.plot bench/results.json -o bench/convert_time.png")
    parser.add_argument("results", nargs="?", type=Path, default=Path("bench/results.json"))
    parser.add_argument("-o", "--output", type=Path, default=None, help="default: convert_time.png beside RESULTS")
    args = parser.parse_args(argv)
    payload = json.loads(args.results.read_text())
    for line in plot_results(payload, args.output or args.results.with_name("convert_time.png")):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
