"""The fast paths of swap-modules give exactly what torch's own building blocks give.

- reference_modules.ReferenceBuilder builds modules equal to `from_float`'s in every respect: class, full
  __dict__ (tensors bit for bit, Parameters vs buffers, requires_grad), state_dict order, storage shared
  with the float module exactly where from_float shares it; float modules and templates stay untouched.
- weight_qparams computes exactly `get_qparam_dict` of a fresh observer that observed the weight.
- swap-modules takes both paths on repeated layers and still matches torch, warnings included.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import warnings
from typing import Any, Callable, Iterator

import pytest
import torch
import torch.ao.nn.quantized.reference as ref
import torch.nn as nn
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from torch.ao.quantization import QConfig, QConfigMapping, default_qconfig
from torch.ao.quantization.observer import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx
from torch.ao.quantization.utils import get_qparam_dict

import qfx.api as api
from qfx.passes.swap_modules import weight_qparams as weight_qparams_module
from qfx.passes.swap_modules import weighted as swap_weighted
from qfx.passes.swap_modules import reference_modules
from qfx.passes.swap_modules.module_lookup import ModuleLookup
from qfx.passes.swap_modules.reference_modules import LearnedLayouts, ReferenceBuilder
from qfx.passes.swap_modules.weight_qparams import (
    ConstructorKeys,
    WeightObserverConfig,
    WeightQParamTable,
    _row_ranges_with_zero_signs,
    batched_weight_qparams,
)
from tests.support.kernels import PATHS, assert_kernel_built, taking
from tests.support.snapshot import assert_same_model, assert_same_outputs, assert_unchanged, diff_values, snapshot
from qfx.testing.strategies import examples

# ------------------------------------------------------------------------------------------ comparisons


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**{f"param {k}": v for k, v in module._parameters.items() if v is not None},
            **{f"buffer {k}": v for k, v in module._buffers.items() if v is not None}}


def module_differences(got: nn.Module, want: nn.Module, float_module: nn.Module, qparams: Any) -> list[str]:
    """Every way `got` differs from `want` (= from_float(float_module, qparams)) that anyone could see."""
    problems = []
    if type(got) is not type(want):
        return [f"class {type(got).__name__} vs {type(want).__name__}"]
    problems += diff_values(got.__dict__, want.__dict__, "__dict__")
    if list(got.state_dict()) != list(want.state_dict()):
        problems.append(f"state_dict keys {list(got.state_dict())} vs {list(want.state_dict())}")
    float_storages = {_storage(t) for t in float_module.parameters()}
    qparam_storages = {_storage(v) for v in (qparams or {}).values() if isinstance(v, torch.Tensor)}
    want_tensors = _tensors(want)
    for name, g in _tensors(got).items():
        w = want_tensors[name]
        pairs = [("stride", g.stride(), w.stride()), ("storage offset", g.storage_offset(), w.storage_offset()),
                 ("is_leaf", g.is_leaf, w.is_leaf), ("version", g._version, w._version)]
        for what, a, b in pairs:
            if a != b:
                problems.append(f"{name}: {what} {a} vs {b}")
        if (_storage(g) in float_storages or _storage(w) in float_storages) and _storage(g) != _storage(w):
            problems.append(f"{name}: not on the float tensor from_float's module uses")
        if _storage(g) in qparam_storages:
            problems.append(f"{name}: shares storage with the qparams (from_float copies them)")
    # no container is shared with the float module or from_float's module
    theirs = {id(v) for m in (want, float_module) for v in m.__dict__.values() if isinstance(v, (dict, set, list))}
    problems += [f"__dict__[{k!r}] is shared" for k, v in got.__dict__.items()
                 if isinstance(v, (dict, set, list)) and id(v) in theirs]
    return problems


def assert_same_module(got: nn.Module, want: nn.Module, float_module: nn.Module, qparams: Any) -> None:
    problems = module_differences(got, want, float_module, qparams)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------- float modules


def _conv_options(draw: st.DrawFn, dims: int, transposed: bool) -> dict[str, Any]:
    def sizes(lo: int, hi: int) -> st.SearchStrategy:
        return st.one_of(st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * dims))

    def size(lo: int, hi: int) -> Any:
        return draw(sizes(lo, hi))

    groups = draw(st.integers(1, 2))
    stride, dilation = size(1, 2), size(1, 2)
    options = {"in_channels": groups * draw(st.integers(1, 2)), "out_channels": groups * draw(st.integers(1, 2)),
               "kernel_size": size(1, 3), "stride": stride, "dilation": dilation, "groups": groups,
               "bias": draw(st.booleans())}
    if transposed:
        steps = [max(s, d) for s, d in zip(_per_dim(stride, dims), _per_dim(dilation, dims))]
        options["padding"] = size(0, 2)
        options["output_padding"] = tuple(draw(st.integers(0, step - 1)) for step in steps)
    else:
        strings = ["valid"] + (["same"] if all(s == 1 for s in _per_dim(stride, dims)) else [])
        options["padding"] = draw(st.one_of(st.sampled_from(strings), sizes(0, 2)))
        options["padding_mode"] = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    return options


def _per_dim(value: Any, dims: int) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,) * dims


CONVS = [(ref.Conv1d, nn.Conv1d, 1, False), (ref.Conv2d, nn.Conv2d, 2, False), (ref.Conv3d, nn.Conv3d, 3, False),
         (ref.ConvTranspose1d, nn.ConvTranspose1d, 1, True), (ref.ConvTranspose2d, nn.ConvTranspose2d, 2, True),
         (ref.ConvTranspose3d, nn.ConvTranspose3d, 3, True)]


@st.composite
def float_configs(draw: st.DrawFn) -> tuple[type, Callable[[], nn.Module]]:
    """(reference class, a maker of float modules of one random configuration)."""
    kind = draw(st.sampled_from(["linear", "conv", "embedding", "embedding_bag"]))
    if kind == "linear":
        options = {"in_features": draw(st.integers(1, 4)), "out_features": draw(st.integers(1, 4)),
                   "bias": draw(st.booleans())}
        return ref.Linear, lambda: nn.Linear(**options)
    if kind == "conv":
        reference, float_class, dims, transposed = draw(st.sampled_from(CONVS))
        options = _conv_options(draw, dims, transposed)
        return reference, lambda: float_class(**options)
    num = draw(st.integers(2, 6))
    options = {"num_embeddings": num, "embedding_dim": draw(st.integers(1, 4)),
               "padding_idx": draw(st.one_of(st.none(), st.integers(-num, num - 1))),
               "max_norm": draw(st.one_of(st.none(), st.floats(0.5, 4.0))),
               "norm_type": draw(st.sampled_from([1.0, 2.0, 3.5])),
               "scale_grad_by_freq": draw(st.booleans()), "sparse": draw(st.booleans())}
    if kind == "embedding":
        return ref.Embedding, lambda: nn.Embedding(**options)
    options["mode"] = draw(st.sampled_from(["sum", "mean", "max"]))
    options["include_last_offset"] = draw(st.booleans())
    return ref.EmbeddingBag, lambda: nn.EmbeddingBag(**options)


WEIGHT_OBSERVERS = [
    MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine),
    PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_affine, ch_axis=1),
    PerChannelMinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_channel_affine_float_qparams),
    PlaceholderObserver.with_args(dtype=torch.float16),  # not quantized: _init_weight_qparams' float branch
]


def _qparams(module: nn.Module, which: int, decomposed: bool | None) -> dict[str, Any]:
    if which == len(WEIGHT_OBSERVERS):  # Python numbers instead of tensors
        qparams: dict[str, Any] = {"qscheme": torch.per_tensor_affine, "dtype": torch.quint8, "scale": 0.25,
                                   "zero_point": 3}
    else:
        observer = WEIGHT_OBSERVERS[which]()
        observer(module.weight)
        qparams = get_qparam_dict(observer)
    if decomposed is not None:
        qparams = {"is_decomposed": decomposed, **qparams}
    return qparams


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(float_configs(), min_size=1, max_size=3), st.lists(st.integers(0, 2), min_size=2, max_size=6),
       st.integers(0, len(WEIGHT_OBSERVERS)), st.sampled_from([None, False, True]))
def test_builder_equals_from_float(configs, picks, which, decomposed):
    builder = ReferenceBuilder()
    built = []
    for pick in picks:
        reference_class, make = configs[pick % len(configs)]
        torch.manual_seed(len(built))
        try:
            float_module = make()
        except (ValueError, RuntimeError):
            reject()  # an invalid draw (e.g. a padding the constructor refuses)
        qparams = _qparams(float_module, which, decomposed)
        before, qparams_before = snapshot(float_module), copy.deepcopy(qparams)
        got = builder.build(reference_class, float_module, qparams)
        want = reference_class.from_float(float_module, qparams)
        assert_same_module(got, want, float_module, qparams)
        assert_unchanged(before, float_module)
        assert not diff_values(qparams, qparams_before)
        built.append((got, snapshot(got)))
    for module, taken in built:  # templates (and every other result) stay as they were built
        assert_unchanged(taken, module)
    # a configuration seen before is built without from_float
    reference_class, make = configs[picks[-1] % len(configs)]
    assert builder.plan(reference_class, make()) is not None


# Values a user (or a buggy transform) might leave in a float module's constructor attributes after
# construction: the value as a list or tuple, with an element changed, other numbers and strings, None.
OTHER_VALUES = st.one_of(st.integers(-3, 4), st.sampled_from([0.5, 1.0, True, None, "same", "valid", "zeros",
                                                              "reflect", "sum"]))


@st.composite
def altered_values(draw: st.DrawFn, current: Any) -> Any:
    """Mostly the same kind of value with other contents (the changes a stale module shows), sometimes
    another container type or another kind of value altogether."""
    how = draw(st.sampled_from(["contents", "contents", "container", "other"]))
    if isinstance(current, (tuple, list)) and current and how != "other":
        items = list(current)
        if how == "contents":
            items[draw(st.integers(0, len(items) - 1))] = draw(st.one_of(st.integers(-1, 4), OTHER_VALUES))
            return type(current)(items)
        return (tuple if isinstance(current, list) else list)(items)
    if type(current) is int and how != "other":
        return draw(st.integers(-1, 6))
    return draw(OTHER_VALUES)


def _build_or_error(build: Callable[[], nn.Module]) -> tuple[Any, Any]:
    """(module, warning messages) or (error type, message)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            module = build()
        except Exception as error:  # noqa: BLE001 - the error itself is what is compared
            return type(error), str(error)
    return module, [str(w.message) for w in caught]


