"""The typed errors qfx raises. Every error names what went wrong and what to do."""

from __future__ import annotations

import copy


class QfxError(Exception):
    """Base class of every error qfx raises on purpose."""


class NotObservedModelError(QfxError, AssertionError):
    """The model given to lift/convert was not produced by prepare_fx/prepare_qat_fx (torch's convert
    asserts the same)."""


class LiftError(QfxError):
    """A GraphModule could not be represented in the IR."""


class MissingTargetError(LiftError, RuntimeError, KeyError):
    """A get_attr or call_module node names an attribute the model does not have. torch's convert fails on
    a missing submodule with a KeyError (its module table has no entry) and on a missing attribute with a
    RuntimeError (when it builds its GraphModule): this is both."""

    def __str__(self) -> str:  # (KeyError prints the repr of its argument)
        return str(self.args[0]) if self.args else ""


class VerificationError(QfxError):
    """A Program broke an IR invariant; the message lists every violation."""

    def __init__(self, problems: list[str], where: str = "") -> None:
        self.problems = list(problems)
        self.where = where
        head = f"IR verification failed{(' ' + where) if where else ''}:"
        super().__init__("\n  ".join([head, *self.problems]))

    def __reduce__(self) -> tuple:
        # Exceptions unpickle as cls(*args); args here is the joined message, not the problem list.
        return type(self), (self.problems, self.where)


# The builtin exception types a wrapping error (PassError, CodegenError) takes on from the error it wraps,
# most specific first, so code that catches torch's exception type (torch's convert raises these) still
# catches qfx's.
_MIRRORED: tuple[type[Exception], ...] = (
    NotImplementedError, ZeroDivisionError, KeyError, IndexError, AssertionError, AttributeError,
    TypeError, ValueError, LookupError, ArithmeticError, RuntimeError, SyntaxError,
)
_MIRRORING_TYPES: dict[tuple[type, type], type] = {}


class _WrappingError(QfxError):
    """An error that wraps one escaping from qfx's own machinery, and is also of its builtin type (see
    `mirrored_type`). Pickles by its `_rebuild_args` (errors travel back from worker processes)."""

    _mirrors: type[Exception] | None = None  # the builtin type a mirrored_type class also is
    message: str

    def __str__(self) -> str:  # KeyError, mixed in by mirrored_type, would print the repr
        return self.message

    def _rebuild_args(self) -> tuple:
        raise NotImplementedError

    def __reduce__(self) -> tuple:
        family = next(c for c in type(self).__mro__ if c.__module__ == __name__ and "[" not in c.__name__)
        return _rebuild_wrapping_error, (family, self._mirrors, self._rebuild_args())

    # Copies keep everything the error carries (`last_good`...); a pickle keeps what travels between processes.
    def __copy__(self) -> "_WrappingError":
        clone = Exception.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.args = self.args
        return clone

    def __deepcopy__(self, memo: dict) -> "_WrappingError":
        clone = Exception.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        clone.args = copy.deepcopy(self.args, memo)
        return clone


def _rebuild_wrapping_error(family: type, mirrors: type[Exception] | None, args: tuple) -> QfxError:
    kind = family if mirrors is None else mirrored_type(family, mirrors)
    return kind(*args)


def mirrored_type(family: type, cause: type[BaseException]) -> type:
    """The `family` class (PassError, CodegenError) for a wrapped error of type `cause`: `family` itself,
    also a subclass of the first builtin type in _MIRRORED that `cause` derives from."""
    base = next((t for t in _MIRRORED if issubclass(cause, t)), None)
    if base is None:
        return family
    kind = _MIRRORING_TYPES.get((family, base))
    if kind is None:
        kind = type(f"{family.__name__}[{base.__name__}]", (family, base), {
            "__module__": __name__,
            "__doc__": f"A {family.__name__} whose cause is a {base.__name__} (so it is one too).",
            "_mirrors": base,
        })
        kind = _MIRRORING_TYPES.setdefault((family, base), kind)
    return kind


