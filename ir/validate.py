"""Checks at the door: convert's arguments, the observed model's devices and observers, the lifted graph.

Everything here only reads what it is given. Each failure raises a QfxError subclass that names the
argument, tensor, observer or node at fault and says what to do; where torch's convert would fail on the
same input, the error is also an instance of torch's exception type.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping

import torch
from torch.ao.quantization.backend_config import BackendConfig
from torch.ao.quantization.fake_quantize import FakeQuantize, FakeQuantizeBase, FusedMovingAvgObsFakeQuantize
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
from torch.ao.quantization.observer import (
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    ObserverBase,
    PerChannelMinMaxObserver,
)
from torch.ao.quantization.qconfig_mapping import QConfigMapping

from .errors import (
    ArgumentError,
    ConfigAttributeError,
    ConfigDictError,
    ConvertAssertionError,
    DeviceError,
    FlagError,
    MalformedGraphError,
    ObserverStateError,
    UncalibratedObserverWarning,
)
from .frozendict import FrozenDict
from .program import Program
from .verify import problems

MAX_NAMED = 5  # observers named in one warning before "and N more"
INSTRUMENT_HOOKS = ("before_pass", "after_pass", "after_failure")


# --------------------------------------------------------------------------------------------------
# Arguments


def check_arguments(
    *,
    convert_custom_config: Any,
    qconfig_mapping: Any,
    backend_config: Any,
    flags: Mapping[str, Any],
    instruments: Any,
    reads_preserved: bool = True,
) -> None:
    """Check convert's arguments before anything reads them (types and contents).

    Takes the arguments as the caller passed them (dicts not yet converted) and the flags by name (torch
    only tests them for truth: any value that has one will do). Returns None if all are usable; otherwise
    raises an ArgumentError (a TypeError; also an AttributeError where torch fails with one) naming the
    argument, or torch's AssertionError for a qconfig_mapping of the wrong type. Only what torch reads is
    checked: entries it never looks at may hold anything."""
    for name, value in flags.items():
        try:
            bool(value)
        except Exception as exc:  # noqa: BLE001 - whatever refuses a truth value (a tensor of many elements)
            raise FlagError(f"{name} must be true or false, got {_describe(value)} ({exc}); pass True or "
                            "False") from None
    check_convert_custom_config(convert_custom_config, reads_preserved)
    check_qconfig_mapping(qconfig_mapping)
    check_backend_config(backend_config)
    check_instruments(instruments)


_CUSTOM_CONFIG_FIELDS = ("preserved_attributes", "observed_to_quantized_mapping")


def check_convert_custom_config(config: Any, reads_preserved: bool = True) -> None:
    """`config` is None, a dict ConvertCustomConfig.from_dict reads, or anything with a ConvertCustomConfig's
    two fields; when the caller reads them (`reads_preserved`: convert_fx does, torch's bare convert does
    not), its preserved attributes are names."""
    if config is None:
        return
    if isinstance(config, dict):
        config = _from_dict(ConvertCustomConfig, config, "convert_custom_config")
    elif not all(hasattr(config, name) for name in _CUSTOM_CONFIG_FIELDS):  # (torch reads just these)
        raise ConfigAttributeError(
            f"convert_custom_config must be a ConvertCustomConfig, a dict or None, got {_describe(config)}; "
            "build one with torch.ao.quantization.fx.custom_config.ConvertCustomConfig()"
        )
    if not reads_preserved:
        return
    preserved = config.preserved_attributes
    try:  # torch iterates over it, asking hasattr(model, name) of each (a one-shot iterator is left whole)
        names = [] if iter(preserved) is preserved else list(preserved)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ArgumentError(
            f"convert_custom_config.preserved_attributes must be attribute names, got "
            f"{_describe(preserved)}; use ConvertCustomConfig().set_preserved_attributes(['name', ...])"
        )


def check_qconfig_mapping(mapping: Any) -> None:
    """`mapping`, if it is a QConfigMapping (or a dict QConfigMapping.from_dict reads), has a QConfig
    (something with `activation` and `weight`) or None as its global entry, which torch always compares
    with prepare's (the other entries are read only for the nodes they match)."""
    if isinstance(mapping, dict):
        if not mapping:
            return
        mapping = _from_dict(QConfigMapping, mapping, "qconfig_mapping")
    if mapping is not None and not isinstance(mapping, QConfigMapping):
        raise ConvertAssertionError("qconfig_mapping must be None or a QConfigMapping")  # (torch's text)
    if mapping is None:
        return
    qconfig = mapping.global_qconfig
    if qconfig is not None and not (hasattr(qconfig, "activation") and hasattr(qconfig, "weight")):
        raise ConfigAttributeError(
            f"qconfig_mapping: the global entry must be a QConfig or None, got {_describe(qconfig)}; "
            "use e.g. torch.ao.quantization.get_default_qconfig('x86')"
        )


