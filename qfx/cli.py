"""The `qfx` command line: `qfx demo`, `qfx passes`, `qfx convert MODEL.pt`.

Also home of the small file format `qfx convert` reads (`save_observed` / `load_observed`): plain
`torch.save` cannot store an observed GraphModule (prepare's qconfigs hold a local function, and
GraphModule pickling drops `meta`, where prepare keeps the facts convert needs).
"""

from __future__ import annotations

import argparse
import copy
import functools
import pickle
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console
from rich.table import Table
from torch.ao.quantization.quantize_fx import _convert_to_reference_decomposed_fx
from torch.ao.quantization.quantize_fx import convert_to_reference_fx as torch_convert_to_reference_fx
from torch.fx import GraphModule

import qfx
from qfx.ir.errors import NotObservedModelError, QfxError, UnsupportedError
from qfx.ir.lift import OBSERVED_ATTRS_KEY, lift
from qfx.lowering.codegen import codegen
from qfx.passes.instruments import DumpIR, Instrument, PrintIR, Timing
from qfx.passes.manager import REGISTRY, Pipeline, get_pass
from qfx.passes.pipelines import REFERENCE_PIPELINE

from .api import convert_options
from .demo_model import example_inputs as demo_example_inputs
from .demo_model import observed_demo_model

EXIT_USAGE = 2
CODE_PREVIEW_LINES = 24
FILE_FORMAT = "qfx.observed/1"


class ModelFileError(QfxError):
    """A model file could not be read, or does not hold a model `qfx convert` can use."""


# --------------------------------------------------------------------------------------------------
# Modes: one entry per convert flavour, with qfx's entry point and torch's (the reference).

MODES: dict[str, tuple[str, Callable[..., GraphModule], Callable[[GraphModule], GraphModule]]] = {
    "reference": ("convert_to_reference_fx", qfx.convert_to_reference_fx, torch_convert_to_reference_fx),
    "decomposed": (
        "_convert_to_reference_decomposed_fx",
        qfx.convert_to_reference_decomposed_fx,
        _convert_to_reference_decomposed_fx,
    ),
}


# --------------------------------------------------------------------------------------------------
# Saving and loading observed models.


def _factory_kwargs_on(device: torch.device | None) -> dict[str, Any] | None:
    """Stand-in for prepare's per-module closure that tells observers which device to use."""
    return None if device is None else {"device": device}


_DEVICE_CLOSURE = "_add_module_to_qconfig_obs_ctr.<locals>.get_factory_kwargs_based_on_module_device"


def _operator_overload(namespace: str, op: str, overload: str) -> Any:
    """The operator overload torch.ops.<namespace>.<op>.<overload> (how saved graphs refer to ops)."""
    return getattr(getattr(getattr(torch.ops, namespace), op), overload)


