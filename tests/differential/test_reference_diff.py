"""Differential tests: qfx's reference convert against torch's on the model zoo (tests/support/models.py).

For every case and mode, the calibrated observed model is converted by qfx and (on a deep copy) by torch.
qfx must leave the observed model exactly as it was, and produce the same code, state_dict, module tree,
root attributes and bit-identical outputs. Where torch refuses to convert, qfx must refuse too, with a qfx
error that is also an instance of torch's exception type.
"""

from __future__ import annotations

import copy
import functools
import importlib
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
from torch.ao.quantization import quantize_fx as tq

import qfx
from qfx.compare import copy_for_torch
from tests.support.models import CASES, CASES_BY_NAME, Case, convert_kwargs, prepare_case, run_inputs
from tests.support.snapshot import assert_same_model, assert_same_outputs, assert_unchanged, snapshot

torch_convert = importlib.import_module("torch.ao.quantization.fx.convert").convert

Converter = Callable[..., torch.fx.GraphModule]

# mode -> (qfx's converter, torch's converter); both take (observed, **convert_kwargs)
MODES: dict[str, tuple[Converter, Converter]] = {
    "reference": (qfx.convert_to_reference_fx, tq.convert_to_reference_fx),
    "decomposed": (qfx.convert_to_reference_decomposed_fx, tq._convert_to_reference_decomposed_fx),
    "raw": (functools.partial(qfx.convert, is_reference=True), functools.partial(torch_convert, is_reference=True)),
    "lowered": (qfx.convert_fx, tq.convert_fx),
}

OUTPUT_SEEDS = (100, 101)


@functools.cache
def _calibrated(case: Case) -> tuple[torch.fx.GraphModule, tuple]:
    return prepare_case(case)


def fresh_observed(case: Case) -> torch.fx.GraphModule:
    """A private copy of the case's calibrated observed model (prepared once per case per session)."""
    observed, _ = _calibrated(case)
    return copy_for_torch(observed)


def attempt(fn: Converter, model: Any, **kwargs: Any) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, the exception); seeded so any randomness is the same for qfx and torch."""
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(model, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - the point is to compare failures
        return None, exc


def assert_same_failure(qfx_exc: BaseException | None, torch_exc: BaseException, what: str) -> None:
    """torch failed: qfx must fail with a QfxError that is also an instance of torch's exception type."""
    assert qfx_exc is not None, f"torch raised {type(torch_exc).__name__}: {torch_exc} on {what}, qfx did not"
    assert isinstance(qfx_exc, qfx.QfxError), f"qfx raised a non-qfx error on {what}: {qfx_exc!r}"
    assert isinstance(qfx_exc, type(torch_exc)), (
        f"on {what} torch raised {type(torch_exc).__name__}: {torch_exc}; qfx raised "
        f"{type(qfx_exc).__name__}, which is not a {type(torch_exc).__name__}: {qfx_exc}"
    )


def assert_same_root_attributes(actual: torch.fx.GraphModule, expected: torch.fx.GraphModule) -> None:
    """Same public attributes on the root (preserved attributes, training flag) and the same meta."""
    public = lambda m: {k: v for k, v in vars(m).items() if not k.startswith("_")}  # noqa: E731
    a, e = public(actual), public(expected)
    assert sorted(a) == sorted(e), f"root attributes differ: qfx {sorted(a)} vs torch {sorted(e)}"
    for key, value in e.items():
        if isinstance(value, (bool, int, float, str, type(None))):
            assert a[key] == value, f"root attribute {key!r}: qfx {a[key]!r} vs torch {value!r}"
    assert sorted(actual.meta) == sorted(expected.meta), (
        f"meta keys differ: qfx {sorted(actual.meta)} vs torch {sorted(expected.meta)}"
    )
    if "_user_preserved_attributes" in expected.meta:
        ours, theirs = actual.meta["_user_preserved_attributes"], expected.meta["_user_preserved_attributes"]
        assert list(ours) == list(theirs), f"preserved attributes differ: qfx {list(ours)} vs torch {list(theirs)}"
        for key, value in theirs.items():
            if isinstance(value, (nn.Module, torch.fx.Graph)):
                # (the objects themselves are compared with the module trees; here: which object it is)
                assert type(ours[key]) is type(value), f"preserved {key!r}: qfx {type(ours[key])} vs torch {type(value)}"
                assert (ours[key] is getattr(actual, key, None)) == (value is getattr(expected, key, None)), key
            else:
                assert ours[key] == value, f"preserved {key!r}: qfx {ours[key]!r} vs torch {value!r}"


