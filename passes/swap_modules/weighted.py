"""Weighted modules for swap-modules: QAT modules back to float, float modules to reference modules.

Mirrors torch.ao.quantization.fx.convert.convert_weighted_module. Where torch runs observers and fake
quants on the live model and assigns into it, this module works on private copies and returns the
module that should sit at the call's target.

Per module, torch builds a weight observer and a reference module whose constructor initialises a weight
it then throws away. `FastPaths` gives the same results without either where it can: weight qparams
computed for all modules at once (weight_qparams.py) and reference modules laid out like the first of
their configuration (reference_modules.py). Each falls back to torch's way on its own.
"""

from __future__ import annotations

import copy
import copyreg
import types
from typing import Any, Iterable

import attrs
import torch
import torch.nn.modules.module as module_globals
from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.quantization.backend_config.utils import (
    get_fused_module_classes,
    get_pattern_to_dtype_configs,
    get_qat_module_classes,
    get_root_module_to_quantized_reference_module,
)
from torch.ao.quantization.fx.qconfig_mapping_utils import _is_qconfig_supported_by_dtype_configs
from torch.ao.quantization.utils import get_qconfig_dtypes, get_qparam_dict, weight_is_quantized
from torch.nn.utils.parametrize import type_before_parametrizations

from qfx.ir.errors import ConvertError
from qfx.ir.program import ConvertOptions, QuantFacts

from ..support.module_copies import with_instance_dict
from .qat import run_weight_fake_quant, to_float
from .reference_modules import PROCESS_LAYOUTS, ReferenceBuilder, from_float
from .module_lookup import ModuleLookup
from .weight_qparams import ConstructorKeys, WeightQParamTable


class MissingReferenceModuleError(ConvertError, AssertionError):
    """The backend config lists a weighted module class but no reference module class for it."""


class MissingQConfigAttributeError(ConvertError, AttributeError):
    """A module that convert swaps has no `qconfig` attribute (prepare_fx always sets one)."""