def check_altered(reference_class: type, make: Callable[[], nn.Module], name: str, value: Any,
                  which: int = 2) -> None:
    """Build a module of `make`'s configuration (which teaches the builder its class), then one whose
    attribute `name` was set to `value` after construction: the builder gives what from_float gives (the
    same module, or the same error), with the same warnings, and leaves the float module as it was."""
    builder = ReferenceBuilder()
    torch.manual_seed(0)
    twin, altered = make(), make()
    builder.build(reference_class, twin, _qparams(twin, which, False))
    assert builder.plan(reference_class, make()) is not None
    altered.__dict__[name] = value
    qparams = _qparams(altered, which, False)
    before = snapshot(altered)
    got = _build_or_error(lambda: builder.build(reference_class, altered, qparams))
    want = _build_or_error(lambda: reference_class.from_float(altered, qparams))
    assert_unchanged(before, altered)
    if isinstance(want[0], type):
        assert got == want
        return
    assert not isinstance(got[0], type), got
    assert got[1] == want[1]
    assert_same_module(got[0], want[0], altered, qparams)


@settings(max_examples=examples(400), deadline=None)
@given(float_configs(), st.data(), st.integers(0, len(WEIGHT_OBSERVERS) - 1))
def test_builder_equals_from_float_on_altered_modules(config, data, which):
    """check_altered on drawn configurations, attributes and values."""
    reference_class, make = config
    try:
        probe = make()
    except (ValueError, RuntimeError):
        reject()
    names = sorted(n for n in vars(probe) if n not in ("training", "weight_qscheme") and not n.startswith("_")
                   or n == "_reversed_padding_repeated_twice")
    name = data.draw(st.sampled_from(names), label="attribute")
    check_altered(reference_class, make, name, data.draw(altered_values(probe.__dict__[name]), label="value"), which)


