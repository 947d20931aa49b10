"""Reference quantized modules built as `from_float` builds them, without its throwaway parameter init.

`from_float` of torch's reference Linear, Conv, ConvTranspose, Embedding and EmbeddingBag runs the class
constructor, which allocates (and for most classes randomly initialises) a weight that is replaced right
away, then takes the float module's weight and bias and registers the weight qparams. What it builds is
an object of one layout per class (nn.Module's tables, the constructor attributes, the weight qparams, in
that order), whose constructor attributes are what `constructor_attributes` computes from the float
module's. So `from_float` runs once per class and parameter signature, on a stand-in of the float module
whose parameters live on the meta device (the constructor then allocates and initialises nothing); its
result is the template of the layout and checks the computed attributes once more. Every module then gets
a new object of that layout: fresh nn.Module tables, the float module's constructor attributes (where they
are what the constructor would store: otherwise from_float runs), new Parameters on the float tensors and
the weight qparams written as `_init_weight_qparams` writes them. No module's construction runs an
initializer on real memory, whatever the shapes.

Reference RNNs (LSTM, GRU and the cells) take `from_float` on a stand-in of the float module that reports
one input feature and one hidden unit, so their constructor allocates and initialises tiny weights before
`from_float` assigns the float module's; the result then gets the real sizes. Modules of other classes
(subclasses, parametrized modules), attribute values other than plain numbers, strings and tuples or lists
of them, float modules whose attributes are not what their constructor derives from them, and processes
with global module registration hooks take `from_float`. Nothing reachable from the float module is ever
written to.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import torch
import torch.ao.nn.quantized.reference as ref

from ..support.constructor_layouts import registration_hooks
from ..support.module_copies import standin
from .constructor_attributes import constructor_attributes

_FLOAT_CLASS: dict[type, type] = {
    ref.Linear: torch.nn.Linear,
    ref.Conv1d: torch.nn.Conv1d,
    ref.Conv2d: torch.nn.Conv2d,
    ref.Conv3d: torch.nn.Conv3d,
    ref.ConvTranspose1d: torch.nn.ConvTranspose1d,
    ref.ConvTranspose2d: torch.nn.ConvTranspose2d,
    ref.ConvTranspose3d: torch.nn.ConvTranspose3d,
    ref.Embedding: torch.nn.Embedding,
    ref.EmbeddingBag: torch.nn.EmbeddingBag,
}
# What nn.Module.__init__ puts in every module's __dict__, in its order.
_INTERNALS = tuple(torch.nn.Module().__dict__)
# What ReferenceQuantizedModule._init_weight_qparams adds, in its order.
_QPARAM_ATTRIBUTES = ("weight_qscheme", "weight_dtype", "is_decomposed", "weight_axis_int",
                      "weight_quant_min", "weight_quant_max")
_QPARAM_BUFFERS = ("weight_scale", "weight_zero_point", "weight_axis")
_QPARAM_DTYPES = (torch.quint8, torch.qint8, torch.quint4x2, torch.qint32)
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_affine_float_qparams)
_SCALARS = frozenset({int, float, bool, str, type(None)})
_MISSING = object()  # (an attribute a float module lacks: the same as no value)


class _Unsupported(Exception):
    """A float module the fast path does not build (a parameter of another kind, say)."""


def _same(value: Any, other: Any, top: bool = True) -> bool:
    """Whether two constructor attribute values are the same: of one type (1, 1.0 and True differ, and a
    tuple from a list) and equal, item by item for tuples and for lists, which are accepted at the top level
    only (so a shallow copy of one is a full copy); False for values of any other type."""
    kind = type(value)
    if kind is not type(other):
        return False
    if kind in _SCALARS:
        return value is other or value == other
    if kind is tuple or (top and kind is list):
        kinds = tuple(map(type, value))
        if value is not other and kinds != tuple(map(type, other)):  # (a length or an item's type differs)
            return False
        if _SCALARS.issuperset(kinds):  # (most: sizes and strides) compared at once
            return value == other
        return all([_same(a, b, False) for a, b in zip(value, other)])
    return False


@attrs.frozen
class _Schema:
    """The names a reference class's instances have besides nn.Module's tables and the weight qparams."""

    attributes: tuple[str, ...]  # constructor attributes, taken from the float module
    parameters: tuple[str, ...]  # in registration order

    @classmethod
    def of(cls, template: torch.nn.Module) -> "_Schema":
        """The schema of a module built by from_float."""
        skip = set(_INTERNALS) | set(_QPARAM_ATTRIBUTES)
        return cls(tuple(name for name in template.__dict__ if name not in skip), tuple(template._parameters))


@attrs.frozen
class _Layout:
    """How to build a reference module like `template` for float modules of the template's key."""

    reference_class: type
    schema: _Schema
    # (name, container type to instantiate or None, value to share when immutable)
    internals: tuple[tuple[str, type | None, Any], ...]
    # per parameter: whether the template's requires grad (Embedding's from_float passes the device
    # where nn.Embedding expects `_freeze`, so its weight does not)
    requires_grad: tuple[bool, ...]
    # where the weight is among the parameters (its device is the one from_float builds the module on)
    weight_index: int

    @classmethod
    def of(cls, template: torch.nn.Module, standin: torch.nn.Module, schema: _Schema) -> "_Layout | None":
        """The layout of `template` = from_float(`standin`, ...), or None when the template is not laid
        out as this module builds objects: nn.Module's tables, then the constructor attributes (those
        `constructor_attributes` computes for the stand-in), then the weight qparams; no hooks, children or
        other buffers."""
        state = template.__dict__
        if list(state) != [*_INTERNALS, *schema.attributes, *_QPARAM_ATTRIBUTES]:
            return None
        if tuple(template._buffers) != _QPARAM_BUFFERS or tuple(template._parameters) != schema.parameters:
            return None
        if any((template._parameters[name] is None) != (standin._parameters.get(name) is None)
               for name in schema.parameters):
            return None
        if any(type(p) is not torch.nn.Parameter for p in template._parameters.values() if p is not None):
            return None
        requires_grad = tuple(p is not None and p.requires_grad for p in template._parameters.values())
        internals = []
        for name in _INTERNALS:
            value = state[name]
            if isinstance(value, (dict, set)):
                if value and name not in ("_parameters", "_buffers"):
                    return None
                internals.append((name, type(value), None))
            elif type(value) in _SCALARS:
                internals.append((name, None, value))
            else:
                return None
        if "weight" not in schema.parameters:
            return None
        layout = cls(type(template), schema, tuple(internals), requires_grad, schema.parameters.index("weight"))
        # the constructor really stored what constructor_attributes says it stores
        same = all([_same(state[name], standin.__dict__[name]) for name in schema.attributes])
        return layout if same and layout.takes(standin) else None

    def takes(self, float_module: torch.nn.Module) -> bool:
        """Whether the float module's constructor attributes are what from_float's constructor would
        store for it (so `new` may copy them)."""
        return _as_constructed(self.reference_class, float_module.__dict__, self.schema.attributes)

    def new(
        self, float_module: torch.nn.Module, tensors: tuple, qparams: Any, axes: "_AxisTensors", owned: bool = False
    ) -> torch.nn.Module:
        """A module equal to reference_class.from_float(`float_module`, `qparams`), for a float module of
        this layout's key whose parameters (`schema.parameters`) are `tensors`; with `owned`, it keeps the
        qparams' scale and zero point tensors (see `ReferenceBuilder.build`)."""
        module = self.reference_class.__new__(self.reference_class)
        state = module.__dict__
        for name, container, value in self.internals:
            state[name] = container() if container is not None else value
        source = float_module.__dict__
        for name in self.schema.attributes:
            value = source[name]
            state[name] = list(value) if type(value) is list else value
        parameters = state["_parameters"]
        for name, tensor, grad in zip(self.schema.parameters, tensors, self.requires_grad):
            # from_float's Parameter(tensor.detach()): Parameter detaches its argument itself.
            parameters[name] = None if tensor is None else torch.nn.Parameter(tensor, grad)
        device = tensors[self.weight_index].device  # (float_module.weight.device)
        if _plain_qparams(qparams):
            axis = qparams["axis"] if qparams["qscheme"] in _PER_CHANNEL else 0
            _write_weight_qparams(module, qparams, axis, axes.get(axis, device), owned)
        else:
            module._init_weight_qparams(qparams, device)
        return module


