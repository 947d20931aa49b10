"""The typed errors qfx raises. Every error names what went wrong and what to do."""

from __future__ import annotations


class QfxError(Exception):
    """Base class of every error qfx raises on purpose."""


class NotObservedModelError(QfxError, AssertionError):
    """The model given to lift/convert was not produced by prepare_fx/prepare_qat_fx (torch's convert
    asserts the same)."""


class LiftError(QfxError):
    """A GraphModule could not be represented in the IR."""


class VerificationError(QfxError):
    """A Program broke an IR invariant; the message lists every violation."""

    def __init__(self, problems: list[str], where: str = "") -> None:
        self.problems = list(problems)
        head = f"IR verification failed{(' ' + where) if where else ''}:"
        super().__init__("\n  ".join([head, *self.problems]))


class PassError(QfxError):
    """A pass failed; carries the pass name and the last program that was good."""

    def __init__(self, pass_name: str, message: str, last_good: object, ran: tuple[str, ...]) -> None:
        self.pass_name = pass_name
        self.last_good = last_good
        self.ran = ran
        done = ", ".join(ran) if ran else "none"
        super().__init__(f"pass '{pass_name}' failed: {message} (passes already run: {done})")


class PipelineSpecError(QfxError, ValueError):
    """A text pipeline spec named an unknown pass or was malformed."""


class ConvertError(QfxError):
    """The observed model cannot be converted as asked; the message names the node or module."""


class UnsupportedError(ConvertError, NotImplementedError):
    """The request is valid for torch but not (yet) supported by qfx."""


class ConvertAssertionError(ConvertError, AssertionError):
    """A convert failure that torch reports as an AssertionError (same message, so callers catching
    torch's exception keep working)."""


class ConvertValueError(ConvertError, ValueError):
    """A convert failure that torch reports as a ValueError (same message)."""
