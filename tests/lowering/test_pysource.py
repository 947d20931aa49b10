"""qfx.lowering.codegen.pysource writes the same PythonCode FX generates, or declines (None) and lets FX do it.

Every check compares `python_code(program)` with FX's own `codegen(program).graph.python_code("self")`:
the same source text, the same globals (same names, in the same order, bound to the same objects), the
same line map and prologue start. Programs come from the differential model zoo (every converted program,
nested standalone ones included), random traced and observed models, and hand-built graphs that reach the
rarer corners of FX's generator (operators, in-place operators, wrapped functions, annotations, defaults,
odd constants). Where the emitter must decline, the tests say why and check that it does.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import operator
import sys
import typing
import warnings
from typing import Any, NamedTuple

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from torch.fx.experimental import _config as fx_config

from qfx.ir import lift
from qfx.lowering.codegen import codegen
from qfx.lowering.codegen.pysource import fallback_reason, python_code, serving
from tests.support.models import CASES, convert_kwargs
from qfx.testing.strategies import examples, observed_models, traced_models
from tests.differential.test_reference_diff import MODES, attempt, fresh_observed

# Cases of the model zoo where the emitter is allowed to decline, with the reason (none today).
EXPECTED_FALLBACKS: dict[str, str] = {}


def fx_code(program: Any) -> Any:
    """FX's PythonCode for the module codegen builds from `program`."""
    return codegen(program).graph.python_code("self")


def assert_same_code(actual: Any, expected: Any) -> None:
    """Two PythonCode values are interchangeable for GraphModule.recompile."""
    assert actual.src == expected.src
    assert list(actual.globals) == list(expected.globals)
    for name, obj in expected.globals.items():
        assert actual.globals[name] is obj, f"global {name!r} is bound to another object"
    assert actual._lineno_map == expected._lineno_map
    assert actual._prologue_start == expected._prologue_start


def check(program: Any, *, emitted: bool = True) -> Any:
    """Our code equals FX's whenever we produce it; with `emitted`, we must produce it."""
    ours = python_code(program)
    if emitted:
        assert ours is not None, f"fell back: {fallback_reason(program)}"
    if ours is not None:
        assert_same_code(ours, fx_code(program))
    return ours


def lifted(root: nn.Module, graph: fx.Graph) -> Any:
    """The program of a plain (not observed) GraphModule built from `graph`."""
    return lift(fx.GraphModule(root, graph), observed=False)


# ---------------------------------------------------------------------------------------------------------
# the model zoo: every program the converters hand to codegen


@pytest.fixture
def codegen_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Records every program passed to codegen during the test (top level and standalone submodules);
    drops the purity instruments, which this file does not exercise, to keep the zoo fast."""
    import qfx.passes.manager
    import qfx.api

    calls: list = []
    real = sys.modules["qfx.lowering.codegen"].codegen

    def recording(program: Any) -> Any:
        calls.append(program)
        return real(program)

    monkeypatch.setattr(sys.modules["qfx.lowering.codegen"], "codegen", recording)
    monkeypatch.setattr(qfx.api, "codegen", recording)
    monkeypatch.setattr(qfx.passes.manager, "GLOBAL_INSTRUMENTS", [])
    return calls


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_zoo_programs_match_fx(case: Any, codegen_calls: list) -> None:
    modes = ["reference", "decomposed"] + (["raw"] if case.raw else [])
    for mode in modes:
        codegen_calls.clear()
        attempt(MODES[mode][0], fresh_observed(case), **convert_kwargs(case))
        for program in codegen_calls:
            check(program, emitted=case.name not in EXPECTED_FALLBACKS)


def test_zoo_reaches_programs(codegen_calls: list) -> None:
    """The recording hook sees the converters' programs (else the zoo test above would check nothing)."""
    case = next(c for c in CASES if c.name == "resnet_block")
    MODES["reference"][0](fresh_observed(case))
    assert len(codegen_calls) == 1


# ---------------------------------------------------------------------------------------------------------
# random models


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traced_models())
def test_random_traced_graphs(model_and_inputs: tuple) -> None:
    # DagModels use only features the emitter supports: it must never decline on them
    check(lift(model_and_inputs[0], observed=False))