def assert_same_behaviour(actual: nn.Module, expected: nn.Module, inputs: tuple) -> None:
    """Bit-identical outputs; if torch's converted model cannot run on `inputs`, qfx's fails the same way."""
    try:
        with torch.no_grad():
            expected(*copy.deepcopy(inputs))
    except Exception as exc:  # noqa: BLE001
        with pytest.raises(type(exc)), torch.no_grad():
            actual(*copy.deepcopy(inputs))
        return
    assert_same_outputs(actual, expected, *inputs)


def check_against_torch(case: Case, mode: str, extra: Callable[[], dict[str, Any]] = dict) -> None:
    """The differential check of one case in one mode (see the module docstring); `extra` makes further
    convert arguments (fresh for each call)."""
    qfx_fn, torch_fn = MODES[mode]
    observed = fresh_observed(case)
    before = snapshot(observed)
    expected, torch_exc = attempt(torch_fn, copy_for_torch(observed), **{**convert_kwargs(case), **extra()})

    kwargs = {**convert_kwargs(case), **extra()}
    config_text = {k: repr(v) for k, v in kwargs.items()}
    actual, qfx_exc = attempt(qfx_fn, observed, **kwargs)
    assert_unchanged(before, observed)
    assert {k: repr(v) for k, v in kwargs.items()} == config_text, "qfx mutated a convert-time config"

    if torch_exc is not None:
        assert_same_failure(qfx_exc, torch_exc, f"{case.name}/{mode}")
        return
    if qfx_exc is not None:
        raise qfx_exc
    assert_same_model(actual, expected)
    assert_same_root_attributes(actual, expected)
    for seed in OUTPUT_SEEDS:
        assert_same_behaviour(actual, expected, run_inputs(case, seed))


def _params() -> list[Any]:
    params = []
    for case in CASES:
        modes = ["reference", "decomposed"] + (["raw"] if case.raw else [])
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        params += [pytest.param(case, mode, id=f"{case.name}-{mode}", marks=marks) for mode in modes]
    return params


@pytest.mark.parametrize(("case", "mode"), _params())
def test_matches_torch(case: Case, mode: str) -> None:
    check_against_torch(case, mode)


@pytest.mark.parametrize("mode", ["reference", "lowered"])
def test_a_model_copied_after_dead_code_elimination_matches_torch(mode: str) -> None:
    """A user's graph.eliminate_dead_code() then deepcopy: the copy's namespace no longer holds the erased
    nodes' names, which prepare's qconfig table still has."""
    case = CASES_BY_NAME["lstm_dynamic"]
    observed, _ = prepare_case(case)
    assert observed.graph.eliminate_dead_code()
    observed = copy_for_torch(observed)
    qfx_fn, torch_fn = MODES[mode]
    before = snapshot(observed)
    expected = torch_fn(copy_for_torch(observed))
    actual = qfx_fn(observed)
    assert_unchanged(before, observed)
    assert_same_model(actual, expected)
    assert_same_behaviour(actual, expected, run_inputs(case, OUTPUT_SEEDS[0]))


def _native() -> Any:
    from torch.ao.quantization.backend_config import get_native_backend_config

    return get_native_backend_config()


def _qnnpack() -> Any:
    from torch.ao.quantization.backend_config import get_qnnpack_backend_config

    return get_qnnpack_backend_config()