def check_backend_config(config: Any) -> None:
    """`config` is None, a BackendConfig or a dict BackendConfig.from_dict reads."""
    if config is None:
        return
    if isinstance(config, dict):
        _from_dict(BackendConfig, config, "backend_config")
        return
    if not isinstance(config, BackendConfig):
        raise ConfigAttributeError(
            f"backend_config must be a BackendConfig, a dict or None, got {_describe(config)}; use e.g. "
            "torch.ao.quantization.backend_config.get_native_backend_config()"
        )


def check_instruments(instruments: Any) -> None:
    """`instruments` is a list or tuple of objects with before_pass, after_pass and after_failure methods."""
    if not isinstance(instruments, (list, tuple)):
        raise ArgumentError(
            f"instruments must be a list or tuple of instruments, got {_describe(instruments)}; "
            "e.g. instruments=[qfx.Timing()]"
        )
    for i, inst in enumerate(instruments):
        missing = [h for h in INSTRUMENT_HOOKS if not callable(getattr(inst, h, None))]
        if missing:
            raise ArgumentError(
                f"instruments[{i}] ({_describe(inst)}) is not an instrument: it lacks {', '.join(missing)}; "
                "subclass qfx.passes.instruments.BaseInstrument"
            )


def _from_dict(cls: type, value: dict, name: str) -> Any:
    try:
        return cls.from_dict(value)
    except Exception as exc:  # torch's readers fail with assorted bare errors on malformed dicts
        raise ConfigDictError(
            f"{name}: this dict cannot be read as a {cls.__name__} ({type(exc).__name__}: {exc}); "
            f"build a {cls.__name__} object instead"
        ) from None


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# --------------------------------------------------------------------------------------------------
# The observed model


def table_devices(modules: Mapping[str, torch.nn.Module], attributes: Mapping[str, Any]) -> frozenset:
    """`tensor_devices` of a program's module and attribute tables. For immutable tables (FrozenDicts) the
    answer for the last pair asked about is remembered: lift and the passes of one pipeline run ask about
    the same tables (the modules in them must not move meanwhile, as nothing in a Program may change).

    A pass that swaps some modules makes a new table sharing the rest; when the last tables asked about
    were on one device, only the entries that are not the same objects as there are looked at: if their
    tensors are all on that device, so are the new tables' (the shared entries' are)."""
    immutable = type(modules) is FrozenDict and type(attributes) is FrozenDict
    known = _TABLE_DEVICES.get("last")
    if known is not None and known[0] is modules and known[1] is attributes:
        return known[2]
    devices = _devices_beside(known, modules, attributes) if known is not None and immutable else None
    if devices is None:
        devices = frozenset(tensor_devices(modules.values(), attributes))
    if immutable:
        _TABLE_DEVICES["last"] = (modules, attributes, devices)
    return devices


def _devices_beside(known: tuple[Any, Any, frozenset], modules: Mapping[str, torch.nn.Module],
                    attributes: Mapping[str, Any]) -> frozenset | None:
    """The devices of the tables, from the remembered ones when they were on one device and every entry
    not shared with them is on it too; None when that does not settle it."""
    old_modules, old_attributes, old_devices = known
    if len(old_devices) != 1:
        return None
    fresh = [module for path, module in modules.items() if old_modules.get(path) is not module]
    fresh_attributes = {} if attributes is old_attributes else {
        name: value for name, value in attributes.items() if old_attributes.get(name) is not value}
    return old_devices if tensor_devices(fresh, fresh_attributes) == old_devices else None


