"""apply-qconfig-mapping: the convert-time QConfigMapping, against torch.

The per-node table is compared with what torch's own helpers compute on a deep copy of the observed model
(`_update_qconfig_for_qat`, `_update_qconfig_for_fusion`, `_generate_node_name_to_qconfig`); errors with what
torch's convert_to_reference_fx raises; and, once the whole pipeline runs, the converted model with torch's.
"""

from __future__ import annotations

import copy
import operator
import re
import warnings

import pytest
import torch
import torch.nn as nn
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.qat as nniqat
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from qfx.testing.strategies import examples
from hypothesis import strategies as st
from torch.ao.quantization import (
    MinMaxObserver,
    QConfig,
    QConfigMapping,
    default_per_channel_qconfig,
    default_per_channel_weight_observer,
    default_qconfig,
    get_default_qat_qconfig,
)
from torch.ao.quantization.backend_config import get_native_backend_config
from torch.ao.quantization.fx.qconfig_mapping_utils import (
    _generate_node_name_to_qconfig,
    _update_qconfig_for_fusion,
    _update_qconfig_for_qat,
)
from torch.ao.quantization.qconfig import qconfig_equals
from torch.ao.quantization.quantize_fx import (
    _convert_to_reference_decomposed_fx,
    convert_to_reference_fx,
    prepare_fx,
    prepare_qat_fx,
)

import qfx
from qfx.ir.errors import ConvertError, UnsupportedError
from qfx.ir.lift import lift
from qfx.passes.apply_qconfig_mapping import (
    FusedQConfigError,
    QConfigMismatchError,
    apply_qconfig_mapping,
    check_node_qconfigs_narrow,
)
from qfx.passes.manager import Pipeline
from qfx.api import convert_options

warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\.quantization\.observer")

# ---------------------------------------------------------------------------------------------------------
# models


class Sub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        x = self.linear(x)
        x = F.linear(x, self.w)
        return torch.relu(x).reshape(-1, 4)


class Net(nn.Module):
    """Fusable conv/bn/relu, a method call, two instances of a submodule (module call, functional linear on a
    nested parameter), a top-level parameter, torch.add and an operator add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.bn = nn.BatchNorm2d(1)
        self.relu = nn.ReLU()
        self.sub = Sub()
        self.sub2 = Sub()
        self.c = nn.Parameter(torch.ones(4))

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = x.reshape(-1, 4)
        x = self.sub(x) + self.c
        x = self.sub2(x)
        return torch.add(x, 1)


def _inputs() -> torch.Tensor:
    return torch.randn(2, 1, 4, 4)


def _observed(kind: str, prepare_mapping: QConfigMapping) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model = Net().train() if kind == "qat" else Net().eval()
    prepare = prepare_qat_fx if kind == "qat" else prepare_fx
    gm = prepare(model, prepare_mapping, (_inputs(),))
    for _ in range(2):
        gm(_inputs())
    if kind == "qat":
        gm.eval()
    return gm


def ptq_qconfig():
    # fbgemm's default qconfig with a MinMax activation observer (its histogram observer is slow to convert)
    return QConfig(activation=MinMaxObserver.with_args(reduce_range=True), weight=default_per_channel_weight_observer)


def qat_qconfig():
    return get_default_qat_qconfig("fbgemm")


@pytest.fixture(scope="module")
def ptq() -> torch.fx.GraphModule:
    return _observed("ptq", QConfigMapping().set_global(ptq_qconfig()))


@pytest.fixture(scope="module")
def qat() -> torch.fx.GraphModule:
    return _observed("qat", QConfigMapping().set_global(qat_qconfig()).set_object_type(nn.Linear, qat_qconfig()))


@pytest.fixture(scope="module")
def fused_by_type() -> torch.fx.GraphModule:
    # Global None: only the object types listed are quantized, the fused ConvReLU2d through them.
    mapping = QConfigMapping()
    for t in (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear):
        mapping.set_object_type(t, ptq_qconfig())
    return _observed("ptq", mapping)


@pytest.fixture(scope="module")
def qat_fused_by_type() -> torch.fx.GraphModule:
    mapping = QConfigMapping()
    for t in (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear):
        mapping.set_object_type(t, qat_qconfig())
    return _observed("qat", mapping)


# ---------------------------------------------------------------------------------------------------------
# helpers


def _norm(value) -> str:
    """repr without addresses (the device closures torch adds to qconfigs differ per run)."""
    return re.sub(r"0x[0-9a-f]+", "0x?", repr(value))


def torch_table(gm: torch.fx.GraphModule, mapping: QConfigMapping) -> dict:
    """node -> qconfig as torch's convert computes it, on copies."""
    gm = copy.deepcopy(gm)
    mapping = copy.deepcopy(mapping)
    attrs = gm.meta["_observed_graph_module_attrs"]
    if attrs.is_qat:
        _update_qconfig_for_qat(mapping, get_native_backend_config())
    _update_qconfig_for_fusion(gm, mapping)
    modules = copy.deepcopy(dict(gm.named_modules(remove_duplicate=False)))
    return _generate_node_name_to_qconfig(gm, modules, gm.graph, mapping, attrs.node_name_to_scope)