class _AxisTensors:
    """The `weight_axis` buffer values, built once per (axis, device) as _init_weight_qparams builds them;
    every module gets a clone."""

    def __init__(self) -> None:
        self._made: dict[tuple[int, torch.device], torch.Tensor] = {}

    def get(self, axis: int, device: torch.device) -> torch.Tensor:
        """A new int32 0-dim tensor holding `axis` on `device`."""
        made = self._made.get((axis, device))
        if made is None:
            made = self._made[(axis, device)] = torch.tensor(axis, dtype=torch.int, device=device)
        return made.clone()


def _plain_qparams(qparams: Any) -> bool:
    """Whether `qparams` are the kind _write_weight_qparams writes: a quantized weight dtype, tensor scale
    and zero point, and an int axis for per-channel schemes."""
    if type(qparams) is not dict:
        return False
    qscheme = qparams.get("qscheme")
    if qscheme != torch.per_tensor_affine and qscheme not in _PER_CHANNEL:
        return False
    if qparams.get("dtype") not in _QPARAM_DTYPES:
        return False
    if not isinstance(qparams.get("scale"), torch.Tensor) or not isinstance(qparams.get("zero_point"), torch.Tensor):
        return False
    return qscheme not in _PER_CHANNEL or type(qparams.get("axis")) is int