# One case per rule of constructor_attributes: each would build a module unlike from_float's (or none
# where from_float raises) if the rule were missing.
@pytest.mark.parametrize(("reference_class", "make", "name", "value"), [
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3, padding=1), "padding", (0, 0)),  # stale reversed padding
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3, padding="same"), "dilation", (2, 2)),  # 'same' split again
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3), "output_padding", (0, 1)),  # not passed: _pair(0)
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3), "transposed", True),
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3), "kernel_size", [3, 3]),  # _pair makes a tuple
    (ref.Conv1d, lambda: nn.Conv1d(2, 2, 3), "stride", 2),  # _single of a number
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3), "_reversed_padding_repeated_twice", (1, 1, 1, 1)),
    (ref.Conv2d, lambda: nn.Conv2d(2, 4, 3, groups=2), "groups", 3),  # raises
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3, padding="same"), "stride", (2, 2)),  # raises
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3), "padding_mode", "mirror"),  # raises
    (ref.ConvTranspose2d, lambda: nn.ConvTranspose2d(2, 2, 3), "padding_mode", "reflect"),  # raises
    (ref.ConvTranspose1d, lambda: nn.ConvTranspose1d(2, 2, 3, stride=2), "output_padding", 1),
    (ref.Linear, lambda: nn.Linear(3, 2), "in_features", 5),  # stored as it is
    (ref.Linear, lambda: nn.Linear(3, 2), "out_features", 0),  # a zero-size init warns
    (ref.Embedding, lambda: nn.Embedding(5, 3), "padding_idx", -1),  # counted from the end
    (ref.Embedding, lambda: nn.Embedding(5, 3), "padding_idx", 5),  # raises
    (ref.Embedding, lambda: nn.Embedding(5, 3), "num_embeddings", 7),  # weight shape check raises
    (ref.EmbeddingBag, lambda: nn.EmbeddingBag(5, 3), "padding_idx", -2),
    # the float module's own objects, passed on as they are, are still only plain numbers and strings
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3), "padding_mode", type("Mode", (str,), {})("zeros")),
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3), "stride", (type("Stride", (int,), {})(1),) * 2),
])
def test_builder_equals_from_float_for_each_constructor_rule(reference_class, make, name, value):
    check_altered(reference_class, make, name, value)


_Mode = type("Mode", (str,), {})
_Size = type("Size", (int,), {})


@pytest.mark.parametrize(("reference_class", "make"), [
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3)),
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3, padding_mode=_Mode("zeros"))),
    (ref.Conv2d, lambda: nn.Conv2d(2, 2, 3, stride=(_Size(1), 1))),
    (ref.Conv1d, lambda: nn.Conv1d(2, 2, 3, padding=1)),
    (ref.Linear, lambda: nn.Linear(3, 2)),
    (ref.Linear, lambda: nn.Linear(_Size(3), 2)),
    (ref.Embedding, lambda: nn.Embedding(5, 3, padding_idx=1)),
])
def test_as_constructed_is_the_attribute_by_attribute_comparison(reference_class, make):
    """`_as_constructed` skips the comparison of a float module's own plain number or string, which is the
    same object as the constructor would store: it must still answer what comparing every attribute with
    `_same` answers (a subclass of int or str is not such a value). The builder tests cannot see a wrong
    answer here, since from_float hands the module those very objects either way."""
    from qfx.passes.swap_modules.constructor_attributes import constructor_attributes

    state = make().__dict__
    derived = constructor_attributes(reference_class, state)  # (None: one the constructor would not take)
    expected = derived is not None and all(reference_modules._same(value, state.get(name))
                                           for name, value in derived.items())
    assert reference_modules._as_constructed(reference_class, state, None) is expected


def test_an_embedding_whose_weight_lost_its_shape_gets_from_floats_error():
    builder = ReferenceBuilder()
    twin, altered = nn.Embedding(5, 3), nn.Embedding(5, 3)
    for module in (twin, twin, altered):  # twice: the second build comes from the remembered answer
        if module is altered:
            altered.weight = nn.Parameter(torch.randn(6, 3))
        qparams = _qparams(module, 2, False)
        got = _build_or_error(lambda: builder.build(ref.Embedding, module, qparams))
        want = _build_or_error(lambda: ref.Embedding.from_float(module, qparams))
        assert (got[0] if isinstance(got[0], type) else type(got[0])) is (
            want[0] if isinstance(want[0], type) else type(want[0]))
    assert got == want and got[0] is AssertionError


def test_a_new_configuration_of_a_known_class_is_built_from_its_class_layout(monkeypatch):
    builder = ReferenceBuilder()
    first = nn.Conv2d(3, 8, 3, padding=1)
    builder.build(ref.Conv2d, first, _qparams(first, 2, False))
    calls = []  # from_float runs on a meta stand-in (learning) or on the module itself (the slow path)
    for name in ("_meta_standin", "from_float"):
        original = getattr(reference_modules, name)
        monkeypatch.setattr(reference_modules, name, lambda *a, _original=original: (calls.append(a), _original(*a))[1])
    others = [nn.Conv2d(8, 16, 5, stride=2, padding=2), nn.Conv2d(16, 16, 3, groups=16, dilation=2, padding="same"),
              nn.Conv2d(4, 6, (1, 7), padding=(0, 3), padding_mode="reflect")]
    got = [builder.build(ref.Conv2d, f, _qparams(f, 2, False)) for f in others]
    assert calls == []
    monkeypatch.undo()
    for module, f in zip(got, others):
        q = _qparams(f, 2, False)
        assert_same_module(module, ref.Conv2d.from_float(f, q), f, q)


