"""Checks a user runs on their own pass (or on qfx's): pure, idempotent, and the same result as torch.

    from qfx.testing.checks import assert_pure, assert_idempotent, assert_same_as_torch

Each raises AssertionError with a message that says what differs, and returns the value it checked so
checks can be chained in a property test.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import attrs
import torch
from torch.fx import GraphModule

from qfx.compare import compare, copy_for_torch, fingerprint, same_fingerprint, same_value
from qfx.ir.errors import VerificationError
from qfx.ir.printer import print_program
from qfx.ir.program import Program
from qfx.ir.verify import verify
from qfx.passes.instruments import BaseInstrument

PassLike = Callable[[Program], Program]


def _tensor_state(tensor: torch.Tensor) -> tuple:
    """The tensor object, whether it requires grad, and a copy of its values."""
    return id(tensor), type(tensor), tensor.requires_grad, tensor.detach().clone()


def _module_state(module: torch.nn.Module) -> dict[str, Any]:
    """What one module holds itself: its class, every instance attribute (by `_value_state`), its
    parameters, buffers and children by name, and the hooks of every hook table."""
    state: dict[str, Any] = {"class": type(module)}
    for key, value in vars(module).items():
        if key in ("_parameters", "_buffers"):
            state[key] = {k: None if v is None else _tensor_state(v) for k, v in value.items()}
        elif key == "_modules":
            state[key] = {k: id(v) for k, v in value.items()}
        elif key.endswith("hooks") and isinstance(value, dict):
            state[key] = [(k, id(v)) for k, v in value.items()]
        else:
            state[key] = _value_state(value)
    return state


_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.qscheme)


def _value_state(value: Any) -> Any:
    """A value as comparable data: containers by their contents, tensors by `_tensor_state`, plain values
    as they are, any other object by identity."""
    if isinstance(value, dict):
        return (type(value), {k: _value_state(v) for k, v in value.items()})
    if isinstance(value, (list, tuple, set, frozenset)):
        return (type(value), [_value_state(v) for v in value])
    if isinstance(value, torch.Tensor):
        return _tensor_state(value)
    if isinstance(value, _PLAIN):
        return value
    return id(value)


def _held_state(value: Any) -> Any:
    """A comparable copy of what a module (and each module below it) or a tensor in a Program's tables
    holds."""
    if isinstance(value, torch.Tensor):
        return _tensor_state(value)
    if isinstance(value, torch.nn.Module):
        return {name: _module_state(m) for name, m in value.named_modules(remove_duplicate=False)}
    return None


def _config_state(value: Any) -> Any:
    """A torch config object (QConfigMapping, BackendConfig, the custom configs: objects a pass may only
    read) as comparable data: what its to_dict() gives, else its instance dict; other values by
    `_value_state`."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, (dict, torch.nn.Module)):
        return id(value), _value_state(to_dict())
    if hasattr(value, "__dict__") and not isinstance(value, (type, torch.nn.Module)) and not callable(value):
        return id(value), _value_state(vars(value))
    return _value_state(value)


def _fields_state(record: Any) -> Any:
    """An attrs record of the Program (quant facts, convert options) field by field, configs by
    `_config_state`: such records are immutable, the torch objects they hold are not."""
    if record is None:
        return None
    return id(record), {field.name: _config_state(getattr(record, field.name)) for field in attrs.fields(type(record))}


def _program_state(program: Program) -> tuple:
    """Everything a pass could change in `program`: its text, node metas, table identities, the state they
    hold, and the quant facts and options with the torch configs they hold."""
    modules = {k: id(v) for k, v in program.modules.items()}
    attributes = {k: id(v) for k, v in program.attributes.items()}
    held = {k: _held_state(v) for k, v in list(program.modules.items()) + list(program.attributes.items())}
    metas = {n.name: _value_state(n.meta) for n in program.graph.nodes}
    return (print_program(program), metas, modules, attributes, held, _fields_state(program.quant),
            _fields_state(program.options))


_STATE_PARTS = ("printed IR", "node meta", "module table", "attribute table", "module/tensor state",
                "quant facts", "options")


def _changes(before: tuple, after: tuple) -> list[str]:
    """What differs between two `_program_state`s, naming the first entries that changed in each part."""
    found = []
    for part, a, b in zip(_STATE_PARTS, before, after):
        if same_value(a, b):
            continue
        if isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], dict) and isinstance(b, tuple):
            a, b = a[1], b[1]  # (a record: name its fields)
        if isinstance(a, dict) and isinstance(b, dict):
            keys = [k for k in dict.fromkeys([*a, *b]) if k not in a or k not in b or not same_value(a[k], b[k])]
            part += f" ({', '.join(repr(k) for k in keys[:4])}{' ...' if len(keys) > 4 else ''})"
        found.append(part)
    return found


