"""fold-weights: prepack chains become packed-weight root attributes named as torch names them; the graph is
re-named by a fresh namespace; state_dict save/load hooks, pickling and
keep_original_weights behave as torch's."""

from __future__ import annotations

import copy
import io

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx

import qfx
from qfx.ir.verify import problems
from qfx.lowering.fold_weights.hooks import load_packed_weights, save_packed_weights
from qfx.passes import Pipeline
from qfx.passes.pipelines import LOWERED_PIPELINE
from qfx.api import convert_options
from qfx.ir import lift
from tests.lowering.test_lower_static_functionals import assert_lowered_like_torch
from tests.support.lowering import calibrated
from tests.support.snapshot import diff_values, run_model

_PASSES = LOWERED_PIPELINE.split(",")
BEFORE_FOLD = Pipeline.parse(",".join(_PASSES[:_PASSES.index("fold-weights")]))
FOLD = Pipeline.parse("fold-weights")
Q = torch.ops.quantized


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return F.linear(x, self.w, self.b)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))
        # a root attribute that already has the first packed-weight name: torch takes the next n
        self._packed_weight_0 = nn.Parameter(torch.randn(4, 4))
        self.sub = Inner()

    def forward(self, x):
        y = F.linear(x, self.w)
        y = F.linear(y, self._packed_weight_0)
        return self.sub(y)


INPUTS = (torch.randn(3, 6),)


def _observed() -> torch.fx.GraphModule:
    return calibrated(Model(), get_default_qconfig_mapping("x86"), INPUTS)


def _before_fold(observed: torch.fx.GraphModule, **options) -> qfx.Program:
    opts = convert_options(is_reference=False, convert_custom_config=None, **options)
    return BEFORE_FOLD.run(lift(observed, options=opts))


def test_prepacks_become_named_attributes_and_the_graph_is_renamed_afresh() -> None:
    before = _before_fold(_observed())
    assert len([n for n in before.graph.nodes if n.target is Q.linear_prepack]) == 3
    after = FOLD.run(before)
    getattrs = [n.target for n in after.graph.nodes if n.op == "get_attr" and "packed" in n.target]
    # root-level functionals: "" + _packed_weight_<n> (0 is taken by the model's own attribute);
    # the one inside `sub` is named after its module path
    assert getattrs == ["_packed_weight_1", "_packed_weight_2", "sub_packed_weight_0"]
    assert all(isinstance(after.attributes[t], torch.ScriptObject) for t in getattrs)
    assert not [n for n in after.graph.nodes if n.target is Q.linear_prepack]
    assert not [n for n in after.graph.nodes if n.target is torch.quantize_per_channel]  # chains removed
    # a fresh namespace: exactly the live names (the quant facts still name nodes of the earlier graph)
    assert after.namespace.used == frozenset(n.name for n in after.graph.nodes)
    assert problems(after) == []
    assert after.root.codegen is None and after.root.tracer_cls is None
    assert after.root.state_dict_hooks == (save_packed_weights,)
    assert after.root.load_state_dict_pre_hooks == (load_packed_weights,)


def test_lowered_model_equals_torch_and_new_nodes_are_named_as_in_torch() -> None:
    observed = _observed()
    ours = assert_lowered_like_torch(observed, INPUTS)
    theirs = convert_fx(copy.deepcopy(observed))
    for gm in (ours, theirs):  # a node added later is named from the rebuilt namespace
        gm._added = [gm.graph.create_node("call_function", torch.quantize_per_channel).name,
                     gm.graph.create_node("call_function", Q.linear_prepack).name]
    assert ours._added == theirs._added


def test_state_dict_save_load_and_pickle_match_torch() -> None:
    observed = _observed()
    ours, theirs = qfx.convert_fx(observed), convert_fx(copy.deepcopy(observed))
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    # the save hook adds the packed weights after the module's own state, in dir() (sorted) order
    assert [k for k in state if "packed_weight" in k] == ["_packed_weight_1", "_packed_weight_2",
                                                         "sub_packed_weight_0"]
    assert not diff_values(state, theirs.state_dict(), "state_dict")
    # loading a state_dict restores the packed weights (the pre-hook takes keys starting `_packed_weight`,
    # as torch's does; `sub_packed_weight_0` stays an unexpected key for both)
    fresh = qfx.convert_fx(observed)
    fresh.load_state_dict(torch_state_with_other_weights(observed), strict=False)
    expected_fresh = qfx.convert_fx(observed)
    expected_fresh_torch = convert_fx(copy.deepcopy(observed))
    expected_fresh_torch.load_state_dict(torch_state_with_other_weights(observed), strict=False)
    loaded = {name: getattr(fresh, name).unpack()[0] for name in ("_packed_weight_1", "_packed_weight_2")}
    for name, weight in loaded.items():
        assert torch.equal(weight, getattr(expected_fresh_torch, name).unpack()[0])
        assert not torch.equal(weight, getattr(expected_fresh, name).unpack()[0])
    assert torch.equal(run_model(fresh, INPUTS), run_model(expected_fresh_torch, INPUTS))
    assert not torch.equal(run_model(fresh, INPUTS), run_model(expected_fresh, INPUTS))
    # the whole module pickles and runs the same
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert torch.equal(run_model(again, INPUTS), run_model(ours, INPUTS))
    assert list(again.state_dict()) == [k for k in convert_fx_pickled(observed).state_dict()]


def torch_state_with_other_weights(observed: torch.fx.GraphModule) -> dict:
    """The state_dict of torch's conversion of the same observed model with every float weight halved.

    Halving (not negating) keeps the outputs apart whatever the random weights: two negated layers in a row
    cancel, and the output observer's rounding could then hide the difference."""
    other = copy.deepcopy(observed)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    return convert_fx(other).state_dict()


def convert_fx_pickled(observed: torch.fx.GraphModule) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(convert_fx(copy.deepcopy(observed)), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_keep_original_weights_matches_torch() -> None:
    observed = _observed()
    ours = qfx.convert_fx(observed, keep_original_weights=True)
    theirs = convert_fx(copy.deepcopy(observed), keep_original_weights=True)
    assert list(ours.original_weights_lookup) == list(theirs.original_weights_lookup)
    assert list(ours.original_weights_lookup) == ["_packed_weight_1", "_packed_weight_2", "sub_packed_weight_0"]
    assert not diff_values(ours.original_weights_lookup, theirs.original_weights_lookup, "lookup")
    # largest first: the float weight, then the chain's other state (per-channel scales, zero points)
    assert ours.original_weights_lookup["_packed_weight_1"][0].shape == (4, 6)


def test_a_chain_that_reads_an_input_is_not_folded() -> None:
    class InputWeight(nn.Module):
        def forward(self, x, w):
            return F.linear(x, w)

    example = (torch.randn(3, 4), torch.randn(2, 4))
    observed = calibrated(InputWeight(), get_default_qconfig_mapping("x86"), example)
    before = _before_fold(observed)
    prepacks = [n.name for n in before.graph.nodes if n.target is Q.linear_prepack]
    after = FOLD.run(before)
    assert [n.name for n in after.graph.nodes if n.target is Q.linear_prepack] == prepacks
    assert not [n for n in after.graph.nodes if n.op == "get_attr" and "packed" in n.target]
    assert_lowered_like_torch(observed, example)
