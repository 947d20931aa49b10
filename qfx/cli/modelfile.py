"""The file format of `qfx convert MODEL.pt`: an observed GraphModule (and example inputs) saved so that
convert can read it back. Plain `torch.save` cannot store one: prepare's qconfigs hold a local function,
and GraphModule pickling drops `meta`, where prepare keeps the facts convert needs.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import attrs
import torch
from torch.fx import GraphModule

from qfx.entrypoint import with_article
from qfx.ir.errors import NotObservedModelError, QfxError
from qfx.ir.graph import Node
from qfx.ir.program import QuantFacts

from .class_names import classes_by_name
from qfx.ir.lift import OBSERVED_ATTRS_KEY, lift
from qfx.lowering.codegen import codegen

FILE_FORMAT = "qfx.observed/1"


class ModelFileError(QfxError):
    """A model file could not be read, or does not hold a model `qfx convert` can use."""


def _factory_kwargs_on(device: torch.device | None) -> dict[str, Any] | None:
    """Stand-in for prepare's per-module closure that tells observers which device to use."""
    return None if device is None else {"device": device}


_DEVICE_CLOSURE = "_add_module_to_qconfig_obs_ctr.<locals>.get_factory_kwargs_based_on_module_device"


def _operator_overload(namespace: str, op: str, overload: str) -> Any:
    """The operator overload torch.ops.<namespace>.<op>.<overload> (how saved graphs refer to ops)."""
    return getattr(getattr(getattr(torch.ops, namespace), op), overload)


def _operator_packet(namespace: str, op: str) -> Any:
    """The operator torch.ops.<namespace>.<op> (all its overloads)."""
    return getattr(getattr(torch.ops, namespace), op)


def _rebuild_module(cls: type, state: Any) -> torch.nn.Module:
    """A module of class `cls` from its pickled state, set up as a Module first (hooks and tables exist)."""
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    module.__setstate__(state)
    return module


def _quant_facts(fields: dict[str, Any]) -> QuantFacts:
    return QuantFacts(**fields)


class _ObservedPickler(pickle.Pickler):
    """Pickles GraphModules graph and all, through lift/codegen: node names, targets and meta survive (torch's
    own GraphModule pickling re-traces the code and drops `meta`). Classes named by node meta and types are
    saved so that one this process cannot import loads as a stand-in (see qfx.cli.class_names). Operator overloads
    are saved by name, and prepare's device closure is replaced by an equivalent importable function
    (evaluated at save time)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, GraphModule):
            return (codegen, (lift(obj, observed=False),))
        if type(obj) is Node:
            return (Node, (obj.name, obj.op, obj.target, obj.args, obj.kwargs, classes_by_name(obj.type),
                           classes_by_name(obj.meta)))
        if type(obj) is QuantFacts:  # (prepare's module scopes name the classes of the user's submodules)
            fields = attrs.asdict(obj, recurse=False)
            fields["node_name_to_scope"] = classes_by_name(obj.node_name_to_scope)
            return (_quant_facts, (fields,))
        kind = type(obj)
        if (isinstance(obj, torch.nn.Module) and kind.__setstate__ is not torch.nn.Module.__setstate__
                and kind.__reduce_ex__ is object.__reduce_ex__ and kind.__reduce__ is object.__reduce__):
            # e.g. quantized convs: their __setstate__ skips Module's set-up, so a plain unpickle gives a
            # module without hook tables that cannot run (torch's own deepcopy of them does this instead)
            return (_rebuild_module, (type(obj), obj.__getstate__()))
        if isinstance(obj, torch._ops.OpOverload):
            namespace, op = obj._schema.name.split("::")
            return (_operator_overload, (namespace, op, obj._overloadname))
        if isinstance(obj, torch._ops.OpOverloadPacket):  # (lowered graphs call torch.ops.quantized.add, ...)
            namespace, op = obj._qualified_op_name.split("::")
            return (_operator_packet, (namespace, op))
        if _module_attribute(obj):
            # made by a factory (torch.nn.functional.max_pool2d is boolean_dispatch's inner `fn`): pickle cannot
            # find it by its qualified name, but its module holds it under its own name
            return (_attribute_of, (obj.__module__, obj.__name__))
        if getattr(obj, "__qualname__", None) == _DEVICE_CLOSURE and callable(obj):
            found = obj() or {}
            return (functools.partial, (_factory_kwargs_on, found.get("device")))
        return NotImplemented


def _module_attribute(obj: Any) -> bool:
    """Whether `obj` is a function defined inside another one that its module holds under its own name."""
    if not isinstance(obj, types.FunctionType) or "<locals>" not in obj.__qualname__:
        return False
    module = sys.modules.get(obj.__module__)
    return module is not None and getattr(module, obj.__name__, None) is obj


def _attribute_of(module: str, name: str) -> Any:
    """`module`.`name` (how functions `_module_attribute` recognises are saved)."""
    return getattr(importlib.import_module(module), name)


class ObservedPickleModule:
    """The `pickle_module` torch.save uses to write qfx model files (observed or converted GraphModules)."""

    Pickler = _ObservedPickler
    Unpickler = pickle.Unpickler
    load = staticmethod(pickle.load)
    dump = staticmethod(pickle.dump)


def save_observed(model: GraphModule, path: str | Path, example_inputs: tuple | None = None) -> None:
    """Write `model` (an observed GraphModule, or any GraphModule) and optional example inputs to `path`,
    loadable with `torch.load(path, weights_only=False)` (a dict with "model" and "example_inputs") and by
    `qfx convert`. `model` is only read. Raises ModelFileError if it cannot be pickled."""
    save_with_graphs({"format": FILE_FORMAT, "model": model, "example_inputs": example_inputs}, path, "the model")


def save_with_graphs(value: Any, path: str | Path, what: str) -> None:
    """torch.save `value` to `path` with qfx's pickler (GraphModules keep their graph, names and meta), written
    to a temporary file first so a failure leaves no partial file. Raises ModelFileError naming `what`."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(value, partial, pickle_module=ObservedPickleModule)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise ModelFileError(f"cannot save {what} to '{path}': {exc}") from exc
    try:
        partial.replace(path)
    except OSError as exc:  # (a directory of that name, say)
        partial.unlink(missing_ok=True)
        raise ModelFileError(f"cannot save {what} to '{path}': {exc.strerror or exc}; choose another path") from exc


