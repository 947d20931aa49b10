"""The quick paths of the verifier and the observer checks still name every problem the full checks name."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
from torch.ao.quantization.observer import MinMaxObserver

from qfx.ir import lift
from qfx.ir.namespace import Namespace
from qfx.ir.validate import _ClassFacts, check_observers
from qfx.ir.verify import problems


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.lin(x))


def _program():
    return lift(fx.symbolic_trace(Small()), observed=False)


def test_an_empty_name_recorded_in_the_namespace_is_still_named():
    program = _program()
    nodes = list(program.graph.nodes)
    nodes[-1] = nodes[-1].evolve(name="")
    broken = program.with_nodes(nodes, Namespace(program.namespace.used | {""}, program.namespace.base_count))
    assert any("name must be a non-empty string" in p for p in problems(broken))


def test_a_string_subclass_target_is_judged_by_the_full_checks():
    class Name(str):
        pass

    program = _program()
    nodes = [n.evolve(target=Name(n.target)) if n.op == "call_module" else n for n in program.graph.nodes]
    assert problems(program.with_nodes(nodes)) == []


def test_an_output_before_the_last_node_and_a_second_output_are_named():
    program = _program()
    nodes = list(program.graph.nodes)
    nodes.insert(len(nodes) - 1, nodes[-1].evolve(name="early_output"))
    broken = program.with_nodes(nodes, Namespace(program.namespace.used | {"early_output"},
                                                 program.namespace.base_count))
    found = problems(broken)
    assert any("the output node must be last" in p for p in found)
    assert any("graph has 2 output nodes" in p for p in found)


class _Disguised(nn.Module):
    """A module that claims to be another class (isinstance asks __class__)."""

    def __init__(self, claims):
        super().__init__()
        self.claims = claims

    @property
    def __class__(self):  # noqa: D105
        return self.claims

    def calculate_qparams(self):
        return torch.tensor([1.0]), torch.tensor([0])


def test_the_role_of_a_module_with_a_class_attribute_of_its_own_is_read_per_instance():
    classes = _ClassFacts()
    assert classes.of(_Disguised(nn.Module)) == (None, None)
    assert classes.of(_Disguised(MinMaxObserver))[0] == "observer"
    assert classes.of(_Disguised(nn.Module)) == (None, None)


class _DisguisedByLookup(nn.Module):
    """A module whose attribute lookup claims another class when asked for __class__."""

    def __init__(self, claims):
        super().__init__()
        self.claims = claims

    def __getattribute__(self, name):
        if name == "__class__":
            return object.__getattribute__(self, "claims")
        return super().__getattribute__(name)

    def calculate_qparams(self):
        return torch.tensor([1.0]), torch.tensor([0])


def test_the_role_of_a_module_with_its_own_attribute_lookup_is_read_per_instance():
    classes = _ClassFacts()
    assert classes.of(_DisguisedByLookup(nn.Module)) == (None, None)
    assert classes.of(_DisguisedByLookup(MinMaxObserver))[0] == "observer"


def test_observers_that_never_saw_data_are_named_in_order():
    calibrated = MinMaxObserver()
    calibrated(torch.ones(2))
    found = check_observers([("a", "a", calibrated), ("b", "b", nn.ReLU()), ("c", "c", MinMaxObserver()),
                             ("d", "d", MinMaxObserver())], may_hold_meta=False)
    assert found == ["'c' (node 'c')", "'d' (node 'd')"]