def assert_same_table(ours, expected: dict) -> None:
    assert set(ours) == set(expected)
    for name, qconfig in expected.items():
        assert qconfig_equals(ours[name], qconfig), name
        # also the shape: device-adjusted constructors exactly where torch adjusts them
        assert _norm(ours[name]) == _norm(qconfig), name


def _snapshot(gm: torch.fx.GraphModule) -> tuple:
    attrs = gm.meta["_observed_graph_module_attrs"]
    return (
        gm.code,
        {k: v.clone() for k, v in gm.state_dict().items()},
        [(n, id(m), type(m), _norm(getattr(m, "qconfig", None))) for n, m in gm.named_modules()],
        id(attrs.node_name_to_qconfig),
        dict(attrs.node_name_to_qconfig),
        _norm(attrs.qconfig_mapping.to_dict()),
    )


def _assert_unchanged(gm: torch.fx.GraphModule, before: tuple) -> None:
    after = _snapshot(gm)
    assert after[0] == before[0]
    assert after[1].keys() == before[1].keys()
    assert all(torch.equal(after[1][k], before[1][k]) for k in before[1])
    assert after[2:] == before[2:]


def run_pass(gm: torch.fx.GraphModule, mapping, instrumented: bool = True):
    """(input program, output program) of the pass on `gm` with convert-time `mapping`; checks purity.

    `instrumented` runs it in a pipeline, under the session's instruments (verifier, input snapshots)."""
    options = convert_options(is_reference=True, convert_custom_config=None, qconfig_mapping=mapping)
    program = lift(gm, options=options)
    before_gm = _snapshot(gm)
    quant, table = program.quant, dict(program.quant.node_name_to_qconfig)
    mapping_text = _norm(options.qconfig_mapping.to_dict()) if options.qconfig_mapping is not None else None
    result = Pipeline([apply_qconfig_mapping]).run(program) if instrumented else apply_qconfig_mapping(program)
    assert program.quant is quant and dict(program.quant.node_name_to_qconfig) == table
    if options.qconfig_mapping is not None:
        assert _norm(options.qconfig_mapping.to_dict()) == mapping_text
    _assert_unchanged(gm, before_gm)
    return program, result


def torch_error(gm: torch.fx.GraphModule, mapping) -> BaseException:
    with pytest.raises(Exception) as info:
        convert_to_reference_fx(copy.deepcopy(gm), qconfig_mapping=copy.deepcopy(mapping))
    return info.value


def _ptq_mapping() -> QConfigMapping:
    return QConfigMapping().set_global(ptq_qconfig())


# ---------------------------------------------------------------------------------------------------------
# no mapping


def test_no_mapping_returns_the_same_program(ptq):
    program, result = run_pass(ptq, None)
    assert result is program