def _write_weight_qparams(module: torch.nn.Module, qparams: dict[str, Any], axis: int,
                          axis_tensor: torch.Tensor, owned: bool) -> None:
    """Set what _init_weight_qparams sets for plain qparams, in its order, straight into the module's
    tables. `axis_tensor` is the new `weight_axis` buffer, holding `axis`; with `owned`, the scale and zero
    point tensors are the caller's to give away (copies of the qparams' are made otherwise)."""
    state = module.__dict__
    buffers = state["_buffers"]
    state["weight_qscheme"] = qparams["qscheme"]
    state["weight_dtype"] = qparams["dtype"]
    scale, zero_point = qparams["scale"], qparams["zero_point"]
    buffers["weight_scale"] = scale if owned else _copy(scale)
    buffers["weight_zero_point"] = zero_point if owned else _copy(zero_point)
    buffers["weight_axis"] = axis_tensor
    state["is_decomposed"] = qparams.get("is_decomposed", False)
    state["weight_axis_int"] = axis  # what weight_axis.item() reads back
    state["weight_quant_min"] = qparams.get("quant_min")
    state["weight_quant_max"] = qparams.get("quant_max")


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """tensor.detach().clone(), skipping the detach where it changes nothing."""
    return tensor.detach().clone() if tensor.requires_grad else tensor.clone()


class LearnedLayouts:
    """What reference builders learn from from_float on meta stand-ins: per reference class its schema, and
    per layout key its layout (None: not built by `_Layout.new`). Both follow from torch's classes alone, so
    one table can serve every convert of a process; entries are keyed by the class together with its
    from_float and constructor, so patching either makes the class learned afresh."""

    def __init__(self) -> None:
        self.schemas: dict[tuple, _Schema] = {}
        self.layouts: dict[tuple, _Layout | None] = {}


# The table swap-modules' builders share.
PROCESS_LAYOUTS = LearnedLayouts()


def _class_key(reference_class: type) -> tuple:
    return reference_class, getattr(reference_class.from_float, "__func__", None), reference_class.__init__