def test_builders_sharing_a_table_learn_a_class_once_and_again_when_its_from_float_changes(monkeypatch):
    """Layouts learned by one builder serve the next one sharing its table (as every convert of a process
    shares swap-modules' table); a class whose from_float was patched meanwhile is learned afresh."""
    learned = LearnedLayouts()
    first = nn.Conv2d(3, 8, 3, padding=1)
    ReferenceBuilder(learned).build(ref.Conv2d, first, _qparams(first, 2, False))
    standins = []
    original_standin = reference_modules._meta_standin
    monkeypatch.setattr(reference_modules, "_meta_standin", lambda m: (standins.append(m), original_standin(m))[1])
    second = nn.Conv2d(8, 4, 1)
    ReferenceBuilder(learned).build(ref.Conv2d, second, _qparams(second, 2, False))
    assert standins == []
    calls = []
    original = ref.Conv2d.from_float
    monkeypatch.setattr(ref.Conv2d, "from_float", classmethod(lambda cls, *a: (calls.append(a), original(*a))[1]))
    got = ReferenceBuilder(learned).build(ref.Conv2d, second, _qparams(second, 2, False))
    assert len(standins) == 1 and len(calls) == 1  # (learned again, on the meta stand-in)
    monkeypatch.undo()
    q = _qparams(second, 2, False)
    assert_same_module(got, ref.Conv2d.from_float(second, q), second, q)


def test_builder_results_do_not_share_buffers_or_tables():
    builder = ReferenceBuilder()
    floats = [nn.Conv2d(2, 4, 3, padding="same") for _ in range(3)]
    qparams = _qparams(floats[0], 2, False)
    first, second, third = (builder.build(ref.Conv2d, f, qparams) for f in floats)
    assert builder.plan(ref.Conv2d, floats[2]) is not None
    for a, b in [(first, second), (second, third)]:
        for name, tensor in a._buffers.items():
            assert tensor.untyped_storage().data_ptr() != b._buffers[name].untyped_storage().data_ptr()
        assert a._reversed_padding_repeated_twice is not b._reversed_padding_repeated_twice
        assert all(a.__dict__[k] is not b.__dict__[k] for k, v in a.__dict__.items() if isinstance(v, (dict, set)))
    second.weight_scale.add_(1)
    assert not torch.equal(second.weight_scale, third.weight_scale)


class LinearChild(nn.Linear):
    pass


def test_builder_takes_from_float_for_what_it_does_not_cover():
    builder = ReferenceBuilder()
    qparams = _qparams(nn.Linear(3, 3), 0, False)
    # subclasses, parametrized modules and unusual attribute values
    for _ in range(2):
        builder.build(ref.Linear, LinearChild(3, 3), qparams)
    assert builder.plan(ref.Linear, LinearChild(3, 3)) is None
    parametrized = nn.Linear(3, 3)
    torch.nn.utils.parametrize.register_parametrization(parametrized, "weight", nn.Identity())
    assert builder.plan(ref.Linear, parametrized) is None
    odd = nn.Linear(3, 3)
    odd.in_features = torch.tensor(3)  # not a plain number
    builder.build(ref.Linear, odd, qparams)
    assert builder.plan(ref.Linear, odd) is None
    # a float module whose attributes disagree with what its constructor derives from them
    stale = nn.Conv2d(2, 2, 3, padding=1)
    stale.padding = (0, 0)
    builder.build(ref.Conv2d, stale, qparams)
    restale = nn.Conv2d(2, 2, 3, padding=1)
    restale.padding = (0, 0)
    assert builder.plan(ref.Conv2d, restale) is None
    assert_same_module(builder.build(ref.Conv2d, restale, qparams), ref.Conv2d.from_float(restale, qparams),
                       restale, qparams)


def test_builder_respects_global_registration_hooks():
    builder = ReferenceBuilder()
    qparams = _qparams(nn.Linear(3, 3), 0, False)
    builder.build(ref.Linear, nn.Linear(3, 3), qparams)
    seen = []
    handle = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, param: seen.append(name))
    try:
        assert builder.plan(ref.Linear, nn.Linear(3, 3)) is None
        builder.build(ref.Linear, nn.Linear(3, 3), qparams)
    finally:
        handle.remove()
    assert "weight" in seen


RNN_CLASSES = [(ref.LSTM, nn.LSTM), (ref.GRU, nn.GRU), (ref.RNNCell, nn.RNNCell), (ref.LSTMCell, nn.LSTMCell),
               (ref.GRUCell, nn.GRUCell)]


