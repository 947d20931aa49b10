"""`qfx passes`: the registered passes, with the module that holds each and what it does."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qfx.passes.manager import REGISTRY, get_pass
from qfx.passes.pipelines import LOWERED_PIPELINE, REFERENCE_PIPELINE

from .common import plain

WIDE_LAYOUT = 120


def summary_line(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def pass_module(name: str) -> str:
    """The module that holds the registered pass `name` (where its function is defined)."""
    return getattr(REGISTRY[name].run, "__module__", None) or "?"


def cmd_passes(args: argparse.Namespace, console: Console) -> int:
    """List every registered pass with the module that holds it and the first line of its docstring."""
    get_pass("dce")  # importing the pass package registers the built-in passes
    # Side by side, pass and module leave the description too narrow to read on a terminal under
    # WIDE_LAYOUT columns (80 when the output is not a terminal): there the module goes under the pass.
    wide = console.width >= WIDE_LAYOUT
    table = Table(title="registered passes", title_justify="left")
    table.add_column("pass", no_wrap=True)
    if wide:
        table.add_column("module", no_wrap=True)
    table.add_column("does")
    pipeline = list(dict.fromkeys(REFERENCE_PIPELINE.split(",") + LOWERED_PIPELINE.split(",")))
    ordered = [n for n in pipeline if n in REGISTRY] + sorted(n for n in REGISTRY if n not in pipeline)
    for name in ordered:
        where = [pass_module(name)] if wide else []
        first = name if wide else Text.assemble(name, "\n", (pass_module(name), "dim"))
        table.add_row(first, *where, summary_line(REGISTRY[name].doc))
    console.print(table)
    plain(console, f"reference pipeline: {REFERENCE_PIPELINE}")
    plain(console, f"lowered pipeline: {LOWERED_PIPELINE}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `qfx passes`."""
    passes = commands.add_parser("passes", help="list the registered passes",
                                 description="List the registered passes (usable in --pipeline specs).",
                                 epilog="example: qfx passes")
    passes.set_defaults(run=cmd_passes)
