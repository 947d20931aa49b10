"""What the subcommands share: the convert modes, rich tables and plain printing, warning filters."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from typing import Callable, Iterator

from rich.console import Console
from rich.table import Table
from torch.ao.quantization.quantize_fx import _convert_to_reference_decomposed_fx
from torch.ao.quantization.quantize_fx import convert_fx as torch_convert_fx
from torch.ao.quantization.quantize_fx import convert_to_reference_fx as torch_convert_to_reference_fx
from torch.fx import GraphModule

import qfx
from qfx.ir.errors import QfxError
from qfx.passes.instruments import Timing

EXIT_USAGE = 2
CODE_PREVIEW_LINES = 24

# mode -> (torch's function name, qfx's entry point, torch's entry point: the reference for comparisons)
MODES: dict[str, tuple[str, Callable[..., GraphModule], Callable[[GraphModule], GraphModule]]] = {
    "reference": ("convert_to_reference_fx", qfx.convert_to_reference_fx, torch_convert_to_reference_fx),
    "decomposed": (
        "_convert_to_reference_decomposed_fx",
        qfx.convert_to_reference_decomposed_fx,
        _convert_to_reference_decomposed_fx,
    ),
    "lowered": ("convert_fx", qfx.convert_fx, torch_convert_fx),
}


class UserModelError(QfxError):
    """Running the user's model (or a conversion of it) on its inputs failed."""


@contextlib.contextmanager
def running_user_model(what: str) -> Iterator[None]:
    """Report a failure of the user's code or inputs inside the block as a UserModelError saying `what`
    was being run (qfx's own errors pass as they are). What the block writes to stderr is held back and
    written after it, unless the block failed: torch.fx prints the generated code of a failing forward
    there, which the one-line error replaces."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except QfxError:
        sys.stderr.write(held.getvalue())
        raise
    except Exception as exc:  # the user's forward: any exception type
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserModelError(
            f"{what} failed ({type(exc).__name__}{': ' + reason if reason else ''}); check that the example and "
            "calibration inputs fit the model (shapes, dtypes, number of arguments)") from exc
    sys.stderr.write(held.getvalue())


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


def plain(console: Console, text: str = "") -> None:
    """Print `text` as is (no rich markup or highlighting, no wrapping)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def quiet_torch_warnings() -> None:
    """Hide torch.ao's notices that repeat on every call (deprecations, quantized tensor creation)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
    warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
    warnings.filterwarnings("ignore", message=r".*must run observer before calling calculate_qparams.*")


def one_line(message: str) -> str:
    """A multi-line error message (e.g. the verifier's list of problems) folded onto one line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(lines[:1] + ["; ".join(lines[1:])] if len(lines) > 1 else lines)