def test_empty_dict_means_no_mapping(ptq):
    program, result = run_pass(ptq, {})
    assert result is program


# ---------------------------------------------------------------------------------------------------------
# narrowing: the table equals torch's


NARROWINGS = {
    "module_name": lambda: _ptq_mapping().set_module_name("sub", None),
    "nested_module_name": lambda: _ptq_mapping().set_module_name("sub2.linear", None),
    "object_type_function": lambda: _ptq_mapping().set_object_type(torch.add, None),
    "object_type_module": lambda: _ptq_mapping().set_object_type(nn.Linear, None),
    "object_type_method": lambda: _ptq_mapping().set_object_type("reshape", None),
    "object_type_fused": lambda: _ptq_mapping().set_object_type(nni.ConvReLU2d, None),
    "regex": lambda: _ptq_mapping().set_module_name_regex(r"sub2\.l.*", None),
    "regex_everything": lambda: _ptq_mapping().set_module_name_regex(r".*", None),
    "order_function": lambda: _ptq_mapping().set_module_name_object_type_order("sub", F.linear, 0, None),
    "order_module": lambda: _ptq_mapping().set_module_name_object_type_order("sub2", nn.Linear, 0, None),
    "mixed": lambda: (
        _ptq_mapping()
        .set_module_name("sub", None)
        .set_object_type(torch.add, None)
        .set_object_type(nn.Conv2d, None)
        .set_module_name_regex(r"sub2\.w", None)
    ),
    "same_as_prepare": _ptq_mapping,
}

# a node each narrowing must switch off (proves the mapping was applied, not only copied)
NOW_NONE = {
    "module_name": "sub_linear", "nested_module_name": "sub2_linear", "object_type_function": "add_1",
    "object_type_module": "sub_linear", "object_type_method": "reshape", "object_type_fused": "conv",
    "regex": "sub2_linear", "regex_everything": "c", "order_function": "linear",
    "order_module": "sub2_linear", "mixed": "sub_w",
}


@pytest.mark.parametrize("name", sorted(NARROWINGS))
def test_narrowing_matches_torch(ptq, name):
    mapping = NARROWINGS[name]()
    program, result = run_pass(ptq, mapping)
    table = result.quant.node_name_to_qconfig
    assert_same_table(table, torch_table(ptq, mapping))
    if name in NOW_NONE:
        node = NOW_NONE[name]
        assert program.quant.node_name_to_qconfig[node] is not None and table[node] is None
    else:
        assert all((table[k] is None) == (v is None) for k, v in program.quant.node_name_to_qconfig.items())
    # only the table changes; modules keep prepare's qconfig attributes, as in torch's output
    assert result.modules is program.modules and result.graph is program.graph
    assert attrs_without_table(result.quant) == attrs_without_table(program.quant)


def attrs_without_table(facts) -> dict:
    import attrs

    return {k: v for k, v in attrs.asdict(facts, recurse=False).items() if k != "node_name_to_qconfig"}


def test_observers_get_no_entry(ptq):
    _, result = run_pass(ptq, NARROWINGS["module_name"]())
    observers = [n.name for n in result.graph.nodes if n.op == "call_module" and "activation_post_process" in n.target]
    assert observers and not set(observers) & set(result.quant.node_name_to_qconfig)


def test_module_qconfigs_get_device_adjusted_constructors(ptq):
    _, result = run_pass(ptq, NARROWINGS["order_function"]())
    qconfig = result.quant.node_name_to_qconfig["sub2_linear"]
    assert "factory_kwargs" in qconfig.weight.callable_args
    # functions have no module: their qconfig is the mapping's own
    assert "factory_kwargs" not in result.quant.node_name_to_qconfig["add_1"].weight.callable_args


KEYS = st.sampled_from([
    ("module_name", "sub"), ("module_name", "sub2"), ("module_name", "sub.linear"), ("module_name", "conv"),
    ("object_type", torch.add), ("object_type", operator.add),
    ("object_type", torch.relu), ("object_type", "reshape"), ("object_type", nn.Linear),
    ("object_type", F.linear), ("regex", r"sub\d?\.w"), ("regex", r"sub2.*"), ("regex", r"con"),
    ("order", ("sub2", F.linear, 0)), ("order", ("", nn.Linear, 0)), ("order", ("sub", torch.relu, 1)),
])