_TABLE_DEVICES: dict[str, tuple[Any, Any, frozenset]] = {}


def forget_table_devices() -> None:
    """Drop the remembered tables (which hold the modules of the last program asked about)."""
    _TABLE_DEVICES.clear()


def tensor_devices(modules: Iterable[torch.nn.Module], attributes: Mapping[str, Any]) -> set[torch.device]:
    """The devices of the parameters and buffers the modules hold themselves (what parameters(recurse=False)
    and buffers(recurse=False) yield, read straight from the tables: this runs over every module of large
    models) and of the tensor attributes."""
    # Most models are on the CPU: a plain tensor's is_cpu is a cheaper read than its device, which builds a
    # torch.device (a subclass may report a device of its own, so it is asked for that)
    devices = {_CPU if type(tensor) in _PLAIN_TENSORS and tensor.is_cpu else tensor.device
               for module in modules for table in (module._parameters, module._buffers) if table
               for tensor in table.values() if tensor is not None}
    devices.update(value.device for value in attributes.values() if isinstance(value, torch.Tensor))
    return devices


_CPU = torch.device("cpu")
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def check_observers(module_calls: Iterable[tuple[str, str, Any]], may_hold_meta: bool = True) -> list[str]:
    """The observers convert will read have well-formed state.

    Takes (node name, module target, module) for call_module nodes and looks at those whose module is an
    observer or a fake-quantize. Raises ObserverStateError for a missing or malformed buffer. Returns the
    observers that never saw data, as "'target' (node 'name')" (convert then uses their default qparams,
    as torch does). `may_hold_meta=False` (see `may_hold_meta`) skips looking for meta tensors."""
    uncalibrated: list[str] = []
    classes = _ClassFacts()
    observers = []
    for node_name, target, module in module_calls:
        role, test = classes.of(module)
        if role is not None:
            observers.append((node_name, target, module, role, test))
    # (each observer is looked at only when one of them holds a meta tensor: rarely)
    any_meta = may_hold_meta and _any_holds_meta([module for _, _, module, _, _ in observers])
    for node_name, target, module, role, test in observers:
        if any_meta:
            _check_not_meta(node_name, target, module)
        try:
            observer = module
            if role is _FAKE_QUANTIZE:
                observer = getattr(module, "activation_post_process", None)
                if not isinstance(observer, ObserverBase):
                    # torch's fake quants ask it for their qparams (anything that answers will do); one with
                    # qparams of its own needs none
                    if (torchs_own_observer_method(type(module).calculate_qparams)
                            and not callable(getattr(observer, "calculate_qparams", None))):
                        raise ObserverStateError(
                            f"{_observer_where(node_name, target, module)}: its activation_post_process is "
                            f"{_describe(observer)}, not an observer; re-run prepare_qat_fx instead of editing "
                            "the fake-quantize"
                        )
                    continue
                if type(module).calculate_qparams not in _ASKING_THEIR_OBSERVER:
                    continue  # qparams of its own (learned, fixed or the user's): its observer is not read
                _, test = classes.of(observer)
            if test is not None and _never_calibrated(observer, test, classes):
                uncalibrated.append(f"'{target}' (node '{node_name}')")
        except _BadState as bad:
            raise ObserverStateError(
                f"{_observer_where(node_name, target, module)}: {bad}; re-run prepare_fx (and calibrate) "
                "instead of editing the observer, or restore it with load_state_dict"
            ) from None
    return uncalibrated


# The calculate_qparams of torch's fake quants that hand the question to their activation_post_process.
_ASKING_THEIR_OBSERVER = (FakeQuantize.calculate_qparams, FusedMovingAvgObsFakeQuantize.calculate_qparams)


