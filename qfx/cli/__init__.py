"""The `qfx` command line: `qfx demo`, `qfx passes`, `qfx convert`, `qfx show`.

One module per subcommand (`demo`, `list_passes`, `convert`, `show`); `common` holds what they share,
`modelfile` the saved-observed-model format (`save_observed` / `load_observed`; `class_names` pickles the
classes it names by name), `prepare` the path from a user's float model to a calibrated observed one,
`report` what `qfx convert` measures.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from rich.console import Console

from qfx.compare import differences, fingerprint, same_fingerprint
from qfx.compare import same_value as _same_value  # noqa: F401  (older name, kept for callers)
from qfx.ir.errors import QfxError

from . import convert, demo, list_passes, show
from .common import EXIT_USAGE, MODES, code_preview, one_line, pass_table, plain, quiet_torch_warnings
from .convert import cmd_convert
from .demo import cmd_demo
from .list_passes import cmd_passes, pass_module, summary_line
from .modelfile import FILE_FORMAT, ModelFileError, load_observed, save_observed
from .show import cmd_show

__all__ = [
    "EXIT_USAGE", "FILE_FORMAT", "MODES", "ModelFileError", "build_parser", "cmd_convert", "cmd_demo",
    "cmd_passes", "cmd_show", "code_preview", "differences", "fingerprint", "load_observed", "main",
    "one_line", "pass_module", "pass_table", "plain", "same_fingerprint", "save_observed", "summary_line",
]

EXAMPLES = """examples:
  qfx demo                                             # convert the embedded model, compare with torch
  qfx convert mymodels.py:build --check-against-torch  # quantize your own model
  qfx show mymodels.py:build --after final --format svg -o model.svg
  qfx passes"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `qfx` command."""
    parser = argparse.ArgumentParser(
        prog="qfx", description="PyTorch FX quantization convert as a functional compiler (lift -> passes -> codegen).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(commands)
    list_passes.add_parser(commands)
    convert.add_parser(commands)
    show.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `qfx` command with `argv` (default: sys.argv[1:]). Returns the exit status: 0 success,
    1 a check failed, 2 bad usage or a qfx error (printed as one line on stderr; with --debug, raised)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    console = Console(highlight=False)
    with warnings.catch_warnings():
        quiet_torch_warnings()
        try:
            return args.run(args, console)
        except QfxError as exc:
            if debug:
                raise
            print(f"qfx: error: {one_line(str(exc)) or type(exc).__name__}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # a path given on the command line that cannot be read or written
            if debug:
                raise
            where = f"'{exc.filename}': " if exc.filename is not None else ""
            print(f"qfx: error: {where}{exc.strerror or exc}; check the path", file=sys.stderr)
            return EXIT_USAGE