class ReferenceBuilder:
    """Builds reference modules for one pass run; `build` returns what `from_float` returns. Layouts are
    learned into `learned` (a table of the builder's own by default)."""

    def __init__(self, learned: LearnedLayouts | None = None) -> None:
        learned = learned if learned is not None else LearnedLayouts()
        self._schemas = learned.schemas
        self._layouts = learned.layouts
        self._axes = _AxisTensors()

    def build(self, reference_class: type, float_module: torch.nn.Module, qparams: Any,
              owned: bool = False) -> torch.nn.Module:
        """A module equal to `reference_class.from_float(float_module, qparams)` in class, attributes,
        tables and tensors (Parameters on the float module's tensors, buffers of their own). Reads
        `float_module` and `qparams` only; with `owned` (the qparams' tensors are the caller's, held by
        nobody else) the module may keep the scale and zero point tensors instead of copies of them."""
        plan = self.plan(reference_class, float_module)
        if plan is None and self._learn_on_meta(reference_class, float_module):
            plan = self.plan(reference_class, float_module)
        if plan is not None:
            layout, tensors = plan
            return layout.new(float_module, tensors, qparams, self._axes, owned)
        if _one_feature_standin_applies(reference_class, float_module):
            return _from_one_feature_standin(reference_class, float_module, qparams)
        return from_float(reference_class, float_module, qparams)

    def plan(self, reference_class: type, float_module: torch.nn.Module) -> tuple[_Layout, tuple] | None:
        """Where the fast and the from_float path part: the layout to build `float_module`'s reference
        module with and the float parameters it takes, or None when `build` calls from_float."""
        if _FLOAT_CLASS.get(reference_class) is not type(float_module):
            return None  # also excludes parametrized modules, whose class is a generated subclass
        if registration_hooks():
            return None  # from_float's registrations call them
        keyed = self._key(reference_class, float_module)
        if keyed is None:
            return None
        layout = self._layouts.get(keyed[0])
        return None if layout is None or not layout.takes(float_module) else (layout, keyed[1])

    def _key(self, reference_class: type, float_module: torch.nn.Module) -> tuple[tuple, tuple] | None:
        """The layout key of `float_module` (its reference class and the class and dtype of each float
        parameter, or None for a missing one) and those parameters; None when unknown."""
        class_key = _class_key(reference_class)
        schema = self._schemas.get(class_key)
        if schema is None:
            return None
        try:
            tensors = _parameters_of(float_module, schema.parameters)
            tensor_keys = tuple([_tensor_key(tensor) for tensor in tensors])
        except (AttributeError, _Unsupported):
            return None
        return (class_key, tensor_keys), tensors

    def _learn_on_meta(self, reference_class: type, float_module: torch.nn.Module) -> bool:
        """Learn the layout of `float_module`'s class and parameter signature from from_float run on its
        meta stand-in; False when there is nothing (more) to learn or from_float must run on the module
        itself."""
        if _FLOAT_CLASS.get(reference_class) is not type(float_module) or registration_hooks():
            return False
        if not _as_constructed(reference_class, float_module.__dict__, None):
            return False  # a template must come from a module whose attributes the constructor would store
        if _class_key(reference_class) in self._schemas:
            keyed = self._key(reference_class, float_module)
            if keyed is None or keyed[0] in self._layouts:
                return False
        try:
            standin = _meta_standin(float_module)
        except _Unsupported:
            return False
        template = reference_class.from_float(standin, _TEMPLATE_QPARAMS)
        if type(template) is not reference_class:
            return False
        schema = self._schemas.setdefault(_class_key(reference_class), _Schema.of(template))
        keyed = self._key(reference_class, float_module)
        if keyed is None or keyed[0] in self._layouts:
            return False
        layout = self._layouts[keyed[0]] = _Layout.of(template, standin, schema)
        return layout is not None and layout.takes(float_module)


def torchs_own(definition: Any) -> bool:
    """Whether a class or function (a bound method: its function) is one of torch's module classes or their
    methods (defined under torch.ao.nn), whose behaviour qfx knows, rather than a user's."""
    module = getattr(getattr(definition, "__func__", definition), "__module__", None)
    return isinstance(module, str) and module.startswith("torch.ao.nn.")


def from_float(reference_class: type, float_module: torch.nn.Module, qparams: Any) -> torch.nn.Module:
    """`reference_class.from_float(float_module, qparams)`, given a deep copy of the float module when that
    from_float is not torch's own: a user's reference class may write into the module it is given (torch
    gives it the live one, which its convert replaces anyway)."""
    if not torchs_own(reference_class.from_float):
        float_module = copy.deepcopy(float_module)
    return reference_class.from_float(float_module, qparams)


def _as_constructed(reference_class: type, source: dict[str, Any], names: tuple[str, ...] | None) -> bool:
    """Whether the constructor attributes in `source` (a float module's __dict__) are, in type and value,
    what from_float's constructor would store, and are called `names` in that order (when given)."""
    derived = constructor_attributes(reference_class, source)
    if derived is None or (names is not None and tuple(derived) != names):
        return False
    for name, value in derived.items():
        other = source.get(name, _MISSING)
        # (most are the float module's own objects; a number or string is then the same without a call)
        if (value is not other or type(value) not in _SCALARS) and not _same(value, other):
            return False
    return True


