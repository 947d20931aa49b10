"""quantized_from_reference builds exactly what torch's from_reference builds, packing the weight once.

For every Linear/Conv family class it builds through the placeholder-free subclass, the module that comes
out must be indistinguishable from `from_reference`'s: torch's own class, the same attributes in the same
order (every module in the tree), the same state_dict and packed weights, the same repr and bit-identical
outputs, under each quantized engine.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.nn.quantized.reference as nnqr
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import (
    default_dynamic_qconfig,
    default_per_channel_weight_observer,
    default_weight_observer,
    float16_dynamic_qconfig,
    per_channel_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
)
from torch.ao.quantization.utils import get_qparam_dict

from qfx.lowering.support import engine
from qfx.lowering.support.engine import quantized_from_reference
from tests.support.constructions import record_constructions
from tests.support.snapshot import diff_tensors, diff_values, freeze_value, module_state
from qfx.testing.strategies import examples

ENGINES = [e for e in ("x86", "fbgemm", "qnnpack") if e in torch.backends.quantized.supported_engines]
CONV = {1: (torch.nn.Conv1d, nnqr.Conv1d, nnq.Conv1d, nniq.ConvReLU1d, nni.ConvReLU1d),
        2: (torch.nn.Conv2d, nnqr.Conv2d, nnq.Conv2d, nniq.ConvReLU2d, nni.ConvReLU2d),
        3: (torch.nn.Conv3d, nnqr.Conv3d, nnq.Conv3d, nniq.ConvReLU3d, nni.ConvReLU3d)}
CONV_TRANSPOSE = {1: (torch.nn.ConvTranspose1d, nnqr.ConvTranspose1d, nnq.ConvTranspose1d),
                  2: (torch.nn.ConvTranspose2d, nnqr.ConvTranspose2d, nnq.ConvTranspose2d),
                  3: (torch.nn.ConvTranspose3d, nnqr.ConvTranspose3d, nnq.ConvTranspose3d)}


def _reference(float_module: torch.nn.Module, reference_class: type, per_channel: bool) -> torch.nn.Module:
    observer = (default_per_channel_weight_observer if per_channel else default_weight_observer)()
    observer(float_module.weight)
    return reference_class.from_float(float_module, get_qparam_dict(observer))


@st.composite
def lowerings(draw):
    """(quantized class, reference module, from_reference's extra arguments, an input the result takes)."""
    kind = draw(st.sampled_from(["linear", "linear_relu", "dynamic_linear", "dynamic_linear_relu", "conv",
                                 "conv_relu", "conv_transpose", "embedding", "embedding_bag", "dynamic_lstm",
                                 "dynamic_gru", "batchnorm", "bn_relu", "layernorm"]))
    torch.manual_seed(draw(st.integers(0, 1000)))
    bias = draw(st.sampled_from([True, False, "strided"]))  # "strided": a bias that is not contiguous
    per_channel = draw(st.booleans())
    scale, zero_point = torch.tensor(draw(st.floats(0.01, 1.0))), torch.tensor(draw(st.integers(0, 255)))
    if kind.startswith("embedding"):
        return _embedding_lowering(draw, kind)
    if kind in ("dynamic_lstm", "dynamic_gru"):
        return _rnn_lowering(draw, kind)
    if kind in ("batchnorm", "bn_relu"):
        return _batchnorm_lowering(draw, scale, zero_point, with_relu=kind == "bn_relu")
    if kind == "layernorm":
        return _layernorm_lowering(draw, scale, zero_point)
    if kind.endswith("linear") or kind.endswith("linear_relu"):
        n_in, n_out = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        linear = _with_bias(torch.nn.Linear(n_in, n_out, bias=bool(bias)), bias)
        ref = _reference(linear, nnqr.Linear, per_channel)
        x = torch.randn(2, n_in)
        if kind.endswith("relu"):
            ref = _fused(nni.LinearReLU(linear, torch.nn.ReLU()), ref)
        if kind.startswith("dynamic"):
            return (nniqd.LinearReLU if kind.endswith("relu") else nnqd.Linear), ref, (), x
        return (nniq.LinearReLU if kind.endswith("relu") else nnq.Linear), ref, (scale, zero_point), \
            torch.quantize_per_tensor(x, 0.05, 3, torch.quint8)
    dims = draw(st.sampled_from([1, 2] + ([3] if torch.backends.quantized.engine != "qnnpack" else [])))
    if kind == "conv_transpose":
        return _transposed_lowering(draw, dims, bias, scale, zero_point)
    float_class, reference_class, q_class, fused_q_class, fused_class = CONV[dims]
    groups = draw(st.integers(1, 3))
    n_in, n_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = draw(st.integers(1, 3))
    conv = float_class(n_in, n_out, kernel, stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)),
                       dilation=draw(st.integers(1, 2)), groups=groups, bias=bool(bias))
    conv = _with_bias(conv, bias)
    ref = _reference(conv, reference_class, per_channel)
    x = torch.quantize_per_tensor(torch.randn(1, n_in, *([7] * dims)), 0.05, 3, torch.quint8)
    if kind == "conv_relu":
        return fused_q_class, _fused(fused_class(conv, torch.nn.ReLU()), ref), (scale, zero_point), x
    return q_class, ref, (scale, zero_point), x


