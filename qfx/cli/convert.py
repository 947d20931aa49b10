"""`qfx convert`: quantize a model given as a Python entry point (MODULE:FUNCTION), or convert a saved observed
model (MODEL.pt), with the qfx pipeline; report the passes, what runs quantized, the error and the speed."""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console
from torch.fx import GraphModule

from qfx.api import convert_options, gc_paused
from qfx.compare import compare, copy_for_torch, fingerprint, same_fingerprint
from qfx.entrypoint import EntryPoint, load_entry_point, looks_like_entry_point
from qfx.ir.errors import PipelineSpecError, UnknownPassError
from qfx.ir.lift import lift
from qfx.lowering.codegen import codegen
from qfx.passes.instruments import DumpIR, Instrument, PrintIR, Timing
from qfx.passes.manager import Pipeline
from qfx.passes.pipelines import LOWERED_PIPELINE, REFERENCE_PIPELINE, runs_lowering

from .common import MODES, pass_table, plain, running_user_model
from .modelfile import check_writable, load_observed, save_with_graphs
from .prepare import BACKENDS, DEFAULT_BACKEND, calibrate, prepare_entry_point, use_backend_for_saved
from .report import count_ops, latency_ms, output_error

EXAMPLES = """examples:
  qfx convert mymodels.py:build                       # lowered (native kernels), x86 backend
  qfx convert mymodels.py:build --mode reference --check-against-torch --save quantized.pt
  qfx convert mypkg.models:build --backend qnnpack --pipeline apply-qconfig-mapping,observe-weights --dump-ir ir/
  qfx convert observed.pt --mode decomposed           # a model saved by qfx.cli.save_observed"""


def run_convert(observed: GraphModule, mode: str, pipeline_spec: str | None,
                instruments: list[Instrument]) -> tuple[GraphModule, str, float]:
    """Convert `observed` (only read) in `mode` with the standard pipeline or `pipeline_spec`.
    Returns (result, a title saying what ran, seconds)."""
    _, ours_fn, _ = MODES[mode]
    start = time.perf_counter()
    if pipeline_spec is None:
        result = ours_fn(observed, instruments=instruments)
        title = f"{mode} convert: qfx.{ours_fn.__name__}"
    else:
        pipeline = Pipeline.parse(pipeline_spec)
        options = convert_options(is_reference=mode != "lowered", is_decomposed=mode == "decomposed",
                                  convert_custom_config=None, remove_qconfig=mode != "decomposed",
                                  preserve_from=observed)
        with gc_paused():
            result = codegen(pipeline.run(lift(observed, options=options), instruments))
        title = f"pipeline {pipeline_spec!r} ({mode} options)"
    return result, title, time.perf_counter() - start


def _instruments(args: argparse.Namespace) -> tuple[Timing, list[Instrument]]:
    timing = Timing()
    instruments: list[Instrument] = [timing]
    if args.print_ir_after_all:
        instruments.append(PrintIR(sys.stderr))
    if args.dump_ir is not None:
        instruments.append(DumpIR(args.dump_ir))
    return timing, instruments


def _check_against_torch(result: GraphModule, observed: GraphModule, mode: str, inputs: tuple | None,
                         console: Console) -> bool:
    torch_name, _, theirs_fn = MODES[mode]
    with warnings.catch_warnings(), running_user_model(f"--check-against-torch: torch's {torch_name}"):
        warnings.simplefilter("ignore")
        theirs = theirs_fn(copy_for_torch(observed))
    with running_user_model("--check-against-torch: running both converted models on the example inputs"):
        comparison = compare(result, theirs, inputs)
    if comparison.found:
        plain(console, f"equal to torch's {torch_name}: NO ({'; '.join(comparison.found)})")
        return False
    unsaveable, failure = comparison.state_dict_error, comparison.output_error
    state = "same state_dict" if unsaveable is None else f"state_dict() failing alike: {unsaveable}"
    compared = f"same code, {state}"
    if inputs is not None:
        compared += ", identical outputs" if failure is None else f", failing alike on the example inputs: {failure}"
    plain(console, f"equal to torch's {torch_name}: yes ({compared})")
    return True


def save_converted(model: GraphModule, path: str | Path) -> None:
    """Save the converted module to `path`; `torch.load(path, weights_only=False)` gives it back exactly (same
    code, node names and state: GraphModules go through qfx's lift/codegen pickling, see modelfile)."""
    save_with_graphs(model, path, "the converted model")