@settings(max_examples=examples(60), deadline=None)
@given(data=st.data())
def test_builder_equals_from_float_for_recurrent_modules(data):
    """Reference RNNs and RNN cells are built from a one-feature stand-in of the float module (no full-size
    weights allocated and initialised): the same module as from_float's, warnings included."""
    reference_class, float_class = data.draw(st.sampled_from(RNN_CLASSES))
    sizes = {"input_size": data.draw(st.integers(1, 6)), "hidden_size": data.draw(st.integers(1, 6)),
             "bias": data.draw(st.booleans())}
    if float_class in (nn.LSTM, nn.GRU):
        sizes.update(num_layers=data.draw(st.integers(1, 3)), batch_first=data.draw(st.booleans()),
                     bidirectional=data.draw(st.booleans()), dropout=data.draw(st.sampled_from([0.0, 0.25])))
    elif float_class is nn.RNNCell:
        sizes["nonlinearity"] = data.draw(st.sampled_from(["tanh", "relu"]))
    torch.manual_seed(data.draw(st.integers(0, 100)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        float_module = float_class(**sizes)
    observer = data.draw(st.sampled_from([MinMaxObserver, PerChannelMinMaxObserver.with_args(ch_axis=0)]))
    qparams: dict[str, Any] = {"is_decomposed": data.draw(st.booleans())}
    for name in [n for n, _ in float_module.named_parameters() if n.startswith("weight")]:
        obs = observer()
        obs(getattr(float_module, name))
        qparams[name] = get_qparam_dict(obs)
    before = snapshot(float_module)
    with warnings.catch_warnings(record=True) as ours_said:
        warnings.simplefilter("always")
        got = ReferenceBuilder().build(reference_class, float_module, qparams)
    with warnings.catch_warnings(record=True) as theirs_said:
        warnings.simplefilter("always")
        want = reference_class.from_float(float_module, qparams)
    # the weak references to the constructor's weights: alike when both are dead or both reach the same
    # object (then set aside: weak references themselves are compared by identity); the replaced weights
    # may wait in a reference cycle for the collector
    gc.collect()
    refs = [[r if r is None else r() for r in m.__dict__.pop("_flat_weight_refs", [])] for m in (got, want)]
    assert len(refs[0]) == len(refs[1]) and all(a is b for a, b in zip(*refs))
    assert_same_module(got, want, float_module, qparams)
    assert [str(w.message) for w in ours_said] == [str(w.message) for w in theirs_said]
    assert_unchanged(before, float_module)
    x = torch.randn(3, 2, sizes["input_size"]) if float_class in (nn.LSTM, nn.GRU) else torch.randn(2, sizes["input_size"])
    torch.manual_seed(0)  # (a training RNN with dropout draws its masks)
    a = got(x)
    torch.manual_seed(0)
    b = want(x)
    assert all(torch.equal(p, q) for p, q in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)))


# ------------------------------------------------------------------------------------ weight qparams

DTYPE_RANGES = {torch.quint8: (0, 255), torch.qint8: (-128, 127), torch.qint32: (-(2**31), 2**31 - 1),
                torch.uint8: (0, 255), torch.int8: (-128, 127), torch.int16: (-(2**15), 2**15 - 1),
                torch.uint16: (0, 2**16 - 1)}


@st.composite
def observer_constructors(draw: st.DrawFn) -> Any:
    """A MinMaxObserver or PerChannelMinMaxObserver constructor with random options (some are invalid)."""
    per_channel = draw(st.booleans())
    dtype = draw(st.sampled_from(list(DTYPE_RANGES)))
    schemes = ([torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams]
               if per_channel else [torch.per_tensor_affine, torch.per_tensor_symmetric])
    options: dict[str, Any] = {"dtype": dtype, "qscheme": draw(st.sampled_from(schemes)),
                               "reduce_range": draw(st.booleans())}
    if draw(st.booleans()):
        lo, hi = DTYPE_RANGES[dtype]
        options["quant_min"] = draw(st.integers(max(lo, -300), 0))
        options["quant_max"] = draw(st.integers(1, min(hi, 300)))
    if draw(st.booleans()):
        options["eps"] = draw(st.sampled_from([1e-12, 1e-6, 1e-3, 0.5, 2.0**-149]))
    if per_channel:
        options["ch_axis"] = draw(st.integers(-3, 2))
        return PerChannelMinMaxObserver.with_args(**options)
    return MinMaxObserver.with_args(**options)