@attrs.frozen
class WeightedClasses:
    """The module classes a backend config makes swappable, looked up once per pass run."""

    root_to_reference: dict = attrs.field(repr=False)
    qat: tuple = attrs.field(repr=False)
    fused: tuple = attrs.field(repr=False)
    pattern_to_dtype_configs: dict = attrs.field(repr=False)
    # (qconfig key, module class) -> whether the reference swap applies. Each check builds fresh observers
    # from the qconfig; prepare gives every module its own qconfig object, but they are built alike.
    _swappable: dict = attrs.field(factory=dict, repr=False, eq=False)
    constructor_keys: ConstructorKeys = attrs.field(factory=ConstructorKeys, repr=False, eq=False)
    # A pass may ask about the same qconfig objects more than once:
    # (id(qconfig), class) -> (qconfig, reference_swap_applies(qconfig, class)).
    _applies: dict = attrs.field(factory=dict, repr=False, eq=False)
    # qconfig key -> a stand-in holding the qconfig's dtypes, read once for all the module classes asked about
    _dtypes: dict = attrs.field(factory=dict, repr=False, eq=False)
    # module class -> _copies_as_module(class)
    _copy_kinds: dict = attrs.field(factory=dict, repr=False, eq=False)
    # what the swap's modules' attribute lookups will find, remembered per class
    lookup: ModuleLookup = attrs.field(factory=ModuleLookup, repr=False, eq=False)

    @classmethod
    def of(cls, backend_config: Any) -> "WeightedClasses":
        """Read the root, QAT and fused module classes and the dtype configs from `backend_config`."""
        return cls(
            root_to_reference=get_root_module_to_quantized_reference_module(backend_config),
            qat=tuple(get_qat_module_classes(backend_config)),
            fused=tuple(get_fused_module_classes(backend_config)),
            pattern_to_dtype_configs=get_pattern_to_dtype_configs(backend_config),
        )

    def reference_swap_applies(self, qconfig: Any, kind: type) -> bool:
        """Whether a module of class `kind` with `qconfig` gets a reference module: the backend supports
        the qconfig's dtypes for that class and the qconfig quantizes weights."""
        known = self._applies.get((id(qconfig), kind))
        if known is None or known[0] is not qconfig:
            known = self._applies[(id(qconfig), kind)] = (qconfig, self._reference_swap_applies(qconfig, kind))
        return known[1]

    def _reference_swap_applies(self, qconfig: Any, kind: type) -> bool:
        key = self._qconfig_key(qconfig)
        if key is None:
            return _swap_applies(self, qconfig, kind)
        cached = self._swappable.get((key, kind))
        if cached is None:
            dtypes = self._dtypes.get(key)
            if dtypes is None:
                dtypes = self._dtypes[key] = _QConfigDtypes(qconfig)
            cached = self._swappable[(key, kind)] = _swap_applies(self, dtypes, kind)
        return cached

    def is_weighted(self, module: torch.nn.Module) -> bool:
        """True when convert's main loop hands `module` to convert_weighted_module: its class (before
        parametrizations) is a root, QAT or fused class, and a fused module wraps a root module."""
        kind = type(module)
        # A class found in the tables is the module's own (parametrizing a module gives it a generated
        # subclass); only other modules need to be asked for their class before parametrizations.
        if kind not in self.root_to_reference and kind not in self.qat and kind not in self.fused:
            kind = self.class_before_parametrizations(module)
            if kind not in self.root_to_reference and kind not in self.qat and kind not in self.fused:
                return False
        if kind in self.fused:
            first = first_member(module)
            return type(first) in self.root_to_reference or (
                type_before_parametrizations(first) in self.root_to_reference)
        return True

    def reference_class(self, module: torch.nn.Module) -> type | None:
        """The reference module class for `module`'s class before parametrizations, if the backend has one."""
        # Parametrizing a module changes its class to a generated subclass, so a class found in the table
        # is the module's own; torch's type_before_parametrizations is slower (it probes an attribute).
        found = self.root_to_reference.get(type(module))
        return found if found is not None else self.root_to_reference.get(type_before_parametrizations(module))

    def class_before_parametrizations(self, module: torch.nn.Module) -> type:
        """torch's type_before_parametrizations(module), without its probe for a `parametrizations`
        attribute (an AttributeError raised and caught) where the module certainly has none."""
        if self.lookup.lacks(module, "parametrizations"):
            return type(module)
        return type_before_parametrizations(module)

    def copies_as_module(self, kind: type) -> bool:
        """Whether copy.copy of a `kind` instance is nn.Module's (see `_copies_as_module`), asked once per class."""
        known = self._copy_kinds.get(kind)
        if known is None:
            known = self._copy_kinds[kind] = _copies_as_module(kind)
        return known

    def _qconfig_key(self, qconfig: Any) -> tuple | None:
        activation = self._observer_key(getattr(qconfig, "activation", None))
        weight = self._observer_key(getattr(qconfig, "weight", None))
        if activation is None or weight is None:
            return None
        return (type(qconfig), activation, weight)

    def _observer_key(self, constructor: Any) -> tuple | None:
        """What decides the dtypes of the observers `constructor` builds: its constructor key, or the class
        itself for a class called without arguments (float_qparams_weight_only_qconfig's activation)."""
        key = self.constructor_keys(constructor)
        if key is None and isinstance(constructor, type):
            return (constructor,)
        return key


def first_member(fused: torch.nn.Module) -> torch.nn.Module:
    """`fused[0]` of a fused (Sequential) module, without Sequential's index arithmetic."""
    for member in fused._modules.values():
        return member
    raise IndexError(f"index 0 is out of range for the empty {type(fused).__name__}")


class _QConfigDtypes:
    """A stand-in for a qconfig in torch's dtype checks: its activation() and weight() give objects with
    the dtypes (and dynamic flag) of the qconfig's observers, built once, when first asked (torch's
    get_qconfig_dtypes builds both observers)."""

    def __init__(self, qconfig: Any) -> None:
        self._qconfig = qconfig
        self._observers: tuple[Any, Any] | None = None

    def _read(self) -> tuple[Any, Any]:
        if self._observers is None:
            activation_dtype, weight_dtype, activation_is_dynamic = get_qconfig_dtypes(self._qconfig)
            self._observers = (types.SimpleNamespace(dtype=activation_dtype, is_dynamic=activation_is_dynamic),
                               types.SimpleNamespace(dtype=weight_dtype))
        return self._observers

    def activation(self) -> Any:
        return self._read()[0]

    def weight(self) -> Any:
        return self._read()[1]


def _swap_applies(classes: "WeightedClasses", qconfig: Any, kind: type) -> bool:
    dtype_configs = classes.pattern_to_dtype_configs.get(kind, [])
    return _is_qconfig_supported_by_dtype_configs(qconfig, dtype_configs) and weight_is_quantized(qconfig)


