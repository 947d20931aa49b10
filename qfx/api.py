"""The drop-in API: torch's convert entry points, computed by lift -> passes -> codegen."""

from __future__ import annotations

import contextlib
import copy
import gc
import warnings
from typing import Any, Iterator, Sequence

import torch
from torch.ao.quantization.backend_config import BackendConfig
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
from torch.ao.quantization.qconfig_mapping import QConfigMapping
from torch.fx import GraphModule

from qfx.ir.errors import ConvertAssertionError, ConvertValueError, PassError, QfxError
from qfx.ir.lift import lift_reporting, require_observed
from qfx.ir.program import ConvertOptions, OwnModule, Preserved, Program, native_backend_config
from qfx.ir.validate import check_arguments, check_convert_custom_config, forget_table_devices, warn_uncalibrated
from qfx.lowering.codegen import codegen
from qfx.passes.instruments import Instrument
from qfx.passes.pipelines import pipeline_for


def convert_options(
    *,
    is_reference: bool,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None,
    is_standalone_module: bool = False,
    remove_qconfig: bool = True,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None = None,
    backend_config: BackendConfig | dict[str, Any] | None = None,
    is_decomposed: bool = False,
    keep_original_weights: bool = False,
    preserve_from: GraphModule | None = None,
    stacklevel: int = 3,
) -> ConvertOptions:
    """Normalise convert's arguments as torch does (dict configs become objects, with torch's warnings).

    With `preserve_from` (convert_fx and friends), the attributes the convert custom config names are read
    from that model so the result carries them, as torch's convert_fx re-attaches them."""
    if convert_custom_config is None:
        convert_custom_config = ConvertCustomConfig()
    if isinstance(convert_custom_config, dict):
        warnings.warn(
            "Passing a convert_custom_config_dict to convert is deprecated and will not be supported "
            "in a future version. Please pass in a ConvertCustomConfig instead.",
            FutureWarning,
            stacklevel=stacklevel,
        )
        convert_custom_config = ConvertCustomConfig.from_dict(convert_custom_config)
    if isinstance(qconfig_mapping, dict):
        warnings.warn(
            "Passing a QConfig dictionary to convert is deprecated and will not be supported "
            "in a future version. Please pass in a QConfigMapping instead.",
            FutureWarning,
            stacklevel=stacklevel,
        )
        qconfig_mapping = QConfigMapping.from_dict(qconfig_mapping) if qconfig_mapping else None
    if qconfig_mapping is not None and not isinstance(qconfig_mapping, QConfigMapping):
        raise ConvertAssertionError("qconfig_mapping must be None or a QConfigMapping")
    # The passes never mutate it, but the caller might after we return: keep our own copy, as torch does.
    qconfig_mapping = copy.deepcopy(qconfig_mapping)
    if isinstance(backend_config, dict):
        warnings.warn(
            "Passing a backend_config_dict to prepare is deprecated and will not be supported "
            "in a future version. Please pass in a BackendConfig instead.",
            FutureWarning,
            stacklevel=stacklevel,
        )
        backend_config = BackendConfig.from_dict(backend_config)
    if backend_config is None:
        backend_config = native_backend_config()
    preserved_attributes = None
    if preserve_from is not None:
        names = convert_custom_config.preserved_attributes
        preserved_attributes = {n: _preserved_value(preserve_from, n) for n in names if hasattr(preserve_from, n)}
    # torch only tests its flags for truth (check_arguments made sure they have one)
    return ConvertOptions(
        is_reference=bool(is_reference),
        is_decomposed=bool(is_decomposed),
        is_standalone_module=bool(is_standalone_module),
        remove_qconfig=bool(remove_qconfig),
        keep_original_weights=bool(keep_original_weights),
        backend_config=backend_config,
        convert_custom_config=convert_custom_config,
        qconfig_mapping=qconfig_mapping,
        preserved_attributes=preserved_attributes,
    )