# (case, mode, extra convert arguments): flags and convert-time configs beyond each case's own
VARIANTS = [
    ("resnet_block", "reference", lambda: {"_remove_qconfig": False}),
    ("standalone_by_name", "reference", lambda: {"_remove_qconfig": False}),
    ("qat_convbn", "raw", lambda: {"_remove_qconfig_flag": False}),
    ("qat_convbn", "raw", lambda: {"is_decomposed": True}),
    ("per_channel_x86", "reference", lambda: {"backend_config": _native()}),
    ("per_channel_x86", "decomposed", lambda: {"backend_config": _qnnpack()}),
    ("mixed_none_qconfigs", "reference", lambda: {"qconfig_mapping": _prepare_mapping("mixed_none_qconfigs")}),
    ("qat_linear", "decomposed", lambda: {"qconfig_mapping": _prepare_mapping("qat_linear")}),
]


def _prepare_mapping(name: str) -> Any:
    """The case's own prepare-time mapping, passed again at convert time (a no-op for torch)."""
    return CASES_BY_NAME[name].qconfig_mapping()


@pytest.mark.parametrize(
    ("name", "mode", "extra"), [pytest.param(*v, id=f"{v[0]}-{v[1]}-{i}") for i, v in enumerate(VARIANTS)]
)
def test_variant_matches_torch(name: str, mode: str, extra: Callable[[], dict[str, Any]]) -> None:
    check_against_torch(CASES_BY_NAME[name], mode, extra)


# ---------------------------------------------------------------------------------------------------------
# arguments and errors