@st.composite
def weights(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    weight = _weight_values(draw, shape)
    if draw(st.booleans()):  # a strided view, as a transposed or sliced parameter is
        weight = weight.transpose(0, -1)
    return weight


def _weight_values(draw: st.DrawFn, shape: list[int]) -> torch.Tensor:
    kind = draw(st.sampled_from(["normal", "zeros", "constant", "positive", "negative", "tiny", "huge",
                                 "signed zeros", "not finite"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    base = torch.randn(shape, generator=g)
    if kind == "not finite":  # left to the observer
        base.view(-1)[draw(st.integers(0, base.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return base
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "constant":
        return torch.full(shape, draw(st.floats(-3, 3, width=32)))
    if kind == "positive":
        return base.abs() + 0.1
    if kind == "negative":
        return -base.abs() - 0.1
    if kind == "tiny":
        return base * 1e-39  # subnormals: scales below eps
    if kind == "huge":
        return base * 1e30
    if kind == "signed zeros":  # ranges that end at 0.0 or -0.0, whose sign some schemes' qparams show
        sign = draw(st.sampled_from([1.0, -1.0]))
        zeros = torch.where(torch.rand(shape, generator=g) < 0.5, 0.0, -0.0)
        return torch.where(torch.rand(shape, generator=g) < 0.4, zeros, sign * base.abs())
    return base * draw(st.floats(1e-3, 1e3))


def _observed(constructor: Any, weight: torch.Tensor) -> dict[str, Any]:
    observer = constructor()
    observer(weight)
    return get_qparam_dict(observer)


@settings(max_examples=examples(80), deadline=None)
@given(st.lists(st.tuples(observer_constructors(), st.lists(weights(), min_size=1, max_size=3)),
                min_size=1, max_size=3))
def test_batched_weight_qparams_equal_get_qparam_dict(groups):
    requests, expected = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range's deprecation note
        for constructor, group in groups:
            try:
                config = WeightObserverConfig.of(constructor())
                wanted = [_observed(constructor, w) if bool(w.isfinite().all()) else None for w in group]
            except (AssertionError, NotImplementedError, ValueError, RuntimeError, IndexError):
                continue  # options the observer refuses, or a channel axis the weight does not have
            assert config is not None
            requests += [(w, config) for w in group]
            expected += wanted
    if not requests:
        reject()
    before = [w.clone() for w, _ in requests]
    for path in PATHS:
        with taking(weight_qparams_module, path):
            got = batched_weight_qparams(requests)
        for (weight, _), found, want, original in zip(requests, got, expected, before):
            assert (found is None) == (want is None)
            if want is None:
                continue
            problems = diff_values(found, want, "qparams")
            assert not problems, "\n".join(problems)
            assert torch.equal(weight, original)


def test_the_range_kernel_is_built_and_agrees():
    """Installing qfx with a C compiler builds the row-range kernel, and it passes its own check."""
    assert_kernel_built(weight_qparams_module)


def test_a_range_kernel_built_from_older_sources_is_not_used(monkeypatch):
    """A range kernel lacking a function qfx calls (an editable install not rebuilt since the sources
    changed) is not used: the tensor reductions do the work."""
    assert_kernel_built(weight_qparams_module)
    monkeypatch.setattr(weight_qparams_module, "_KERNEL_FUNCTIONS",
                        (*weight_qparams_module._KERNEL_FUNCTIONS, "a_function_of_tomorrow"))
    assert weight_qparams_module.native_kernel.__wrapped__() is None


# The range kernel's vector widths (bits; 0: a value at a time), each capped at what the CPU has.
VECTOR_WIDTHS = (512, 256, 0)


@contextlib.contextmanager
def range_kernel_width(bits: int | None) -> Iterator[None]:
    """Within the block, the range kernel (when built) works in vectors of `bits` (None: its default)."""
    kernel = weight_qparams_module.native_kernel()
    if bits is None or kernel is None:
        yield
        return
    previous = kernel.set_vector_width(bits)
    try:
        yield
    finally:
        kernel.set_vector_width(previous)


@settings(max_examples=examples(80), deadline=None)
@given(data=st.data())
def test_row_ranges_are_amin_and_amax(data):
    """row_ranges gives amin's and amax's values along rows (their signs of zeros aside) on matrices of any
    width (the kernel's vector steps, one and four vectors at a time, and its tails), in each vector width
    the kernel has, non-finite values included and values whose sum overflows (then torch's own)."""
    rows, columns = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 300))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    matrix = torch.randn(rows, columns, generator=g) * data.draw(st.sampled_from([1.0, 1e-39, 1e30, 1e-3, 1e37]))
    kind = data.draw(st.sampled_from(["plain", "nan", "inf", "-inf", "constant", "extreme at the end"]))
    if kind in ("nan", "inf", "-inf"):
        matrix[data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, columns - 1))] = float(kind)
    elif kind == "constant":
        matrix.fill_(data.draw(st.floats(-3, 3, width=32)))
    elif kind == "extreme at the end":
        matrix[:, -1] = 1e20
        matrix[0, -1] = -1e20
    want_low, want_high = matrix.amin(dim=1), matrix.amax(dim=1)
    for path, bits in [("tensor", None)] + [("native", bits) for bits in VECTOR_WIDTHS]:
        with taking(weight_qparams_module, path), range_kernel_width(bits):
            low, high = weight_qparams_module.row_ranges(matrix)
        for got, want in ((low, want_low), (high, want_high)):
            assert torch.equal(got.isnan(), want.isnan()), (path, bits)
            assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want)), (path, bits)


def test_non_finite_and_unusual_weights_are_left_to_the_observer():
    config = WeightObserverConfig.of(MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))
    per_channel = WeightObserverConfig.of(PerChannelMinMaxObserver(ch_axis=1))
    good = torch.randn(3, 3)
    cases = [torch.tensor([[1.0, float("nan")]]), torch.tensor([[1.0, float("inf")]]),
             torch.tensor([[-float("inf"), 1.0]]), torch.zeros(0, 3), torch.randn(3, 3, dtype=torch.float64)]
    got = batched_weight_qparams([(good, config)] + [(w, config) for w in cases] + [(torch.randn(4), per_channel)])
    assert not diff_values(got[0], _observed(MinMaxObserver.with_args(dtype=torch.qint8,
                                                                      qscheme=torch.per_tensor_symmetric), good))
    assert got[1:] == [None] * (len(cases) + 1)
    # per channel, weights of other channel counts computed together with one that has a NaN
    finite = [torch.randn(2, 3), torch.randn(4, 5, 2)]
    mixed = [finite[0], torch.tensor([[1.0, float("nan"), 2.0, 0.5]]), finite[1]]
    got = batched_weight_qparams([(w, per_channel) for w in mixed])
    assert got[1] is None
    for weight, found in zip(finite, (got[0], got[2])):
        assert not diff_values(found, _observed(PerChannelMinMaxObserver.with_args(ch_axis=1), weight))


def test_only_plain_minmax_observers_have_a_config():
    class Custom(MinMaxObserver):
        pass

    assert WeightObserverConfig.of(Custom()) is None
    assert WeightObserverConfig.of(MovingAverageMinMaxObserver()) is None
    assert WeightObserverConfig.of(PlaceholderObserver(dtype=torch.float16)) is None
    assert WeightObserverConfig.of(MinMaxObserver(factory_kwargs={"dtype": torch.float64})) is None
    assert WeightObserverConfig.of(MinMaxObserver()) is not None


def _table(pairs: list[tuple[nn.Module, Any]]) -> WeightQParamTable:
    table = WeightQParamTable(None, ConstructorKeys(), ModuleLookup())
    table.compute(pairs)
    return table


def test_table_computes_per_module_and_qconfig():
    weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    qconfig = QConfig(activation=MinMaxObserver, weight=weight.with_callable_args(factory_kwargs=lambda: None))
    modules = [nn.Linear(3, 4), nn.Conv2d(2, 2, 2), nn.Linear(3, 4)]
    table = _table([(m, qconfig) for m in modules])
    for m in modules:
        assert not diff_values(table.get(m, qconfig), _observed(qconfig.weight, m.weight))
    assert table.get(modules[0], default_qconfig) is None  # a different qconfig object
    assert table.get(nn.Linear(3, 4), qconfig) is None