def _layernorm_lowering(draw, scale: torch.Tensor, zero_point: torch.Tensor) -> tuple:
    """A LayerNorm (with trained affine parameters, or none) as the lowering meets it."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    layer_norm = torch.nn.LayerNorm(shape, eps=draw(st.sampled_from([1e-5, 1e-3])),
                                    elementwise_affine=draw(st.booleans()))
    if layer_norm.elementwise_affine:
        with torch.no_grad():
            layer_norm.weight.normal_()
            layer_norm.bias.normal_()
    x = torch.quantize_per_tensor(torch.randn(2, *shape), 0.05, 3, torch.quint8)
    return nnq.LayerNorm, layer_norm, (scale, zero_point), x


def _batchnorm_lowering(draw, scale: torch.Tensor, zero_point: torch.Tensor, with_relu: bool) -> tuple:
    """A BatchNorm2d/3d, or one fused with a ReLU, as the lowering meets it (trained statistics or none;
    affine: from_reference reads the weight's device)."""
    dims = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, 9))
    bn = (torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm3d)(
        n, eps=draw(st.sampled_from([1e-5, 1e-3])), momentum=draw(st.sampled_from([0.1, None])),
        track_running_stats=draw(st.booleans())).eval()
    if bn.running_mean is not None:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.quantize_per_tensor(torch.randn(1, n, *([4] * dims)), 0.05, 3, torch.quint8)
    if with_relu:
        fused = (nni.BNReLU2d if dims == 2 else nni.BNReLU3d)(bn, torch.nn.ReLU())
        return (nniq.BNReLU2d if dims == 2 else nniq.BNReLU3d), fused, (scale, zero_point), x
    return (nnq.BatchNorm2d if dims == 2 else nnq.BatchNorm3d), bn, (scale, zero_point), x


def _transposed_lowering(draw, dims: int, bias: bool | str, scale: torch.Tensor, zero_point: torch.Tensor) -> tuple:
    """A transposed conv with per-tensor weights (prepare_fx refuses per-channel weight observers for them)."""
    float_class, reference_class, q_class = CONV_TRANSPOSE[dims]
    groups = draw(st.integers(1, 3))
    n_in, n_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    stride, dilation = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    conv = float_class(n_in, n_out, draw(st.integers(1, 3)), stride=stride, padding=draw(st.integers(0, 1)),
                       output_padding=draw(st.integers(0, max(stride, dilation) - 1)), groups=groups,
                       bias=bool(bias), dilation=dilation)
    ref = _reference(_with_bias(conv, bias), reference_class, False)
    x = torch.quantize_per_tensor(torch.randn(1, n_in, *([5] * dims)), 0.05, 3, torch.quint8)
    return q_class, ref, (scale, zero_point), x