def _recorded(fn: Converter, model: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(0)
        result = fn(model, **kwargs)
    return result, sorted(str(w.message) for w in caught if issubclass(w.category, FutureWarning))


@pytest.mark.parametrize("mode", ["reference", "decomposed", "raw"])
def test_dict_configs_warn_and_convert_like_torch(mode: str) -> None:
    """Dict convert_custom_config / qconfig_mapping / backend_config: torch's FutureWarnings, torch's result."""
    from torch.ao.quantization.backend_config import get_native_backend_config

    case = CASES_BY_NAME["preserved_attributes"]
    mapping_case = CASES_BY_NAME["convert_time_qconfig_mapping"]
    qfx_fn, torch_fn = MODES[mode]
    for c, kwargs in (
        (case, {"convert_custom_config": case.convert_custom_config().to_dict()}),
        (mapping_case, {"qconfig_mapping": mapping_case.convert_qconfig_mapping().to_dict(),
                        "backend_config": get_native_backend_config().to_dict()}),
        (mapping_case, {"qconfig_mapping": {}}),  # an empty dict means "no convert-time mapping"
    ):
        observed = fresh_observed(c)
        before = snapshot(observed)
        expected, torch_warnings = _recorded(torch_fn, copy_for_torch(observed), **copy.deepcopy(kwargs))
        actual, qfx_warnings = _recorded(qfx_fn, observed, **kwargs)
        assert_unchanged(before, observed)
        assert torch_warnings, "torch warned nothing: the test no longer exercises dict configs"
        assert qfx_warnings == torch_warnings
        assert_same_model(actual, expected)
        assert_same_root_attributes(actual, expected)
        assert_same_outputs(actual, expected, *run_inputs(c, 100))


def test_dict_config_warning_points_at_the_caller() -> None:
    """The FutureWarning is attributed to the user's line, as torch's is (stacklevel)."""
    case = CASES_BY_NAME["preserved_attributes"]
    config = case.convert_custom_config().to_dict()
    for fn in (qfx.convert_to_reference_fx, tq.convert_to_reference_fx):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn(fresh_observed(case), convert_custom_config=config)
        future = [w for w in caught if issubclass(w.category, FutureWarning)]
        assert future and all(w.filename == __file__ for w in future), [(w.filename, w.message) for w in future]


@pytest.mark.parametrize("mode", ["reference", "decomposed", "lowered"])
def test_preserving_the_graph_preserves_the_converted_graph(mode: str) -> None:
    """Preserving `graph`: torch's convert rewrites the observed graph it read into the converted one, so
    the converted model keeps its own graph (and code, and outputs); the observed graph is not handed
    to the result (which would make it that graph's owning module)."""
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig

    case = CASES_BY_NAME["resnet_block"]
    qfx_fn, torch_fn = MODES[mode]
    observed = fresh_observed(case)
    before = snapshot(observed)
    config = ConvertCustomConfig().set_preserved_attributes(["graph"])
    expected, torch_exc = attempt(torch_fn, copy_for_torch(observed), convert_custom_config=config)
    actual, qfx_exc = attempt(qfx_fn, observed, convert_custom_config=config)
    assert torch_exc is None and qfx_exc is None, (torch_exc, qfx_exc)
    assert_unchanged(before, observed)
    assert observed.graph.owning_module is observed
    for model in (actual, expected):
        assert model.meta["_user_preserved_attributes"]["graph"] is model.graph
    assert actual.code == expected.code
    assert_same_outputs(actual, expected, *run_inputs(case, 100))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_histogram_qparams_under_another_default_dtype(dtype: torch.dtype) -> None:
    """torch's HistogramObserver scores its candidate ranges in tensors of the default dtype: converting
    while another one is the default gives its qparams, not float32's."""
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import HistogramObserver, default_weight_observer

    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    model = nn.Sequential(nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3), nn.Conv2d(6, 3, 1)).eval()
    activation = HistogramObserver.with_args(dtype=torch.quint8, reduce_range=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (reduce_range's deprecation)
        observed = tq.prepare_fx(model, QConfigMapping().set_global(QConfig(activation, default_weight_observer)),
                                 (x,))
    observed(x)
    qfx_fn, torch_fn = MODES["reference"]
    before = snapshot(observed)
    torch.set_default_dtype(dtype)
    try:
        expected, torch_exc = attempt(torch_fn, copy_for_torch(observed))
        actual, qfx_exc = attempt(qfx_fn, observed)
    finally:
        torch.set_default_dtype(torch.float32)
    assert torch_exc is None and qfx_exc is None, (torch_exc, qfx_exc)
    assert_unchanged(before, observed)
    assert_same_model(actual, expected)


@pytest.mark.parametrize("mode", ["reference", "decomposed", "raw"])
def test_not_observed_model(mode: str) -> None:
    """A traced but never prepared model: qfx says it was not observed (torch fails an assertion)."""
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    before = snapshot(traced)
    qfx_fn, torch_fn = MODES[mode]
    _, torch_exc = attempt(torch_fn, copy.deepcopy(traced))
    assert isinstance(torch_exc, AssertionError)
    with pytest.raises(qfx.NotObservedModelError, match="prepare_fx"):
        qfx_fn(traced)
    assert_unchanged(before, traced)


@pytest.mark.parametrize("mode", ["reference", "decomposed"])
def test_not_a_graph_module(mode: str) -> None:
    """A plain nn.Module: torch's ValueError, with torch's text, from a qfx error."""
    model = nn.Sequential(nn.Linear(3, 3))
    qfx_fn, torch_fn = MODES[mode]
    _, torch_exc = attempt(torch_fn, model)
    assert isinstance(torch_exc, ValueError)
    with pytest.raises(ValueError) as info:
        qfx_fn(model)
    assert isinstance(info.value, qfx.QfxError), f"not a qfx error: {info.value!r}"
    assert str(torch_exc) in str(info.value), f"qfx: {info.value}\ntorch: {torch_exc}"


def test_bad_qconfig_mapping_type() -> None:
    """A convert-time qconfig_mapping of the wrong type is refused as torch refuses it."""
    case = CASES_BY_NAME["functional_linear"]
    observed = fresh_observed(case)
    before = snapshot(observed)
    _, torch_exc = attempt(tq.convert_to_reference_fx, copy_for_torch(observed), qconfig_mapping=[("", None)])
    assert torch_exc is not None
    _, qfx_exc = attempt(qfx.convert_to_reference_fx, observed, qconfig_mapping=[("", None)])
    assert_same_failure(qfx_exc, torch_exc, "a list qconfig_mapping")
    assert_unchanged(before, observed)


def test_converting_twice_gives_equal_models() -> None:
    """qfx reads the observed model only, so a second convert of the same model equals the first."""
    case = CASES_BY_NAME["resnet_block"]
    observed = fresh_observed(case)
    first = qfx.convert_to_reference_fx(observed)
    second = qfx.convert_to_reference_fx(observed)
    assert_same_model(first, second)
    assert_same_outputs(first, second, *run_inputs(case, 100))