class _ClassFacts:
    """`_class_facts` and attribute lookups answered per class, for one check over many observers of few
    classes: observer classes are ABCs, whose isinstance runs Python code, and a buffer read through
    nn.Module's __getattr__ first fails the ordinary lookup."""

    def __init__(self) -> None:
        self._facts: dict[type, tuple[str | None, str | None]] = {}
        self._has: dict[tuple[type, tuple[str, ...]], bool] = {}  # whether one of the names is on the class

    def of(self, value: Any) -> tuple[str | None, str | None]:
        """`_class_facts(value)`."""
        own = type(value)
        known = self._facts.get(own)
        if known is None:
            if not _reports_its_type(own):  # (isinstance also asks __class__, which may then say anything)
                return _class_facts(value)
            known = self._facts[own] = _class_facts(value)
        return known

    def buffers(self, module: torch.nn.Module, names: tuple[str, ...]) -> list[torch.Tensor]:
        """getattr(module, name, None) for each of `names`, in order, each read from the buffer table where
        the ordinary lookup would end up there (nothing of that name on the class or in the instance dict).
        Raises _BadState at the first that is missing or not a tensor."""
        own = type(module)
        on_class = self._has.get((own, names))
        if on_class is None:
            on_class = self._has[(own, names)] = any(hasattr(own, name) for name in names)
        state = module.__dict__
        parameters = state.get("_parameters", ())
        table = state.get("_buffers")
        found = []
        for name in names:
            if not on_class and table is not None and name in table and name not in state and name not in parameters:
                value = table[name]
            else:
                value = getattr(module, name, None)
            if not isinstance(value, torch.Tensor):
                raise _BadState(f"buffer '{name}' is missing" if value is None else
                                f"buffer '{name}' is {_describe(value)}, not a tensor")
            found.append(value)
        return found


def _reports_its_type(kind: type) -> bool:
    """Whether instances of class `kind` answer their type when asked for `__class__`: object's own
    attribute lookup, and no class of its MRO with a `__class__` of its own."""
    return (kind.__getattribute__ is object.__getattribute__
            and all("__class__" not in vars(base) for base in kind.__mro__ if base is not object))


def torchs_own_observer_method(method: Any) -> bool:
    """Whether `method` is one of torch's observer or fake-quantize implementations (those of
    torch.ao.quantization's observer and fake_quantize modules)."""
    return getattr(method, "__module__", None) in _TORCH_OBSERVER_MODULES


_TORCH_OBSERVER_MODULES = (ObserverBase.__module__, FakeQuantizeBase.__module__)


def _check_not_meta(node_name: str, target: str, module: torch.nn.Module) -> None:
    """None of the observer's tensors (its child observer's included) is on the meta device: convert reads
    them (torch fails there with a RuntimeError)."""
    if not _any_holds_meta([module]):  # (read straight from the tables)
        return
    for name, tensor in (*module.named_parameters(prefix=target), *module.named_buffers(prefix=target)):
        if tensor.device.type == "meta":
            raise DeviceError(
                f"{_observer_where(node_name, target, module)}: tensor '{name}' is on the meta device: convert "
                "reads the observers' statistics; "
                "materialise the model (e.g. to_empty(device='cpu') then load_state_dict) and calibrate it "
                "before converting"
            )


def may_hold_meta(modules: Mapping[str, torch.nn.Module], attributes: Mapping[str, Any]) -> bool:
    """False when every tensor of the tables is known to be on the CPU (through `table_devices`, which the
    passes ask for too), so none is on the meta device; True otherwise (tables it cannot read included)."""
    try:
        return not table_devices(modules, attributes) <= _ONLY_CPU
    except Exception:  # noqa: BLE001 - a table entry that is no tensor: the observer checks name it
        return True


_ONLY_CPU = frozenset({_CPU})


def _any_holds_meta(modules: list[torch.nn.Module]) -> bool:
    """Whether one of the tensors the modules or their descendants hold is on the meta device (read straight
    from the tables, for all modules at once: this runs over every observer)."""
    while modules:
        if any([isinstance(tensor, torch.Tensor) and tensor.is_meta
                for module in modules for table in (module._parameters, module._buffers) if table
                for tensor in table.values()]):
            return True
        modules = [child for module in modules if module._modules
                   for child in module._modules.values() if child is not None]
    return False


def _observer_where(node_name: str, target: str, module: Any) -> str:
    return f"observer '{target}' ({type(module).__name__}, node '{node_name}')"