@pytest.mark.parametrize("qconfig", [
    QConfig(activation=MinMaxObserver, weight=MinMaxObserver.with_args(reduce_range=True)),  # warns
    QConfig(activation=MinMaxObserver, weight=MovingAverageMinMaxObserver.with_args(dtype=torch.qint8)),
    QConfig(activation=MinMaxObserver, weight=MinMaxObserver),  # a class, not a with_args constructor
    QConfig(activation=MinMaxObserver, weight=MinMaxObserver.with_args(qscheme=torch.per_channel_affine)),  # fails
    QConfig(activation=MinMaxObserver, weight=MinMaxObserver.with_callable_args(eps=lambda: 0.1)),
])
def test_table_leaves_other_constructors_to_the_observer(qconfig):
    module = nn.Linear(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _table([(module, qconfig)]).get(module, qconfig) is None
    assert not caught  # whatever the constructor says is said by the observer path


def test_table_leaves_recurrent_modules_to_the_observer():
    qconfig = QConfig(activation=MinMaxObserver, weight=MinMaxObserver.with_args(dtype=torch.qint8))
    cell, lstm = nn.LSTMCell(3, 3), nn.LSTM(3, 3)
    table = _table([(cell, qconfig), (lstm, qconfig)])
    assert table.get(cell, qconfig) is None and table.get(lstm, qconfig) is None


# -------------------------------------------------------------------------------------- the pass


class Repeated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)])
        self.relu = nn.ReLU()
        self.linears = nn.ModuleList([nn.Linear(4, 4) for _ in range(4)])
        self.embedding = nn.Embedding(5, 4)

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.convs(x)).mean((2, 3)) + self.embedding(idx)
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i % 2:
                x = torch.relu(x)
        return x


def _observed_repeated(mapping: QConfigMapping) -> tuple[torch.fx.GraphModule, tuple]:
    torch.manual_seed(0)
    example = (torch.randn(2, 4, 5, 5), torch.tensor([1, 3]))
    observed = prepare_fx(Repeated().eval(), mapping, example)
    observed(*example)
    return observed, example


def _counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, calls: list) -> None:
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, classmethod(lambda cls, *a, **k: counted(*a, **k))
                        if isinstance(owner, type) else counted)


@pytest.mark.parametrize("mapping", ["default", "per_channel"])
def test_swap_modules_takes_the_fast_paths_and_matches_torch(monkeypatch, mapping):
    qmap = api_mapping(mapping)
    observed, example = _observed_repeated(qmap)
    expected = convert_to_reference_fx(copy.deepcopy(observed))
    calls: list = []
    _counting(monkeypatch, swap_weighted, "get_qparam_dict", calls)
    for cls in (ref.Linear, ref.Conv2d):
        _counting(monkeypatch, cls, "from_float", calls)
    ours = api.convert_to_reference_fx(observed)
    monkeypatch.undo()
    assert calls.count("get_qparam_dict") == 0  # no weight observer was built
    assert calls.count("from_float") == 2  # one template per configuration
    assert_same_model(ours, expected)
    assert_same_outputs(ours, expected, *example)


def api_mapping(name: str) -> QConfigMapping:
    if name == "default":
        return QConfigMapping().set_global(default_qconfig)
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return QConfigMapping().set_global(QConfig(activation=default_qconfig.activation, weight=weight))