def cmd_convert(args: argparse.Namespace, console: Console) -> int:
    """Dispatch on the form of the MODEL argument: an entry point or a saved observed model."""
    if args.decomposed:
        args.mode = "decomposed"
    entry_point = looks_like_entry_point(args.model)
    if args.pipeline is not None:
        # A bad spec or unknown pass fails before any model is loaded; passes the entry point's module
        # registers are known once it is imported.
        try:
            _check_pipeline(args)
        except UnknownPassError:
            if not entry_point:
                raise
    if args.save is not None:
        check_writable(args.save, "the converted model")
    if entry_point:
        entry = load_entry_point(args.model)
        if args.pipeline is not None:
            _check_pipeline(args)
        return _convert_entry_point(entry, args, console)
    return _convert_saved(args, console)


def _check_pipeline(args: argparse.Namespace) -> None:
    """Parse --pipeline (PipelineSpecError for a bad spec or an unknown pass) and refuse it together with
    --check-against-torch unless it is the whole pipeline of the mode."""
    pipeline = Pipeline.parse(args.pipeline)
    if args.check_against_torch:
        _check_comparable(pipeline, args.pipeline, args.mode)


def _check_comparable(pipeline: Pipeline, pipeline_spec: str, mode: str) -> None:
    """--check-against-torch compares with torch's whole convert: refuse it (PipelineSpecError) with a
    --pipeline that is not the whole `mode` pipeline, whose result could never be equal."""
    standard = LOWERED_PIPELINE if mode == "lowered" else REFERENCE_PIPELINE
    if pipeline.names != Pipeline.parse(standard).names:
        raise PipelineSpecError(
            f"--check-against-torch compares with torch's whole {MODES[mode][0]}, and --pipeline "
            f"'{pipeline_spec}' is not the whole {mode} pipeline ({standard}): its result cannot be equal; "
            "leave out one of the two")


def _convert_saved(args: argparse.Namespace, console: Console) -> int:
    use_backend_for_saved(args.model, args.backend, args.qat)
    observed, inputs = load_observed(args.model)
    before = fingerprint(observed)
    result, _ = _convert_and_report(observed, args, console)
    status = _finish(result, observed, before, inputs, args, console)
    if args.save is None:
        plain(console, result.code.strip("\n"))
    return status


def _convert_entry_point(entry: EntryPoint, args: argparse.Namespace, console: Console) -> int:
    prepare_name = "prepare_qat_fx" if args.qat else "prepare_fx"
    backend = args.backend or DEFAULT_BACKEND
    observed = prepare_entry_point(entry, backend, args.qat)
    plain(console, f"{entry.spec}: traced and prepared with {prepare_name} ({backend} backend, its default "
                   f"{'QAT ' if args.qat else ''}qconfig mapping): {len(observed.graph.nodes)} nodes")
    calibrate(observed, entry.calibration_batches, console, entry.model)
    if args.qat:
        observed.eval()  # as before convert_fx in torch's QAT flow (no training step has run)
    before = fingerprint(observed)
    result, ran = _convert_and_report(observed, args, console)
    counts = count_ops(result, observed, lowered=runs_lowering(ran))
    islands = f" in {counts.islands} island{'s' if counts.islands != 1 else ''}" if counts.float else ""
    observing = (f"; {counts.observers} observer{'s' if counts.observers != 1 else ''} / fake-quantize"
                 f"{'s' if counts.observers != 1 else ''} still in place (the pipeline ends before insert-qdq "
                 "converts them)" if counts.observers else "")
    plain(console, f"ops: {counts.quantized} run quantized, {counts.float} in float{islands}"
                   + (f" ({', '.join(counts.float_nodes[:8])}{' ...' if counts.float > 8 else ''})"
                      if counts.float else "") + observing)
    batches = entry.calibration_batches
    with running_user_model("comparing the converted model with the float model on the calibration batches"):
        error = output_error(entry.model, result, batches)
    if error.failure is not None:
        # The observed model ran on these batches: the converted one itself refuses them.
        plain(console, f"output error and latency not measured: the converted model fails on the calibration "
                       f"batches the observed model ran on ({error.failure}); a quantized op can refuse what its "
                       "float op took (--check-against-torch tells whether torch's converted model fails alike)")
        return max(_finish(result, observed, before, entry.example_inputs, args, console), 1)
    measured = (f"max abs {error.max_abs:.4g}, SQNR {error.sqnr_db:.1f} dB" if not math.isnan(error.sqnr_db)
                else "not measured: NaN in the outputs (the float model's or the converted model's)")
    plain(console, f"output error against the float model on {len(batches)} calibration batch"
                   f"{'es' if len(batches) != 1 else ''}: {measured}")
    with running_user_model("timing the float and the converted model on the example inputs"):
        float_ms = latency_ms(copy.deepcopy(entry.model).eval(), entry.example_inputs)
        quant_ms = latency_ms(result, entry.example_inputs)
    plain(console, f"latency (median forward on the example inputs): float {float_ms:.3f} ms, quantized "
                   f"{quant_ms:.3f} ms ({float_ms / quant_ms:.2f}x)")
    return _finish(result, observed, before, entry.example_inputs, args, console)