def check_writable(path: str | Path, what: str) -> None:
    """Raise ModelFileError unless `what` can be written to `path` (its folder exists and is writable, and
    it is not a folder itself): checked before any work, so that a mistyped path does not cost a run."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        problem = "it is a folder"
    elif not folder.is_dir():
        problem = f"the folder '{folder}' does not exist" if not folder.exists() else f"'{folder}' is not a folder"
    elif not os.access(folder, os.W_OK):
        problem = f"the folder '{folder}' is not writable"
    elif path.exists() and not os.access(path, os.W_OK):
        problem = "the file is not writable"
    else:
        # (a folder may refuse new files all the same: /proc, a read-only mount, a full disk)
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".qfx-probe"):
                pass
        except OSError as exc:
            problem = f"no file can be created there ({exc.strerror or exc})"
        else:
            return
    raise ModelFileError(f"cannot write {what} to '{path}': {problem}; choose another path")


def _looks_converted(model: GraphModule) -> bool:
    """Whether `model`'s graph quantizes (a converted model, of any mode, rather than a float or observed
    one): a call of torch's quantize functions or of a decomposed quantize op."""
    return any(n.op == "call_function" and (n.target in _QUANTIZE_FUNCTIONS or _decomposed_quantize(n.target))
               for n in model.graph.nodes)


_QUANTIZE_FUNCTIONS = (torch.quantize_per_tensor, torch.quantize_per_channel, torch.quantize_per_tensor_dynamic)


def _decomposed_quantize(target: Any) -> bool:
    """Whether `target` is an overload of a quantize op of torch's decomposed quantization library."""
    return (isinstance(target, torch._ops.OpOverload) and target.namespace == "quantized_decomposed"
            and target._opname.startswith("quantize_"))


def load_observed(path: str | Path) -> tuple[GraphModule, tuple | None]:
    """Read a file written by `save_observed` (or a torch.save'd GraphModule) -> (model, example inputs).

    Raises ModelFileError when the file cannot be read or holds something else, and NotObservedModelError
    when the GraphModule lacks prepare_fx's facts."""
    if str(path).startswith(":"):
        raise ModelFileError(f"'{path}' names no module before the ':'; give MODULE:FUNCTION, e.g. "
                             f"mymodels.py{path}")
    source = Path(str(path).removesuffix(":"))
    if source.suffix == ".py" and source.is_file():  # (`qfx convert models.py` or `models.py:`)
        raise ModelFileError(f"'{path}' names a Python file, not a saved model: add the function that builds the "
                             f"model, as '{source}:build'")
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"cannot read '{path}': no such file")
    # The model's classes are the user's: found, as `python -m` finds them, from the current directory
    # (and, as `python script.py` would, beside the file).
    searched = [p for p in ("", str(path.resolve().parent)) if p not in sys.path]
    sys.path[:0] = searched
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(path, weights_only=False, map_location="cpu")
    except ModuleNotFoundError as exc:
        raise ModelFileError(f"cannot load '{path}': its model uses classes of the module '{exc.name}', which "
                             "cannot be imported from here; run qfx where that module can be imported, or add its "
                             "folder to PYTHONPATH") from exc
    except AttributeError as exc:
        if "__main__" not in str(exc):
            raise ModelFileError(f"cannot load '{path}': {exc}") from exc
        raise ModelFileError(
            f"cannot load '{path}': its model uses a class defined in the script that saved it ({exc}), which no "
            "other program can import; define the model's classes in a module (a .py file beside the script) and "
            "save again, or convert the script's entry point instead (qfx convert script.py:build)") from exc
    except Exception as exc:  # torch.load raises many types for a bad file; all mean the same here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"cannot load '{path}' (is it a file written by torch.save?): {reason}") from exc
    finally:
        for p in searched:
            sys.path.remove(p)
    inputs = None
    if isinstance(loaded, dict) and "model" in loaded:
        model, inputs = loaded["model"], loaded.get("example_inputs")
    else:
        model = loaded
    if not isinstance(model, GraphModule):
        raise ModelFileError(
            f"'{path}' holds {with_article(type(model).__name__)}, not an observed torch.fx.GraphModule; "
            "save the output of prepare_fx with qfx.cli.save_observed(model, path)"
        )
    if OBSERVED_ATTRS_KEY not in model.meta:
        if _looks_converted(model):
            raise NotObservedModelError(
                f"'{path}' holds a converted model (as `qfx convert --save` writes), not an observed one; give "
                "qfx the observed model, saved with qfx.cli.save_observed(model, path)")
        raise NotObservedModelError(
            f"'{path}' holds a GraphModule without prepare_fx's facts (plain torch.save drops GraphModule.meta); "
            "save the observed model with qfx.cli.save_observed(model, path)"
        )
    if isinstance(inputs, list):  # (entry points may return their example inputs as a list too)
        inputs = tuple(inputs)
    elif inputs is not None and not isinstance(inputs, tuple):
        inputs = (inputs,)
    return model, inputs
