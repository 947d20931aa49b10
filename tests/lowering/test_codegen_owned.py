"""codegen gives the built module its own copy of what running it changes (observers, fake-quantizes, buffers
the graph writes in place): running a partial pipeline's result, or a converted model that keeps a QAT
standalone module's fake-quantize live, leaves the observed model exactly as it was."""

from __future__ import annotations

import copy
import operator
import warnings

import pytest
import torch
from torch import nn
from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
from torch.ao.quantization.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx, prepare_qat_fx

import qfx
from qfx.compare import copy_for_torch, fingerprint, same_fingerprint, same_value
from qfx.ir.lift import lift
from qfx.lowering.codegen import codegen
from qfx.lowering.codegen.owned import _written_arguments
from qfx.passes.manager import Pipeline

NET = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def observed_net(qat: bool) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 8, 8),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if qat:
            observed = prepare_qat_fx(copy.deepcopy(NET).train(), get_default_qat_qconfig_mapping("x86"), x)
        else:
            observed = prepare_fx(copy.deepcopy(NET).eval(), get_default_qconfig_mapping("x86"), x)
        observed(*x)
    return observed.eval()


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_running_a_partial_pipelines_result_records_in_its_own_observers(qat: bool) -> None:
    observed = observed_net(qat)
    before = fingerprint(observed)
    result = codegen(Pipeline.parse("apply-qconfig-mapping,dce").run(lift(observed)))
    recorded = copy.deepcopy(result.state_dict())
    with torch.no_grad():
        result(torch.randn(2, 3, 8, 8) * 100)
    assert same_fingerprint(before, fingerprint(observed))
    changed = [k for k, v in result.state_dict().items() if not same_value(v, recorded[k])]
    assert any("min_val" in k or "activation_post_process" in k for k in changed), changed


class Child(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class CallsItsStandaloneTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub, self.out = Child(), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.sub(self.sub(x)))


@pytest.mark.parametrize("ours, theirs", [(qfx.convert_fx, convert_fx),
                                          (qfx.convert_to_reference_fx, convert_to_reference_fx)])