def _convert_and_report(observed: GraphModule, args: argparse.Namespace,
                        console: Console) -> tuple[GraphModule, list[str]]:
    """Convert `observed` in `args.mode` (or with `args.pipeline`) and print the per-pass table. Returns the
    result and the names of the passes that ran."""
    timing, instruments = _instruments(args)
    result, title, seconds = run_convert(observed, args.mode, args.pipeline, instruments)
    plain(console, title)
    console.print(pass_table(timing, seconds, nodes_in=len(observed.graph.nodes), nodes_out=len(result.graph.nodes)))
    if args.dump_ir is not None:
        plain(console, f"IR after each pass written to {args.dump_ir}/")
    return result, [record.name for record in timing.records]


def _finish(result: GraphModule, observed: GraphModule, before: tuple, inputs: tuple | None,
            args: argparse.Namespace, console: Console) -> int:
    """The checks and the saving both forms end with; returns the exit status (1 when a check failed)."""
    status = 0
    if args.check_against_torch:
        status = 0 if _check_against_torch(result, observed, args.mode, inputs, console) else 1
        if inputs is None:
            plain(console, "outputs not compared: the file holds no example inputs (see qfx.cli.save_observed)")
    if not same_fingerprint(before, fingerprint(observed)):
        plain(console, "observed model left unchanged: NO")
        status = 1
    if args.save is not None:
        save_converted(result, args.save)
        plain(console, f"wrote {args.save} (load it with torch.load(path, weights_only=False))")
    return status


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `qfx convert`."""
    convert = commands.add_parser(
        "convert", help="quantize a model from a Python entry point (or convert a saved observed model)",
        description="Quantize MODULE:FUNCTION (FUNCTION returns (model, example_inputs) or (model, example_inputs, "
                    "calibration_batches); MODULE is importable from the current directory or a path to a .py "
                    "file): trace and prepare it with torch's prepare_fx, calibrate, convert with qfx, and report. "
                    "A MODEL.pt written by qfx.cli.save_observed is converted as it is.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("model", metavar="MODULE:FUNCTION | MODEL.pt", help="the entry point or saved observed model")
    convert.add_argument("--backend", choices=BACKENDS, default=None,
                         help="the backend's default qconfig mapping and quantized engine (default: x86); for a "
                              "saved MODEL.pt, the quantized engine only")
    convert.add_argument("--qat", action="store_true", help="prepare with prepare_qat_fx (no training is run)")
    convert.add_argument("--mode", choices=tuple(MODES), default="lowered",
                         help="lowered: native kernels, as torch's convert_fx (default); reference: "
                              "convert_to_reference_fx; decomposed: _convert_to_reference_decomposed_fx")
    convert.add_argument("--decomposed", action="store_true", help=argparse.SUPPRESS)  # old spelling of --mode
    convert.add_argument("--pipeline", metavar="SPEC", help="run these passes instead of the standard pipeline, "
                         "e.g. 'apply-qconfig-mapping,dce' (comma-separated; see qfx passes)")
    convert.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (stderr)")
    convert.add_argument("--dump-ir", metavar="DIR", help="write the IR before and after every pass to DIR")
    convert.add_argument("--check-against-torch", action="store_true",
                         help="compare code, state_dict and outputs with torch's convert (on a copy)")
    convert.add_argument("--save", "-o", "--output", dest="save", metavar="PATH",
                         help="save the converted module (load with torch.load(PATH, weights_only=False))")
    convert.set_defaults(run=cmd_convert)
