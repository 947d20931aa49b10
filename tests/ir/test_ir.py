"""The IR values: verifier, printer, argument trees, name allocation, GraphBuilder, Program tables."""

from __future__ import annotations

import collections
import copy
import operator
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrsistent import pmap, pset
from torch.fx.graph import _Namespace

from qfx.ir import (
    DictArg, ListArg, NameAllocator, Namespace, Node, Ref, SliceArg, TupleArg, VerificationError, lift,
    print_program, verify,
)
from qfx.ir.args import freeze, map_refs, refs, render, render_leaf, thaw
from qfx.ir.rewrite import GraphBuilder, candidate_name
from qfx.ir.errors import CodegenError
from qfx.ir.verify import problems
from qfx.lowering.codegen import codegen
from tests.support.snapshot import assert_program_unchanged, snapshot_program
from qfx.testing.strategies import examples, traced_models


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.seq = nn.Sequential(nn.ReLU(), nn.Linear(4, 4))
        self.register_buffer("offset", torch.ones(4))

    def forward(self, x):
        y = self.lin(x) + self.offset
        z = torch.relu(y)
        return self.seq(z), y.sum()


@pytest.fixture
def program():
    return lift(fx.symbolic_trace(Small()), observed=False)


def _names(program):
    return [n.name for n in program.graph.nodes]


# --------------------------------------------------------------------------------------------------
# verify


def test_verify_accepts_lifted_program(program):
    assert verify(program) is program
    assert problems(program) == []


def _broken(program, nodes):
    return program.with_nodes(nodes)


def test_verify_duplicate_names(program):
    nodes = list(program.graph.nodes)
    nodes.insert(2, nodes[1])
    with pytest.raises(VerificationError, match=rf"node '{nodes[1].name}' \(#2, .*\): duplicate name"):
        verify(_broken(program, nodes))


def test_verify_use_before_def(program):
    nodes = list(program.graph.nodes)
    lin = program.graph["lin"]
    add = program.graph["add"]
    i, j = nodes.index(lin), nodes.index(add)
    nodes[i], nodes[j] = nodes[j], nodes[i]
    with pytest.raises(VerificationError) as info:
        verify(_broken(program, nodes))
    assert "node 'add'" in str(info.value) and "reads '%lin', which is defined later" in str(info.value)


def test_verify_reference_to_nowhere(program):
    nodes = [n.with_inputs_replaced({"add": Ref("ghost")}) if n.name == "relu" else n for n in program.graph.nodes]
    with pytest.raises(VerificationError, match="reads '%ghost', which is defined nowhere"):
        verify(_broken(program, nodes))


def test_verify_missing_module_target(program):
    nodes = [n.evolve(target="no.such.module") if n.name == "lin" else n for n in program.graph.nodes]
    with pytest.raises(VerificationError, match="node 'lin'.*no submodule 'no.such.module' in the module table"):
        verify(_broken(program, nodes))
    # removing the module from the table is caught the same way
    with pytest.raises(VerificationError, match="no submodule 'lin'"):
        verify(program.without_modules(["lin"]))


def test_verify_missing_attribute(program):
    nodes = [n.evolve(target="nowhere") if n.op == "get_attr" else n for n in program.graph.nodes]
    with pytest.raises(VerificationError, match="no attribute 'nowhere' in the tables"):
        verify(_broken(program, nodes))
    with pytest.raises(VerificationError, match="no attribute 'offset'"):
        verify(program.evolve(attributes=pmap()))


def test_verify_output_not_last(program):
    nodes = list(program.graph.nodes)
    out = nodes.pop()
    nodes.insert(len(nodes) - 1, out)
    with pytest.raises(VerificationError) as info:
        verify(_broken(program, nodes))
    text = str(info.value)
    assert "the output node must be last" in text
    assert "reads" in text  # the output now reads a node defined after it


def test_verify_two_outputs_and_none(program):
    nodes = list(program.graph.nodes)
    extra = nodes[-1].evolve(name="output_1")
    ns = program.namespace.allocator()
    ns.fresh("output_1")
    with pytest.raises(VerificationError, match="graph has 2 output nodes; exactly one is required"):
        verify(program.with_nodes(nodes + [extra], ns.freeze()))
    with pytest.raises(VerificationError, match="graph has 0 output nodes"):
        verify(_broken(program, nodes[:-1]))


