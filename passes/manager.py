"""The pass manager: named pure passes, pipelines built in code or from text, and instruments.

A pass is a named pure function Program -> Program. Instruments (timing, verification, IR printing and
dumping) hook around every pass; passes themselves contain none of that.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence, TextIO

import attrs

from qfx.ir.errors import PassError, PipelineSpecError, QfxError
from qfx.ir.printer import print_program
from qfx.ir.program import Program
from qfx.ir.verify import verify


@attrs.frozen
class Pass:
    """A named pure transformation. `run` must not mutate its input or anything reachable from it."""

    name: str
    run: Callable[[Program], Program] = attrs.field(repr=False)
    doc: str = attrs.field(default="", repr=False, eq=False)

    def __call__(self, program: Program) -> Program:
        return self.run(program)


REGISTRY: dict[str, Pass] = {}


def register(name: str) -> Callable[[Callable[[Program], Program]], Pass]:
    """Decorator: register `fn` as the pass called `name` (usable in text pipelines)."""

    def wrap(fn: Callable[[Program], Program]) -> Pass:
        if name in REGISTRY:
            raise QfxError(f"a pass named '{name}' is already registered")
        p = Pass(name, fn, (fn.__doc__ or "").strip())
        REGISTRY[name] = p
        return p

    return wrap


def get_pass(name: str) -> Pass:
    """The registered pass called `name`."""
    _load_builtin_passes()
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise PipelineSpecError(f"unknown pass '{name}'; known passes: {known}") from None


def _load_builtin_passes() -> None:
    import qfx.passes  # noqa: F401  (importing the package registers every built-in pass)


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
        rows = [f"{'#':>2}  {'pass':<22}{'ms':>10}{'nodes':>14}"]
        for i, r in enumerate(self.records):
            rows.append(f"{i:>2}  {r.name:<22}{r.seconds * 1e3:>10.2f}{r.nodes_before:>7} -> {r.nodes_after:<5}")
        rows.append(f"    {'total':<22}{sum(r.seconds for r in self.records) * 1e3:>10.2f}")
        return "\n".join(rows)


class Verify(BaseInstrument):
    """Runs the IR verifier on every pass's input (first pass) and output."""

    def before_pass(self, index: int, p: Pass, program: Program) -> None:
        if index == 0:
            verify(program, f"before pass '{p.name}'")

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        verify(after, f"after pass '{p.name}'")


class PrintIR(BaseInstrument):
    """Prints the IR after each pass (all of them, or only those that changed the graph)."""

    def __init__(self, stream: TextIO | None = None, only_changes: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.only_changes = only_changes

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        if self.only_changes and before.graph == after.graph:
            return
        self.stream.write(f"// ----- IR after {p.name} -----\n{print_program(after)}")


class DumpIR(BaseInstrument):
    """Writes the input IR and the IR after each pass to numbered files in `directory`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def before_pass(self, index: int, p: Pass, program: Program) -> None:
        if index == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "00-input.ir").write_text(print_program(program))

    def after_pass(self, index: int, p: Pass, before: Program, after: Program, seconds: float) -> None:
        (self.directory / f"{index + 1:02d}-{p.name}.ir").write_text(print_program(after))

    def after_failure(self, index: int, p: Pass, program: Program, error: BaseException) -> None:
        (self.directory / f"{index + 1:02d}-{p.name}.FAILED.txt").write_text(f"{error}\n")


# Instruments added to every pipeline in this process (the test suite adds a verifier here).
GLOBAL_INSTRUMENTS: list[Instrument] = []


@attrs.frozen
class Pipeline:
    """An ordered sequence of passes, run with instruments."""

    passes: tuple[Pass, ...] = attrs.field(converter=tuple)

    @classmethod
    def parse(cls, spec: str) -> "Pipeline":
        """Build a pipeline from a comma-separated list of registered pass names, e.g. "dce,cleanup"."""
        names = [s.strip() for s in spec.split(",")]
        if not spec.strip() or any(not n for n in names):
            raise PipelineSpecError(f"malformed pipeline spec {spec!r}: expected names separated by commas")
        return cls(tuple(get_pass(n) for n in names))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.passes)

    def run(self, program: Program, instruments: Sequence[Instrument] = ()) -> Program:
        """Run every pass in order and return the final program.

        On failure raises PassError naming the pass, listing the passes that ran, and carrying the last
        good program in `.last_good`.
        """
        active = [*GLOBAL_INSTRUMENTS, *instruments]
        current = program
        for index, p in enumerate(self.passes):
            try:
                for inst in active:
                    inst.before_pass(index, p, current)
                start = time.perf_counter()
                result = p(current)
                seconds = time.perf_counter() - start
                if not isinstance(result, Program):
                    raise QfxError(f"returned {type(result).__name__}, not a Program")
                for inst in active:
                    inst.after_pass(index, p, current, result, seconds)
            except PassError:
                raise
            except Exception as exc:
                for inst in active:
                    inst.after_failure(index, p, current, exc)
                raise PassError(p.name, str(exc), current, self.names[:index]) from exc
            current = result
        return current

    def __add__(self, other: "Pipeline | Iterable[Pass]") -> "Pipeline":
        extra = other.passes if isinstance(other, Pipeline) else tuple(other)
        return Pipeline(self.passes + extra)
