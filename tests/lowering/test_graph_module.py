"""qfx.lowering.codegen.graph_module: the module tree it installs equals the one GraphModule(root, graph) copies."""

from __future__ import annotations

import importlib

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx import GraphModule

from qfx.ir import lift

# the module, not the function of the same name that qfx.lowering.codegen re-exports
gmod = importlib.import_module("qfx.lowering.codegen.graph_module")

ATOMS = ["a", "b", "c", "0", "training", "forward", "weight"]


def _layout(module: nn.Module) -> list:
    """Everything about a module tree that _copy_attr decides: per module (in tree order) its path, class,
    and the names and identities of its children, parameters, buffers and plain attributes."""
    out = []
    for path, m in module.named_modules(remove_duplicate=False):
        out.append((path, type(m).__name__ if type(m).__name__ != "GraphModuleImpl" else "GM",
                    [(k, id(v) if type(v) is not nn.Module else _new_parent(v)) for k, v in m._modules.items()],
                    [(k, id(v)) for k, v in m._parameters.items()],
                    [(k, id(v)) for k, v in m._buffers.items()],
                    m.training))
    return out


def _new_parent(module: nn.Module) -> tuple:
    """An empty parent module as `_copy_attr` makes one (nn.Module()): its instance dict's names, in order,
    with each value's type and, for plain values, the value (tables are compared by `_layout` itself)."""
    return ("new parent", [(k, type(v), v if not isinstance(v, (dict, set)) else None)
                           for k, v in vars(module).items()])


@st.composite
def tables(draw):
    """{target: object} as a program's tables give them: paths of a random module tree (modules,
    parameters, buffers, some named like nn.Module's own attributes) picked in a random order, so that
    parents come before or after their children and targets repeat each other's prefixes."""
    def tree(depth: int) -> nn.Module:
        module = nn.Module()
        for name in draw(st.lists(st.sampled_from(ATOMS), max_size=3, unique=True)):
            if hasattr(nn.Module, name) or name in module.__dict__:
                continue  # nn.Module refuses such children; prepare's models never have them
            kind = draw(st.sampled_from(["module", "param", "buffer"] if depth < 2 else ["param", "buffer"]))
            if kind == "module":
                module.add_module(name, tree(depth + 1))
            elif kind == "param":
                module.register_parameter(name, nn.Parameter(torch.randn(2)))
            else:
                module.register_buffer(name, torch.randn(3))
        return module

    root = tree(0)
    entries = [(p, m) for p, m in root.named_modules(remove_duplicate=False) if p]
    entries += list(root.named_parameters(remove_duplicate=False)) + list(root.named_buffers(remove_duplicate=False))
    if not entries:
        return {}
    picked = draw(st.lists(st.sampled_from(entries), min_size=1, max_size=8))
    return dict(picked)


@settings(max_examples=150, deadline=None)
@given(tables(), st.booleans())
def test_install_matches_copy_attr(table, training):
    expected = GraphModule(nn.Module(), torch.fx.Graph())
    try:
        source = gmod._table_root(table, training)
        for target in table:
            gmod._copy_attr(source, expected, target)
    except Exception as exc:  # noqa: BLE001 - torch refuses some layouts; then so must we, the same way
        expected = exc
    actual = GraphModule(nn.Module(), torch.fx.Graph())
    try:
        source = gmod._table_root(table, training)
        on_class = gmod._ClassAttributes()
        for target in table:
            if not gmod._install(actual, target, table, on_class, gmod._empty_modules()):
                gmod._copy_attr(source, actual, target)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(expected, Exception) and type(exc) is type(expected) and str(exc) == str(expected)
        return
    assert not isinstance(expected, Exception), f"torch raised {expected!r}, qfx did not"
    assert _layout(actual) == _layout(expected)