def _one_line(message: object) -> str:
    """A message's lines joined with "; " (after a line ending in a colon, with a space)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    joined = lines[:1]
    for line in lines[1:]:
        joined.append((" " if joined[-1].endswith(":") else "; ") + line)
    return "".join(joined)


class PassError(_WrappingError):
    """A pass failed; carries the pass name, the node and module it was working on (when known) and the
    last program that was good. The message is one line. Pickled, it leaves `last_good` behind (its
    modules and tensors need not pickle)."""

    def __init__(self, pass_name: str, message: str, last_good: object, ran: tuple[str, ...],
                 node: str | None = None, module: str | None = None, advice: str = "") -> None:
        self.pass_name = pass_name
        self.cause_message = message
        self.last_good = last_good
        self.ran = ran
        self.node = node
        self.module = module
        self.advice = advice
        done = ", ".join(ran) if ran else "none"
        at = f" at node '{node}'" if node else ""
        at += f" (module {module})" if module else ""
        then = f"; {advice}" if advice else ""
        self.message = f"pass '{pass_name}' failed{at}: {_one_line(message)} (passes already run: {done}){then}"
        super().__init__(self.message)

    def _rebuild_args(self) -> tuple:
        return (self.pass_name, self.cause_message, None, self.ran, self.node, self.module, self.advice)


# The next step for an error qfx did not raise itself (torch's, or the model's code's) while converting.
REPORT_IF_TORCH_CONVERTS = ("if torch's convert_fx converts a copy of this model, this is a qfx bug: please report it "
                            "with the IR `qfx convert --dump-ir` (or a DumpIR instrument) writes")


def pass_error_type(cause: type[BaseException]) -> type[PassError]:
    """The PassError class for an error of type `cause` escaping a pass."""
    return mirrored_type(PassError, cause)


class CodegenError(_WrappingError):
    """Emitting the GraphModule of a converted program failed; names the node being emitted (when known)
    and the failing error. One line."""

    def __init__(self, message: str, node: str | None = None) -> None:
        self.cause_message = message
        self.node = node
        at = f" at node '{node}'" if node else ""
        self.message = f"code generation failed{at}: {_one_line(message)}"
        super().__init__(self.message)

    def _rebuild_args(self) -> tuple:
        return (self.cause_message, self.node)


class PipelineSpecError(QfxError, ValueError):
    """A text pipeline spec named an unknown pass or was malformed."""


class UnknownPassError(PipelineSpecError):
    """A pipeline spec names a pass nobody registered."""


class ConvertError(QfxError):
    """The observed model cannot be converted as asked; the message names the node or module."""


class UnsupportedError(ConvertError, NotImplementedError):
    """The request is valid for torch but not (yet) supported by qfx."""


class ConvertAssertionError(ConvertError, AssertionError):
    """A convert failure that torch reports as an AssertionError (same message, so callers catching
    torch's exception keep working)."""


class ConvertValueError(ConvertError, ValueError):
    """A convert failure that torch reports as a ValueError (same message)."""


class ConvertNotImplementedError(ConvertError, NotImplementedError):
    """A convert failure that torch reports as a NotImplementedError (a feature torch has dropped)."""


class ConvertTypeError(ConvertError, TypeError):
    """A convert failure that torch reports as a TypeError (it reads an attribute named by something that
    is not a name)."""


class ConvertIndexError(ConvertError, IndexError):
    """A convert failure that torch reports as an IndexError (it reads an argument the node does not have,
    e.g. of a module called with keyword arguments)."""


class ConvertKeyError(ConvertError, KeyError):
    """A convert failure that torch reports as a KeyError (a lookup in one of its tables misses)."""

    def __str__(self) -> str:  # (KeyError prints the repr of its argument)
        return str(self.args[0]) if self.args else ""


class ConvertAttributeError(ConvertError, AttributeError):
    """A convert failure that torch reports as an AttributeError (it reads a node's attribute from a value
    that is not a node)."""


class ArgumentError(QfxError, TypeError):
    """A convert argument has the wrong type or content; the message names the argument and what to pass."""


class FlagError(ArgumentError, RuntimeError, ValueError):
    """A convert flag with no truth value (bool() fails on it, as torch's `if flag:` does: a RuntimeError for
    a tensor of many elements, a ValueError for an array; this is all three)."""


class ConfigDictError(ArgumentError, ValueError):
    """A config dict torch's `from_dict` cannot read (torch fails there with a ValueError, or a TypeError for
    an entry of the wrong kind: this is both)."""


class ConfigAttributeError(ArgumentError, AttributeError):
    """A config argument of the wrong type (torch fails on it with an AttributeError, so this is one too)."""


class DeviceError(QfxError, RuntimeError):
    """An observer's statistics are on the meta device, where convert cannot read them (torch fails there with
    a RuntimeError)."""


class ObserverStateError(ConvertError, AttributeError, TypeError, RuntimeError):
    """An observer's state is missing (a buffer its qparams read deleted, or replaced by something not a
    tensor; a fake quant's observer gone). torch fails on such observers with an AttributeError, TypeError
    or RuntimeError: this is all three."""


class MalformedGraphError(VerificationError, LiftError):
    """The observed model's graph is not well formed (e.g. two output nodes); lists every problem."""


class UncalibratedObserverWarning(UserWarning):
    """Observers that never saw data: convert uses their default qparams, as torch does."""
