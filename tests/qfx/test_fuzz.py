"""Fuzzing the public API: malformed inputs of every kind; only QfxErrors may escape, and the input survives.

Each test draws a damage (wrong argument types, damaged observers, edited graphs, mismatched configs, random
values for the keyword arguments), applies it to a fresh copy of a small calibrated observed model, calls a
public entry point, and asserts that the call either returns a GraphModule or raises a QfxError, and that
the model is bit-identical afterwards. About 300 examples per run in total.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
from hypothesis import given, note, reject, settings
from hypothesis import strategies as st
from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from torch.ao.quantization.backend_config import get_qnnpack_backend_config
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

import qfx
from qfx.testing.strategies import examples
from tests.support.snapshot import assert_unchanged, snapshot

EXAMPLE = (torch.randn(2, 3, 8, 8),)

ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    "reference": qfx.convert_to_reference_fx,
    "decomposed": qfx.convert_to_reference_decomposed_fx,
    "lowered": qfx.convert_fx,
    "raw": lambda model, **kw: qfx.convert(model, **{"is_reference": True, **kw}),
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.lin = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.relu(self.conv(x))) + 1.0


@functools.cache
def _base(qat: bool) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    if qat:
        model = prepare_qat_fx(Net().train(), get_default_qat_qconfig_mapping(), EXAMPLE)
    else:
        model = prepare_fx(Net().eval(), get_default_qconfig_mapping(), EXAMPLE)
    with torch.no_grad():
        model(*EXAMPLE)
    return model


def fresh(qat: bool = False) -> torch.fx.GraphModule:
    return copy.deepcopy(_base(qat))


def attempt(entry: str, model: Any, **kwargs: Any) -> None:
    """Call the entry point; only a QfxError may escape (any other exception fails the test)."""
    note(f"{entry}({type(model).__name__}, {sorted(kwargs)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = ENTRY_POINTS[entry](model, **kwargs)
        except qfx.QfxError as exc:
            note(f"QfxError: {exc}")
            return
    assert isinstance(result, torch.fx.GraphModule)


def checked(model: Any) -> Any:
    """Snapshot `model` (rejecting damage the snapshot itself cannot read)."""
    try:
        return snapshot(model)
    except Exception:  # noqa: BLE001 - e.g. state_dict cannot be taken of this damage
        reject()


junk = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=5),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.integers(), st.text(max_size=2)), st.just(object()), st.just(nn.Linear(2, 2)),
    st.just(ConvertCustomConfig()), st.just(get_default_qconfig_mapping("qnnpack")),
    st.just(get_qnnpack_backend_config()), st.just([qfx.Timing()]),
)
entries = st.sampled_from(sorted(ENTRY_POINTS))
KWARGS = {
    "reference": ("convert_custom_config", "qconfig_mapping", "backend_config", "_remove_qconfig", "instruments"),
    "decomposed": ("convert_custom_config", "qconfig_mapping", "backend_config", "instruments"),
    "lowered": ("convert_custom_config", "qconfig_mapping", "backend_config", "_remove_qconfig",
                "keep_original_weights", "instruments"),
    "raw": ("is_reference", "convert_custom_config", "is_standalone_module", "_remove_qconfig_flag",
            "qconfig_mapping", "backend_config", "is_decomposed", "keep_original_weights", "instruments"),
}


@settings(max_examples=examples(100), deadline=None)
@given(entry=entries, data=st.data())
def test_random_keyword_values(entry: str, data: st.DataObject) -> None:
    """Random values (wrong types, mismatched configs) for the keyword arguments each entry point takes."""
    names = data.draw(st.lists(st.sampled_from(KWARGS[entry]), min_size=1, max_size=3, unique=True))
    kwargs = {name: data.draw(junk, label=name) for name in names}
    model = fresh(data.draw(st.booleans(), label="qat"))
    before = checked(model)
    attempt(entry, model, **kwargs)
    assert_unchanged(before, model)


@settings(max_examples=examples(20), deadline=None)
@given(entry=entries, model=junk)
def test_not_a_model(entry: str, model: Any) -> None:
    """Anything but an observed GraphModule as the model."""
    attempt(entry, model)


def _observers(model: torch.fx.GraphModule) -> list[nn.Module]:
    out = []
    for name, module in model.named_modules():
        if name.startswith("activation_post_process"):
            out.append(getattr(module, "activation_post_process", module))
    return out


tensor_damage = st.one_of(
    st.none(),
    st.builds(lambda shape, v: torch.full(shape, v), st.lists(st.integers(0, 3), max_size=2).map(tuple),
              st.sampled_from([0.0, -1.0, 1e30, float("inf"), float("-inf"), float("nan")])),
    st.builds(lambda n: torch.arange(n), st.integers(0, 3)),
)


@settings(max_examples=examples(100), deadline=None)
@given(entry=entries, qat=st.booleans(), data=st.data())
def test_damaged_observers(entry: str, qat: bool, data: st.DataObject) -> None:
    """An observer's buffer removed, reshaped, retyped or filled with inf/nan."""
    model = fresh(qat)
    observers = _observers(model)
    observer = data.draw(st.sampled_from(observers), label="observer")
    buffers = sorted(observer._buffers)
    if not buffers:
        reject()
    name = data.draw(st.sampled_from(buffers), label="buffer")
    observer._buffers[name] = data.draw(tensor_damage, label="value")
    before = checked(model)
    attempt(entry, model)
    assert_unchanged(before, model)


def _second_output(g: torch.fx.Graph, nodes: list, i: int) -> None:
    with g.inserting_before(nodes[-1]):
        g.output(nodes[-1].args[0])


def _read_later_node(g: torch.fx.Graph, nodes: list, i: int) -> None:
    node = nodes[1 + i % (len(nodes) - 2)]
    node.args = (nodes[-2],) + tuple(node.args[1:])


def _missing_module(g: torch.fx.Graph, nodes: list, i: int) -> None:
    calls = [n for n in nodes if n.op == "call_module"]
    calls[i % len(calls)].target = "no.such.module"


def _missing_attribute(g: torch.fx.Graph, nodes: list, i: int) -> None:
    with warnings.catch_warnings(), g.inserting_after(nodes[0]):
        warnings.simplefilter("ignore")
        g.get_attr(f"missing_{i}")


def _drop_output(g: torch.fx.Graph, nodes: list, i: int) -> None:
    g.erase_node(nodes[-1])


def _swap_with_next(g: torch.fx.Graph, nodes: list, i: int) -> None:
    node = nodes[1 + i % (len(nodes) - 2)]
    node.append(node.prev) if node.prev.op != "root" else None


def _retarget_function(g: torch.fx.Graph, nodes: list, i: int) -> None:
    funcs = [n for n in nodes if n.op == "call_function"]
    funcs[i % len(funcs)].target = torch.sub if i % 2 else "not callable"


EDITS = [_second_output, _read_later_node, _missing_module, _missing_attribute, _drop_output,
         _swap_with_next, _retarget_function]


@settings(max_examples=examples(80), deadline=None)
@given(entry=entries, edit=st.sampled_from(EDITS), i=st.integers(0, 20))
def test_edited_graphs(entry: str, edit: Callable, i: int) -> None:
    """The observed graph edited after prepare (without recompile, as a careless user might)."""
    model = fresh()
    edit(model.graph, list(model.graph.nodes), i)
    before = checked(model)
    attempt(entry, model)
    assert_unchanged(before, model)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_the_undamaged_model_converts(entry: str) -> None:
    """The fuzzing is not vacuous: the undamaged model converts in every mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(ENTRY_POINTS[entry](fresh()), torch.fx.GraphModule)