def assert_pure(pass_: PassLike, program: Program) -> Program:
    """Run `pass_` (a registered Pass or any Program -> Program function) on `program` and check that the
    input is unchanged (printed IR, module and tensor tables, the state every module and tensor holds) and
    that the verifier accepts both. Returns the pass's result."""
    verify(program)
    before = _program_state(program)
    result = pass_(program)
    changed = _changes(before, _program_state(program))
    name = getattr(pass_, "name", getattr(pass_, "__name__", repr(pass_)))
    if changed:
        raise AssertionError(_mutated_message(name, changed))
    if not isinstance(result, Program):
        raise AssertionError(f"pass {name!r} returned a {type(result).__name__}, not a Program")
    try:
        verify(result)
    except VerificationError as exc:
        raise AssertionError(f"pass {name!r} returned a program the verifier rejects: {exc}") from exc
    return result


class CheckPurity(BaseInstrument):
    """An instrument that checks, around every pass of a pipeline, what `assert_pure` checks around one:
    that the pass left its input program, and every module, tensor and config it holds, as it was (an
    AssertionError naming the pass and what changed, which counts as the pass's failure). It records the
    state of each pass's input (copies of every tensor): for development and tests, not for production."""

    def __init__(self) -> None:
        self._before: tuple | None = None

    def before_pass(self, index: int, p: Any, program: Program) -> None:
        self._before = _program_state(program)

    def after_pass(self, index: int, p: Any, before: Program, after: Program, seconds: float) -> None:
        recorded, self._before = self._before, None
        changed = _changes(recorded, _program_state(before)) if recorded is not None else []
        if changed:
            raise AssertionError(_mutated_message(p.name, changed))


def _mutated_message(name: str, changed: list[str]) -> str:
    return (f"pass {name!r} mutated its input program: {'; '.join(changed)} changed; a pass must build new "
            "objects (Program.evolve, with_modules, a copied module or tensor) instead of changing those its "
            "input holds")


def assert_idempotent(pass_: PassLike, program: Program) -> Program:
    """Check that running `pass_` twice gives the same program as running it once (same printed IR and the
    same module and tensor objects). Returns the result of one run."""
    once = pass_(program)
    twice = pass_(once)
    name = getattr(pass_, "name", getattr(pass_, "__name__", repr(pass_)))
    if print_program(once) != print_program(twice):
        raise AssertionError(f"pass {name!r} is not idempotent: a second run changed the printed IR")
    if (dict(once.modules) != dict(twice.modules) or list(once.attributes) != list(twice.attributes)
            or not all(same_value(once.attributes[k], twice.attributes[k]) for k in once.attributes)):
        raise AssertionError(f"pass {name!r} is not idempotent: a second run changed the module or tensor tables")
    return once


def assert_same_as_torch(observed: GraphModule, *, example_inputs: tuple | None = None,
                         **convert_kwargs: Any) -> GraphModule:
    """Convert `observed` with qfx and with torch (on a deep copy) and check the results are the same: same
    code, same state_dict (bit for bit) and, with `example_inputs`, identical outputs (or the same error
    from both, where a quantized op refuses the inputs: then with a warning, as no output was compared);
    and that qfx left `observed` unchanged.
    `convert_kwargs` are torch `convert`'s: `is_reference` (default False: lowered,
    as `convert_fx`), `is_decomposed`, `convert_custom_config`, `qconfig_mapping`, `backend_config`.
    Returns qfx's result."""
    import qfx
    from torch.ao.quantization import quantize_fx

    is_reference = convert_kwargs.pop("is_reference", False)
    is_decomposed = convert_kwargs.pop("is_decomposed", False)
    if is_decomposed:
        name = "_convert_to_reference_decomposed_fx"
    elif is_reference:
        name = "convert_to_reference_fx"
    else:
        name = "convert_fx"
    ours_fn, theirs_fn = getattr(qfx, name.lstrip("_")), getattr(quantize_fx, name)
    before = fingerprint(observed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ours_fn(observed, **convert_kwargs)
        theirs = theirs_fn(copy_for_torch(observed), **copy.deepcopy(convert_kwargs))
    if not same_fingerprint(before, fingerprint(observed)):
        raise AssertionError(f"qfx.{name.lstrip('_')} changed the observed model")
    comparison = compare(ours, theirs, example_inputs)
    if comparison.found:
        raise AssertionError(f"qfx.{name.lstrip('_')} differs from torch's {name}: {'; '.join(comparison.found)}")
    failure = comparison.output_error
    if failure is not None:  # the same as torch's, but no output was compared: say so
        warnings.warn(f"both converted models fail alike on the example inputs ({failure}): no outputs were "
                      "compared", stacklevel=2)
    return ours