def test_verify_name_outside_namespace(program):
    nodes = list(program.graph.nodes)
    nodes[1] = nodes[1].evolve(name="unrecorded")
    nodes = [n.with_inputs_replaced({program.graph.nodes[1].name: Ref("unrecorded")}) for n in nodes]
    with pytest.raises(VerificationError, match="node 'unrecorded'.*name not recorded in the namespace"):
        verify(_broken(program, nodes))


@pytest.mark.parametrize("bad", ["list", "torch", "class", "2fast", "a-b", "a\n", "x_\u0661", "\u00e4"])
def test_names_fx_would_rename_are_valid_and_written_as_fx_writes_them(program, bad):
    """A user may set node.name to anything; FX's code generator then renames it in the code, and so does
    codegen (through FX's own generator)."""
    old = program.graph.nodes[1].name
    nodes = [n.with_inputs_replaced({old: Ref(bad)}) for n in program.graph.nodes]
    nodes[1] = nodes[1].evolve(name=bad)
    renamed = _broken(program, nodes).evolve(namespace=Namespace(program.namespace.used | {bad}, program.namespace.base_count))
    verify(renamed)
    if bad == "a\n":  # FX's generator keeps it (its name regex takes a final newline), and fails
        with pytest.raises(CodegenError, match="SyntaxError|IndentationError"):
            codegen(renamed)
        return
    gm = codegen(renamed)
    assert [n.name for n in gm.graph.nodes][1] == bad
    assert gm.code == gm.graph.python_code("self").src  # (the emitter left it to FX's generator)


def test_verify_bad_ops_and_targets(program):
    nodes = list(program.graph.nodes)
    nodes[2] = nodes[2].evolve(op="call_everything")
    relu = [i for i, n in enumerate(nodes) if n.name == "relu"][0]
    nodes[relu] = nodes[relu].evolve(target="not callable")
    text = "\n".join(problems(_broken(program, nodes)))
    assert "unknown op" in text and "target is not callable" in text


def _quant_facts(**tables):
    from qfx.ir.program import QuantFacts

    base = dict(node_name_to_qconfig=pmap(), node_name_to_scope=pmap(), prepare_custom_config=None,
                equalization_node_name_to_qconfig=None, qconfig_mapping=None, is_qat=False, observed_node_names=pset())
    base.update(tables)
    return QuantFacts(**base)


def test_verify_accepts_quant_facts_naming_nodes_the_graph_never_had(program):
    # prepare records facts before fusion erases nodes, and a deepcopy after dead-code elimination rebuilds
    # the namespace from the nodes left: torch converts such models, so they are well formed
    stale = program.evolve(quant=_quant_facts(node_name_to_qconfig=pmap({"ghost": None, "lin": None}),
                                              observed_node_names=pset(["phantom"])))
    assert verify(stale) is stale


def test_verify_lists_every_problem_at_once(program):
    nodes = list(program.graph.nodes)
    nodes = [n.evolve(target="missing") if n.op == "call_module" else n for n in nodes]
    with pytest.raises(VerificationError) as info:
        verify(_broken(program, nodes), "after pass 'demo'")
    err = info.value
    assert len(err.problems) == 3  # one line per call_module node: lin, seq_0, seq_1
    assert str(err).startswith("IR verification failed after pass 'demo':")
    assert all(p in str(err) for p in err.problems)


# --------------------------------------------------------------------------------------------------
# printer


def test_printer_is_deterministic_and_readable(program):
    text = print_program(program)
    assert text == print_program(program)
    assert text.startswith("graph {\n  %x = placeholder[x]\n")
    assert "%lin = call_module[lin](%x)" in text
    assert "%relu = call_function[torch.relu](%add)" in text
    assert "@lin = Linear" in text and "@offset = tensor(shape=(4,), dtype=torch.float32)" in text
    assert "0x" not in text  # no object addresses


def test_printer_same_model_lifted_twice():
    gm = fx.symbolic_trace(Small())
    assert print_program(lift(gm, observed=False)) == print_program(lift(gm, observed=False))
    # an equal model built separately prints the same too
    assert print_program(lift(fx.symbolic_trace(Small()), observed=False)) == print_program(lift(gm, observed=False))