def test_random_observed_and_converted_graphs() -> None:
    counts = collections.Counter()

    @settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(observed_models())
    def run(case: tuple) -> None:
        observed = case[0]
        programs = [lift(observed)]
        for mode in ("reference", "decomposed"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result, _ = attempt(MODES[mode][0], observed)
            if result is not None:
                programs.append(lift(result, observed=False))
        for program in programs:
            counts["emitted" if check(program, emitted=False) is not None else "declined"] += 1

    run()
    assert counts["emitted"] >= 0.9 * sum(counts.values()), counts


# ---------------------------------------------------------------------------------------------------------
# hand-built graphs: the corners of FX's generator


class Pair(NamedTuple):
    a: Any
    b: Any


class Color(enum.Enum):
    RED = 1


def user_function(*args: Any, **kwargs: Any) -> Any:
    return args[0]


torch.fx.wrap("wrapped_helper")


def wrapped_helper(x: torch.Tensor, k: int) -> torch.Tensor:
    return x * k


torch.fx.wrap("other_wrapped_helper")


def other_wrapped_helper(x: torch.Tensor, k: int) -> torch.Tensor:
    return x - k


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
        self.register_buffer("scale", torch.ones(2))


def test_operators_calls_and_constants() -> None:
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.placeholder("y", default_value=None)
    rest = g.placeholder("*rest")
    neg = g.call_function(operator.neg, (x,))
    add = g.call_function(operator.add, (neg, 0.25))
    item = g.call_function(operator.getitem, (add, (slice(None, neg, 2), Ellipsis, None)))
    size = g.call_method("size", (x, 0))
    sl = g.call_function(operator.getitem, (x, slice(1, size)))
    attr = g.call_function(getattr, (sl, "shape"))
    odd_attr = g.call_function(getattr, (sl, "not an identifier"))
    default_attr = g.call_function(getattr, (sl, "missing", None))
    iadd = g.call_function(operator.iadd, (item, 1.5))
    g.call_function(operator.setitem, (iadd, 0, 2.0))
    consts = g.call_function(user_function, (
        iadd, torch.float32, torch.quint8, torch.device("cpu"), torch.channels_last, torch.strided,
        "text", 3, -0.0, 0.0, math.inf, -math.inf, math.nan, 1e-8, True, None, 2j, Ellipsis,
        [attr, odd_attr], (default_attr,), (), torch.Size([2, 3]), Pair(size, 1), Color.RED,
        torch.ops.aten.add.Tensor,
    ), {"mapping": {"k": [x, (y, 1)], 2: slice(None)}, "flag": False})
    again = g.call_function(user_function, (consts, rest), {"dtype": torch.int8})
    method = g.call_method("clamp", (again,), {"min": 0.0, "max": 6.0})
    g.call_function(torch.relu, (method,))  # nobody reads it: deleted right away
    g.output((method, {"size": size}))
    check(lifted(nn.Module(), g))


def test_module_and_attribute_paths() -> None:
    root = Blocks()
    g = fx.Graph()
    x = g.placeholder("x")
    h = g.call_module("blocks.0", (x,))
    h = g.call_module("blocks.1", (h,))
    w = g.get_attr("blocks.0.weight")
    s = g.get_attr("scale")
    g.get_attr("blocks.0.bias")  # unused
    out = g.call_function(torch.nn.functional.linear, (h, w), {"bias": None})
    g.output(g.call_function(operator.mul, (out, s)))
    program = lifted(root, g)
    code = check(program)
    assert 'getattr(self.blocks, "0").weight' in code.src


@pytest.mark.parametrize("postponed", [True, False], ids=["string-annotations", "class-annotations"])
def test_annotations_defaults_and_wrapped_functions(postponed: bool) -> None:
    class Annotated(nn.Module):
        def forward(self, x: torch.Tensor, k: int = 2, *args: Any) -> torch.Tensor:
            return wrapped_helper(x, k) + other_wrapped_helper(x, 1)

    if not postponed:  # this file postpones annotations: give the signature real classes
        Annotated.forward.__annotations__.update(x=torch.Tensor, k=int, args=Any)
        Annotated.forward.__annotations__["return"] = torch.Tensor
    gm = fx.symbolic_trace(Annotated())
    assert any(n.meta.get("is_wrapped") for n in gm.graph.nodes)
    code = check(lift(gm, observed=False))
    assert code.src.count("wrap(") == 2 and code._prologue_start == 5
    if not postponed:
        assert "def forward(self, x : torch.Tensor, k : int = 2, *args):" in code.src


# FX names the globals of this module's objects after the module's qualified name
_GLOBAL_PREFIX = __name__.replace(".", "_")


def test_typed_nodes_and_user_types() -> None:
    g = fx.Graph()
    x = g.placeholder("x", type_expr=int)
    y = g.call_function(user_function, (x,), type_expr=Pair)
    z = g.call_method("bit_length", (y,), type_expr=int)
    g.output(z, type_expr=int)
    code = check(lifted(nn.Module(), g))
    assert code.globals[f"{_GLOBAL_PREFIX}_Pair"] is Pair and "-> int:" in code.src


def test_inplace_and_dead_values_delete_like_fx() -> None:
    g = fx.Graph()
    a = g.placeholder("a")
    b = g.placeholder("b")
    g.placeholder("unused")
    c = g.call_function(operator.imul, (a, b))
    d = g.call_function(operator.sub, (c, a))
    g.call_function(operator.invert, (d,))  # dead
    g.output(None)
    check(lifted(nn.Module(), g))


# ---------------------------------------------------------------------------------------------------------
# declining


def _clashing_program() -> Any:
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.create_node("call_function", user_function, (x,), name=f"{_GLOBAL_PREFIX}_user_function"))
    return lifted(nn.Module(), g)