def module_qconfig(module: torch.nn.Module, target: str) -> Any:
    """The qconfig prepare attached to `module` (torch reads the attribute, not the node's qconfig)."""
    try:
        return module.qconfig
    except AttributeError:
        raise MissingQConfigAttributeError(
            f"module '{target}' ({type(module).__name__}) has no 'qconfig' attribute; convert expects the "
            "modules of a model produced by prepare_fx/prepare_qat_fx"
        ) from None


class FastPaths:
    """Per pass run: the weight qparams computed ahead for the modules the pass will convert, and the
    reference module builder (see weight_qparams.py and reference_modules.py)."""

    def __init__(self, device: torch.device | None, constructor_keys: ConstructorKeys, lookup: ModuleLookup) -> None:
        self.qparams = WeightQParamTable(device, constructor_keys, lookup)
        self.references = ReferenceBuilder(PROCESS_LAYOUTS)

    @classmethod
    def plan(
        cls, modules: Iterable[torch.nn.Module], classes: WeightedClasses, device: torch.device | None
    ) -> "FastPaths":
        """Fast paths with the weight qparams computed at once for every weighted module in `modules`
        that convert_weighted may give a reference module from a fresh weight observer (QAT modules run
        their fake quants instead). Whether it does is left to convert_weighted: asking here would build
        observers (and warn or fail) for modules torch never asks about; unused entries cost little.
        """
        fast = cls(device, classes.constructor_keys, classes.lookup)
        wanted = []
        for module in modules:
            qconfig = getattr(module, "qconfig", None)
            if qconfig is not None and not isinstance(module, classes.qat):
                wanted.append((first_member(module) if isinstance(module, _FusedModule) else module, qconfig))
        fast.qparams.compute(wanted)
        return fast


def convert_weighted(
    module: torch.nn.Module,
    target: str,
    node_name: str,
    facts: QuantFacts,
    options: ConvertOptions,
    classes: WeightedClasses,
    device: torch.device | None,
    fast: FastPaths | None = None,
) -> torch.nn.Module | None:
    """The module to put at `target` for the call `node_name` of weighted module `module`, or None to keep it.

    `module` must be owned by the caller when it is a QAT module: its `weight_fake_quant` is run on the
    weight (as torch runs it on the live module), which updates the fake quant's state. Any other input
    is only read. QAT modules always come back as float (or reference) modules; other modules come back
    as reference modules (fused modules as a new container around one) or not at all. `fast` (from
    FastPaths.plan) gives the same results faster.
    """
    qconfig = module_qconfig(module, target)
    fake_quant = None
    swapped: torch.nn.Module | None = None
    if isinstance(module, classes.qat):
        fake_quant = module.weight_fake_quant
        module = to_float(module)
        swapped = module

    if qconfig is None or facts.has_none_qconfig(node_name) or node_name not in facts.observed_node_names:
        return swapped
    if not classes.reference_swap_applies(qconfig, type(module)):
        return swapped

    fused = module if isinstance(module, _FusedModule) else None
    float_module = first_member(fused) if fused is not None else module
    found = fast.qparams.get(float_module, qconfig) if fast is not None and fake_quant is None else None
    if found is not None:
        qparams = {"is_decomposed": options.is_decomposed, **found}
    else:
        qparams = weight_qparams(float_module, qconfig, fake_quant, options, device)
    reference_class = classes.reference_class(float_module)
    if reference_class is None:
        raise MissingReferenceModuleError(
            f"module '{target}' (node '{node_name}'): No reference quantized module class configured for "
            f"{type_before_parametrizations(float_module)}; add one to the backend config's pattern for it"
        )
    if fast is not None:
        # precomputed qparams hold tensors of their own, which the reference module keeps
        reference = fast.references.build(reference_class, float_module, qparams, owned=found is not None)
    else:
        reference = from_float(reference_class, float_module, qparams)
    if fused is None:
        return reference
    # A QAT module's to_float() built a container nobody else holds; any other fused module is the
    # program's, so it gets a new container sharing the untouched members.
    container = fused if swapped is not None else _container_copy(fused, classes)
    _set_first_member(container, reference)
    return container


