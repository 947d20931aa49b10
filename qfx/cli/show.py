"""`qfx show`: the IR of a model at any point of the pipeline, as text or as a Graphviz picture in which
quantize/dequantize nodes, quantized modules and ops and float islands have their own colours."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from qfx.api import convert_options, gc_paused
from qfx.entrypoint import load_entry_point, looks_like_entry_point
from qfx.graphview import node_kinds, render, summary, to_dot
from qfx.ir.lift import lift
from qfx.ir.printer import print_program
from qfx.ir.program import Program
from qfx.passes.manager import Pipeline
from qfx.passes.pipelines import passes_through, pipeline_names, runs_lowering

from .common import plain
from .modelfile import check_writable, load_observed
from .prepare import BACKENDS, DEFAULT_BACKEND, calibrate, prepare_entry_point, use_backend_for_saved

EXAMPLES = """examples:
  qfx show mymodels.py:build --after final --format svg -o model.svg   # where did my model stay in float?
  qfx show mymodels.py:build --after insert-qdq                        # the IR as text, after one pass
  qfx show mymodels.py:build --format dot | dot -Tpng > observed.png"""


def check_after(mode: str, after: str) -> list[str]:
    """The pass names of the `mode` pipeline; raises PipelineSpecError unless `after` is prepare, final, one of
    them, or NAME#N for the Nth run of a pass the pipeline runs more than once (dce#2)."""
    if after not in ("prepare", "final"):
        _runs_up_to(mode, after)
    return pipeline_names(mode)


def _runs_up_to(mode: str, after: str) -> int:
    return passes_through(mode, after, asked=f"--after '{after}'", also=("prepare", "final"))


def program_after(observed_program: Program, mode: str, after: str) -> tuple[Program, str, tuple[str, ...]]:
    """`observed_program` run through the `mode` pipeline up to and including the pass `after` ("prepare":
    none, "final": all; NAME#N: the Nth run of a pass that runs more than once, NAME alone its first).
    Returns (program, a title, the passes run). Raises PipelineSpecError for a pass not in the pipeline."""
    names = check_after(mode, after)
    if after == "prepare":
        return observed_program, "after prepare", ()
    count = len(names) if after == "final" else _runs_up_to(mode, after)
    ran = tuple(names[:count])
    with gc_paused():
        result = Pipeline.parse(",".join(ran)).run(observed_program)
    if after == "final":
        return result, f"{mode} convert result", ran
    runs = names.count(after)
    if runs > 1:  # a bare name of a repeated pass: say which run this is
        others = ", ".join(f"{after}#{k}" for k in range(2, runs + 1))
        title = f"after {after} (the first of its {runs} runs in the {mode} pipeline; {others} name the others)"
        return result, title, ran
    return result, f"after {after} ({mode} pipeline)", ran


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    """Print or write the IR (text, DOT, SVG or PNG) and a summary of the float islands."""
    check_after(args.mode, args.after)
    if args.format is None:  # the output file's extension says, else text
        suffix = Path(args.output).suffix.lower() if args.output is not None else ""
        args.format = _FORMAT_OF_SUFFIX.get(suffix, "text")
    if args.output is not None:
        check_writable(args.output, {"text": "the IR", "dot": "the DOT source"}.get(
            args.format, f"the {args.format.upper()} picture"))
    if looks_like_entry_point(args.model):
        entry = load_entry_point(args.model)
        observed = prepare_entry_point(entry, args.backend or DEFAULT_BACKEND, args.qat)
        calibrate(observed, entry.calibration_batches, Console(stderr=True), entry.model)
        if args.qat:
            observed.eval()
    else:
        use_backend_for_saved(args.model, args.backend, args.qat)
        observed, _ = load_observed(args.model)
    options = convert_options(is_reference=args.mode != "lowered", is_decomposed=args.mode == "decomposed",
                              convert_custom_config=None, remove_qconfig=args.mode != "decomposed",
                              preserve_from=observed)
    observed_program = lift(observed, options=options)
    program, title, ran = program_after(observed_program, args.mode, args.after)
    kinds = node_kinds(program, observed_program.quant.node_name_to_qconfig,
                       lowered=runs_lowering(ran))
    text_summary = summary(program, kinds)
    if args.format == "text":
        body: bytes = (f"# {args.model} {title}\n" + print_program(program) + "\n" + text_summary + "\n").encode()
    elif args.format == "dot":
        body = to_dot(program, f"{args.model} {title}", kinds).source.encode()
    else:
        body = render(program, args.format, f"{args.model} {title}", kinds)
    if args.output is None:
        if args.format in ("svg", "png"):
            sys.stdout.flush()
            sys.stdout.buffer.write(body)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(body.decode())
            sys.stdout.flush()
        if args.format != "text":
            print(text_summary, file=sys.stderr)
        return 0
    Path(args.output).write_bytes(body)
    plain(console, f"{args.model} {title}: wrote {args.output}")
    if args.format != "text":
        plain(console, text_summary)
    return 0


_FORMAT_OF_SUFFIX = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `qfx show`."""
    show = commands.add_parser(
        "show", help="show the IR (text, or a Graphviz picture with float islands coloured)",
        description="Show the IR of MODULE:FUNCTION (prepared and calibrated as qfx convert does) or of a saved "
                    "observed MODEL.pt, after prepare (default), after a named pass, or the final result. Pictures "
                    "colour quantize/dequantize nodes, quantized modules and ops and float islands, cluster nodes "
                    "by module scope and carry a legend; a summary lists the float islands with their nodes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("model", metavar="MODULE:FUNCTION | MODEL.pt", help="the entry point or saved observed model")
    show.add_argument("--after", metavar="PASS", default="prepare",
                      help="prepare (default), final, or a pass of the pipeline (see qfx passes); NAME#N for "
                           "the Nth run of a pass the pipeline runs more than once (dce#2)")
    show.add_argument("--format", choices=("text", "dot", "svg", "png"), default=None,
                      help="text, dot (Graphviz source), svg or png (need Graphviz's dot program); default: "
                           "as the -o file's extension says (.svg, .png, .dot, .gv), else text")
    show.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    show.add_argument("--mode", choices=("lowered", "reference", "decomposed"), default="lowered",
                      help="which pipeline --after refers to (default: lowered)")
    show.add_argument("--backend", choices=BACKENDS, default=None, help="as for qfx convert (default: x86)")
    show.add_argument("--qat", action="store_true", help="prepare with prepare_qat_fx")
    show.set_defaults(run=cmd_show)