def test_graph_module_of_a_lifted_model_matches_torch():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(3, 3), nn.ReLU()) for _ in range(3)])
            self.register_buffer("scale", torch.tensor(2.0))

        def forward(self, x):
            for b in self.blocks:
                x = b(x) * self.scale
            return self.blocks[0][0].weight.sum() + x

    traced = torch.fx.symbolic_trace(M())
    from qfx.lowering.codegen import codegen

    ours = codegen(lift(traced, observed=False))
    theirs = GraphModule(traced, traced.graph, class_name=type(traced).__name__)
    assert _layout(ours) == _layout(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.code == theirs.code


def test_a_plain_program_is_emitted_without_fx_code_generation(monkeypatch):
    """For a program the emitter takes, building the GraphModule never runs FX's code generator (neither for
    the graph nor for the empty graph GraphModule() starts from), and the result is still torch's."""
    from torch.fx.graph import CodeGen

    from qfx.lowering.codegen import codegen

    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    program = lift(traced, observed=False)
    codegen(program)  # (FX generates the empty graph's code once per process)
    calls = []
    original = CodeGen._gen_python_code

    def counted(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CodeGen, "_gen_python_code", counted)
    ours = codegen(program)
    assert calls == []
    assert ours.code == traced.code
    assert torch.equal(ours(torch.ones(2, 3)), traced(torch.ones(2, 3)))


def test_a_failure_while_emitting_names_the_node_and_keeps_its_type(monkeypatch):
    """An error escaping code generation is a CodegenError naming the node being emitted, also of the
    error's builtin type; the program it came from still emits afterwards."""
    import pickle

    from qfx.ir import CodegenError
    from qfx.lowering.codegen import codegen

    codegen_module = importlib.import_module("qfx.lowering.codegen")
    program = lift(torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU())), observed=False)
    original = codegen_module._append_node

    def failing(graph, op, target, args, kwargs, name, *rest):
        if name == "_1":
            raise KeyError("no such thing")
        return original(graph, op, target, args, kwargs, name, *rest)

    monkeypatch.setattr(codegen_module, "_append_node", failing)
    try:
        codegen(program)
    except CodegenError as error:
        assert isinstance(error, KeyError)
        assert str(error).startswith("code generation failed at node '_1': KeyError: 'no such thing'; if torch's "
                                      "convert_fx converts a copy of this model, this is a qfx bug")
        assert str(pickle.loads(pickle.dumps(error))) == str(error)
    else:
        raise AssertionError("codegen did not fail")
    monkeypatch.undo()
    assert codegen(program).code == torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU())).code


def test_graph_module_children_shared_with_the_observed_model_are_not_recompiled() -> None:
    """GraphModule.recompile recompiles every GraphModule child; a child the result shares with the observed
    model keeps its compiled forward (here its graph has an edit not yet compiled: recompiling would change
    what the observed model computes)."""
    import warnings

    import qfx
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_fx

    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Sequential(nn.Linear(6, 6))
            self.o = nn.Linear(6, 3)

        def forward(self, x):
            return self.o(self.s(x))

    torch.manual_seed(0)
    x = (torch.randn(4, 6),)
    config = PrepareCustomConfig().set_standalone_module_name("s", None, x, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = prepare_fx(Top().eval(), get_default_qconfig_mapping(), x, prepare_custom_config=config)
        model(*x)
        # no longer marked as an observed standalone module: convert keeps it as it is, shared
        model.s.meta["_observed_graph_module_attrs"].is_observed_standalone_module = False
        output = next(n for n in model.s.graph.nodes if n.op == "output")
        with model.s.graph.inserting_before(output):
            output.args = (model.s.graph.call_function(torch.neg, (output.args[0],)),)
        code, forward, before = model.s._code, type(model.s).forward, model(*x)
        for convert in (qfx.convert_to_reference_fx, qfx.convert_to_reference_decomposed_fx, qfx.convert_fx):
            convert(model)
            assert model.s._code is code and type(model.s).forward is forward
            assert torch.equal(model(*x), before)


class _LooseMeta(type):
    def __getattr__(cls, name):  # a metaclass answering every lookup
        return name


class _Loose(nn.Module, metaclass=_LooseMeta):
    pass


_CLASSES = [nn.Module, nn.Sequential, nn.Linear, type(GraphModule(nn.Module(), torch.fx.Graph())), _Loose]


@given(st.sampled_from(_CLASSES), st.one_of(st.sampled_from(ATOMS + ["mro", "__name__", "state_dict", "_version",
                                                                    "T_destination", "dump_patches"]),
                                            st.text(min_size=1, max_size=8)))
@settings(max_examples=300, deadline=None)
def test_class_attributes_answer_as_hasattr(kind: type, name: str) -> None:
    assert gmod._ClassAttributes().holds(kind, name) == hasattr(kind, name)
