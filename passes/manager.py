"""The pass manager: named pure passes, the registry, and pipelines built in code or from text.

A pass is a named pure function Program -> Program. Instruments (timing, verification, IR printing and
dumping, in qfx.passes.instruments) hook around every pass a pipeline runs; passes themselves contain none
of that.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

import attrs

from qfx.ir.errors import (REPORT_IF_TORCH_CONVERTS, PassError, PipelineSpecError, QfxError, UnknownPassError,
                           pass_error_type)
from qfx.ir.program import Program
from qfx.ir.tracebacks import failing_node
from qfx.ir.validate import check_instruments

from .instruments import Instrument


@attrs.frozen
class Pass:
    """A named pure transformation. `run` must not mutate its input or anything reachable from it."""

    name: str
    run: Callable[[Program], Program] = attrs.field(repr=False)
    doc: str = attrs.field(default="", repr=False, eq=False)

    def __call__(self, program: Program) -> Program:
        return self.run(program)


REGISTRY: dict[str, Pass] = {}


_NOT_IN_NAMES = frozenset(",#/\\")  # (text pipelines split at commas; `qfx show --after NAME#N`; dump file names)


def register(name: str, *, replace: bool = False) -> Callable[[Callable[[Program], Program]], Pass]:
    """Decorator: register `fn` as the pass called `name` (usable in text pipelines, command lines and file
    names: printable, without blanks, commas, '#' or slashes); a QfxError for an unusable name, a
    non-callable, or a taken name unless `replace` (re-running the cell that defines a pass, say)."""
    if (not isinstance(name, str) or not name or not name.isprintable() or any(c.isspace() for c in name)
            or _NOT_IN_NAMES.intersection(name)):
        raise QfxError(f"cannot register a pass named {name!r}: a pass name is a non-empty printable string "
                       "without blanks, commas, '#' or slashes, as text pipelines and command lines spell it")

    def wrap(fn: Callable[[Program], Program]) -> Pass:
        if name in REGISTRY and not replace:
            raise QfxError(f"a pass named '{name}' is already registered (register(name, replace=True) "
                           "replaces it)")
        if not callable(fn):
            raise QfxError(f"cannot register {fn!r} as the pass '{name}': a pass is a function Program -> Program")
        p = Pass(name, fn, (fn.__doc__ or "").strip())
        REGISTRY[name] = p
        return p

    return wrap


def _instrument(inst: Instrument, when: str, p: Pass, hook: Callable[..., None], *args: object) -> None:
    """Call an instrument's hook; its failure is an InstrumentError naming it and the pass, unless it is
    a check's verdict on the pass (a QfxError or AssertionError: then it is the pass's failure)."""
    try:
        hook(*args)
    except (QfxError, AssertionError):
        raise
    except Exception as exc:
        raise InstrumentError(f"instrument {type(inst).__name__} failed {when} pass '{p.name}': "
                              f"{type(exc).__name__}: {exc}") from exc


def _next_step(p: Pass) -> str:
    """What to do about an error a pass did not raise itself (one from torch, or from the model's code)."""
    if getattr(p.run, "__module__", "").startswith("qfx."):
        return f"{REPORT_IF_TORCH_CONVERTS}; if not, fix the node or module named"
    return f"the pass '{p.name}' is not one of qfx's: fix it, or leave it out of the pipeline"


def get_pass(name: str) -> Pass:
    """The registered pass called `name`."""
    _load_builtin_passes()
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(map(str, REGISTRY)))
        raise UnknownPassError(f"unknown pass '{name}'; known passes: {known}") from None


def _load_builtin_passes() -> None:
    # Importing the packages registers every built-in pass: the reference passes, then the lowering passes.
    import qfx.lowering  # noqa: F401
    import qfx.passes  # noqa: F401


# Instruments added to every pipeline in this process (the test suite adds a verifier here).
GLOBAL_INSTRUMENTS: list[Instrument] = []


def _only_passes(_: object, __: object, passes: tuple) -> None:
    for p in passes:
        if not isinstance(p, Pass):
            raise PipelineSpecError(f"a pipeline holds passes (qfx.passes.Pass, from get_pass or register), "
                                    f"got {type(p).__name__} {p!r}; Pipeline.parse takes pass names")


class InstrumentError(QfxError, RuntimeError):
    """An instrument failed while a pipeline ran (the passes it watched did not)."""


@attrs.frozen
class Pipeline:
    """An ordered sequence of passes, run with instruments."""

    passes: tuple[Pass, ...] = attrs.field(converter=tuple, validator=_only_passes)

    @classmethod
    def parse(cls, spec: str) -> "Pipeline":
        """Build a pipeline from a comma-separated list of registered pass names, e.g. "dce,cleanup"."""
        if not isinstance(spec, str):
            raise PipelineSpecError(f"a pipeline spec is a string of pass names separated by commas, got "
                                    f"{type(spec).__name__}")
        names = [s.strip() for s in spec.split(",")]
        if not spec.strip() or any(not n for n in names):
            raise PipelineSpecError(f"malformed pipeline spec {spec!r}: expected names separated by commas")
        return cls(tuple(get_pass(n) for n in names))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.passes)

    def run(self, program: Program, instruments: Sequence[Instrument] = ()) -> Program:
        """Run every pass in order and return the final program.

        On failure raises PassError naming the pass (and the node and module it was working on, when the
        traceback shows them), listing the passes that ran, and carrying the last good program in
        `.last_good`; it is also an instance of the failing error's builtin type (RuntimeError, ...).
        """
        if not isinstance(program, Program):
            raise QfxError(f"Pipeline.run takes a Program (from qfx.ir.lift), got {type(program).__name__}")
        check_instruments(instruments)
        check_instruments(GLOBAL_INSTRUMENTS)
        active = [*GLOBAL_INSTRUMENTS, *instruments]
        current = program
        for index, p in enumerate(self.passes):
            try:
                for inst in active:
                    _instrument(inst, "before", p, inst.before_pass, index, p, current)
                start = time.perf_counter()
                result = p(current)
                seconds = time.perf_counter() - start
                if not isinstance(result, Program):
                    raise QfxError(f"returned {type(result).__name__}, not a Program")
                for inst in active:
                    _instrument(inst, "after", p, inst.after_pass, index, p, current, result, seconds)
            except (PassError, InstrumentError):
                raise
            except Exception as exc:
                node, module = failing_node(exc.__traceback__, current)
                message = str(exc) if isinstance(exc, QfxError) else f"{type(exc).__name__}: {exc}"
                for inst in active:
                    try:
                        inst.after_failure(index, p, current, exc)
                    except Exception as also:  # (the pass's failure is the one to report)
                        message += f" (and instrument {type(inst).__name__} failed on it: {type(also).__name__}: {also})"
                raise pass_error_type(type(exc))(
                    p.name, message, current, self.names[:index], node=node, module=module,
                    advice="" if isinstance(exc, QfxError) else _next_step(p),
                ) from exc
            current = result
        return current

    def __add__(self, other: "Pipeline | Iterable[Pass]") -> "Pipeline":
        if isinstance(other, str):
            raise PipelineSpecError(f"add Pipeline.parse({other!r}), not the string itself, to a pipeline")
        extra = other.passes if isinstance(other, Pipeline) else tuple(other)
        return Pipeline(self.passes + extra)
