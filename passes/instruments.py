"""Pass instruments: hooks around every pass a Pipeline runs (timing, verification, IR printing and dumping).

Passes contain none of this; `Pipeline.run` calls each instrument's hooks before and after each pass and on
failure. `qfx.passes.manager.GLOBAL_INSTRUMENTS` lists the instruments added to every pipeline in the process.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

import attrs

from qfx.ir.errors import QfxError
from qfx.ir.printer import print_program
from qfx.ir.program import Program
from qfx.ir.verify import verify

if TYPE_CHECKING:
    from .manager import Pass


class Instrument(Protocol):
    """Hooks around each pass. Every method is optional in spirit; the base class does nothing."""

    def before_pass(self, index: int, p: Pass, program: Program) -> None: ...
    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None: ...
    def after_failure(self, index: int, p: Pass, program: Program, error: BaseException) -> None: ...


class BaseInstrument:
    """An instrument that does nothing; subclass and override what you need."""

    def before_pass(self, index: int, p: Pass, program: Program) -> None:
        pass

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        pass

    def after_failure(self, index: int, p: Pass, program: Program, error: BaseException) -> None:
        pass


@attrs.frozen
class PassRecord:
    """One row of the timing table."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int


class Timing(BaseInstrument):
    """Records wall time and node counts for every pass run."""

    def __init__(self) -> None:
        self.records: list[PassRecord] = []

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        self.records.append(PassRecord(p.name, seconds, len(before.graph), len(after.graph)))

    def table(self) -> str:
        """The records as a plain-text table."""
        width = max([22, *(len(r.name) + 1 for r in self.records)])
        rows = [f"{'#':>2}  {'pass':<{width}}{'ms':>10}{'nodes':>14}"]
        for i, r in enumerate(self.records):
            rows.append(f"{i:>2}  {r.name:<{width}}{r.seconds * 1e3:>10.2f}{r.nodes_before:>7} -> {r.nodes_after:<5}")
        rows.append(f"    {'total':<{width}}{sum(r.seconds for r in self.records) * 1e3:>10.2f}")
        return "\n".join(rows)


class Verify(BaseInstrument):
    """Runs the IR verifier on every pass's input (first pass) and output."""

    def before_pass(self, index: int, p: Pass, program: Program) -> None:
        if index == 0:
            verify(program, f"before pass '{p.name}'")

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        verify(after, f"after pass '{p.name}'")


class PrintIR(BaseInstrument):
    """Prints the IR after each pass (all of them, or only those that changed what the IR prints: the graph
    or the modules and attributes it lists)."""

    def __init__(self, stream: TextIO | None = None, only_changes: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.only_changes = only_changes
        self._last: tuple[Program, str] | None = None  # the last program printed to text, and its text

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        if self.only_changes and after is before:
            return
        unchanged = self._text(before) if self.only_changes else None  # (before `after` takes its place)
        text = self._text(after)
        if text == unchanged:
            return
        self.stream.write(f"// ----- IR after {p.name} -----\n{text}")

    def _text(self, program: Program) -> str:
        # (a pass's input is the last pass's output, printed already)
        if self._last is None or self._last[0] is not program:
            self._last = (program, print_program(program))
        return self._last[1]


_DUMP_FILE = re.compile(r"\d\d-.+\.(ir|FAILED\.txt)")  # the names DumpIR writes


class DumpIR(BaseInstrument):
    """Writes the input IR and the IR after each pass to numbered files in `directory` (replacing the numbered
    files of an earlier dump there)."""

    def __init__(self, directory: str | Path) -> None:
        if not isinstance(directory, (str, Path)):
            raise QfxError(f"DumpIR takes a directory path, got {type(directory).__name__}")
        self.directory = Path(directory)

    def _file(self, index: int, p: Pass, suffix: str) -> Path:
        # (a pass name is any string: one that holds a path separator must not name a subdirectory)
        name = p.name.replace("/", "_").replace("\\", "_")
        return self.directory / f"{index + 1:02d}-{name}{suffix}"

    def before_pass(self, index: int, p: Pass, program: Program) -> None:
        if index == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            # an earlier run's dump (its numbered files only) would read as later passes of this one
            for old in self.directory.iterdir():
                if _DUMP_FILE.fullmatch(old.name) and old.is_file():
                    old.unlink()
            (self.directory / "00-input.ir").write_text(print_program(program))

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        self._file(index, p, ".ir").write_text(print_program(after))

    def after_failure(self, index: int, p: Pass, program: Program, error: BaseException) -> None:
        self._file(index, p, ".FAILED.txt").write_text(f"{error}\n")