def test_printer_distinguishes_different_programs(program):
    nodes = [n.evolve(args=(Ref("add"), 2)) if n.name == "relu" else n for n in program.graph.nodes]
    changed = program.with_nodes(nodes)
    assert print_program(changed) != print_program(program)
    assert "%relu = call_function[torch.relu](%add, 2)" in print_program(changed)


def test_pretty_printers_show_a_program_briefly(program):
    """hypothesis reports a falsifying Program through its pretty printer, which would otherwise print an
    attrs class field by field (the whole graph and tables)."""
    from hypothesis.vendor.pretty import pretty

    assert pretty(program) == repr(program) == f"Program({len(program.graph)} nodes, {len(program.modules)} " \
        f"modules, {len(program.attributes)} attributes)"
    assert pretty([program]) == f"[{program!r}]"


def test_printer_equal_programs_print_equal(program):
    rebuilt = program.with_nodes(list(program.graph.nodes))
    assert rebuilt == program
    assert print_program(rebuilt) == print_program(program)


@settings(max_examples=examples(30))
@given(traced_models())
def test_printer_deterministic_on_generated_models(model_and_inputs):
    gm, _ = model_and_inputs
    one, two = lift(gm, observed=False), lift(gm, observed=False)
    assert one == two
    assert print_program(one) == print_program(two)
    assert print_program(lift(codegen(one), observed=False)) == print_program(one)


_PRINT_SCRIPT = """
import sys
import torch
import torch.fx as fx
import torch.nn as nn
from qfx.ir import lift, print_program

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(2, 2), nn.ReLU(), nn.Sequential(nn.Linear(2, 2))
        self.register_buffer("k", torch.ones(2))

    def forward(self, x):
        return {"p": self.c(self.b(self.a(x) + self.k)), "q": torch.cat([x, x], 1)[:, 1:]}

sys.stdout.write(print_program(lift(fx.symbolic_trace(Model()), observed=False)))
"""


def test_printer_is_stable_across_processes():
    # tables and facts live in hash-ordered maps; the text must not depend on the hash seed
    seed = "0" if os.environ.get("PYTHONHASHSEED") != "0" else "1"
    env = dict(os.environ, PYTHONHASHSEED=seed)
    result = subprocess.run([sys.executable, "-c", _PRINT_SCRIPT], capture_output=True, text=True, env=env,
                            cwd=str(Path(__file__).parents[2]), timeout=300)
    assert result.returncode == 0, result.stderr
    here: dict = {}
    exec(_PRINT_SCRIPT.replace("sys.stdout.write(", "here['text'] = ("), {"here": here})  # noqa: S102
    assert result.stdout == here["text"]
    assert "@c.0 = Linear" in here["text"] and "%c_0 = call_module[c.0]" in here["text"]


# --------------------------------------------------------------------------------------------------
# argument trees

Point = collections.namedtuple("Point", "x y")


