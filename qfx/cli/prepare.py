"""From a user's float model to an observed one: the backend's qconfig mapping and engine, prepare_fx (or
prepare_qat_fx), and calibration with a progress bar. The user's model is never modified (we prepare a copy).
"""

from __future__ import annotations

import copy
import warnings

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx
from torch.fx import GraphModule

from qfx.compare import fresh_inputs, outputs_or_error
from qfx.entrypoint import EntryPoint, EntryPointError
from qfx.ir.errors import QfxError

from .common import UserModelError, running_user_model
from .modelfile import ModelFileError

BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn")


class BackendError(QfxError, ValueError):
    """A quantization backend this build of torch cannot run."""


def use_backend(backend: str) -> None:
    """Set torch.backends.quantized.engine to `backend` (raises BackendError when torch lacks it)."""
    if backend not in torch.backends.quantized.supported_engines:
        raise BackendError(f"backend '{backend}' is not supported by this torch build (supported: "
                           f"{', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')})")
    torch.backends.quantized.engine = backend


DEFAULT_BACKEND = "x86"


def use_backend_for_saved(model: str, backend: str | None, qat: bool) -> None:
    """The options of `qfx convert/show MODEL.pt`: the saved model was prepared already, so `--qat` does not
    apply (ModelFileError) and `--backend` chooses only the quantized engine that lowers and runs it."""
    if qat:
        raise ModelFileError(f"--qat prepares an entry point with prepare_qat_fx; '{model}' was prepared already "
                             "(leave --qat out)")
    if backend is not None:
        use_backend(backend)


def prepare_entry_point(entry: EntryPoint, backend: str, qat: bool) -> GraphModule:
    """A copy of the entry point's model traced and prepared with `backend`'s default qconfig mapping
    (the QAT one, in train mode, with `qat`). Raises EntryPointError when prepare cannot trace the model."""
    use_backend(backend)
    other = sorted({str(p.dtype).replace("torch.", "") for p in entry.model.parameters()
                    if p.is_floating_point() and p.dtype != torch.float32})
    if other:
        raise EntryPointError(f"entry point '{entry.spec}': the model has {', '.join(other)} parameters; the "
                              "quantized kernels take float32 models: return model.float() (and float32 inputs)")
    model = copy.deepcopy(entry.model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if qat:
                return prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(backend), entry.example_inputs)
            return prepare_fx(model.eval(), get_default_qconfig_mapping(backend), entry.example_inputs)
    except Exception as exc:  # tracing errors come in many types; all mean "prepare could not take this model"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EntryPointError(f"entry point '{entry.spec}': prepare_{'qat_' if qat else ''}fx failed "
                              f"({type(exc).__name__}: {reason})") from exc


def calibrate(observed: GraphModule, batches: tuple[tuple, ...], console: Console,
              float_model: torch.nn.Module | None = None) -> None:
    """Run every batch through `observed` (no gradients; QAT models run no training step), with a bar. When
    a batch fails there but `float_model` (the model `observed` was prepared from) runs on it, the error says
    that the inputs fit the model and prepare's result cannot take them."""
    columns = (TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress, torch.no_grad():
        task = progress.add_task("calibrate", total=len(batches))
        for i, batch in enumerate(batches):
            where = f"calibrating: the prepared model on batch {i + 1} of {len(batches)}"
            try:
                with running_user_model(where):
                    observed(*fresh_inputs(batch))  # (the batches are measured on later: keep them as given)
            except UserModelError as exc:
                if float_model is None or outputs_or_error(float_model, batch)[1] is not None:
                    raise
                cause = exc.__cause__
                reason = (str(cause).strip().splitlines() or [""])[0]
                raise UserModelError(
                    f"{where} failed ({type(cause).__name__}: {reason}), although the float model "
                    "runs on it: what prepare_fx made of the model (its observers, its traced graph) cannot take "
                    "these inputs, e.g. a Python number where an observer expects a tensor; pass such inputs as "
                    "tensors, or make them constants of the model") from cause
            progress.advance(task)