@settings(max_examples=examples(15), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(KEYS, max_size=5))
def test_random_narrowings_match_torch(ptq, keys):
    mapping = _ptq_mapping()
    for kind, key in keys:
        if kind == "module_name":
            mapping.set_module_name(key, None)
        elif kind == "object_type":
            mapping.set_object_type(key, None)
        elif kind == "regex":
            mapping.set_module_name_regex(key, None)
        else:
            mapping.set_module_name_object_type_order(*key, None)
    _, result = run_pass(ptq, mapping, instrumented=False)
    assert_same_table(result.quant.node_name_to_qconfig, torch_table(ptq, mapping))


# ---------------------------------------------------------------------------------------------------------
# QAT and fused modules


def test_qat_object_types_follow_the_qat_module_swap(qat):
    # prepare swapped nn.Linear for nnqat.Linear; an nn.Linear entry at convert must still reach it
    mapping = QConfigMapping().set_global(qat_qconfig()).set_object_type(nn.Linear, None)
    program, result = run_pass(qat, mapping)
    assert_same_table(result.quant.node_name_to_qconfig, torch_table(qat, mapping))
    assert program.quant.node_name_to_qconfig["sub_linear"] is not None
    assert result.quant.node_name_to_qconfig["sub_linear"] is None


def test_qat_module_name(qat):
    mapping = QConfigMapping().set_global(qat_qconfig()).set_object_type(nn.Linear, qat_qconfig())
    mapping.set_module_name("conv", None)
    program, result = run_pass(qat, mapping)
    assert_same_table(result.quant.node_name_to_qconfig, torch_table(qat, mapping))
    assert result.quant.node_name_to_qconfig["conv"] is None


def _by_type(qconfig, none=(), fused=None) -> QConfigMapping:
    mapping = QConfigMapping()
    for t in (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear):
        mapping.set_object_type(t, None if t in none else qconfig)
    if fused is not None:
        # prepare recorded the fused type in its mapping; a convert mapping has to list it too
        mapping.set_object_type(fused, None if nn.Conv2d in none else qconfig)
    return mapping


CONV_PARTS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)


@pytest.mark.parametrize("none", [(), CONV_PARTS, (nn.Linear,)], ids=["same", "fused", "linear"])
def test_fused_module_takes_its_parts_qconfig(fused_by_type, none):
    mapping = _by_type(ptq_qconfig(), none, fused=nni.ConvReLU2d)
    program, result = run_pass(fused_by_type, mapping)
    assert_same_table(result.quant.node_name_to_qconfig, torch_table(fused_by_type, mapping))
    assert isinstance(program.modules["conv"], nni.ConvReLU2d)
    assert (result.quant.node_name_to_qconfig["conv"] is None) == (nn.Conv2d in none)


def _qat_by_type(fused_qconfig) -> QConfigMapping:
    # The QAT ConvBnReLU2d's children are `bn` and `weight_fake_quant`: torch's fusion rule compares their
    # object-type qconfigs, so BatchNorm2d must map to None (as the fake-quantize type does) at convert.
    mapping = _by_type(qat_qconfig(), none=(nn.BatchNorm2d,))
    return mapping.set_object_type(nni.ConvBnReLU2d, fused_qconfig)


@pytest.mark.parametrize("quantize_conv", [True, False])
def test_qat_fused_module(qat_fused_by_type, quantize_conv):
    mapping = _qat_by_type(qat_qconfig() if quantize_conv else None)
    program, result = run_pass(qat_fused_by_type, mapping)
    assert_same_table(result.quant.node_name_to_qconfig, torch_table(qat_fused_by_type, mapping))
    assert isinstance(program.modules["conv"], nniqat.ConvBnReLU2d)
    assert (result.quant.node_name_to_qconfig["conv"] is None) != quantize_conv