def _operator_with_kwargs_program() -> Any:
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(operator.add, (x, 1), {"extra": 2}))
    return lifted(nn.Module(), g)


def _generic_annotation_program() -> Any:
    g = fx.Graph()
    g.output(g.placeholder("x", type_expr=typing.List[int]))
    return lifted(nn.Module(), g)


def _custom_codegen_program() -> Any:
    class Renamed(fx.graph.CodeGen):
        pass

    g = fx.Graph()
    g.output(g.placeholder("x"))
    g.set_codegen(Renamed())
    return lifted(nn.Module(), g)


def _transformed_body_program() -> Any:
    g = fx.Graph()
    g.output(g.placeholder("x"))
    g.on_generate_code(lambda _: (lambda body: ["pass\n", *body]))
    return lifted(nn.Module(), g)


@pytest.mark.parametrize("build", [
    _clashing_program,  # a global's name is a node's name: FX would rename one of them
    _operator_with_kwargs_program,  # FX drops the kwargs of operators it prints as Python operators
    _generic_annotation_program,
    _custom_codegen_program,
    _transformed_body_program,
])
def test_declines_what_it_does_not_reproduce(build: Any) -> None:
    program = build()
    assert python_code(program) is None
    assert fallback_reason(program)
    fx_code(program)  # FX itself copes (or raises the same way it always would)


def test_declines_under_fx_debug_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    g = fx.Graph()
    g.output(g.call_function(torch.relu, (g.placeholder("x"),)))
    program = lifted(nn.Module(), g)
    check(program)
    monkeypatch.setenv("FX_GRAPH_SHOW_META", "1")
    assert python_code(program) is None
    monkeypatch.delenv("FX_GRAPH_SHOW_META")
    with fx_config.patch(enrich_profiler_metadata=True):
        assert python_code(program) is None


def test_float_texts_keep_signed_zero_apart() -> None:
    for first, second in ((0.0, -0.0), (-0.0, 0.0)):
        g = fx.Graph()
        x = g.placeholder("x")
        g.output(g.call_function(user_function, (x, first, second, 0.5, 0.5)))
        code = check(lifted(nn.Module(), g))
        assert f"{first!r}, {second!r}" in code.src


# ---------------------------------------------------------------------------------------------------------
# serving precomputed code to GraphModule


def test_serving_hands_the_code_to_graph_module_once() -> None:
    root = Blocks()
    g = fx.Graph()
    g.output(g.call_module("blocks.0", (g.placeholder("x"),)))
    program = lifted(root, g)
    graph = codegen(program).graph
    code = python_code(program)
    assert code is not None
    marked = dataclasses.replace(code, src=code.src + "# served\n")  # tells the served code from FX's
    with serving(graph, marked):
        assert graph.python_code("self") is marked
        assert graph.python_code(root_module="self", record_func=False) is marked
        assert "# served" not in graph.python_code("self", verbose=True).src  # other requests go to FX
        built = fx.GraphModule(root, graph)
    assert "python_code" not in vars(graph)
    assert built.code == marked.src
    assert built(torch.ones(1, 2)).shape == (1, 2)
    with serving(graph, None):
        assert "python_code" not in vars(graph)