def _preserved_value(observed: GraphModule, name: str) -> Any:
    """What convert_fx re-attaches as the preserved attribute `name` of `observed`.

    torch reads the attribute before its convert rewrites the observed model in place. Its graph is
    rewritten into the converted model's graph, which is what qfx preserves for it. A method of the
    observed model itself would, on torch's result, run torch's half-converted copy of the observed model
    and, on qfx's, the observed model (updating its observers): refused."""
    value = getattr(observed, name)
    if value is observed.graph:
        return Preserved.OWN_GRAPH
    if isinstance(value, torch.nn.Module) and observed._modules.get(name) is value:
        return OwnModule(name, value)
    if callable(value) and getattr(value, "__self__", None) is observed:
        raise ConvertValueError(
            f"convert_custom_config preserves '{name}', a method of the observed model itself; on the converted "
            f"model it would run the observed model, not the converted one: leave '{name}' out of the "
            "preserved_attributes"
        )
    return value


class _FrozenObjects:
    """Whether the process has been seen keeping frozen objects. Counting them walks the whole permanent
    generation (about 50 ns an object: 13 ms for a process of 250k frozen objects, every convert), so once
    some were seen the count is not asked for again: such a process is assumed to keep freezing, and
    converts leave its collector alone (assuming it wrongly only costs the young collection below)."""

    seen = False

    @classmethod
    def none(cls) -> bool:
        """True only when the process now holds no frozen objects and was never seen holding any."""
        if not cls.seen:
            cls.seen = gc.get_freeze_count() != 0
        return not cls.seen


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration (restoring its previous state after).

    Converting allocates many small, long-lived objects (nodes, tensors, modules) and no garbage cycles;
    without this, collections triggered by the allocation count cost about a third of the run. Everything
    allocated meanwhile sits in the youngest generation, and the first allocation after re-enabling would
    traverse all of it: so, unless the process keeps frozen objects of its own, the survivors are moved to
    the oldest generation at once (freeze moves all tracked objects to the permanent generation, unfreeze
    moves them into the oldest), where the collector would have aged them anyway."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if _FrozenObjects.none():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def convert_program(program: Program, instruments: Sequence[Instrument] = ()) -> Program:
    """Run the convert pipeline on a lifted program. User-facing errors surface with their own type."""
    try:
        return pipeline_for(program.options).run(program, instruments)
    except PassError as exc:
        cause = exc.__cause__
        if isinstance(cause, QfxError):
            raise cause.with_traceback(cause.__traceback__) from exc
        raise


def convert(
    model: GraphModule,
    is_reference: bool = False,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None = None,
    is_standalone_module: bool = False,
    _remove_qconfig_flag: bool = True,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None = None,
    backend_config: BackendConfig | dict[str, Any] | None = None,
    is_decomposed: bool = False,
    keep_original_weights: bool = False,
    *,
    instruments: Sequence[Instrument] = (),
) -> GraphModule:
    """torch.ao.quantization.fx.convert.convert, computed purely: `model` is never modified.

    Returns a new GraphModule equal to torch's result (same code, state_dict and outputs)."""
    require_observed(model)  # (torch asserts it before it reads its other arguments)
    check_arguments(
        convert_custom_config=convert_custom_config, qconfig_mapping=qconfig_mapping,
        backend_config=backend_config, instruments=instruments,
        reads_preserved=False,
        flags={"is_reference": is_reference, "is_standalone_module": is_standalone_module,
               "_remove_qconfig_flag": _remove_qconfig_flag, "is_decomposed": is_decomposed,
               "keep_original_weights": keep_original_weights},
    )
    options = convert_options(
        is_reference=is_reference,
        convert_custom_config=convert_custom_config,
        is_standalone_module=is_standalone_module,
        remove_qconfig=_remove_qconfig_flag,
        qconfig_mapping=qconfig_mapping,
        backend_config=backend_config,
        is_decomposed=is_decomposed,
        keep_original_weights=keep_original_weights,
    )
    return _run(model, options, instruments)