def test_a_qat_standalone_module_called_twice_keeps_its_fake_quantize_to_itself(ours, theirs) -> None:
    """The standalone module's converted graph still runs fused_moving_avg_obs_fake_quant on its input
    (torch's too), which updates running min/max and qparams in place: those buffers are the result's."""
    torch.manual_seed(0)
    x = (torch.randn(3, 4),)
    mapping = get_default_qat_qconfig_mapping("x86")
    config = PrepareCustomConfig().set_standalone_module_name("sub", mapping, x, PrepareCustomConfig(), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_qat_fx(CallsItsStandaloneTwice().train(), mapping, x, prepare_custom_config=config)
        for _ in range(3):
            observed(torch.randn(3, 4))
        observed.eval()
        before = fingerprint(observed)
        result, reference = ours(observed), theirs(copy_for_torch(observed))
    assert any(n.target is torch.fused_moving_avg_obs_fake_quant for n in result.sub.graph.nodes)
    with torch.no_grad():
        for scale in (1.0, 100.0, 0.01):  # the results' running statistics move alike
            batch = torch.randn(3, 4) * scale
            assert same_value(result(batch), reference(batch))
    assert same_fingerprint(before, fingerprint(observed))


def test_buffers_the_graph_updates_in_place_are_copied_and_the_rest_shared() -> None:
    root = nn.Module()
    root.register_buffer("seen", torch.zeros(1))
    root.register_buffer("offset", torch.ones(1))
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.call_method("add_", (graph.get_attr("seen"), 1))
    graph.output(graph.call_function(operator.add, (x, graph.get_attr("offset"))))
    model = torch.fx.GraphModule(root, graph)
    built = codegen(lift(model, observed=False))
    assert same_value(built(torch.zeros(1)), torch.ones(1))
    assert model.seen.item() == 0 and built.seen.item() == 1
    assert built.offset is model.offset


class WritesItsBuffer(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.fc = nn.Linear(8, 8)
        self.register_buffer("buf", -torch.ones(8))

    def forward(self, x):
        y = self.fc(x)
        if self.how == "setitem":
            self.buf[0] = y.detach().mean()
        else:  # the out= argument is what the buffer's observer returns: the buffer itself
            torch.mul(self.buf, y.detach().mean(), out=self.buf)
        return y + self.buf


@pytest.mark.parametrize("how", ["setitem", "out"])
def test_writes_by_item_assignment_and_through_an_observer_are_seen(how: str) -> None:
    torch.manual_seed(0)
    x = (torch.randn(4, 8),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(WritesItsBuffer(how).eval(), get_default_qconfig_mapping("x86"), x)
    before = fingerprint(observed)
    result = codegen(Pipeline.parse("apply-qconfig-mapping").run(lift(observed)))
    assert result.buf is not observed.buf
    with torch.no_grad():
        result(torch.randn(4, 8) * 100)
    assert same_fingerprint(before, fingerprint(observed))
    assert not same_value(result.buf, observed.buf)


def test_written_arguments_come_from_the_operator_schemas_the_call_can_bind() -> None:
    none = frozenset()
    assert _written_arguments(torch.fused_moving_avg_obs_fake_quant, 12, none) == (
        (3, "running_min"), (4, "running_max"), (5, "scale"), (6, "zero_point"))
    # keyword-only: matched by name alone, and only where the call names it
    assert _written_arguments(torch.add, 2, frozenset({"out"})) == ((None, "out"),)
    assert _written_arguments(torch.add, 2, none) == ()
    assert _written_arguments(torch.ops.aten.add_.Tensor, 2, none) == ((0, "self"),)
    assert _written_arguments(operator.add, 2, none) == () and _written_arguments(torch.relu, 1, none) == ()
    # add_relu(qa, qb, scale, zero_point) cannot be the add_relu.out(qa, qb, out) overload, which writes its third
    add_relu = torch.ops.quantized.add_relu
    assert _written_arguments(add_relu, 4, none) == () and _written_arguments(add_relu, 3, none) == ((2, "out"),)


class FloatNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.out = nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.fc(self.bn(x)))


@pytest.mark.parametrize("convert", [qfx.convert_fx, qfx.convert_to_reference_fx,
                                     qfx.convert_to_reference_decomposed_fx])
def test_a_float_batch_norm_of_a_model_converted_in_training_mode_is_the_results_own(convert) -> None:
    """A QAT model converted without .eval() runs its float batch norm in training mode: its running
    statistics move on every run, in the result's own copy."""
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapping = get_default_qat_qconfig_mapping("x86").set_module_name("bn", None)
        observed = prepare_qat_fx(FloatNorm().train(), mapping, (x,))
        observed(x)
        before = fingerprint(observed)
        result = convert(observed)
    assert result.training and result.bn.running_mean is not observed.bn.running_mean
    result(torch.randn(8, 4) * 10)
    assert same_fingerprint(before, fingerprint(observed))


class PreActivation(nn.Module):
    """Batch norm and ReLU before a conv (DenseNet's order): lowered, they become a quantized BNReLU2d."""

    def __init__(self) -> None:
        super().__init__()
        self.bn, self.relu, self.conv = nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(self.relu(self.bn(x)))


def test_a_quantized_batch_norm_shares_its_statistics_and_running_it_changes_nothing() -> None:
    """from_float leaves a new quantized batch norm in training mode, but its kernel only reads the running
    statistics: the result shares them with the observed model, as it shares every tensor a run only reads,
    and running it leaves the observed model as it was."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(PreActivation().eval(), get_default_qconfig_mapping("x86"), (x,))
        observed(x)
        before = fingerprint(observed)
        result = qfx.convert_fx(observed)
    bn = result.bn
    assert type(bn) is torch.ao.nn.intrinsic.quantized.BNReLU2d and bn.training
    assert bn.running_mean is observed.bn[0].running_mean and bn.running_var is observed.bn[0].running_var
    result(torch.randn(2, 3, 8, 8) * 10)
    assert same_fingerprint(before, fingerprint(observed))