def test_dict_mapping_warns_and_applies(ptq):
    as_dict = {"": ptq_qconfig(), "module_name": [("sub", None)], "object_type": [(torch.add, None)]}
    with pytest.warns(FutureWarning, match="Passing a QConfig dictionary to convert is deprecated"):
        _, result = run_pass(ptq, as_dict)
    expected = torch_table(ptq, QConfigMapping.from_dict(as_dict))
    assert_same_table(result.quant.node_name_to_qconfig, expected)
    assert result.quant.node_name_to_qconfig["sub_linear"] is None


# ---------------------------------------------------------------------------------------------------------
# mappings that change a qconfig: the same error as torch


def _without_linear() -> QConfigMapping:
    mapping = QConfigMapping()
    for t in (nn.Conv2d, nn.BatchNorm2d, nn.ReLU):
        mapping.set_object_type(t, ptq_qconfig())
    return mapping


def _fused_conflict() -> QConfigMapping:
    return _by_type(ptq_qconfig(), none=(nn.Conv2d,))


MISMATCHES = {
    "global_changed": ("ptq", lambda: QConfigMapping().set_global(default_qconfig)),
    "empty_mapping": ("ptq", QConfigMapping),
    "object_type_changed": ("fused", lambda: _by_type(ptq_qconfig()).set_object_type(nn.Linear, default_qconfig)),
    "object_type_missing": ("fused", _without_linear),
    "new_module_name_changes_node": ("ptq", lambda: _ptq_mapping().set_module_name("sub", default_per_channel_qconfig)),
    "order_changes_node": ("ptq", lambda: _ptq_mapping().set_module_name_object_type_order("sub2", torch.relu, 0,
                                                                                          default_qconfig)),
    "fused_parts_disagree": ("fused", _fused_conflict),
    # the fused type prepare added to its mapping is missing from convert's
    "fused_type_missing": ("fused", lambda: _by_type(ptq_qconfig(), none=CONV_PARTS)),
}


@pytest.mark.parametrize("name", sorted(MISMATCHES))
def test_changing_a_qconfig_raises_like_torch(ptq, fused_by_type, name):
    kind, make = MISMATCHES[name]
    gm = ptq if kind == "ptq" else fused_by_type
    mapping = make()
    expected = torch_error(gm, mapping)
    before = _snapshot(gm)
    with pytest.raises(ConvertError) as info:
        qfx.convert_to_reference_fx(gm, qconfig_mapping=mapping)
    _assert_unchanged(gm, before)
    err = info.value
    assert isinstance(err, type(expected))
    assert _norm(str(err)) == _norm(str(expected))
    assert isinstance(err, FusedQConfigError if name == "fused_parts_disagree" else QConfigMismatchError)


QAT_MISMATCHES = {
    "object_type_changed": ("qat", lambda: QConfigMapping().set_global(qat_qconfig())
                            .set_object_type(nn.Linear, ptq_qconfig()), QConfigMismatchError),
    "fused_parts_disagree": ("qat_fused", lambda: _by_type(qat_qconfig(), fused=nni.ConvBnReLU2d),
                             FusedQConfigError),
}


@pytest.mark.parametrize("name", sorted(QAT_MISMATCHES))
def test_qat_mapping_changing_a_qconfig_raises_like_torch(request, name):
    kind, make, error = QAT_MISMATCHES[name]
    gm = request.getfixturevalue("qat" if kind == "qat" else "qat_fused_by_type")
    mapping = make()
    expected = torch_error(gm, mapping)
    with pytest.raises(error) as info:
        qfx.convert_to_reference_fx(gm, qconfig_mapping=mapping)
    assert isinstance(info.value, type(expected))
    assert _norm(str(info.value)) == _norm(str(expected))