class Marker:
    """Stands for an FX node in freeze/thaw tests."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Marker({self.name})"


_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, width=32), st.text(max_size=3),
    st.just(Ellipsis), st.sampled_from([torch.float32, torch.qint8, torch.device("cpu"), torch.channels_last]),
    st.sampled_from("abcdef").map(Marker),
)


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=3).map(tuple),
        st.lists(children, max_size=3),
        st.dictionaries(st.text("kq", min_size=1, max_size=2), children, max_size=3),
        st.tuples(children, children).map(lambda p: Point(*p)),
        st.tuples(children, children, children).map(lambda t: slice(*t)),
    )


_arg_trees = st.recursive(_leaves, _containers, max_leaves=12)


def _node_name(x):
    return x.name if isinstance(x, Marker) else None


def _same_tree(a, b):
    if isinstance(a, Marker):
        return isinstance(b, Marker) and a.name == b.name
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, slice):
        return all(_same_tree(getattr(a, f), getattr(b, f)) for f in ("start", "stop", "step"))
    return a == b


def _markers(value):
    if isinstance(value, Marker):
        yield value.name
    elif isinstance(value, dict):
        for v in value.values():
            yield from _markers(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _markers(v)
    elif isinstance(value, slice):
        for v in (value.start, value.stop, value.step):
            yield from _markers(v)


@settings(max_examples=examples(200))
@given(_arg_trees)
def test_freeze_thaw_roundtrip(value):
    frozen = freeze(value, _node_name)
    hash(frozen)  # frozen trees are immutable, hashable values
    assert list(refs(frozen)) == list(_markers(value))
    back = thaw(frozen, Marker)
    assert _same_tree(back, value)
    assert freeze(back, _node_name) == frozen
    assert render(frozen) == render(freeze(value, _node_name))
    # mapping refs to themselves changes nothing; renaming every ref renames exactly those
    assert map_refs(frozen, lambda r: r) == frozen
    renamed = map_refs(frozen, lambda r: Ref(r.name + "_"))
    assert list(refs(renamed)) == [n + "_" for n in _markers(value)]


def test_freeze_wraps_each_container_kind():
    a, b = Marker("a"), Marker("b")
    frozen = freeze((a, [b, 1], {"k": a}, Point(a, None), slice(a, b, None), Ellipsis), _node_name)
    assert frozen == (Ref("a"), ListArg((Ref("b"), 1)), DictArg((("k", Ref("a")),)), TupleArg(Point, (Ref("a"), None)),
                      SliceArg(Ref("a"), Ref("b"), None), Ellipsis)
    assert render(frozen) == "(%a, [%b, 1], {'k': %a}, Point(%a, None), slice(%a, %b, None), ...)"


# --------------------------------------------------------------------------------------------------
# names


_candidates = st.one_of(
    st.sampled_from(["x", "add", "add_1", "add_01", "relu", "linear", "output", "_", "_1", "a_b_2", "x_0"]),
    st.sampled_from(["None", "True", "list", "print", "input", "for", "lambda", "self", "torch", "__doc__"]),
    st.sampled_from(["", "1abc", "9", "a.b", "foo-bar", "a b", "ü", "add_", "add__1", "x_999999999999"]),
    st.from_regex(r"[a-z_][a-z0-9_]{0,4}(_[0-9]{1,2})?", fullmatch=True),
    st.text(alphabet="ab_1.-", max_size=5),
)


@settings(max_examples=examples(200))
@given(st.lists(_candidates, max_size=25), st.lists(_candidates, max_size=5))
def test_name_allocation_matches_torch_fx(prefix, candidates):
    fx_ns = _Namespace()
    for name in prefix:
        fx_ns.create_name(name, None)
    ours = Namespace(pset(fx_ns._used_names), pmap(fx_ns._base_count)).allocator()
    for name in candidates:
        assert ours.fresh(name) == fx_ns.create_name(name, None)
    frozen = ours.freeze()
    assert set(frozen.used) == fx_ns._used_names and dict(frozen.base_count) == fx_ns._base_count


def test_name_allocation_special_cases():
    alloc = NameAllocator(set(), {})
    assert alloc.fresh("print") == "print_1"  # builtins are not shadowed
    assert alloc.fresh("for") == "for_1"
    assert alloc.fresh("1x") == "_1x"
    assert alloc.fresh("") == "_unnamed"
    assert alloc.fresh("add") == "add" and alloc.fresh("add") == "add_1" and alloc.fresh("add_1") == "add_2"
    assert alloc.taken("add_1") and not alloc.taken("add_3")


def test_names_continue_from_a_lifted_graph():
    gm = fx.symbolic_trace(Small())
    program = lift(gm, observed=False)
    alloc = program.namespace.allocator()
    for candidate in ["add", "relu", "lin", "x", "seq_1", "sum_1", "output"]:
        expected = gm.graph.create_node("call_function", torch.relu, (), name=candidate).name
        assert alloc.fresh(candidate) == expected
    assert program.namespace == lift(fx.symbolic_trace(Small()), observed=False).namespace  # untouched


# --------------------------------------------------------------------------------------------------
# GraphBuilder


def test_builder_names_nodes_as_fx_does(program):
    gm = fx.symbolic_trace(Small())
    builder = GraphBuilder(program)
    fx_names = []
    for target in (torch.relu, operator.add, torch.relu, "sum", torch.ops.aten.add.Tensor):
        op = "call_method" if isinstance(target, str) else "call_function"
        fx_names.append(gm.graph.create_node(op, target, ()).name)
        assert builder.add(op, target, ()).name == fx_names[-1]
    assert fx_names[:3] == ["relu_1", "add_1", "relu_2"]
    assert candidate_name(torch.relu) == "relu" and candidate_name("sum") == "sum"
    assert builder.add("call_function", torch.relu, (), name="lin").name == "lin_1"


def test_builder_keep_replace_and_finish(program):
    before = snapshot_program(program)
    builder = GraphBuilder(program)
    for node in program.graph.nodes:
        if node.name == "relu":
            sig = builder.add("call_function", torch.sigmoid, (Ref("add"),))
            builder.replace_uses("relu", sig)
        else:
            builder.keep(node)
    new = builder.finish()
    assert_program_unchanged(before, program)
    assert new is not program and verify(new) is new
    assert "relu" not in new.graph and "sigmoid" in new.graph
    assert new.graph["seq_0"].args == (Ref("sigmoid"),)
    assert "sigmoid" in new.namespace.used and "sigmoid" not in program.namespace.used
    assert new.modules is program.modules and new.attributes is program.attributes
    out = codegen(new)
    assert "sigmoid = torch.sigmoid(add)" in out.code


def test_builder_replace_uses_chains(program):
    builder = GraphBuilder(program)
    builder.replace_uses("a", Ref("b"))
    builder.replace_uses("b", Ref("c"))
    node = Node("n", "call_function", operator.add, (Ref("a"), Ref("b")))
    assert builder.keep(node).args == (Ref("c"), Ref("c"))


def test_builder_redirect_emitted_and_position(program):
    builder = GraphBuilder(program)
    for node in program.graph.nodes:
        builder.keep(node)
    builder.redirect_emitted("add", Ref("lin"), skip=["relu"])
    assert builder.nodes[builder.position_of("relu")].args == (Ref("add"),)
    assert builder.nodes[builder.position_of("sum_1")].args == (Ref("lin"),)
    with pytest.raises(KeyError):
        builder.position_of("ghost")


def test_builder_edits_around_an_unknown_node_are_refused_before_a_name_is_taken(program):
    from qfx.ir.rewrite import GraphBuildError

    builder = GraphBuilder(program)
    for node in program.graph.nodes:
        builder.keep(node)
    names = builder.names.freeze()
    for edit in (lambda: builder.insert_after("ghost", "call_function", torch.relu, (Ref("lin"),)),
                 lambda: builder.insert_before("ghost", "call_function", torch.relu, (Ref("lin"),)),
                 lambda: builder.replace_input("ghost", "lin", Ref("add"))):
        with pytest.raises(GraphBuildError, match="no node named 'ghost' has been appended"):
            edit()
    assert builder.names.freeze() == names and len(builder.nodes) == len(program.graph.nodes)


def test_programs_are_not_hashable_as_equal_programs_would_hash_apart(program):
    assert program == program.evolve()
    with pytest.raises(TypeError):
        hash(program)


def test_printing_packed_weights_names_no_address():
    packed = torch.ops.quantized.linear_prepack(
        torch.quantize_per_tensor(torch.randn(2, 2), 0.1, 0, torch.qint8), None)
    text = render_leaf(packed)
    assert "0x" not in text and text == render_leaf(copy.deepcopy(packed)) and "LinearPackedParams" in text
    assert "0x" not in render_leaf(torch.Generator())


def test_builder_finish_with_changes(program):
    builder = GraphBuilder(program)
    for node in program.graph.nodes:
        builder.keep(node)
    new = builder.finish(attributes=pmap())
    assert len(new.attributes) == 0 and len(program.attributes) == 1
    assert new.graph == program.graph


# --------------------------------------------------------------------------------------------------
# Graph views and Program tables


def test_graph_views(program):
    g = program.graph
    assert g.users["add"] == ("relu", "sum_1")
    assert g.users["output"] == ()
    assert g.position["x"] == 0 and g.output().op == "output"
    assert [n.name for n in g.placeholders()] == ["x"]
    assert "lin" in g and "ghost" not in g and g["lin"].target == "lin"
    add = g["add"]
    assert list(add.inputs()) == ["lin", "offset"]
    assert add.kwarg("alpha", 7) == 7
    doubled = Node("d", "call_function", operator.add, (Ref("a"), Ref("a")), (("other", Ref("b")),))
    assert list(doubled.inputs()) == ["a", "a", "b"]
    assert doubled.kwarg("other") == Ref("b")


def test_program_with_and_without_modules(program):
    new_seq = nn.Sequential(nn.Tanh())
    swapped = program.with_modules({"seq": new_seq})
    assert swapped.modules["seq"] is new_seq and swapped.modules["seq.0"] is new_seq[0]
    assert "seq.1" not in swapped.modules and "seq.1" in program.modules
    assert program.modules["seq"] is not new_seq
    dropped = program.without_modules(["seq"])
    assert not any(k == "seq" or k.startswith("seq.") for k in dropped.modules)
    assert dropped.modules["lin"] is program.modules["lin"]
    assert program.resolve("offset") is program.attributes["offset"]
    assert program.resolve("seq.1") is program.modules["seq.1"]
    assert program.with_modules({}) is program and program.without_modules([]) is program


def test_program_modules_match_named_modules():
    gm = fx.symbolic_trace(Small())
    program = lift(gm, observed=False)
    assert list(program.modules) != [] and set(program.modules) == {
        n for n, _ in gm.named_modules(remove_duplicate=False) if n}
    for name, module in gm.named_modules(remove_duplicate=False):
        if name:
            assert program.modules[name] is module


def test_program_equality_is_by_identity_of_table_values(program):
    same = program.evolve()
    assert same == program
    other = program.with_modules({"lin": nn.Linear(4, 4)})
    assert other != program


def test_node_meta_is_frozen_ordered_and_picklable():
    import pickle

    from qfx.ir.graph import FrozenDict

    source = {"b": 1, "a": [2]}
    node = Node("x", "placeholder", "x", meta=source)
    source["c"] = 3  # the node keeps its own copy
    assert type(node.meta) is FrozenDict and list(node.meta) == ["b", "a"]
    for change in (lambda m: m.__setitem__("z", 0), lambda m: m.update(z=0), lambda m: m.pop("a"),
                   lambda m: m.clear(), lambda m: m.setdefault("z", 0), lambda m: m.__delitem__("a")):
        with pytest.raises(TypeError, match="immutable"):
            change(node.meta)
    again = pickle.loads(pickle.dumps(node))
    assert again == node and type(again.meta) is FrozenDict
    assert Node("y", "placeholder", "y", meta=node.meta).meta is node.meta


# Candidates aimed at split_candidate's identifier fast path: numeric suffixes after one or several
# underscores, empty bases, leading zeros, non-ASCII digits and letters (which must take FX's regex).
_suffix_candidates = st.one_of(
    st.from_regex(r"[a-zA-Z_]{0,3}(_{1,2}[0-9]{0,3}){0,3}", fullmatch=True),
    st.text(alphabet="aZ_09١²é.", max_size=7),
    st.sampled_from(["_0", "__0", "a_0_0", "a__01", "a_1_", "x_١", "x_²", "é_1", "for_1", "print_0"]),
)


@settings(max_examples=examples(300))
@given(st.lists(_suffix_candidates, max_size=20), st.lists(_suffix_candidates, min_size=1, max_size=8))
def test_name_allocation_fast_path_matches_torch_fx(prefix, candidates):
    from torch.fx.graph import _name_regex

    from qfx.ir.namespace import split_candidate

    fx_ns = _Namespace()
    for name in prefix:
        fx_ns.create_name(name, None)
    ours = Namespace(frozenset(fx_ns._used_names), dict(fx_ns._base_count)).allocator()
    for name in candidates:
        legal, base, num = split_candidate(name)
        if name.isascii() and name.isidentifier():  # the fast path: the regex's own reading
            assert (legal, base, num) == (name, *_name_regex.match(name).group(1, 2))
        assert ours.fresh(name) == fx_ns.create_name(name, None)
    frozen = ours.freeze()
    assert set(frozen.used) == fx_ns._used_names and dict(frozen.base_count) == fx_ns._base_count


class _ListsItsOwn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 2)

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):  # type: ignore[override]
        yield prefix, self  # hides its child


def _odd_tree() -> nn.Module:
    shared = nn.ReLU()
    tree = nn.Sequential(nn.Sequential(nn.Linear(2, 2), shared), shared, nn.Sequential())
    tree.add_module("missing", None)
    tree[0].add_module("deep", nn.Sequential(nn.Sequential(nn.Tanh())))
    tree._modules[""] = nn.Sequential(nn.Sigmoid())  # (add_module refuses the empty name; named_modules takes it)
    tree[0]._modules[""] = nn.Sequential(nn.Tanh())
    return tree


@settings(max_examples=examples(40), deadline=None)
@given(traced_models())
def test_submodule_table_holds_what_named_modules_lists(case):
    """The direct walk gives named_modules(remove_duplicate=False)'s entries by name but those named "" (the
    root's): same names, objects and order (shared, missing and empty-named children, and a module listing
    its own, included)."""
    from qfx.ir.program import submodule_table
    gm = case[0] if isinstance(case, tuple) else case
    for module in (gm, _odd_tree(), nn.Sequential(_ListsItsOwn(), nn.ReLU())):
        expected = list({name: sub for name, sub in module.named_modules(remove_duplicate=False) if name}.items())
        found = list(submodule_table(module).items())
        assert [name for name, _ in found] == [name for name, _ in expected]
        assert all(a is b for (_, a), (_, b) in zip(found, expected))


def test_nodes_and_refs_hold_exactly_what_they_were_made_with() -> None:
    """Node's and Ref's own __init__ (slot setters, not attrs' generated one) sets every field: the given
    values, the meta frozen (none: the shared empty meta), no input names yet; they stay frozen values."""
    import attrs
    from qfx.ir.frozendict import FrozenDict
    from qfx.ir.graph import NO_META

    ref = Ref("x")
    made = Node("add", "call_function", operator.add, (ref, 1), (("alpha", 2),), int, {"k": [1]})
    assert attrs.asdict(made, recurse=False) == {
        "name": "add", "op": "call_function", "target": operator.add, "args": (ref, 1),
        "kwargs": (("alpha", 2),), "type": int, "meta": {"k": [1]}, "_input_names": None}
    assert type(made.meta) is FrozenDict and made.input_name_tuple() == ("x",)
    assert Node("p", "placeholder", "p").meta is NO_META and Node("p", "placeholder", "p", meta=None).meta is NO_META
    assert made.evolve(name="b") == Node("b", "call_function", operator.add, (ref, 1), (("alpha", 2),), int,
                                         {"k": [1]})
    assert attrs.asdict(ref) == {"name": "x"} and ref == Ref("x") and hash(ref) == hash(Ref("x"))
    for value, field in ((made, "name"), (made, "meta"), (ref, "name")):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(value, field, "other")


_NODE_CHANGES = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["a", "b_1"]), "op": st.sampled_from(["call_function", "get_attr"]),
    "target": st.sampled_from([operator.add, "w"]), "args": st.sampled_from([(), (Ref("x"), 2)]),
    "kwargs": st.sampled_from([(), (("k", Ref("y")),)]), "type": st.sampled_from([None, torch.Tensor]),
    "meta": st.sampled_from([{}, {"m": 1}]),
})


@given(_NODE_CHANGES)
def test_node_evolve_is_attrs_evolve(changes):
    import attrs

    node = Node("n", "call_function", operator.mul, (Ref("x"), Ref("z")), (("alpha", 3),), None, {"k": 1})
    node.input_name_tuple()  # a cached view must not leak into the copy
    evolved = node.evolve(**changes)
    expected = attrs.evolve(node, **changes)
    assert evolved == expected and evolved.input_name_tuple() == expected.input_name_tuple()
    assert type(evolved.meta) is type(expected.meta)
    with pytest.raises(TypeError):
        node.evolve(nmae="typo")


def test_nodes_copy_and_pickle_as_equal_frozen_nodes() -> None:
    """A Node is built by its __new__ (a plain slots object then given Node's class): copies and pickles are
    rebuilt through it, equal to the original, still Nodes, still frozen and unhashable."""
    import pickle

    import attrs

    node = Node("add", "call_function", operator.add, (Ref("x"), 1), (("alpha", 2),), None, {"k": 1})
    node.input_name_tuple()
    for made in (copy.copy(node), copy.deepcopy(node), pickle.loads(pickle.dumps(node))):
        assert type(made) is Node and made == node and made.input_name_tuple() == ("x",)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            made.name = "other"
        with pytest.raises(TypeError):
            hash(made)