def weight_qparams(
    float_module: torch.nn.Module,
    qconfig: Any,
    fake_quant: torch.nn.Module | None,
    options: ConvertOptions,
    device: torch.device | None,
) -> dict[str, Any]:
    """The `weight_qparams` argument of the reference module's from_float, built as torch builds it.

    RNN cells get one fresh weight observer per weight (`weight_ih`, `weight_hh`); LSTM/GRU one per flat
    weight name (run only for qint8). Other modules use the QAT fake quant `fake_quant` when given (run
    once more on the weight, except for decomposed reference QAT), else a fresh observer from
    `qconfig.weight()` on `device`, run on the weight (what `WeightQParamTable` may have computed ahead).
    """
    qparams: dict[str, Any] = {"is_decomposed": options.is_decomposed}
    if isinstance(float_module, torch.nn.RNNCellBase):
        for name in ("weight_ih", "weight_hh"):
            observer = qconfig.weight()
            observer(getattr(float_module, name))
            qparams[name] = get_qparam_dict(observer)
    elif isinstance(float_module, (torch.nn.LSTM, torch.nn.GRU)):
        for name in float_module._flat_weights_names:
            if name.startswith("weight") and hasattr(float_module, name):
                observer = qconfig.weight()
                if observer.dtype == torch.qint8:
                    observer(getattr(float_module, name))
                qparams[name] = get_qparam_dict(observer)
    else:
        if fake_quant is None:
            observer = qconfig.weight()
            # torch falls back to the module's own device when the model has none; then so has the module.
            if device is not None:
                observer.to(device)
            observer(float_module.weight)
        else:
            observer = fake_quant
            # PT2's decomposed QAT flow trusts the fake quant as trained; the others call it once more.
            if not (options.is_decomposed and options.is_reference):
                run_weight_fake_quant(observer, float_module.weight)
        qparams.update(get_qparam_dict(observer))
    return qparams


def _container_copy(module: torch.nn.Module, classes: WeightedClasses) -> torch.nn.Module:
    """A new module object with the same attributes and its own table of children (children shared)."""
    kind = type(module)
    if not classes.copies_as_module(kind):
        clone = copy.copy(module)
        clone.__dict__["_modules"] = dict(module._modules)
        return clone
    # What copy.copy does for such a class: a bare instance given the module's state by __setstate__. When
    # the state holds every table __setstate__ fills in, that is a copy of the instance dict without what
    # __getstate__ leaves out (far cheaper than nn.Module's two calls).
    state = module.__dict__.copy()
    state.pop("_compiled_call_impl", None)
    if not state.keys() >= _TABLES_SETSTATE_FILLS_IN:
        clone = kind.__new__(kind)
        clone.__setstate__(state)
        clone.__dict__["_modules"] = dict(module._modules)
        return clone
    state["_modules"] = dict(state["_modules"])
    return with_instance_dict(kind, state)


# What nn.Module.__setstate__ adds to a state without them (old checkpoints).
_TABLES_SETSTATE_FILLS_IN = frozenset({
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks", "_non_persistent_buffers_set", "_is_full_backward_hook", "_backward_pre_hooks"})


def _set_first_member(container: torch.nn.Module, member: torch.nn.Module) -> None:
    """`container[0] = member` on a container nobody else holds: straight into its table of children when
    that is all Sequential's indexing and nn.Module's __setattr__ would do (no registration hook to call,
    nothing of the child's name elsewhere in the module to remove)."""
    kind = type(container)
    name = next(iter(container._modules), None)
    state = container.__dict__
    if (name is None or kind.__setitem__ is not torch.nn.Sequential.__setitem__
            or kind.__setattr__ is not torch.nn.Module.__setattr__ or module_globals._global_module_registration_hooks
            or name in state or name in state["_parameters"] or name in state["_buffers"]
            or name in state["_non_persistent_buffers_set"]):
        container[0] = member
        return
    container._modules[name] = member


def _copies_as_module(kind: type) -> bool:
    """Whether copy.copy of a `kind` instance is nn.Module's: no copy hook or registered reducer, object's
    reduce protocol and __new__, nn.Module's __getstate__ and __setstate__."""
    return (not hasattr(kind, "__copy__") and copyreg.dispatch_table.get(kind) is None
            and kind.__reduce_ex__ is object.__reduce_ex__ and kind.__reduce__ is object.__reduce__
            and kind.__new__ is object.__new__ and kind.__getstate__ is torch.nn.Module.__getstate__
            and kind.__setstate__ is torch.nn.Module.__setstate__)

