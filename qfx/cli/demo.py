"""`qfx demo`: convert the embedded model in every mode, show the passes and the code, compare with torch."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from torch.fx import GraphModule

from qfx.compare import copy_for_torch, differences, fingerprint, same_fingerprint
from qfx.demo_model import example_inputs as demo_example_inputs
from qfx.demo_model import observed_demo_model
from qfx.ir.errors import QfxError, UnsupportedError
from qfx.ir.lift import lift
from qfx.lowering.codegen import codegen
from qfx.passes.instruments import Timing
from qfx.passes.manager import Pipeline

from .common import MODES, code_preview, one_line, pass_table, plain
from .modelfile import save_observed

EXAMPLE = "qfx demo --save observed.pt"


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    """Convert the embedded model both ways, show the passes, the code, and the comparison with torch.
    Exit status 1 if a result differs from torch's or the observed model changed."""
    observed = observed_demo_model()
    inputs = demo_example_inputs()
    before = fingerprint(observed)
    plain(console, f"qfx demo: the embedded model (qfx/demo_model.py), prepared with prepare_fx and calibrated: "
                    f"{len(observed.graph.nodes)} nodes")
    if args.save is not None:
        save_observed(observed, args.save, inputs)
        plain(console, f"saved the observed model to {args.save} (try: qfx convert {args.save} --check-against-torch)")
    pending: list[str] = []
    all_equal = True
    for mode, (torch_name, ours_fn, theirs_fn) in MODES.items():
        timing = Timing()
        start = time.perf_counter()
        try:
            ours = ours_fn(observed, instruments=[timing])
        except UnsupportedError as exc:
            pending.append(f"{mode}: {exc}")
            continue
        except QfxError as exc:
            plain(console)
            plain(console, f"{mode} convert: qfx.{ours_fn.__name__} failed: {one_line(str(exc))}")
            all_equal = False
            continue
        seconds = time.perf_counter() - start
        plain(console)
        plain(console, f"{mode} convert: qfx.{ours_fn.__name__}")
        console.print(pass_table(timing, seconds, nodes_in=len(observed.graph.nodes), nodes_out=len(ours.graph.nodes)))
        plain(console, f"generated code ({mode}):")
        plain(console, code_preview(ours.code))
        theirs = theirs_fn(copy_for_torch(observed))
        found = differences(ours, theirs, inputs)
        if found:
            plain(console, f"equal to torch's {torch_name}: NO ({'; '.join(found)})")
            all_equal = False
        else:
            plain(console, f"equal to torch's {torch_name}: yes (same code, same state_dict, identical outputs)")
    if pending:
        _demo_foundation(observed, console)
        plain(console)
        plain(console, "the convert passes are pending; qfx said:")
        for line in pending:
            plain(console, f"  {line}")
    unchanged = same_fingerprint(before, fingerprint(observed))
    plain(console)
    plain(console, f"observed model left unchanged: {'yes' if unchanged else 'NO'}")
    return 0 if unchanged and all_equal else 1


def _demo_foundation(observed: GraphModule, console: Console) -> None:
    """What already works while convert is pending: lift -> dce -> codegen, and lift/codegen round trip."""
    timing = Timing()
    start = time.perf_counter()
    program = lift(observed)
    lifted = time.perf_counter()
    result = Pipeline.parse("dce").run(program, [timing])
    passes_done = time.perf_counter()
    rebuilt = codegen(result)
    done = time.perf_counter()
    plain(console)
    plain(console, "lift -> dce -> codegen (what runs while the convert passes are pending)")
    console.print(pass_table(timing, lift_seconds=lifted - start, codegen_seconds=done - passes_done,
                             nodes_in=len(program.graph), nodes_out=len(result.graph)))
    found = differences(rebuilt, observed, demo_example_inputs())
    verdict = "yes (same code, same state_dict, identical outputs)" if not found else f"NO ({'; '.join(found)})"
    plain(console, f"lift -> dce -> codegen reproduces the observed model: {verdict}")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `qfx demo`."""
    demo = commands.add_parser("demo", help="convert the embedded model in every mode and compare with torch",
                               description="Convert the embedded demo model (qfx/demo_model.py) in reference, "
                               "decomposed and lowered mode and compare each result with torch's convert.",
                               epilog=f"example: {EXAMPLE}")
    demo.add_argument("--save", metavar="PATH", help="also save the observed demo model (for qfx convert MODEL.pt)")
    demo.set_defaults(run=cmd_demo)