# Reference RNNs: from_float builds the module from the float module's sizes (allocating and initialising
# every weight), then assigns each of the float module's weights over the new ones.
_RNN_FLOAT_CLASS: dict[type, type] = {
    ref.LSTM: torch.nn.LSTM,
    ref.GRU: torch.nn.GRU,
    ref.RNNCell: torch.nn.RNNCell,
    ref.LSTMCell: torch.nn.LSTMCell,
    ref.GRUCell: torch.nn.GRUCell,
}
_SIZES = ("input_size", "hidden_size")


def _one_feature_standin_applies(reference_class: type, float_module: torch.nn.Module) -> bool:
    """Whether `_from_one_feature_standin` builds what from_float builds: a reference RNN of the float
    module's own class, without projections (proj_size) and with plain Parameters, integer sizes and no
    global registration hooks."""
    if _RNN_FLOAT_CLASS.get(reference_class) is not type(float_module) or registration_hooks():
        return False
    state = float_module.__dict__
    return (all(type(state.get(name)) is int and state[name] > 0 for name in _SIZES)
            and state.get("proj_size", 0) == 0
            and all(type(p) is torch.nn.Parameter for p in float_module._parameters.values()))


def _from_one_feature_standin(reference_class: type, float_module: torch.nn.Module, qparams: Any) -> torch.nn.Module:
    """reference_class.from_float(float_module, qparams), run on a shallow stand-in of the float module
    that reports one input feature and one hidden unit, so that the weights the constructor allocates and
    initialises before from_float assigns the float module's over them are tiny; the result then gets the
    real sizes in place. Nothing else the constructor keeps depends on the sizes: the weights are all
    replaced, the weight qparams come from `qparams`, and the weak references to the constructor's weights
    (`_flat_weight_refs`) are dead either way once those are replaced."""
    module = reference_class.from_float(standin(float_module, **dict.fromkeys(_SIZES, 1)), qparams)
    if not give_real_sizes(module, float_module, _SIZES):  # (not torch 2.13's layout: build it the plain way)
        return reference_class.from_float(float_module, qparams)
    return module


def give_real_sizes(built: torch.nn.Module, module: torch.nn.Module, names: tuple[str, ...]) -> bool:
    """Put `module`'s value of each of `names` into `built`'s instance dict, where a stand-in's smaller size
    went (same keys, same order); False, having changed nothing, when `built` lacks one of them."""
    state = built.__dict__
    if not all(name in state for name in names):
        return False
    for name in names:
        state[name] = module.__dict__[name]
    return True


# Template qparams: their axis is a tensor, so _init_weight_qparams never calls .item() on a meta tensor; it
# registers the same buffers and attributes, in the same order, for every qscheme.
_TEMPLATE_QPARAMS = {"qscheme": torch.per_channel_affine, "dtype": torch.qint8, "scale": torch.ones(1),
                     "zero_point": torch.zeros(1, dtype=torch.int64), "axis": torch.tensor(0)}


def _meta_standin(float_module: torch.nn.Module) -> torch.nn.Module:
    """A shallow stand-in for `float_module` (same class and attributes) whose parameters are meta tensors of
    the same shape, dtype and requires_grad: from_float on it constructs without touching real memory. The
    stand-in shares the float module's other tables and only reads them."""
    parameters = {}
    for name, p in float_module._parameters.items():
        if p is not None and type(p) is not torch.nn.Parameter:
            raise _Unsupported
        parameters[name] = None if p is None else torch.nn.Parameter(
            torch.empty(p.shape, dtype=p.dtype, device="meta"), p.requires_grad)
    return standin(float_module, _parameters=parameters)


def _parameters_of(float_module: torch.nn.Module, names: tuple[str, ...]) -> tuple:
    """`getattr(float_module, name)` for each of `names`, for a module of one of torch's float classes (which
    define no such class attributes): read from its table of parameters where nn.Module.__getattr__ would
    find it there (the name is not in the instance dict), skipping that function's Python frame."""
    state = float_module.__dict__
    parameters = state.get("_parameters", {})
    return tuple([parameters[name] if name in parameters and name not in state else getattr(float_module, name)
                  for name in names])


def _tensor_key(tensor: Any) -> tuple | None:
    """What a float parameter contributes to the key: its presence, class and dtype (the constructor
    allocates and initialises in that dtype; shapes and devices change nothing in the layout)."""
    if tensor is None:
        return None
    if not isinstance(tensor, torch.Tensor):
        raise _Unsupported
    return (type(tensor), tensor.dtype)
