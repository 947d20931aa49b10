"""Loading a user's model from a Python entry point `MODULE:FUNCTION` (what `qfx convert` and `qfx show` take).

`MODULE` is a module importable from the current directory (as `python -m` finds it, e.g. `mypkg.models`)
or a path to a `.py` file (e.g. `models/net.py`). `FUNCTION` takes no arguments and returns
`(model, example_inputs)` or `(model, example_inputs, calibration_batches)`: a float `nn.Module`, a tuple
of example inputs, and an iterable of input tuples to calibrate with.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import attrs
import torch

from qfx.ir.errors import QfxError

EXAMPLE = "qfx convert mymodels.py:build"


class EntryPointError(QfxError, ValueError):
    """An entry point that cannot be loaded, or whose function returns something qfx cannot use."""


@attrs.frozen
class EntryPoint:
    """What a user's entry point gave: the float model, example inputs and the calibration batches (the
    example inputs alone when the function gave none)."""

    spec: str
    model: torch.nn.Module
    example_inputs: tuple
    calibration_batches: tuple[tuple, ...]


def looks_like_entry_point(text: str) -> bool:
    """True when `text` has the MODULE:FUNCTION form (rather than a path to a saved model file)."""
    module, sep, function = text.rpartition(":")
    return bool(sep and module and function.isidentifier() and not Path(text).is_file())


def _import_module(module: str, spec: str) -> Any:
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module)
        if not path.is_file():
            raise EntryPointError(f"entry point '{spec}': no such file '{module}'")
        name = _module_name_for(path)
        loader_spec = importlib.util.spec_from_file_location(name, path.resolve())
        if loader_spec is None or loader_spec.loader is None:
            raise EntryPointError(f"entry point '{spec}': '{module}' cannot be imported as a Python file")
        loaded = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = loaded  # so classes defined there pickle and trace like any module's
        sys.path.insert(0, str(path.resolve().parent))  # its own sibling imports work, as under `python file`
        try:
            loader_spec.loader.exec_module(loaded)
        except SystemExit as exc:
            sys.modules.pop(name, None)  # (as a failed import leaves no module behind)
            raise _exited(spec, module, exc, importing=True) from exc
        except Exception as exc:
            sys.modules.pop(name, None)
            hint = ""
            if isinstance(exc, ImportError) and "relative import" in str(exc):
                dotted = ".".join(path.with_suffix("").parts)
                hint = (f"; a module of a package imports relative to it: give it as a module, e.g. "
                        f"'{dotted}:{spec.rpartition(':')[2]}', from the folder that holds the package")
            raise EntryPointError(f"entry point '{spec}': importing '{module}' failed: "
                                  f"{type(exc).__name__}: {exc}{hint}") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
        return loaded
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` searches it
    try:
        return importlib.import_module(module)
    except SystemExit as exc:
        raise _exited(spec, module, exc, importing=True) from exc
    except ModuleNotFoundError as exc:
        if exc.name == module or module.startswith(f"{exc.name}."):
            raise EntryPointError(
                f"entry point '{spec}': no module named '{module}' (importable from the current directory, "
                f"or give a path such as {module.replace('.', '/')}.py)") from exc
        raise EntryPointError(f"entry point '{spec}': importing '{module}' failed: {exc}") from exc


def _exited(spec: str, code: str, exc: SystemExit, importing: bool) -> EntryPointError:
    """The error for user code (`code`: the file or the function) that called sys.exit while qfx loaded it."""
    if importing:
        return EntryPointError(
            f"entry point '{spec}': '{code}' called sys.exit({exc.code!r}) while being imported; code that runs "
            "as a script (parsing its command line, say) belongs under `if __name__ == \"__main__\":`")
    return EntryPointError(f"entry point '{spec}': '{code}' called sys.exit({exc.code!r}); it must return the "
                           "model and its inputs")


def _module_name_for(path: Path) -> str:
    """The name to import the file `path` under: its stem, as `python path` beside it or an import from its
    folder names it, so that what is pickled with its classes (a saved model's node meta names them) loads
    wherever that module can be imported; a private name when the stem is not an identifier or names another
    module already imported or importable from here."""
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        if found is None or (found.origin is not None and Path(found.origin).resolve() == path.resolve()):
            return stem
    return f"qfx_entry_{stem}"


def with_article(noun: str) -> str:
    """`noun` with its indefinite article ("an int", "a str")."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _as_inputs(value: Any, spec: str, what: str) -> tuple:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (tuple, list)):
        return tuple(value)
    raise EntryPointError(f"entry point '{spec}': {what} must be a tuple of inputs (or one tensor), "
                          f"not {type(value).__name__}")


def load_entry_point(spec: str) -> EntryPoint:
    """Import `spec` ("MODULE:FUNCTION"), call the function and check what it returns.

    Raises EntryPointError naming the entry point when the module or function is missing, or when the
    function does not return (model, example_inputs) or (model, example_inputs, calibration_batches)."""
    module_name, sep, function_name = spec.rpartition(":")
    if not sep or not module_name or not function_name:
        raise EntryPointError(f"'{spec}' is not an entry point: expected MODULE:FUNCTION, e.g. {EXAMPLE}")
    if ":" in module_name.replace(":\\", "") and not Path(module_name).is_file():  # (past a Windows drive)
        first, _, second = module_name.rpartition(":")
        raise EntryPointError(f"'{spec}' is not an entry point: expected MODULE:FUNCTION with one ':' "
                              f"between them, e.g. '{first}:{second}'")
    module = _import_module(module_name, spec)
    function = getattr(module, function_name, None)
    if function is None:
        raise EntryPointError(f"entry point '{spec}': module '{module_name}' has no function '{function_name}'")
    if not callable(function):
        raise EntryPointError(f"entry point '{spec}': '{function_name}' is "
                              f"{with_article(type(function).__name__)}, not a function")
    try:
        returned = function()
    except SystemExit as exc:
        raise _exited(spec, function_name, exc, importing=False) from exc
    except Exception as exc:
        raise EntryPointError(f"entry point '{spec}' raised {type(exc).__name__}: {exc}") from exc
    shape = ("(model, example_inputs) or (model, example_inputs, calibration_batches)")
    if not isinstance(returned, tuple) or len(returned) not in (2, 3):
        got = (f"a tuple of {len(returned)}" if isinstance(returned, tuple)
               else f"{with_article(type(returned).__name__)} model alone" if isinstance(returned, torch.nn.Module)
               else with_article(type(returned).__name__))
        raise EntryPointError(f"entry point '{spec}' returned {got}; it must return {shape}")
    model = returned[0]
    if not isinstance(model, torch.nn.Module):
        raise EntryPointError(f"entry point '{spec}': the model must be a torch.nn.Module, "
                              f"not {type(model).__name__}")
    example_inputs = _as_inputs(returned[1], spec, "example_inputs")
    if len(returned) == 3 and returned[2] is not None:
        try:
            batches = tuple(_as_inputs(b, spec, "each calibration batch") for b in returned[2])
        except TypeError as exc:
            raise EntryPointError(f"entry point '{spec}': calibration_batches must be an iterable of input "
                                  "tuples") from exc
        if not batches:
            raise EntryPointError(f"entry point '{spec}': calibration_batches is empty")
    else:
        batches = (example_inputs,)
    return EntryPoint(spec, model, example_inputs, batches)