class _ObservedPickler(pickle.Pickler):
    """Pickles GraphModules graph and all, through lift/codegen: node names, targets and meta survive (torch's
    own GraphModule pickling re-traces the code and drops `meta`). Operator overloads are saved by name, and
    prepare's device closure is replaced by an equivalent importable function (evaluated at save time)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, GraphModule):
            return (codegen, (lift(obj, observed=False),))
        if isinstance(obj, torch._ops.OpOverload):
            namespace, op = obj._schema.name.split("::")
            return (_operator_overload, (namespace, op, obj._overloadname))
        if getattr(obj, "__qualname__", None) == _DEVICE_CLOSURE and callable(obj):
            found = obj() or {}
            return (functools.partial, (_factory_kwargs_on, found.get("device")))
        return NotImplemented


class _ObservedPickleModule:
    """The `pickle_module` torch.save uses to write qfx model files."""

    Pickler = _ObservedPickler
    Unpickler = pickle.Unpickler
    load = staticmethod(pickle.load)
    dump = staticmethod(pickle.dump)


def save_observed(model: GraphModule, path: str | Path, example_inputs: tuple | None = None) -> None:
    """Write `model` (an observed GraphModule, or any GraphModule) and optional example inputs to `path`,
    loadable with `torch.load(path, weights_only=False)` (a dict with "model" and "example_inputs") and by
    `qfx convert`. `model` is only read. Raises ModelFileError if it cannot be pickled."""
    payload = {"format": FILE_FORMAT, "model": model, "example_inputs": example_inputs}
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(payload, partial, pickle_module=_ObservedPickleModule)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise ModelFileError(f"cannot save the model to '{path}': {exc}") from exc
    partial.replace(path)


def load_observed(path: str | Path) -> tuple[GraphModule, tuple | None]:
    """Read a file written by `save_observed` (or a torch.save'd GraphModule) -> (model, example inputs).

    Raises ModelFileError when the file cannot be read or holds something else, and NotObservedModelError
    when the GraphModule lacks prepare_fx's facts."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"cannot read '{path}': no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # torch.load raises many types for a bad file; all mean the same here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"cannot load '{path}' (is it a file written by torch.save?): {reason}") from exc
    inputs = None
    if isinstance(loaded, dict) and "model" in loaded:
        model, inputs = loaded["model"], loaded.get("example_inputs")
    else:
        model = loaded
    if not isinstance(model, GraphModule):
        raise ModelFileError(
            f"'{path}' holds a {type(model).__name__}, not an observed torch.fx.GraphModule; "
            "save the output of prepare_fx with qfx.cli.save_observed(model, path)"
        )
    if OBSERVED_ATTRS_KEY not in model.meta:
        raise NotObservedModelError(
            f"'{path}' holds a GraphModule without prepare_fx's facts (plain torch.save drops GraphModule.meta); "
            "save the observed model with qfx.cli.save_observed(model, path)"
        )
    if inputs is not None and not isinstance(inputs, tuple):
        inputs = (inputs,)
    return model, inputs


# --------------------------------------------------------------------------------------------------
# Comparing results with torch, and checking that the input was left alone.


def _same_value(a: Any, b: Any) -> bool:
    """Bitwise equality for tensors (dtype, shape, quantization parameters and bits), == otherwise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape or a.is_quantized != b.is_quantized:
            return False
        if a.is_quantized:
            if a.qscheme() != b.qscheme():
                return False
            if a.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                params_equal = a.q_scale() == b.q_scale() and a.q_zero_point() == b.q_zero_point()
            else:
                params_equal = (a.q_per_channel_axis() == b.q_per_channel_axis()
                                and _same_value(a.q_per_channel_scales(), b.q_per_channel_scales())
                                and _same_value(a.q_per_channel_zero_points(), b.q_per_channel_zero_points()))
            return params_equal and _same_value(a.int_repr(), b.int_repr())
        a, b = a.detach().contiguous().reshape(-1), b.detach().contiguous().reshape(-1)
        if a.dtype.is_floating_point or a.dtype.is_complex:
            return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same_value(a[k], b[k]) for k in a)
    return a == b


def differences(ours: GraphModule, theirs: GraphModule, inputs: tuple | None) -> list[str]:
    """How `ours` differs from `theirs`: generated code, state_dict (keys, order, bits) and, when `inputs`
    are given, outputs (of copies: neither module is changed). Empty when they are the same."""
    found: list[str] = []
    if ours.code != theirs.code:
        a, b = ours.code.splitlines(), theirs.code.splitlines()
        line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        found.append(f"code differs from line {line + 1} (qfx: {_line(a, line)!r}, torch: {_line(b, line)!r})")
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    if list(ours_state) != list(theirs_state):
        only = sorted(set(ours_state) ^ set(theirs_state))
        found.append(f"state_dict keys differ ({', '.join(only[:4]) if only else 'same keys, other order'})")
    else:
        bad = [k for k in ours_state if not _same_value(ours_state[k], theirs_state[k])]
        if bad:
            found.append(f"state_dict values differ: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    if inputs is not None:
        # Run copies: a module may share observers with the observed model, and running them records stats.
        ours, theirs = copy.deepcopy(ours), copy.deepcopy(theirs)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            same = _same_value(ours(*inputs), theirs(*inputs))
        if not same:
            found.append("outputs differ")
    return found


def _line(lines: list[str], i: int) -> str:
    return lines[i].strip() if i < len(lines) else "<end>"


def fingerprint(model: GraphModule) -> tuple:
    """Everything about `model` that convert could change: graph, code, modules, state and meta."""
    graph = tuple((n.name, n.op, str(n.target), str(n.args), str(n.kwargs)) for n in model.graph.nodes)
    modules = tuple((name, id(m), type(m).__name__) for name, m in model.named_modules(remove_duplicate=False))
    state = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else copy.copy(v))
             for k, v in model.state_dict(keep_vars=True).items()}
    attrs = {name: sorted(vars(m)) for name, m in model.named_modules(remove_duplicate=False)}
    meta = {k: id(v) for k, v in model.meta.items()}
    return graph, model.code, modules, state, attrs, meta


def same_fingerprint(a: tuple, b: tuple) -> bool:
    """True when two fingerprints (see `fingerprint`) describe the same model state."""
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and _same_value(a[3], b[3]) and a[4] == b[4] and a[5] == b[5]


# --------------------------------------------------------------------------------------------------
# Output helpers.


def pass_table(timing: Timing, total_seconds: float | None = None,
               lift_seconds: float | None = None, codegen_seconds: float | None = None,
               nodes_in: int | None = None, nodes_out: int | None = None) -> Table:
    """The Timing instrument's records as a rich table (pass, ms, nodes before -> after)."""
    table = Table()
    table.add_column("pass")
    table.add_column("ms", justify="right")
    table.add_column("nodes", justify="right")
    if lift_seconds is not None:
        table.add_row("(lift)", f"{lift_seconds * 1e3:.2f}", f"{nodes_in} -> {nodes_in}")
    for record in timing.records:
        table.add_row(record.name, f"{record.seconds * 1e3:.2f}", f"{record.nodes_before} -> {record.nodes_after}")
    if codegen_seconds is not None:
        table.add_row("(codegen)", f"{codegen_seconds * 1e3:.2f}", f"{nodes_out} -> {nodes_out}")
    passes = sum(r.seconds for r in timing.records)
    if total_seconds is not None and lift_seconds is None:
        table.add_row("(lift + codegen + api)", f"{(total_seconds - passes) * 1e3:.2f}",
                      f"{nodes_in} -> {nodes_out}" if nodes_in is not None else "")
    total = total_seconds if total_seconds is not None else passes + (lift_seconds or 0) + (codegen_seconds or 0)
    table.add_row("total", f"{total * 1e3:.2f}", "", style="bold")
    return table


def code_preview(code: str, limit: int = CODE_PREVIEW_LINES) -> str:
    """The first `limit` non-blank lines of generated code, with a note of how many were left out."""
    lines = [line for line in code.splitlines() if line.strip()]
    if len(lines) <= limit:
        return "\n".join(lines)
    return "\n".join(lines[:limit] + [f"    ... ({len(lines) - limit} more lines)"])


def _plain(console: Console, text: str = "") -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _quiet_torch_warnings() -> None:
    # torch.ao's deprecation notice and the quantized-tensor deprecation notice repeat on every call.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
    warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")


# --------------------------------------------------------------------------------------------------
# qfx demo


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    """Convert the embedded model both ways, show the passes, the code, and the comparison with torch.
    Exit status 1 if a result differs from torch's or the observed model changed."""
    observed = observed_demo_model()
    inputs = demo_example_inputs()
    before = fingerprint(observed)
    _plain(console, f"qfx demo: the embedded model (qfx/demo_model.py), prepared with prepare_fx and calibrated: "
                    f"{len(observed.graph.nodes)} nodes")
    if args.save is not None:
        save_observed(observed, args.save, inputs)
        _plain(console, f"saved the observed model to {args.save} (try: qfx convert {args.save} --check-against-torch)")
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
        seconds = time.perf_counter() - start
        _plain(console)
        _plain(console, f"{mode} convert: qfx.{ours_fn.__name__}")
        console.print(pass_table(timing, seconds, nodes_in=len(observed.graph.nodes), nodes_out=len(ours.graph.nodes)))
        _plain(console, f"generated code ({mode}):")
        _plain(console, code_preview(ours.code))
        theirs = theirs_fn(copy.deepcopy(observed))
        found = differences(ours, theirs, inputs)
        if found:
            _plain(console, f"equal to torch's {torch_name}: NO ({'; '.join(found)})")
            all_equal = False
        else:
            _plain(console, f"equal to torch's {torch_name}: yes (same code, same state_dict, identical outputs)")
    if pending:
        _demo_foundation(observed, console)
        _plain(console)
        _plain(console, "the convert passes are pending; qfx said:")
        for line in pending:
            _plain(console, f"  {line}")
    unchanged = same_fingerprint(before, fingerprint(observed))
    _plain(console)
    _plain(console, f"observed model left unchanged: {'yes' if unchanged else 'NO'}")
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
    _plain(console)
    _plain(console, "lift -> dce -> codegen (what runs while the convert passes are pending)")
    console.print(pass_table(timing, lift_seconds=lifted - start, codegen_seconds=done - passes_done,
                             nodes_in=len(program.graph), nodes_out=len(result.graph)))
    found = differences(rebuilt, observed, demo_example_inputs())
    verdict = "yes (same code, same state_dict, identical outputs)" if not found else f"NO ({'; '.join(found)})"
    _plain(console, f"lift -> dce -> codegen reproduces the observed model: {verdict}")


# --------------------------------------------------------------------------------------------------
# qfx passes


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
    table = Table(title="registered passes", title_justify="left")
    table.add_column("pass", no_wrap=True)
    table.add_column("module", no_wrap=True)
    table.add_column("does")
    pipeline = REFERENCE_PIPELINE.split(",")
    ordered = [n for n in pipeline if n in REGISTRY] + sorted(n for n in REGISTRY if n not in pipeline)
    for name in ordered:
        table.add_row(name, pass_module(name), summary_line(REGISTRY[name].doc))
    console.print(table)
    _plain(console, f"reference pipeline: {REFERENCE_PIPELINE}")
    return 0


# --------------------------------------------------------------------------------------------------
# qfx convert


def cmd_convert(args: argparse.Namespace, console: Console) -> int:
    """Convert a saved observed model with the reference (or a given) pipeline."""
    observed, inputs = load_observed(args.model)
    mode = "decomposed" if args.decomposed else "reference"
    torch_name, ours_fn, theirs_fn = MODES[mode]
    before = fingerprint(observed)
    timing = Timing()
    instruments: list[Instrument] = [timing]
    if args.print_ir_after_all:
        instruments.append(PrintIR(sys.stderr))
    if args.dump_ir is not None:
        instruments.append(DumpIR(args.dump_ir))
    start = time.perf_counter()
    if args.pipeline is None:
        result = ours_fn(observed, instruments=instruments)
        title = f"{mode} convert: qfx.{ours_fn.__name__}"
    else:
        pipeline = Pipeline.parse(args.pipeline)
        options = convert_options(is_reference=True, is_decomposed=args.decomposed, convert_custom_config=None,
                                  remove_qconfig=not args.decomposed)
        result = codegen(pipeline.run(lift(observed, options=options), instruments))
        title = f"pipeline {args.pipeline!r} ({mode} options)"
    seconds = time.perf_counter() - start
    _plain(console, title)
    console.print(pass_table(timing, seconds, nodes_in=len(observed.graph.nodes), nodes_out=len(result.graph.nodes)))
    if args.dump_ir is not None:
        _plain(console, f"IR after each pass written to {args.dump_ir}/")
    status = 0
    if args.check_against_torch:
        theirs = theirs_fn(copy.deepcopy(observed))
        found = differences(result, theirs, inputs)
        compared = "same code, same state_dict" + (", identical outputs" if inputs is not None else "")
        if found:
            _plain(console, f"equal to torch's {torch_name}: NO ({'; '.join(found)})")
            status = 1
        else:
            _plain(console, f"equal to torch's {torch_name}: yes ({compared})")
        if inputs is None:
            _plain(console, "outputs not compared: the file holds no example inputs (see qfx.cli.save_observed)")
    if not same_fingerprint(before, fingerprint(observed)):
        _plain(console, "observed model left unchanged: NO")
        status = 1
    if args.output is not None:
        save_observed(result, args.output)
        _plain(console, f"wrote {args.output}")
    else:
        _plain(console, result.code.strip("\n"))
    return status


# --------------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `qfx` command."""
    parser = argparse.ArgumentParser(
        prog="qfx", description="PyTorch FX quantization convert as a functional compiler (lift -> passes -> codegen).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="convert the embedded model and compare with torch")
    demo.add_argument("--save", metavar="PATH", help="also save the observed demo model (for qfx convert)")
    demo.set_defaults(run=cmd_demo)

    passes = commands.add_parser("passes", help="list the registered passes")
    passes.set_defaults(run=cmd_passes)

    convert = commands.add_parser("convert", help="convert a saved observed GraphModule")
    convert.add_argument("model", metavar="MODEL.pt", help="file written by qfx.cli.save_observed (or qfx demo --save)")
    convert.add_argument("--decomposed", action="store_true", help="quantized_decomposed ops (torch's "
                         "_convert_to_reference_decomposed_fx)")
    convert.add_argument("--pipeline", metavar="SPEC", help="run these passes instead of the reference pipeline, "
                         "e.g. 'dce' (comma-separated; see qfx passes)")
    convert.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (stderr)")
    convert.add_argument("--dump-ir", metavar="DIR", help="write the IR before and after every pass to DIR")
    convert.add_argument("--check-against-torch", action="store_true", help="compare with torch's convert on a copy")
    convert.add_argument("-o", "--output", metavar="OUT.pt", help="save the converted model here")
    convert.set_defaults(run=cmd_convert)
    return parser


def one_line(message: str) -> str:
    """A multi-line error message (e.g. the verifier's list of problems) folded onto one line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(lines[:1] + ["; ".join(lines[1:])] if len(lines) > 1 else lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `qfx` command with `argv` (default: sys.argv[1:]). Returns the exit status: 0 success,
    1 a check failed, 2 bad usage or a qfx error (printed as one line on stderr)."""
    args = build_parser().parse_args(argv)
    console = Console(highlight=False)
    with warnings.catch_warnings():
        _quiet_torch_warnings()
        try:
            return args.run(args, console)
        except QfxError as exc:
            print(f"qfx: error: {one_line(str(exc)) or type(exc).__name__}", file=sys.stderr)
            return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