def _embedding_lowering(draw, kind: str) -> tuple:
    """A weight-only Embedding or EmbeddingBag (8- or 4-bit rows, float qparams), and indices for it."""
    rows, dim = draw(st.integers(1, 12)), 2 * draw(st.integers(1, 6))
    four_bit = draw(st.booleans())
    observer = (float_qparams_weight_only_qconfig_4bit if four_bit else float_qparams_weight_only_qconfig).weight()
    max_norm = draw(st.sampled_from([None, 1.5]))
    if kind == "embedding":
        module = torch.nn.Embedding(rows, dim, padding_idx=draw(st.sampled_from([None, 0, -1])), max_norm=max_norm)
        reference_class, q_class = nnqr.Embedding, nnq.Embedding
    else:
        module = torch.nn.EmbeddingBag(rows, dim, mode=draw(st.sampled_from(["sum", "mean", "max"])),
                                       include_last_offset=draw(st.booleans()), max_norm=max_norm)
        reference_class, q_class = nnqr.EmbeddingBag, nnq.EmbeddingBag
    observer(module.weight)
    ref = reference_class.from_float(module, get_qparam_dict(observer))
    indices = torch.randint(0, rows, (6,))
    return q_class, ref, (), indices


def _rnn_lowering(draw, kind: str) -> tuple:
    """A reference LSTM or GRU as convert builds it (qint8 per-tensor or per-channel, or float16 weights)
    for a dynamic quantized one, and an input sequence."""
    float_class, reference_class, q_class = ((torch.nn.LSTM, nnqr.LSTM, nnqd.LSTM) if kind == "dynamic_lstm"
                                             else (torch.nn.GRU, nnqr.GRU, nnqd.GRU))
    input_size, hidden_size = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    # (without biases torch's from_reference fails: its set_weight_bias reads them)
    module = float_class(input_size, hidden_size, num_layers=draw(st.integers(1, 2)),
                         batch_first=draw(st.booleans()), bidirectional=draw(st.booleans()))
    # (qnnpack has no float16 linear prepack: there both from_references fail)
    float16 = [float16_dynamic_qconfig] if torch.backends.quantized.engine != "qnnpack" else []
    qconfig = draw(st.sampled_from([default_dynamic_qconfig, per_channel_dynamic_qconfig, *float16]))
    qparams: dict = {"is_decomposed": False}
    for name in module._flat_weights_names:
        if name.startswith("weight"):
            observer = qconfig.weight()
            if observer.dtype == torch.qint8:
                observer(getattr(module, name))
            qparams[name] = get_qparam_dict(observer)
    ref = reference_class.from_float(module, qparams)
    return q_class, ref, (), torch.randn(3, 2, input_size)


def _with_bias(module: torch.nn.Module, bias: bool | str) -> torch.nn.Module:
    if bias == "strided":
        module.bias = torch.nn.Parameter(torch.randn(2 * module.bias.numel())[::2])
    return module


def _inference_tensors(module: torch.nn.Module) -> list[str]:
    """Where the module holds an inference tensor: its state_dict, and the unpacked packed params."""
    found = [k for k, v in module.state_dict().items() if isinstance(v, torch.Tensor) and torch.is_inference(v)]
    for name, sub in module.named_modules():
        packed = sub.__dict__.get("_packed_params")
        if isinstance(packed, torch.ScriptObject):
            for i, t in enumerate(packed.unpack()[:2]):
                if isinstance(t, torch.Tensor) and torch.is_inference(t):
                    found.append(f"{name}._packed_params[{i}]")
    return found


def _fused(fused: torch.nn.Module, reference: torch.nn.Module) -> torch.nn.Module:
    """A fused module whose first child is the reference module, as swap-modules leaves it."""
    fused[0] = reference
    return fused


def _tree(module: torch.nn.Module) -> list:
    return [(name, list(vars(m)), module_state(m)) for name, m in module.named_modules()]


@pytest.mark.parametrize("engine_name", ENGINES)
@settings(max_examples=examples(40), deadline=None)
@given(data=st.data())
def test_same_module_as_from_reference(engine_name, data):
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine_name
    try:
        q_class, ref, args, x = data.draw(lowerings())
        ours = quantized_from_reference(q_class, ref, *args, where="test")
        theirs = q_class.from_reference(ref, *args)
        assert type(ours) is q_class
        assert [(n, keys) for n, keys, _ in _tree(ours)] == [(n, keys) for n, keys, _ in _tree(theirs)]
        assert not diff_values([s for *_, s in _tree(ours)], [s for *_, s in _tree(theirs)])
        assert not diff_values(freeze_value(ours.state_dict()), freeze_value(theirs.state_dict()))
        assert repr(ours) == repr(theirs)
        assert not _inference_tensors(ours)  # (nothing made in a special mode reaches the module)
        a, b = _outcome(ours, x), _outcome(theirs, x)
        assert a[0] == b[0] and (torch.equal(a[1], b[1]) if a[0] == "value" else a[1] == b[1])
        assert type(pickle.loads(pickle.dumps(ours))) is q_class
    finally:
        torch.backends.quantized.engine = previous


