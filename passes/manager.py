"""The pass manager: named pure passes, the registry, and pipelines built in code or from text.

A pass is a named pure function Program -> Program. Instruments (timing, verification, IR printing and
dumping, in qfx.passes.instruments) hook around every pass a pipeline runs; passes themselves contain none
of that.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

import attrs

from qfx.ir.errors import PassError, PipelineSpecError, QfxError, pass_error_type
from qfx.ir.program import Program
from qfx.ir.tracebacks import failing_node

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
    # Importing the packages registers every built-in pass: the reference passes, then the lowering passes.
    import qfx.lowering  # noqa: F401
    import qfx.passes  # noqa: F401


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

        On failure raises PassError naming the pass (and the node and module it was working on, when the
        traceback shows them), listing the passes that ran, and carrying the last good program in
        `.last_good`; it is also an instance of the failing error's builtin type (RuntimeError, ...).
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
                node, module = failing_node(exc.__traceback__, current)
                message = str(exc) if isinstance(exc, QfxError) else f"{type(exc).__name__}: {exc}"
                raise pass_error_type(type(exc))(
                    p.name, message, current, self.names[:index], node=node, module=module
                ) from exc
            current = result
        return current

    def __add__(self, other: "Pipeline | Iterable[Pass]") -> "Pipeline":
        extra = other.passes if isinstance(other, Pipeline) else tuple(other)
        return Pipeline(self.passes + extra)