def test_weight_observers_that_warn_warn_as_without_fast_paths(monkeypatch):
    """Constructors that warn stay on the observer path: the warnings are those of a run without fast
    paths. (Both warn less often than torch, whose dtype support checks build observers per module
    where WeightedClasses remembers the answer per qconfig.)"""
    weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, reduce_range=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed, _ = _observed_repeated(QConfigMapping().set_global(
            QConfig(activation=default_qconfig.activation, weight=weight)))

    def run() -> tuple[torch.fx.GraphModule, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = api.convert_to_reference_fx(observed)
        return model, [str(w.message) for w in caught]

    fast, fast_warnings = run()
    monkeypatch.setattr(WeightQParamTable, "compute", lambda self, pairs: None)
    monkeypatch.setattr(ReferenceBuilder, "plan", lambda self, reference_class, float_module: None)
    slow, slow_warnings = run()
    assert fast_warnings == slow_warnings and any("reduce_range" in w for w in fast_warnings)
    assert_same_model(fast, slow)
    assert_same_model(fast, convert_to_reference_fx(copy.deepcopy(observed)))


@pytest.mark.parametrize(("reference_class", "make"), [
    (ref.Linear, lambda i: nn.Linear(3 + i, 2 + i)),
    (ref.Conv2d, lambda i: nn.Conv2d(2 + i, 3, 1 + 2 * i, padding=i)),
    (ref.ConvTranspose1d, lambda i: nn.ConvTranspose1d(2, 1 + i, 3, stride=1 + i)),
])
def test_builder_never_initialises_real_weights(monkeypatch, reference_class, make):
    """Every configuration is new (distinct shapes): the constructors from_float runs still initialise only
    meta tensors, and the results equal from_float's."""
    float_class = type(make(0))
    floats = [make(i) for i in range(3)]
    qparams = [_qparams(f, 1, False) for f in floats]
    devices = []
    original = float_class.reset_parameters
    monkeypatch.setattr(float_class, "reset_parameters",
                        lambda self: (devices.append(self.weight.device.type), original(self))[1])
    builder = ReferenceBuilder()
    got = [builder.build(reference_class, f, q) for f, q in zip(floats, qparams)]
    assert devices and set(devices) == {"meta"}, devices
    monkeypatch.undo()
    for module, f, q in zip(got, floats, qparams):
        assert_same_module(module, reference_class.from_float(f, q), f, q)


@settings(max_examples=examples(80), deadline=None)
@given(data=st.data())
def test_row_ranges_keep_the_zero_signs_aminmax_gives(data):
    """Float-qparams zero points show the sign of a zero minimum: the row ranges equal aminmax's bit for bit
    on rows of any length full of signed zeros (and NaN rows, which the observer gets)."""
    rows, columns = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 300))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    values = torch.randn(rows, columns, generator=g)
    signs = torch.where(torch.rand(rows, columns, generator=g) < 0.5, 1.0, -1.0)
    zeros = torch.where(torch.rand(rows, columns, generator=g) < 0.5, 0.0, -0.0)
    kind = data.draw(st.sampled_from(["mixed", "non-negative", "non-positive", "zeros", "nan"]))
    share = data.draw(st.sampled_from([0.05, 0.5, 0.95]))
    some = torch.rand(rows, columns, generator=g) < share
    if kind == "non-negative":
        values = values.abs()
    elif kind == "non-positive":
        values = -values.abs()
    elif kind == "zeros":
        some = torch.ones(rows, columns, dtype=torch.bool)
    elif kind == "nan":
        values[0, columns // 2] = float("nan")
    matrix = torch.where(some, zeros, values if kind != "mixed" else values * signs)
    ours = _row_ranges_with_zero_signs(matrix)
    theirs = torch.aminmax(matrix, dim=1)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
        assert torch.equal(torch.signbit(a), torch.signbit(b))


def test_row_ranges_do_not_depend_on_the_default_dtype():
    """The kernel's outputs are float32 whatever torch's default dtype (a float64 default once made its
    result buffers float64, which it wrote as float32)."""
    matrix = torch.randn(16, 100, dtype=torch.float32) * 7
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        low, high = weight_qparams_module.row_ranges(matrix)
    finally:
        torch.set_default_dtype(previous)
    assert low.dtype == high.dtype == torch.float32
    assert torch.equal(low, matrix.amin(dim=1)) and torch.equal(high, matrix.amax(dim=1))


def test_qconfigs_with_a_bare_observer_class_share_one_swap_check(monkeypatch):
    """float_qparams_weight_only_qconfig's activation is a class, not a with_args wrapper: its qconfigs still
    have a key, so the swap check (which builds both observers) runs once for all alike tables, and
    answers as torch's check does."""
    from torch.ao.quantization import float_qparams_weight_only_qconfig
    from torch.ao.quantization.backend_config import get_native_backend_config

    classes = swap_weighted.WeightedClasses.of(get_native_backend_config())
    assert classes._observer_key(PlaceholderObserver) != classes._observer_key(MinMaxObserver)
    checks = []
    original = swap_weighted._swap_applies
    monkeypatch.setattr(swap_weighted, "_swap_applies", lambda *a: (checks.append(a), original(*a))[1])
    qconfigs = [copy.copy(float_qparams_weight_only_qconfig) for _ in range(5)]  # (prepare's: one per module)
    answers = {classes.reference_swap_applies(q, nn.Embedding) for q in qconfigs}
    assert len(checks) == 1
    assert answers == {original(classes, float_qparams_weight_only_qconfig, nn.Embedding)}


def test_range_vectors_are_written_where_asked_and_refuse_rows_without_room():
    """RangeVectors.write puts each row's minimum and maximum at the index asked (the rest untouched), leaves
    rows holding a NaN to the caller, and refuses rows without room instead of writing past the vectors."""
    assert_kernel_built(weight_qparams_module)
    rows = torch.tensor([[3.0, -1.0, 2.0], [0.5, 0.25, 4.0]])
    vectors = weight_qparams_module.RangeVectors(5)
    vectors.low.fill_(9.0)
    vectors.high.fill_(9.0)
    assert vectors.write(2, rows)
    assert vectors.low.tolist() == [9.0, 9.0, -1.0, 0.25, 9.0]
    assert vectors.high.tolist() == [9.0, 9.0, 3.0, 4.0, 9.0]
    rows[1, 1] = float("nan")
    assert not vectors.write(0, rows)
    for start in (4, -1):
        with pytest.raises(ValueError, match="no room for 2 values"):
            vectors.write(start, rows)
    assert not vectors.write(0, rows.double())  # (the reductions' to do)


def test_range_vectors_take_a_contiguous_tensor_as_the_rows_its_memory_holds():
    """RangeVectors.write_in_memory_order writes what write writes for the tensor's view(count, -1) (a
    weight's observer rows per tensor or along dimension 0), and refuses tensors that are not contiguous or
    whose elements do not make that many rows."""
    assert_kernel_built(weight_qparams_module)
    weight = torch.randn(4, 3, 2, 2)
    for count in (1, 4):
        expected = weight_qparams_module.RangeVectors(6)
        got = weight_qparams_module.RangeVectors(6)
        for vectors in (expected, got):
            vectors.low.fill_(9.0)
            vectors.high.fill_(9.0)
        assert expected.write(1, weight.view(count, -1))
        assert got.write_in_memory_order(1, weight, count)
        assert got.low.tolist() == expected.low.tolist() and got.high.tolist() == expected.high.tolist()
    vectors = weight_qparams_module.RangeVectors(6)
    assert not vectors.write_in_memory_order(0, weight.transpose(0, 1), 3)
    assert not vectors.write_in_memory_order(0, weight, 5)
    with pytest.raises(ValueError, match="no room for 4 values"):
        vectors.write_in_memory_order(3, weight, 4)


def test_reference_modules_of_one_convert_keep_qparam_tensors_of_their_own():
    """swap-modules hands each reference module the batch's scale and zero point tensors without copying
    them: each must still be a tensor of its own, so writing one module's buffer changes no other's."""
    layers = nn.Sequential(*[nn.Linear(4, 4) for _ in range(3)]).eval()
    example = (torch.randn(2, 4),)
    observed = prepare_fx(layers, QConfigMapping().set_global(default_qconfig), example)
    observed(*example)
    converted = api.convert_to_reference_fx(observed)
    buffers = [m._buffers[name] for m in converted.modules() if isinstance(m, ref.Linear)
               for name in ("weight_scale", "weight_zero_point")]
    assert len(buffers) == 6
    assert len({_storage(b) for b in buffers}) == len(buffers)