def _outcome(module: torch.nn.Module, x: torch.Tensor) -> tuple[str, object]:
    """("value", the output's integers or values) or ("error", the message): qnnpack refuses some transposed
    convs when it runs them."""
    try:
        out = module(x)
    except RuntimeError as exc:
        return "error", str(exc)
    if isinstance(out, tuple):  # an RNN's (output, hidden state)
        return "value", torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(out)])
    return "value", out.int_repr() if out.is_quantized else out


def _below_view_tracking() -> bool:
    return torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.ADInplaceOrView)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("bias", [True, False, "strided"])
def test_prepack_runs_below_view_tracking_where_the_engine_keeps_the_bias_given(monkeypatch, engine_name, bias):
    modes = []
    for op in ("conv2d_prepack", "linear_prepack"):
        original = getattr(torch.ops.quantized, op)
        monkeypatch.setattr(torch.ops.quantized, op, lambda *a, original=original: (
            modes.append(_below_view_tracking()), original(*a))[1])
    monkeypatch.setattr(torch.backends.quantized, "engine", engine_name)
    conv = _with_bias(torch.nn.Conv2d(4, 6, 3, bias=bool(bias)), bias)
    linear = _with_bias(torch.nn.Linear(4, 6, bias=bool(bias)), bias)
    for q_class, ref in ((nnq.Conv2d, _reference(conv, nnqr.Conv2d, True)),
                         (nnq.Linear, _reference(linear, nnqr.Linear, True))):
        quantized_from_reference(q_class, ref, torch.tensor(0.1), torch.tensor(0), where="test")
    # the float modules' biases require grad: only a contiguous one, under an engine that keeps it as given
    below = not bias or (bias is True and engine_name != "qnnpack")
    assert modes[-2:] == [below] * 2
    assert not _below_view_tracking()


def _packed_tensor_facts(t: torch.Tensor | None, given: torch.Tensor | None) -> tuple | None:
    """What tells two packed-params tensors apart besides their values."""
    if t is None:
        return None
    return (t.dtype, t.shape, t.stride(), t.requires_grad, t.grad_fn is None, t.is_leaf, t._is_view(),
            torch.is_inference(t), t is given)