def warn_uncalibrated(uncalibrated: list[str], stacklevel: int = 3) -> None:
    """Warn once (UncalibratedObserverWarning) naming the observers that never saw data, as
    `lift_reporting` names them; nothing if there are none. The API calls this; lift stays silent so a
    pass's warnings stay exactly torch's."""
    if uncalibrated:
        shown = ", ".join(uncalibrated[:MAX_NAMED])
        more = f" and {len(uncalibrated) - MAX_NAMED} more" if len(uncalibrated) > MAX_NAMED else ""
        warnings.warn(
            f"{len(uncalibrated)} observer(s) never saw data: {shown}{more}; convert uses their default "
            "qparams (scale 1.0, zero point 0), as torch does. Run the prepared model on representative "
            "inputs before converting",
            UncalibratedObserverWarning,
            stacklevel=stacklevel,
        )


class _BadState(Exception):
    """What is wrong with an observer's state (check_observers names the observer and the way out)."""


# What check_observers does with a module: its role, and the test of its buffers when it is the observer read.
_FAKE_QUANTIZE, _OBSERVER = "fake-quantize", "observer"
_PER_CHANNEL, _MIN_MAX, _HISTOGRAM, _FIXED_QPARAMS = "per-channel", "min-max", "histogram", "fixed-qparams"


def _class_facts(value: Any) -> tuple[str | None, str | None]:
    """(role, test) of the module `value`: its role is _FAKE_QUANTIZE, _OBSERVER or None (neither); its test
    (for an observer or fake-quantize) names the buffers `_never_calibrated` reads when it is the observer
    read, None when there are none (among them, an observer class with qparams of its own reads what it
    likes: torch only calls it)."""
    if isinstance(value, FakeQuantizeBase):
        role = _FAKE_QUANTIZE
    elif isinstance(value, ObserverBase):
        role = _OBSERVER
    else:
        return None, None
    if not torchs_own_observer_method(type(value).calculate_qparams):
        return role, None
    for kind, test in _TESTS:
        if isinstance(value, kind):
            return role, test
    return role, None


# The first class an observer is an instance of picks its test.
_TESTS = ((PerChannelMinMaxObserver, _PER_CHANNEL), (HistogramObserver, _HISTOGRAM), (MinMaxObserver, _MIN_MAX),
          (FixedQParamsObserver, _FIXED_QPARAMS))


def _never_calibrated(observer: ObserverBase, test: str, classes: "_ClassFacts") -> bool:
    """Check that the buffers torch's qparams read are there (raising _BadState if one is missing or not a
    tensor: torch fails on those); True if the observer never saw data. Buffers of unusual shapes or dtypes
    are torch's to judge: their qparams come from the observer itself. `test` is the observer's (see
    `_class_facts`)."""
    read = classes.buffers(observer, _BUFFERS_READ[test])
    if test is _FIXED_QPARAMS:
        return False
    low, high = read[0], read[1]
    if test is _PER_CHANNEL:
        return low.dim() == 1 and low.shape == high.shape and low.numel() == 0
    # (`low` first, in full: a calibrated observer's is not inf)
    return (low.numel() == 1 and low.is_floating_point() and float(low) == math.inf
            and high.numel() == 1 and high.is_floating_point() and float(high) == -math.inf)


# The buffers each test reads, in the order torch's qparams do.
_BUFFERS_READ = {_PER_CHANNEL: ("min_val", "max_val"), _MIN_MAX: ("min_val", "max_val"),
                 _HISTOGRAM: ("min_val", "max_val", "histogram"), _FIXED_QPARAMS: ("scale", "zero_point")}


# --------------------------------------------------------------------------------------------------
# The lifted graph


def check_graph(program: Program) -> Program:
    """Return the lifted `program` if its graph is well formed; otherwise raise MalformedGraphError listing
    every problem the verifier finds (two output nodes, a node read before it is defined, ...)."""
    found = problems(program)
    if found:
        raise MalformedGraphError(
            found,
            "on the model given to convert (was its graph edited after prepare_fx? fix the edit, call "
            "graph.lint() and recompile())",
        )
    return program