def test_node_check_reports_the_first_violation_in_graph_order():
    q, other = ptq_qconfig(), default_qconfig
    prepared = {"c": q, "b": q, "a": q}
    # 'b' comes first in the graph: its missing entry is reported before 'a's changed qconfig
    with pytest.raises(QConfigMismatchError, match="^Expected key b in convert node_name_to_qconfig$"):
        check_node_qconfigs_narrow(prepared, {"c": None, "a": other}, order=["c", "b", "a"])
    with pytest.raises(QConfigMismatchError, match="^Expected k a to have the same value in prepare and convert"):
        check_node_qconfigs_narrow(prepared, {"c": None, "b": q, "a": other}, order=["c", "b", "a"])
    check_node_qconfigs_narrow(prepared, {"c": None, "b": q, "a": None, "new": other}, order=["c", "b", "a"])


# ---------------------------------------------------------------------------------------------------------
# end to end (needs the whole reference pipeline)


def _module_facts(gm: torch.fx.GraphModule) -> list:
    # the root's class is made per GraphModule instance: compare its name only
    return [(n, type(m).__name__ if not n else type(m), _norm(getattr(m, "qconfig", None)))
            for n, m in gm.named_modules()]


def _qfx_or_skip(convert, gm, **kwargs):
    try:
        return convert(gm, **kwargs)
    except UnsupportedError as exc:
        if "is not implemented yet" in str(exc):
            pytest.skip(f"reference pipeline not complete: {exc}")
        raise


E2E = {
    "ptq_module_name": ("ptq", lambda: NARROWINGS["mixed"]()),
    "ptq_regex": ("ptq", lambda: NARROWINGS["regex"]()),
    "ptq_order": ("ptq", lambda: NARROWINGS["order_function"]()),
    "ptq_dict": ("ptq", lambda: {"": ptq_qconfig(), "module_name": [("sub2", None)]}),
    "qat_linear": ("qat", lambda: QConfigMapping().set_global(qat_qconfig()).set_object_type(nn.Linear, None)),
    "fused_none": ("fused", lambda: _by_type(ptq_qconfig(), none=CONV_PARTS, fused=nni.ConvReLU2d)),
    "qat_fused_none": ("qat_fused", lambda: _qat_by_type(None)),
    "qat_fused_same": ("qat_fused", lambda: _qat_by_type(qat_qconfig())),
}


# the decomposed convert keeps the modules' qconfig attributes: check them on a few cases
E2E_RUNS = [(name, False) for name in sorted(E2E)] + [("ptq_module_name", True), ("qat_fused_none", True)]


@pytest.mark.parametrize(("name", "decomposed"), E2E_RUNS, ids=[f"{n}-{'decomposed' if d else 'reference'}"
                                                                for n, d in E2E_RUNS])
def test_end_to_end_equals_torch(request, name, decomposed):
    kind, make = E2E[name]
    gm = request.getfixturevalue({"ptq": "ptq", "qat": "qat", "fused": "fused_by_type",
                                  "qat_fused": "qat_fused_by_type"}[kind])
    ours_fn = qfx.convert_to_reference_decomposed_fx if decomposed else qfx.convert_to_reference_fx
    theirs_fn = _convert_to_reference_decomposed_fx if decomposed else convert_to_reference_fx
    before = _snapshot(gm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ours = _qfx_or_skip(ours_fn, gm, qconfig_mapping=make())
        theirs = theirs_fn(copy.deepcopy(gm), qconfig_mapping=make())
    _assert_unchanged(gm, before)
    assert ours.code == theirs.code
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key, value in theirs_state.items():
        assert type(ours_state[key]) is type(value), key
        if not isinstance(value, torch.Tensor):
            assert ours_state[key] == value, key
        elif value.is_quantized:
            assert torch.equal(ours_state[key].int_repr(), value.int_repr()), key
        else:
            assert ours_state[key].dtype == value.dtype and torch.equal(ours_state[key], value), key
    # modules keep prepare's qconfig attributes (visible when the decomposed convert keeps them)
    assert _module_facts(ours) == _module_facts(theirs)
    x = _inputs()
    assert torch.equal(ours(x), theirs(x))