@pytest.mark.parametrize("engine_name", ENGINES)
@settings(max_examples=examples(60), deadline=None)
@given(data=st.data())
def test_packing_mode_packs_the_params_the_current_mode_packs(engine_name, data):
    """Whatever packing_mode chooses, the packed params equal those packed in the current mode: the same
    unpacked values, and tensors alike in every way autograd or inference mode could mark them."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine_name
    try:
        # 0: linear; negative: transposed convs
        dims = data.draw(st.sampled_from([0, 1, 2, -1, -2] + ([3, -3] if engine_name != "qnnpack" else [])))
        shape = (6, 4) if dims == 0 else (6, 4, *[3] * abs(dims))
        torch.manual_seed(data.draw(st.integers(0, 100)))
        weight = torch.randn(shape)
        # (fbgemm and x86 pack transposed convs with per-tensor weights only)
        if data.draw(st.booleans()) and engine_name != "qnnpack" and dims >= 0:
            weight = torch.quantize_per_channel(weight, torch.rand(6) + 0.05, torch.zeros(6, dtype=torch.long), 0,
                                                torch.qint8)
        else:
            weight = torch.quantize_per_tensor(weight, 0.05, 0, torch.qint8)
        bias_kind = data.draw(st.sampled_from(["none", "plain", "strided", "parameter", "strided parameter"]))
        out = shape[0] if dims >= 0 else shape[1]  # a transposed conv's weight is (in, out, ...)
        bias = {"none": None, "plain": torch.randn(out), "strided": torch.randn(2 * out)[::2],
                "parameter": torch.nn.Parameter(torch.randn(out)),
                "strided parameter": torch.nn.Parameter(torch.randn(2 * out))[::2]}[bias_kind]
        op = {0: torch.ops.quantized.linear_prepack, 1: torch.ops.quantized.conv1d_prepack,
              2: torch.ops.quantized.conv2d_prepack, 3: torch.ops.quantized.conv3d_prepack,
              -1: torch.ops.quantized.conv_transpose1d_prepack, -2: torch.ops.quantized.conv_transpose2d_prepack,
              -3: torch.ops.quantized.conv_transpose3d_prepack}[dims]
        n = abs(dims)
        # (stride, padding[, output padding], dilation, groups)
        extra = () if dims == 0 else ([1] * n, [0] * n, [1] * n, 1) if dims > 0 else ([1] * n, [0] * n, [0] * n,
                                                                                      [1] * n, 1)
        plain = op(weight, bias, *extra)
        with engine.packing_mode(weight, bias):
            ours = op(weight, bias, *extra)
        (w_plain, b_plain), (w_ours, b_ours) = plain.unpack()[:2], ours.unpack()[:2]
        assert not diff_tensors(w_ours, w_plain, "weight")
        assert (b_ours is None) == (b_plain is None) and (b_ours is None or not diff_tensors(b_ours, b_plain, "bias"))
        assert _packed_tensor_facts(w_ours, weight) == _packed_tensor_facts(w_plain, weight)
        assert _packed_tensor_facts(b_ours, bias) == _packed_tensor_facts(b_plain, bias)
    finally:
        torch.backends.quantized.engine = previous


def test_the_placeholder_weight_is_packed_at_the_smallest_shape_or_not_at_all(monkeypatch):
    """Convs (transposed ones too) pack only the real weight; embeddings pack one-row placeholders first;
    linears pack their constructor's placeholders 1x1 the first time a configuration is built and not at
    all after (the constructor's result is replayed): the throwaway packing no longer scales with the
    layer."""
    shapes = []
    for op in ("conv2d_prepack", "conv_transpose2d_prepack", "linear_prepack", "embedding_bag_prepack"):
        original = getattr(torch.ops.quantized, op)
        monkeypatch.setattr(torch.ops.quantized, op,
                            lambda w, *rest, original=original: (shapes.append(tuple(w.shape)), original(w, *rest))[1])
    ref = _reference(torch.nn.Conv2d(8, 16, 3, groups=2), nnqr.Conv2d, True)
    module = quantized_from_reference(nnq.Conv2d, ref, torch.tensor(0.1), torch.tensor(0), where="test")
    assert shapes == [(16, 4, 3, 3)]
    assert (module.in_channels, module.out_channels, module.kernel_size) == (8, 16, (3, 3))
    shapes.clear()
    ref = _reference(torch.nn.ConvTranspose2d(8, 16, 4, stride=2, groups=2), nnqr.ConvTranspose2d, False)
    module = quantized_from_reference(nnq.ConvTranspose2d, ref, torch.tensor(0.1), torch.tensor(0), where="test")
    assert shapes == [(8, 8, 4, 4)]
    assert (module.in_channels, module.out_channels, module.kernel_size) == (8, 16, (4, 4))
    shapes.clear()
    embedding = torch.nn.EmbeddingBag(300, 16)
    observer = float_qparams_weight_only_qconfig.weight()
    observer(embedding.weight)
    ref = nnqr.EmbeddingBag.from_float(embedding, get_qparam_dict(observer))
    module = quantized_from_reference(nnq.EmbeddingBag, ref, where="test")
    assert shapes == [(1, 8), (1, 8), (300, 16)]  # (the constructor packs its placeholder twice)
    assert (module.num_embeddings, module.embedding_dim) == (300, 16)
    engine._LAYOUTS.clear()
    shapes.clear()
    ref = _reference(torch.nn.Linear(8, 16), nnqr.Linear, True)
    module = quantized_from_reference(nnq.Linear, ref, torch.tensor(0.1), torch.tensor(0), where="test")
    assert shapes == [(1, 1), (1, 1), (16, 8)]
    assert (module.in_features, module.out_features) == (8, 16)
    shapes.clear()
    again = quantized_from_reference(nnq.Linear, _reference(torch.nn.Linear(3, 5), nnqr.Linear, True),
                                     torch.tensor(0.1), torch.tensor(0), where="test")
    assert shapes == [(5, 3)]
    assert again._packed_params is not module._packed_params
    assert again._packed_params._packed_params is not module._packed_params._packed_params


def test_a_quantized_batchnorm_is_constructed_once_then_replayed(monkeypatch):
    """The constructor of a quantized BatchNorm runs once for its (one-feature) arguments; the next module,
    of another size, gets the replayed dict: its own batch count, the float module's tensors."""
    monkeypatch.setattr(engine, "_LAYOUTS", {})
    constructed = record_constructions(monkeypatch, nnq.BatchNorm2d)
    built = []
    for n in (3, 5):
        bn = torch.nn.BatchNorm2d(n).eval()
        bn.running_mean.uniform_(-1, 1)
        ours = quantized_from_reference(nnq.BatchNorm2d, bn, torch.tensor(0.5), torch.tensor(2), where="test")
        assert ours.num_features == n and ours.running_mean is bn.running_mean and ours.weight is bn.weight
        built.append(ours)
    assert constructed == [(1, 1e-05, 0.1)]
    assert built[0].num_batches_tracked is not built[1].num_batches_tracked
    assert torch.equal(built[1].num_batches_tracked, torch.tensor(0))


def test_global_registration_hooks_see_every_registration_from_reference_makes(monkeypatch):
    """With a global module registration hook set (after a first build recorded the constructor's layout),
    nothing is replayed: the hook sees the registrations torch's from_reference makes, in its order."""
    monkeypatch.setattr(engine, "_LAYOUTS", {})
    reference = _reference(torch.nn.Linear(4, 3), nnqr.Linear, per_channel=True)
    args = (torch.tensor(0.5), torch.tensor(2))
    quantized_from_reference(nnq.Linear, reference, *args, where="test")  # (records the layout)
    seen: list[tuple[str, str]] = []
    handle = torch.nn.modules.module.register_module_module_registration_hook(
        lambda module, name, child: seen.append((type(module).__name__, name)))
    try:
        nnq.Linear.from_reference(reference, *args)
        expected, seen[:] = list(seen), []
        quantized_from_reference(nnq.Linear, reference, *args, where="test")
    finally:
        handle.remove()
    assert expected and seen == expected


def test_a_replayed_module_whose_weight_was_not_packed_is_refused(monkeypatch):
    """If from_reference stopped packing over the placeholder, the replayed module would keep an empty
    slot: that is an EngineError, not a broken module."""
    ref = _reference(torch.nn.Linear(4, 4), nnqr.Linear, False)
    quantized_from_reference(nnq.Linear, ref, torch.tensor(0.1), torch.tensor(0), where="test")  # learn
    monkeypatch.setattr(nnq.Linear, "set_weight_bias", lambda self, w, b: None)
    with pytest.raises(engine.EngineError, match="did not pack its weight"):
        quantized_from_reference(nnq.Linear, ref, torch.tensor(0.1), torch.tensor(0), where="test")
    assert set(engine._SHAPE_ARGUMENTS) >= {nnq.Linear, nnq.Conv2d, nniq.ConvAdd2d, nnqd.Linear}


def test_per_channel_weights_are_quantized_by_qfx_and_others_by_torch(monkeypatch):
    """from_reference reads a per-channel weight through qfx's quantize (same tensor as torch's; the
    property test above checks the modules), and a per-tensor one through torch's own."""
    calls = []
    original = engine.quantize_per_channel
    monkeypatch.setattr(engine, "quantize_per_channel", lambda *a: (calls.append(a[3]), original(*a))[1])
    for per_channel, expected in ((True, [0]), (False, [])):
        calls.clear()
        ref = nni.ConvReLU2d(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
        ref[0] = _reference(ref[0], nnqr.Conv2d, per_channel)  # as convert lays out a fused reference module
        quantized_from_reference(nniq.ConvReLU2d, ref, torch.tensor(0.1), torch.tensor(0), where="test")
        assert calls == expected


def test_the_quantizing_view_reads_as_the_module_and_takes_no_writes():
    """from_reference reads a per-channel reference module through a view: every attribute, parameter,
    buffer and child reads as the module's own (children as views), the weight quantizes as torch's, and
    the view refuses writes, so the module is never changed."""
    ref = nni.ConvReLU2d(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    ref[0] = _reference(ref[0], nnqr.Conv2d, per_channel=True)
    before = module_state(ref)
    view = engine._quantizing_view(ref)
    inner = view[0]
    assert isinstance(inner, nnqr.Conv2d) and type(inner).__name__ == "Conv2d"
    for name in ("weight", "bias", "weight_scale", "weight_zero_point", "in_channels", "kernel_size", "_parameters"):
        assert getattr(inner, name) is getattr(ref[0], name)
    assert view[1] is not ref[1] and type(view[1]).__name__ == "ReLU"
    assert torch.equal(inner.get_quantized_weight().int_repr(), ref[0].get_quantized_weight().int_repr())
    with pytest.raises(AttributeError, match="'Conv2d' object has no attribute 'missing'"):
        inner.missing
    for write in (lambda: setattr(inner, "weight", torch.nn.Parameter(torch.zeros(1))),
                  lambda: setattr(inner, "in_channels", 5), lambda: delattr(inner, "bias")):
        with pytest.raises(AttributeError, match="viewed by from_reference"):
            write()
    assert diff_values(module_state(ref), before) == []


def _registered_module() -> torch.nn.Module:
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.ones(2))
    module.register_buffer("stats", torch.zeros(2))
    module.register_buffer("scratch", torch.zeros(2), persistent=False)
    module.child = torch.nn.ReLU()
    return module


def _tables(module: torch.nn.Module, assigned: object) -> tuple:
    """The module's tables, each entry as `assigned` itself or its type and contents."""
    def token(v: object) -> object:
        return "assigned" if v is assigned else (type(v).__name__, v.tolist() if isinstance(v, torch.Tensor) else None)

    state = module.__dict__
    return tuple({k: token(v) for k, v in table.items()} for table in (
        {k: v for k, v in state.items() if not k.startswith("_") and k != "training"},
        state["_parameters"], state["_buffers"], state["_modules"])) + (set(state["_non_persistent_buffers_set"]),)


@pytest.mark.parametrize(("name", "value"), [
    ("weight", torch.nn.Parameter(torch.zeros(2))),  # replaced in place
    ("stats", torch.ones(2)),
    ("scratch", torch.ones(2)),  # stays non-persistent
    ("weight", torch.nn.Parameter(torch.zeros(2)) * 2),  # a tensor over a parameter: torch refuses
    ("weight", torch.nn.Parameter(torch.zeros(2), requires_grad=True).add(1).as_subclass(torch.nn.Parameter)),
    ("stats", torch.nn.Parameter(torch.zeros(2))),  # a parameter over a buffer moves tables
    ("stats", torch.nn.Buffer(torch.ones(2), persistent=False)),  # a Buffer carries its own persistence
    ("child", torch.ones(2)),
    ("fresh", torch.nn.Parameter(torch.zeros(2))),  # a new name registers
    ("fresh", torch.ones(2)),
])
def test_replacing_a_registered_tensor_directly_is_what_setattr_does(name, value) -> None:
    direct, through_setattr = _registered_module(), _registered_module()
    before = _tables(direct, value)
    try:
        torch.nn.Module.__setattr__(through_setattr, name, value)
    except (TypeError, ValueError, KeyError):
        expected = before
    else:
        expected = _tables(through_setattr, value)
    if engine._replace_registered(direct.__dict__, name, value):
        assert _tables(direct, value) == expected
    else:
        assert _tables(direct, value) == before


def test_the_classes_built_placeholder_free_register_as_nn_module_does() -> None:
    """`_replace_registered` stands in for Module.__setattr__ on these classes only."""
    for q_class in engine._SHAPE_ARGUMENTS:
        assert q_class.__setattr__ is torch.nn.Module.__setattr__
        assert q_class.register_parameter is torch.nn.Module.register_parameter
        assert q_class.register_buffer is torch.nn.Module.register_buffer