def _run(model: GraphModule, options: ConvertOptions, instruments: Sequence[Instrument]) -> GraphModule:
    # Modules are built with torch's constructors, some of which draw random placeholder weights (an RNN
    # cell's, a QAT module's float stand-in); torch's convert draws many more (every initializer it runs).
    # Neither is part of the result: the global generator is left as it was found.
    with gc_paused(), torch.random.fork_rng(devices=[]):
        try:
            program, uncalibrated = lift_reporting(model, options=options)
            warn_uncalibrated(uncalibrated, stacklevel=4)
            return codegen(convert_program(program, instruments))
        finally:
            forget_table_devices()  # it holds the model's modules: the caller may want them freed


def _convert_fx(
    graph_module: GraphModule,
    is_reference: bool,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None,
    remove_qconfig: bool,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None,
    backend_config: BackendConfig | dict[str, Any] | None,
    is_decomposed: bool = False,
    keep_original_weights: bool = False,
    instruments: Sequence[Instrument] = (),
) -> GraphModule:
    # torch's order: the custom config is read, the model's type checked, then convert asserts it observed
    # before it reads the other arguments
    check_convert_custom_config(convert_custom_config)
    if not isinstance(graph_module, GraphModule):
        raise ConvertValueError(
            f"input model must be a GraphModule, Got type:{type(graph_module)} Please make sure to follow the tutorials."
        )
    require_observed(graph_module)
    check_arguments(
        convert_custom_config=None,  # (checked above)
        qconfig_mapping=qconfig_mapping,
        backend_config=backend_config, instruments=instruments,
        flags={"_remove_qconfig": remove_qconfig, "keep_original_weights": keep_original_weights},
    )
    options = convert_options(
        is_reference=is_reference,
        convert_custom_config=convert_custom_config,
        remove_qconfig=remove_qconfig,
        qconfig_mapping=qconfig_mapping,
        backend_config=backend_config,
        is_decomposed=is_decomposed,
        keep_original_weights=keep_original_weights,
        preserve_from=graph_module,
        stacklevel=4,
    )
    return _run(graph_module, options, instruments)


def convert_fx(
    graph_module: GraphModule,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None = None,
    backend_config: BackendConfig | dict[str, Any] | None = None,
    keep_original_weights: bool = False,
    *,
    instruments: Sequence[Instrument] = (),
) -> GraphModule:
    """torch.ao.quantization.quantize_fx.convert_fx (lowered to native kernels); `graph_module` is untouched."""
    return _convert_fx(graph_module, False, convert_custom_config, _remove_qconfig, qconfig_mapping,
                       backend_config, keep_original_weights=keep_original_weights, instruments=instruments)


def convert_to_reference_fx(
    graph_module: GraphModule,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None = None,
    backend_config: BackendConfig | dict[str, Any] | None = None,
    *,
    instruments: Sequence[Instrument] = (),
) -> GraphModule:
    """torch.ao.quantization.quantize_fx.convert_to_reference_fx; `graph_module` is untouched."""
    return _convert_fx(graph_module, True, convert_custom_config, _remove_qconfig, qconfig_mapping,
                       backend_config, instruments=instruments)


def convert_to_reference_decomposed_fx(
    graph_module: GraphModule,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None = None,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None = None,
    backend_config: BackendConfig | dict[str, Any] | None = None,
    *,
    instruments: Sequence[Instrument] = (),
) -> GraphModule:
    """torch.ao.quantization.quantize_fx._convert_to_reference_decomposed_fx (quantized_decomposed ops;
    qconfig attributes are kept, as torch keeps them); `graph_module` is untouched."""
    return _convert_fx(graph_module, True, convert_custom_config, False, qconfig_mapping, backend_config,
                       is_decomposed=True, instruments=instruments)
