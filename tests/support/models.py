"""A zoo of small float models and how to prepare them, for differential tests against torch's convert.

Each `Case` names a float model, its example inputs, the qconfig mapping (and custom/equalization/backend
configs) to prepare it with, and whether prepare is post-training (`prepare_fx`) or quantization-aware
(`prepare_qat_fx`). `prepare_case(case)` gives the calibrated observed model; `run_inputs(case, seed)` gives
inputs the *converted* model accepts (quantized where the case declares quantized input indexes).

The zoo aims to reach every branch of torch's reference convert: static/dynamic/fp16/weight-only observers,
per-tensor and per-channel weights, fused and QAT modules, RNN modules and cells, embeddings, custom and
standalone modules, equalization, quantized input/output indexes, None qconfigs, shared observers and
convert-time qconfig mappings. A few cases are ones torch refuses to convert (commented in CASES): the tests
then expect qfx to refuse too, with torch's exception type.
"""

from __future__ import annotations

import dataclasses
import operator
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (
    DeQuantStub,
    MinMaxObserver,
    PlaceholderObserver,
    QConfig,
    QConfigMapping,
    QuantStub,
    QuantType,
    default_dynamic_qconfig,
    default_embedding_qat_qconfig,
    default_per_channel_weight_observer,
    default_qconfig,
    default_weight_observer,
    default_per_channel_qconfig,
    float16_dynamic_qconfig,
    float16_static_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    per_channel_dynamic_qconfig,
)
from torch.ao.quantization.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    DTypeConfig,
    ObservationType,
    get_fbgemm_backend_config,
    get_onednn_backend_config,
    get_qnnpack_backend_config,
)
from torch.ao.quantization.backend_config.x86 import get_x86_backend_config
from torch.ao.quantization.fx._equalize import default_equalization_qconfig
from torch.ao.quantization.qconfig_mapping import (
    _get_default_qconfig_mapping_with_default_qconfig,
    _get_symmetric_qnnpack_qconfig_mapping,
)
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig, PrepareCustomConfig
from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

from tests.support import arch_models as am

Factory = Callable[[], Any]


@dataclasses.dataclass(frozen=True)
class Case:
    """One float model and the recipe to prepare, calibrate and convert it.

    `inputs` draws example inputs from torch's global RNG (callers seed it). The config factories build fresh
    config objects per call, so nothing is shared between the qfx run and the torch run.
    """

    name: str
    model: Factory
    inputs: Factory
    qconfig_mapping: Factory
    kind: str = "ptq"  # 'ptq' -> prepare_fx, 'qat' -> prepare_qat_fx
    prepare_custom_config: Factory | None = None
    convert_custom_config: Factory | None = None
    equalization_config: Factory | None = None
    backend_config: Factory | None = None
    convert_qconfig_mapping: Factory | None = None
    calibration_batches: int = 3
    keep_training: bool = False  # QAT cases: leave the observed model in train mode when converting
    quantized_inputs: tuple[int, ...] = ()  # converted model takes these inputs quantized
    raw: bool = False  # also test torch.ao.quantization.fx.convert.convert(is_reference=True) directly
    xfail: str = ""  # reason, when qfx is known to differ from torch on this case
    # quantized engines under which torch's lowered model can be compared at all: under qnnpack a lowered
    # Conv3d's packed weights cannot be unpacked, so its state_dict, deepcopy and pickling fail in torch itself
    lowered_engines: tuple[str, ...] = ("x86", "fbgemm", "qnnpack")

    def __repr__(self) -> str:
        return f"Case({self.name})"


# ---------------------------------------------------------------------------------------------------------
# models


class ResNetBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        identity = x
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y = self.relu2(y + identity)
        y = torch.flatten(self.pool(y), 1)
        return self.fc(y)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


class Convs(nn.Module):
    """Conv+BN+ReLU, Conv+BN, Conv+ReLU in 1d/2d/3d, ConvTranspose and a Linear+BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.cb = nn.Sequential(nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6))
        self.cr = nn.Sequential(nn.Conv2d(6, 4, 3, stride=2), nn.ReLU(inplace=True))
        self.deconv = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.c1 = nn.Conv1d(4, 4, 3)
        self.bn1 = nn.BatchNorm1d(4)
        self.c3 = nn.Conv3d(1, 2, 2)
        self.c3relu = nn.ReLU()
        self.lin = nn.Linear(4, 5)
        self.lbn = nn.BatchNorm1d(5)

    def forward(self, x, v):
        x = self.deconv(self.cr(self.cb(self.cbr(x))))
        s = self.bn1(self.c1(x.mean(dim=3)))
        v = self.c3relu(self.c3(v))
        t = self.lbn(self.lin(s.mean(dim=2)))
        return s, v.sum(), t


class FunctionalLinear(nn.Module):
    """F.linear with parameters read through get_attr, with and without bias, then F.relu."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 6))
        self.b1 = nn.Parameter(torch.randn(8))
        self.w2 = nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        x = F.relu(F.linear(x, self.w1, self.b1))
        return F.linear(x, self.w2)


class FunctionalConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.b = nn.Parameter(torch.randn(4))
        self.w1d = nn.Parameter(torch.randn(2, 4, 3))

    def forward(self, x):
        y = F.relu(F.conv2d(x, self.w, self.b, stride=1, padding=1))
        z = F.conv1d(y.mean(dim=3), self.w1d, None, 1, 0, 1, 1)
        return y, z


class Attention(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        b, t, d = 2, 5, 8
        h = self.heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)
        k = self.k(x).view(b, t, h, d // h).transpose(1, 2)
        v = self.v(x).view(b, t, h, d // h).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) * 0.5
        att = F.softmax(att, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        return self.norm(self.out(y) + x)


class FloatMHA(nn.Module):
    """nn.MultiheadAttention is left a plain float module; its tuple output is consumed through getitem."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.mha = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.proj(x)
        out, weights = self.mha(x, x, x)
        return self.head(out), weights


class RNNs(nn.Module):
    def __init__(self, cls: type, **kwargs: Any) -> None:
        super().__init__()
        self.rnn = cls(4, 6, **kwargs)
        self.fc = nn.Linear(6 * (2 if kwargs.get("bidirectional") else 1), 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out)


class Cells(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(4, 6)
        self.gru = nn.GRUCell(6, 6)
        self.rnn = nn.RNNCell(6, 5, nonlinearity="relu")
        self.rnn_tanh = nn.RNNCell(5, 5)

    def forward(self, x, h, c):
        h1, c1 = self.lstm(x, (h, c))
        g = self.gru(h1, c1)
        r = self.rnn(g)
        return self.rnn_tanh(r), c1


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.bag = nn.EmbeddingBag(20, 8, mode="sum")
        self.fc = nn.Linear(8, 4)

    def forward(self, idx, bag_idx, offsets):
        e = self.emb(idx).sum(dim=1)
        b = self.bag(bag_idx, offsets)
        return self.fc(e + b)


class SmallLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class QatConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.cr = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        self.cb = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.cbr = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 2)
        self.fcr = nn.Sequential(nn.Linear(2, 2), nn.ReLU())

    def forward(self, x):
        x = self.cbr(self.cb(self.cr(self.conv(x))))
        return self.fcr(self.fc(x.mean(dim=(2, 3))))


class Sub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.fc(x))


class Mixed(nn.Module):
    """Nested submodules for module-name, regex and object-type qconfig mappings."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.relu = nn.ReLU()
        self.sub = Sub()
        self.blocks = nn.ModuleList([Sub() for _ in range(3)])
        self.conv = nn.Conv1d(8, 8, 1)

    def forward(self, x):
        x = self.relu(self.fc(x))
        x = self.sub(x)
        for block in self.blocks:
            x = block(x) + x
        y = self.conv(x.unsqueeze(-1)).squeeze(-1)
        return F.relu(torch.add(y, x))


class StandaloneChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        x = self.conv(x)
        return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class WithStandalone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.standalone = StandaloneChild()
        self.conv2 = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.conv2(self.standalone(self.conv(x)))


class TwoStandalones(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.a = StandaloneChild()
        self.b = StandaloneChild()

    def forward(self, x):
        x = self.conv(x)
        return self.a(x), self.b(x) + x


# custom modules: float -> observed (prepare) -> quantized (convert) ------------------------------------------


class FloatCustom(nn.Module):
    """A float module that FX does not trace into once it is registered as a custom module."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6)

    def forward(self, x):
        return torch.tanh(self.linear(x)) * 2.0


class ObservedCustom(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return torch.tanh(self.linear(x)) * 2.0

    @classmethod
    def from_float(cls, float_module: FloatCustom) -> "ObservedCustom":
        observed = cls(float_module.linear)
        observed.qconfig = float_module.qconfig
        return observed


class QuantizedCustom(nn.Module):
    """Takes a quantized tensor (or the integer tensor of the decomposed form), returns a quantized tensor."""

    def __init__(self, linear: nn.Linear, scale: float, zero_point: int) -> None:
        super().__init__()
        self.linear = nn.Linear(linear.in_features, linear.out_features)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight)
            self.linear.bias.copy_(linear.bias)
        self.register_buffer("scale", torch.tensor(scale))
        self.register_buffer("zero_point", torch.tensor(zero_point))

    def forward(self, x):
        x = x.dequantize() if x.is_quantized else x.to(torch.float32)
        y = torch.tanh(self.linear(x)) * 2.0
        return torch.quantize_per_tensor(y, float(self.scale), int(self.zero_point), torch.quint8)

    @classmethod
    def from_observed(cls, observed: ObservedCustom) -> "QuantizedCustom":
        scale, zero_point = observed.activation_post_process.calculate_qparams()
        return cls(observed.linear, float(scale), int(zero_point))


class WithCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.custom = FloatCustom()
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.custom(self.fc(x)))


class StaticLSTM(nn.Module):
    """torch's own custom-module LSTM flow: the LSTM output tuple is consumed element by element."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 6, 1)
        self.linear1 = nn.Linear(6, 4)
        self.linear2 = nn.Linear(6, 4)
        self.linear3 = nn.Linear(6, 4)

    def forward(self, inputs, h0, c0):
        out, (h, c) = self.lstm(inputs, (h0, c0))
        return self.linear1(out), (self.linear2(h), self.linear3(c))


class StaticLSTMTuple(nn.Module):
    """The LSTM output tuple is returned and consumed as a whole."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 6, 1)

    def forward(self, inputs, h0, c0):
        return self.lstm(inputs, (h0, c0))


# equalization ------------------------------------------------------------------------------------------------


class LinearChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 8)
        self.relu = nn.ReLU()
        self.fc3 = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.fc1(x))))


class FunctionalLinearChain(nn.Module):
    """F.linear chain; weights are buffers, or parameters (torch's equalization then fails to write them)."""

    def __init__(self, as_parameters: bool = False) -> None:
        super().__init__()
        for name, shape in (("w1", (8, 6)), ("b1", (8,)), ("w2", (5, 8)), ("b2", (5,))):
            value = torch.randn(*shape)
            if as_parameters:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def forward(self, x):
        x = F.relu(F.linear(x, self.w1, self.b1))
        return F.linear(x, self.w2, self.b2)


class SubmoduleLinearChain(nn.Module):
    """F.linear chain whose weights and biases are buffers of a submodule (get_attr 'holder.w1' ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.holder = nn.Module()
        for name, shape in (("w1", (8, 6)), ("b1", (8,)), ("w2", (5, 8)), ("b2", (5,))):
            self.holder.register_buffer(name, torch.randn(*shape))

    def forward(self, x):
        h = self.holder
        x = F.relu(F.linear(x, h.w1, h.b1))
        return F.linear(x, h.w2, h.b2)


class TwoInputsLinear(nn.Module):
    """Input observers shared by a Linear and an add, around an equalized layer (see InputObserverUsers)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(6, 8)

    def forward(self, x, y):
        return self.fc1(x), self.fc2(x + y), self.fc1(y)


class ReshapedConv(nn.Module):
    """A conv whose input is a reshape of the model's input: its equalization observer reads the reshape,
    not an input observer (torch's convert fails looking the reshape up as a module)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x.reshape(2, 4, 16).reshape(2, 4, 4, 4)), x * x


class TwoReLUsThenEqualized(nn.Module):
    """fc1 (dynamically quantized: no output observer) feeds two ReLUs; only the second leads to an equalized
    layer. prepare sets the first ReLU's arguments again, so FX lists fc1's users as (relu_n, relu_q):
    torch's convert takes relu_n as fc1's next ReLU and scales fc1 by fc2's equalization scale."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu_q, self.relu_n, self.fc2 = nn.Linear(8, 8), nn.ReLU(), nn.ReLU(), nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc1(x)
        return self.relu_q(y), self.fc2(self.relu_n(y))


def _two_relus_mapping() -> QConfigMapping:
    return (QConfigMapping().set_global(default_qconfig).set_module_name("fc1", default_dynamic_qconfig)
            .set_module_name("relu_n", None))


class ConvChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


# inputs/outputs ----------------------------------------------------------------------------------------------


class InputObserverUsers(nn.Module):
    """The second input's observer is read by the add (which also reads the first input's observer) and by
    the Linear. Converting the first observer sets the add's arguments again, which puts the add after the
    Linear among the second observer's users; its first user names that observer's qparams
    (fc_input_scale_0, not _input_scale_1)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        return x + y, self.fc(y)


class QuantIO(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)

    def forward(self, x, y):
        a = self.fc(x)
        return a, self.fc2(y) + a


class NestedTupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc3 = nn.Linear(6, 6)

    def forward(self, x):
        a = self.fc1(x)
        b = self.fc2(a)
        c = self.fc3(b)
        return a, (b, [c, torch.sigmoid(c)])


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)

    def forward(self, x):
        a = self.fc1(x)
        return {"a": a, "b": (self.fc2(a), a.shape[0])}


class Stubs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.fc = nn.Linear(6, 6)
        self.dequant = DeQuantStub()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        x = self.dequant(self.fc(self.quant(x)))
        return self.fc2(x)


class MultiIO(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc_a = nn.Linear(6, 4)
        self.fc_b = nn.Linear(5, 4)
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, a, b, img):
        x = self.fc_a(a)
        y = self.fc_b(b)
        s = x * y
        return s, x - y, self.conv(img) * 2.0, torch.mul(s, 3.0)


class Preserved(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.unused = nn.Linear(3, 3)
        self.version = 7
        self.tag = "keep-me"
        self.register_buffer("table", torch.arange(4.0))

    def forward(self, x):
        return self.fc(x) + self.table.sum()


class PreservedSubmodules(nn.Module):
    """Preserved attributes that are submodules: a fused conv the convert swaps, a Linear it swaps, a ReLU
    it keeps, and a Linear the graph never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        self.idle = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


class TupleGetitem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        a, b = torch.split(self.fc(x), 3, dim=1)
        m = torch.max(a, dim=1)
        c = x.chunk(2, dim=1)
        return self.fc2(b * a) + m[0].unsqueeze(1), c[1], m.indices


class CatShared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x, img):
        y = torch.cat([self.fc1(x), self.fc2(x)], dim=1)
        z = torch.cat((img, self.conv(img)), 1)
        return torch.cat([y, y], 0), z.flatten(1)


class MiscOps(nn.Module):
    """Ops with fixed qparams (sigmoid, tanh, hardsigmoid), ops sharing their input's observer, and norms."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.hswish = nn.Hardswish()
        self.elu = nn.ELU()
        self.ln = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.inorm = nn.InstanceNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4, 4)
        self.dropout = nn.Dropout(0.5)
        self.unused = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        x = self.bn(self.conv(x))
        x = self.hswish(x)
        x = self.gn(self.elu(x))
        x = self.inorm(self.pool(x))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.avg_pool2d(x, 2)
        y = self.ln(x.permute(0, 2, 3, 1))
        y = self.dropout(torch.sigmoid(y) + torch.tanh(y))
        y = F.hardsigmoid(y) * F.leaky_relu(y, 0.1)
        y = F.hardtanh(y, -0.5, 0.5) + torch.clamp(y, min=-0.2, max=0.2)
        z = self.fc(y.reshape(-1, 4)).mean(dim=0, keepdim=True)
        return z, y.size(1), x.detach()


class SharedModule(nn.Module):
    """The same Linear called twice and an op applied to a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(F.relu(self.fc(x))) + torch.ones(1)


class DynamicFunctional(nn.Module):
    """Dynamic quantization of F.linear: the activation observer becomes a dynamic quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 6))
        self.b = nn.Parameter(torch.randn(5))
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(F.relu(F.linear(x, self.w, self.b)))


class NameClash(nn.Module):
    """Attributes whose names are those convert would pick for its scale/zero-point constants."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.register_buffer("fc_input_scale_0", torch.ones(1))
        self.register_buffer("fc_scale_0", torch.full((1,), 2.0))
        self._scale_0 = nn.Parameter(torch.ones(6))

    def forward(self, x):
        y = self.fc(x * self.fc_input_scale_0)
        return (y + self.fc_scale_0) * self._scale_0


class ShapeArithmetic(nn.Module):
    """Attention with shapes read from the input (size/getattr/getitem nodes) and in-place ops."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24, bias=False)
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, 2, d // 2).permute(2, 0, 3, 1, 4).unbind(0)
        att = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        y = self.proj(y)
        y += x
        return F.relu_(y), x.size(-1)


class SharedWeights(nn.Module):
    """One parameter read by two F.linear calls, and a Linear with bias=False under a ModuleDict."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 6))
        self.heads = nn.ModuleDict({"a": nn.Sequential(nn.Linear(6, 3, bias=False)), "b": nn.Linear(6, 3)})

    def forward(self, x):
        h = F.linear(F.linear(x, self.w), self.w)
        return self.heads["a"](h), self.heads["b"](x)


class QatExtras(nn.Module):
    """QAT: Linear+BatchNorm1d, Conv1d+BN+ReLU, Conv3d+BN, fixed-qparams ops, an Embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.lbn = nn.BatchNorm1d(6)
        self.c1 = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv3d(1, 2, 2), nn.BatchNorm3d(2))
        self.emb = nn.Embedding(10, 6)

    def forward(self, x, idx, vol):
        y = self.lbn(self.lin(x))
        z = self.c1(y.unsqueeze(1))
        w = self.c3(vol)
        e = self.emb(idx)
        return torch.sigmoid(z).sum() + torch.tanh(w).mean(), F.hardsigmoid(y) + e


class DynamicExtras(nn.Module):
    """Dynamic quantization of a fused Linear+ReLU, a 3-d input and a bidirectional GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.relu = nn.ReLU()
        self.gru = nn.GRU(6, 3, bidirectional=True)
        self.fc2 = nn.Linear(6, 2, bias=False)

    def forward(self, x):
        h = self.relu(self.fc(x))
        out, hn = self.gru(h)
        return self.fc2(out), hn


class NestedStandaloneInner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class NestedStandaloneOuter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.inner = NestedStandaloneInner()

    def forward(self, x):
        return self.inner(self.fc(x)) + x


class WithNestedStandalone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.outer = NestedStandaloneOuter()

    def forward(self, x):
        return self.outer(self.fc(x))


class WithNestedCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleDict({"custom": FloatCustom(), "fc": nn.Linear(6, 6)})
        self.other = FloatCustom()

    def forward(self, x):
        y = self.block["custom"](self.block["fc"](x))
        return self.other(y), y


class PassThrough(nn.Module):
    """A quantized input returned as is and also consumed; the same value returned twice."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x, y):
        a = self.fc(y)
        return x, a, a


class EmbeddingVariants(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.bag_mean = nn.EmbeddingBag(20, 8, mode="mean")
        self.bag_weighted = nn.EmbeddingBag(20, 8, mode="sum")

    def forward(self, idx, bag_idx, offsets):
        w = torch.linspace(0.5, 1.5, bag_idx.numel())
        return self.emb(idx), self.bag_mean(bag_idx, offsets), self.bag_weighted(bag_idx, offsets, w)


class NodeNameClash(nn.Module):
    """Submodules and an input named like the nodes convert inserts."""

    def __init__(self) -> None:
        super().__init__()
        self.quantize_per_tensor = nn.Linear(6, 6)
        self.dequantize = nn.ReLU()

    def forward(self, dequantize_1, quantize_per_tensor_2):
        return self.dequantize(self.quantize_per_tensor(dequantize_1)) + quantize_per_tensor_2


class WeightExpressions(nn.Module):
    """F.linear / F.conv_transpose2d whose weights are computed from parameters (t(), *, reshape)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 5))
        self.s = nn.Parameter(torch.rand(5, 1) + 0.5)
        self.b = nn.Parameter(torch.randn(5))
        self.wt = nn.Parameter(torch.randn(2 * 3 * 2 * 2))

    def forward(self, x, img):
        y = F.linear(x, self.w.t() * self.s, self.b)
        z = F.conv_transpose2d(img, self.wt.reshape(2, 3, 2, 2), None, stride=2)
        return y, z


class FunctionalNorms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_w = nn.Parameter(torch.rand(4) + 0.5)
        self.ln_b = nn.Parameter(torch.randn(4))
        self.conv = nn.Conv2d(4, 4, 1)
        self.register_buffer("mean", torch.randn(4))
        self.register_buffer("var", torch.rand(4) + 0.5)

    def forward(self, x):
        x = self.conv(x)
        a = F.layer_norm(x.permute(0, 2, 3, 1), (4,), self.ln_w, self.ln_b)
        b = F.group_norm(x, 2, self.ln_w, self.ln_b)
        c = F.instance_norm(x, weight=self.ln_w, bias=self.ln_b)
        d = F.batch_norm(x, self.mean, self.var, self.ln_w, self.ln_b)
        return a, b + c + d


# ---------------------------------------------------------------------------------------------------------
# inputs and configs


def _randn(*shapes: tuple[int, ...]) -> Factory:
    return lambda: tuple(torch.randn(*s) for s in shapes)


def _embedding_inputs() -> tuple:
    return (
        torch.randint(0, 20, (4, 3)),
        torch.randint(0, 20, (10,)),
        torch.tensor([0, 3, 6, 8]),
    )


def _qcm(**kw: Any) -> Factory:
    """A mapping with a global qconfig and object-type qconfigs given as (type, qconfig) pairs."""

    def build() -> QConfigMapping:
        m = QConfigMapping()
        if "global_" in kw:
            m.set_global(kw["global_"])
        for typ, qconfig in kw.get("object_type", ()):
            m.set_object_type(typ, qconfig)
        return m

    return build


# x86's default qconfig with a min/max activation observer in place of the histogram one: the histogram's
# parameter search costs ~0.25 s per observer, and torch and qfx each run it once per activation observer.
# The per_channel_* cases keep the real default mappings on a tiny model.
FAST_X86_QCONFIG = QConfig(
    activation=MinMaxObserver.with_args(reduce_range=True),
    weight=default_per_channel_weight_observer,
)


def _x86() -> QConfigMapping:
    """get_default_qconfig_mapping("x86") with FAST_X86_QCONFIG in place of the default qconfig."""
    return _get_default_qconfig_mapping_with_default_qconfig(False, "x86", FAST_X86_QCONFIG)


def _mixed_none() -> QConfigMapping:
    return (
        get_default_qconfig_mapping("x86")
        .set_object_type(nn.ReLU, None)
        .set_module_name("sub", None)
        .set_object_type(torch.add, None)
    )


def _regex() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_global(default_qconfig)
        .set_module_name_regex(r"blocks\.[02]\.fc", default_per_channel_qconfig)
        .set_module_name_regex(r"blocks\.1\..*", None)
        .set_module_name("conv", default_per_channel_qconfig)
    )


def _object_types() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_object_type(nn.Linear, default_per_channel_qconfig)
        .set_object_type(nn.ReLU, default_per_channel_qconfig)
        .set_object_type(torch.add, default_qconfig)
        .set_object_type(F.relu, default_qconfig)
        .set_module_name_object_type_order("blocks.2", nn.Linear, 0, None)
    )


def _standalone_config(by: str, quantized_interface: bool) -> Factory:
    def build() -> PrepareCustomConfig:
        child_config = PrepareCustomConfig()
        if quantized_interface:
            child_config.set_input_quantized_indexes([0]).set_output_quantized_indexes([0])
        child_mapping = QConfigMapping().set_global(default_qconfig)
        example = (torch.randn(1, 4, 5, 5),)
        config = PrepareCustomConfig()
        if by == "name":
            return config.set_standalone_module_name("standalone", child_mapping, example, child_config, None)
        return config.set_standalone_module_class(StandaloneChild, child_mapping, example, child_config, None)

    return build


def _custom_prepare() -> PrepareCustomConfig:
    # torch supports only static custom modules here (dynamic ones fail in prepare)
    return PrepareCustomConfig().set_float_to_observed_mapping(FloatCustom, ObservedCustom, QuantType.STATIC)


def _custom_convert() -> ConvertCustomConfig:
    return ConvertCustomConfig().set_observed_to_quantized_mapping(ObservedCustom, QuantizedCustom, QuantType.STATIC)


def _lstm_prepare() -> PrepareCustomConfig:
    return PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, torch.ao.nn.quantizable.LSTM)


def _lstm_convert() -> ConvertCustomConfig:
    return ConvertCustomConfig().set_observed_to_quantized_mapping(
        torch.ao.nn.quantizable.LSTM, torch.ao.nn.quantized.LSTM
    )


def _io_config(inputs: list[int], outputs: list[int]) -> Factory:
    return lambda: PrepareCustomConfig().set_input_quantized_indexes(inputs).set_output_quantized_indexes(outputs)


def _prepare_preserved() -> PrepareCustomConfig:
    return PrepareCustomConfig().set_preserved_attributes(["version", "tag"])


def _convert_preserved_submodules() -> ConvertCustomConfig:
    return ConvertCustomConfig().set_preserved_attributes(["conv", "relu", "fc", "idle"])


def _convert_preserved() -> ConvertCustomConfig:
    return ConvertCustomConfig().set_preserved_attributes(["version", "tag", "not_there"])


def _convert_time_prepare() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_global(default_qconfig)
        .set_object_type(nn.Linear, default_per_channel_qconfig)
        .set_object_type(nn.ReLU, default_per_channel_qconfig)
        .set_module_name("sub", default_qconfig)
        .set_module_name_regex(r"blocks\.1\..*", default_qconfig)
    )


def _convert_time_convert() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_global(default_qconfig)
        .set_object_type(nn.Linear, default_per_channel_qconfig)
        .set_object_type(nn.ReLU, default_per_channel_qconfig)
        .set_module_name("sub", None)
        .set_module_name_regex(r"blocks\.1\..*", None)
        .set_module_name("blocks.2.relu", None)
    )


def _convert_time_missing_key() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_global(default_qconfig)
        .set_object_type(nn.Linear, default_per_channel_qconfig)
        .set_object_type(nn.ReLU, default_per_channel_qconfig)
    )


def _convert_time_changed() -> QConfigMapping:
    return _convert_time_convert().set_object_type(nn.Linear, default_qconfig).set_object_type(nn.ReLU, default_qconfig)


def _convert_time_fusion_mismatch() -> QConfigMapping:
    return _convert_time_convert().set_object_type(nn.Linear, default_qconfig)


def _lstm_inputs() -> tuple:
    return (torch.rand(5, 3, 6), torch.rand(1, 3, 6), torch.randn(1, 3, 6))


def _nested_standalone_config() -> PrepareCustomConfig:
    inner = PrepareCustomConfig().set_standalone_module_name(
        "inner", QConfigMapping().set_global(default_qconfig), (torch.randn(2, 4),), PrepareCustomConfig(), None
    )
    return PrepareCustomConfig().set_standalone_module_name(
        "outer", QConfigMapping().set_global(default_per_channel_qconfig), (torch.randn(2, 4),), inner, None
    )


def _qat_extras_mapping() -> QConfigMapping:
    return get_default_qat_qconfig_mapping("x86").set_object_type(nn.Embedding, default_embedding_qat_qconfig)



# lowering cases (tests/support/arch_models.py) -----------------------------------------------------------


def _fast_mapping(backend: str, is_qat: bool = False) -> Factory:
    """The backend's default qconfig mapping with a min/max activation observer in place of the histogram one
    (as FAST_X86_QCONFIG, for the larger models); weights observed as the backend's default does."""
    reduce_range = backend in ("x86", "fbgemm")
    weight = default_weight_observer if backend == "qnnpack" else default_per_channel_weight_observer
    qconfig = QConfig(activation=MinMaxObserver.with_args(reduce_range=reduce_range), weight=weight)

    def build() -> QConfigMapping:
        with warnings.catch_warnings():  # onednn's note about reduce_range on CPUs without VNNI
            warnings.simplefilter("ignore", UserWarning)
            return _get_default_qconfig_mapping_with_default_qconfig(is_qat, backend, qconfig)

    return build


def _onednn_fusions() -> QConfigMapping:
    # prepare fuses Linear+Tanh / Linear+LeakyReLU only when the mapping gives both module types the same
    # object-type qconfig (Tanh's default is a fixed-qparams one): all three get the global qconfig
    mapping = _fast_mapping("onednn")()
    for typ in (nn.Linear, nn.Tanh, nn.LeakyReLU):
        mapping.set_object_type(typ, mapping.global_qconfig)
    return mapping


def _float_island() -> QConfigMapping:
    return _x86().set_module_name("island", None)


def _recommender_mapping() -> QConfigMapping:
    return (
        _x86()
        .set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
        .set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)
    )


def _recommender_inputs() -> tuple:
    return (torch.randint(0, 30, (12,)), torch.tensor([0, 4, 7]), torch.randint(0, 30, (3, 2)))


def _dynamic_per_channel_activation() -> QConfigMapping:
    activation = PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True,
                                               qscheme=torch.per_channel_affine)
    return QConfigMapping().set_global(QConfig(activation=activation, weight=default_weight_observer))


def _standalone_taking_constant() -> PrepareCustomConfig:
    inner = PrepareCustomConfig().set_input_quantized_indexes([0, 1])
    example = (torch.randn(2, 4), torch.randn(2, 4))
    return PrepareCustomConfig().set_standalone_module_name("sub", _x86(), example, inner, None)


def _qint8_adds() -> QConfigMapping:
    qint8 = QConfig(activation=MinMaxObserver.with_args(dtype=torch.qint8), weight=default_weight_observer)
    return (_x86().set_module_name("sub.l2", None).set_module_name_regex("sub2", qint8)
            .set_object_type(operator.add, qint8))


def _matmul_relu_backend() -> BackendConfig:
    """matmul and matmul -> relu quantized as patterns of their own (torch has no quantized matmul-ReLU)."""
    dtypes = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8, weight_dtype=torch.qint8,
                         bias_dtype=torch.float)
    own_observer = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
    return BackendConfig("matmul_relu").set_backend_pattern_configs([
        BackendPatternConfig(pattern).set_observation_type(own_observer).add_dtype_config(dtypes)
        for pattern in (torch.matmul, (torch.matmul, torch.relu))])


CASES: list[Case] = [
    Case("resnet_block", ResNetBlock, _randn((2, 3, 8, 8)), _x86, raw=True),
    Case("convs_fused", Convs, _randn((2, 3, 9, 9), (1, 1, 3, 3, 3)),
         lambda: _x86().set_object_type(nn.ConvTranspose2d, default_qconfig), lowered_engines=("x86", "fbgemm")),
    Case("functional_linear", FunctionalLinear, _randn((3, 6)), _x86, raw=True),
    Case("functional_conv", FunctionalConv, _randn((2, 3, 6, 6)), _x86),
    Case("attention", Attention, _randn((2, 5, 8)), _x86),
    Case("mha_float", FloatMHA, _randn((5, 2, 8)), _x86),
    Case("lstm_dynamic", lambda: RNNs(nn.LSTM, num_layers=2, bidirectional=True), _randn((5, 2, 4)),
         _qcm(object_type=[(nn.LSTM, default_dynamic_qconfig), (nn.Linear, default_dynamic_qconfig)]), raw=True),
    Case("gru_dynamic_per_channel", lambda: RNNs(nn.GRU, num_layers=2, batch_first=True), _randn((2, 5, 4)),
         _qcm(object_type=[(nn.GRU, per_channel_dynamic_qconfig), (nn.Linear, per_channel_dynamic_qconfig)])),
    # fp16 dynamic: torch's decomposed convert refuses (AssertionError: Unsupported dtype: torch.float16)
    Case("lstm_fp16_dynamic", lambda: RNNs(nn.LSTM), _randn((5, 2, 4)),
         _qcm(object_type=[(nn.LSTM, float16_dynamic_qconfig), (nn.Linear, float16_dynamic_qconfig)])),
    Case("rnn_cells_dynamic", Cells, _randn((3, 4), (3, 6), (3, 6)), _qcm(global_=default_dynamic_qconfig)),
    Case("rnn_cells_fp16_dynamic", Cells, _randn((3, 4), (3, 6), (3, 6)), _qcm(global_=float16_dynamic_qconfig)),
    Case("embeddings", Embeddings, _embedding_inputs,
         _qcm(global_=default_qconfig, object_type=[(nn.Embedding, float_qparams_weight_only_qconfig),
                                                    (nn.EmbeddingBag, float_qparams_weight_only_qconfig)])),
    # 4-bit: torch's decomposed result cannot run (ValueError), so qfx's must fail the same way
    Case("embeddings_4bit", Embeddings, _embedding_inputs,
         _qcm(object_type=[(nn.Embedding, float_qparams_weight_only_qconfig_4bit),
                           (nn.EmbeddingBag, float_qparams_weight_only_qconfig_4bit)])),
    Case("qat_linear", SmallLinear, _randn((4, 6)), lambda: get_default_qat_qconfig_mapping("x86"), kind="qat",
         raw=True),
    Case("qat_linear_train_mode", SmallLinear, _randn((4, 6)), lambda: get_default_qat_qconfig_mapping("qnnpack"),
         kind="qat", keep_training=True),
    Case("qat_convbn", QatConvs, _randn((2, 3, 8, 8)), lambda: get_default_qat_qconfig_mapping("x86"), kind="qat"),
    Case("qat_convbn_fbgemm", QatConvs, _randn((2, 3, 8, 8)), lambda: get_default_qat_qconfig_mapping("fbgemm"),
         kind="qat", backend_config=get_fbgemm_backend_config),
    Case("mixed_none_qconfigs", Mixed, _randn((3, 8)), _mixed_none),
    Case("regex_qconfigs", Mixed, _randn((3, 8)), _regex),
    Case("object_type_qconfigs", Mixed, _randn((3, 8)), _object_types),
    Case("fp16_static", SmallLinear, _randn((4, 6)), _qcm(global_=float16_static_qconfig)),
    Case("fp16_dynamic", SmallLinear, _randn((4, 6)), _qcm(global_=float16_dynamic_qconfig)),
    Case("dynamic_functional", DynamicFunctional, _randn((4, 6)), _qcm(global_=default_dynamic_qconfig)),
    Case("per_channel_x86", TinyCNN, _randn((2, 3, 8, 8)), lambda: get_default_qconfig_mapping("x86"),
         backend_config=get_x86_backend_config),
    Case("per_channel_fbgemm", TinyCNN, _randn((2, 3, 8, 8)), lambda: get_default_qconfig_mapping("fbgemm"),
         backend_config=get_fbgemm_backend_config),
    Case("per_channel_qnnpack", TinyCNN, _randn((2, 3, 8, 8)), lambda: get_default_qconfig_mapping("qnnpack"),
         backend_config=get_qnnpack_backend_config),
    Case("symmetric_qnnpack", ResNetBlock, _randn((2, 3, 8, 8)), _get_symmetric_qnnpack_qconfig_mapping,
         backend_config=get_qnnpack_backend_config),
    Case("per_tensor_default", Convs, _randn((2, 3, 9, 9), (1, 1, 3, 3, 3)), _qcm(global_=default_qconfig),
         lowered_engines=("x86", "fbgemm")),
    Case("standalone_by_name", WithStandalone, _randn((1, 3, 5, 5)), _x86,
         prepare_custom_config=_standalone_config("name", False), raw=True),
    Case("standalone_by_class_quantized_io", TwoStandalones, _randn((1, 3, 5, 5)), _x86,
         prepare_custom_config=_standalone_config("class", True)),
    Case("custom_module_static", WithCustom, _randn((4, 6)), _x86,
         prepare_custom_config=_custom_prepare,
         convert_custom_config=_custom_convert, raw=True),
    Case("custom_lstm_static", StaticLSTM, _lstm_inputs, _x86,
         prepare_custom_config=_lstm_prepare, convert_custom_config=_lstm_convert),
    Case("custom_lstm_static_tuple", StaticLSTMTuple, _lstm_inputs, _x86,
         prepare_custom_config=_lstm_prepare, convert_custom_config=_lstm_convert),
    Case("equalization_linear", LinearChain, _randn((4, 6)), _qcm(global_=default_qconfig),
         equalization_config=_qcm(global_=default_equalization_qconfig), raw=True),
    Case("equalization_functional", FunctionalLinearChain, _randn((4, 6)), _qcm(global_=default_qconfig),
         equalization_config=_qcm(global_=default_equalization_qconfig)),
    # torch's equalization cannot write a plain tensor into an nn.Parameter slot: torch raises TypeError
    Case("equalization_functional_parameters", lambda: FunctionalLinearChain(as_parameters=True), _randn((4, 6)),
         _qcm(global_=default_qconfig), equalization_config=_qcm(global_=default_equalization_qconfig)),
    # the equalized weights live in a submodule: the passes after equalization must read the scaled ones
    Case("equalization_functional_submodule", SubmoduleLinearChain, _randn((4, 6)), _qcm(global_=default_qconfig),
         equalization_config=_qcm(global_=default_equalization_qconfig)),
    Case("equalization_two_inputs", TwoInputsLinear, _randn((4, 6), (4, 6)), _qcm(global_=default_qconfig),
         equalization_config=_qcm(global_=default_equalization_qconfig)),
    Case("equalization_after_reshape", ReshapedConv, _randn((2, 64)), lambda: get_default_qconfig_mapping("fbgemm"),
         equalization_config=_qcm(global_=default_equalization_qconfig)),
    Case("equalization_users_order", TwoReLUsThenEqualized, _randn((4, 8)), _two_relus_mapping,
         equalization_config=_qcm(global_=default_equalization_qconfig)),
    Case("equalization_conv", ConvChain, _randn((2, 3, 6, 6)), _qcm(global_=default_qconfig),
         equalization_config=_qcm(global_=default_equalization_qconfig)),
    Case("input_observer_users_reordered", InputObserverUsers, _randn((2, 4), (2, 4)),
         _qcm(global_=default_qconfig)),
    Case("quantized_io", QuantIO, _randn((3, 6), (3, 6)), _x86,
         prepare_custom_config=_io_config([0], [0]), quantized_inputs=(0,), raw=True),
    Case("quantized_io_nested_tuple", NestedTupleOut, _randn((3, 6)), _x86,
         prepare_custom_config=_io_config([0], [1]), quantized_inputs=(0,)),
    Case("quantized_io_dict", DictOut, _randn((3, 6)), _x86, prepare_custom_config=_io_config([], [0])),
    Case("quant_stubs", Stubs, _randn((3, 6)), _x86),
    Case("multi_io", MultiIO, _randn((3, 6), (3, 5), (1, 2, 3, 3)), _x86),
    Case("preserved_attributes", Preserved, _randn((3, 6)), _x86,
         prepare_custom_config=_prepare_preserved, convert_custom_config=_convert_preserved),
    Case("preserved_submodules", PreservedSubmodules, _randn((2, 3, 6, 6)), _x86,
         convert_custom_config=_convert_preserved_submodules),
    Case("tuple_getitem", TupleGetitem, _randn((3, 6)), _x86),
    Case("cat_shared_observers", CatShared, _randn((3, 6), (1, 2, 3, 3)), _x86),
    Case("misc_ops", MiscOps, _randn((2, 3, 10, 10)), _x86),
    Case("shared_module", SharedModule, _randn((3, 6)), _x86),
    Case("convert_time_qconfig_mapping", Mixed, _randn((3, 8)), _convert_time_prepare,
         convert_qconfig_mapping=_convert_time_convert, raw=True),
    # convert-time mappings torch refuses (AssertionError twice, then LookupError from fusion)
    Case("convert_time_qconfig_missing_key", Mixed, _randn((3, 8)), _convert_time_prepare,
         convert_qconfig_mapping=_convert_time_missing_key),
    Case("convert_time_qconfig_changed", Mixed, _randn((3, 8)), _convert_time_prepare,
         convert_qconfig_mapping=_convert_time_changed),
    Case("convert_time_qconfig_fusion_mismatch", Mixed, _randn((3, 8)), _convert_time_prepare,
         convert_qconfig_mapping=_convert_time_fusion_mismatch),
    Case("qat_convert_time_qconfig_mapping", QatConvs, _randn((2, 3, 8, 8)),
         lambda: get_default_qat_qconfig_mapping("x86"), kind="qat",
         convert_qconfig_mapping=lambda: get_default_qat_qconfig_mapping("x86").set_object_type(nn.Linear, None)),
    Case("name_clash", NameClash, _randn((3, 6)), _x86),
    Case("shape_arithmetic", ShapeArithmetic, _randn((2, 5, 8)), _x86),
    Case("shared_weights", SharedWeights, _randn((3, 6)), _x86),
    Case("qat_extras", QatExtras, lambda: (torch.randn(4, 6), torch.randint(0, 10, (4,)), torch.randn(2, 1, 3, 3, 3)),
         _qat_extras_mapping, kind="qat", lowered_engines=("x86", "fbgemm")),
    Case("dynamic_extras", DynamicExtras, _randn((5, 2, 4)), _qcm(global_=default_dynamic_qconfig)),
    Case("nested_standalone", WithNestedStandalone, _randn((2, 4)), _x86,
         prepare_custom_config=_nested_standalone_config),
    Case("nested_custom", WithNestedCustom, _randn((3, 6)), _x86,
         prepare_custom_config=_custom_prepare, convert_custom_config=_custom_convert),
    Case("quantized_io_pass_through", PassThrough, _randn((3, 6), (3, 6)), _x86,
         prepare_custom_config=_io_config([0, 1], [0, 1, 2]), quantized_inputs=(0, 1)),
    Case("node_name_clash", NodeNameClash, _randn((3, 6), (3, 6)), _x86),
    Case("weight_expressions_static", WeightExpressions, _randn((3, 6), (1, 2, 3, 3)), _x86),
    Case("weight_expressions_dynamic", WeightExpressions, _randn((3, 6), (1, 2, 3, 3)),
         _qcm(global_=default_dynamic_qconfig)),
    Case("functional_norms", FunctionalNorms, _randn((2, 4, 3, 3)), _x86),
    Case("uncalibrated_dynamic", WeightExpressions, _randn((3, 6), (1, 2, 3, 3)),
         _qcm(global_=default_dynamic_qconfig), calibration_batches=0),
    Case("uncalibrated_dynamic_functional", DynamicFunctional, _randn((4, 6)), _qcm(global_=default_dynamic_qconfig),
         calibration_batches=0),
    Case("uncalibrated_static", FunctionalLinear, _randn((3, 6)), _x86, calibration_batches=0),
    Case("embedding_variants", EmbeddingVariants, _embedding_inputs,
         _qcm(object_type=[(nn.Embedding, float_qparams_weight_only_qconfig),
                           (nn.EmbeddingBag, float_qparams_weight_only_qconfig)])),
    # lowering: models shaped like real architectures and one per lowering rule (tests/support/arch_models.py)
    Case("resnet_bottleneck", am.ResNetBottleneckNet, _randn((2, 3, 16, 16)), _x86),
    Case("resnet_bottleneck_qnnpack", am.ResNetBottleneckNet, _randn((2, 3, 16, 16)), _fast_mapping("qnnpack"),
         backend_config=get_qnnpack_backend_config),
    Case("resnet_bottleneck_qat", am.ResNetBottleneckNet, _randn((2, 3, 16, 16)),
         lambda: get_default_qat_qconfig_mapping("x86"), kind="qat"),
    Case("mobilenet_like", am.MobileNetLike, _randn((2, 3, 16, 16)), _x86),
    Case("mobilenet_like_fbgemm", am.MobileNetLike, _randn((2, 3, 16, 16)), _fast_mapping("fbgemm"),
         backend_config=get_fbgemm_backend_config),
    Case("mobilenet_like_qnnpack_qat", am.MobileNetLike, _randn((2, 3, 16, 16)),
         lambda: get_default_qat_qconfig_mapping("qnnpack"), kind="qat", backend_config=get_qnnpack_backend_config),
    Case("transformer_block", am.TransformerBlock, _randn((2, 5, 8)), _x86),
    Case("transformer_block_qnnpack", am.TransformerBlock, _randn((2, 5, 8)), _fast_mapping("qnnpack"),
         backend_config=get_qnnpack_backend_config),
    Case("regnet_yblock", am.YBlockNet, _randn((2, 3, 16, 16)), _x86),
    Case("regnet_yblock_qat", am.YBlockNet, _randn((2, 3, 16, 16)),
         lambda: get_default_qat_qconfig_mapping("x86"), kind="qat"),
    Case("inception", am.InceptionNet, _randn((2, 3, 16, 16)), _x86),
    Case("convnext_block", am.ConvNeXtBlockNet, _randn((2, 3, 16, 16)), _x86),
    Case("convnext_block_qnnpack", am.ConvNeXtBlockNet, _randn((2, 3, 16, 16)), _fast_mapping("qnnpack"),
         backend_config=get_qnnpack_backend_config),
    Case("swin_block", am.SwinBlockNet, _randn((1, 3, 16, 16)), _x86),
    Case("swin_block_qnnpack", am.SwinBlockNet, _randn((1, 3, 16, 16)), _fast_mapping("qnnpack"),
         backend_config=get_qnnpack_backend_config),
    Case("recurrent_dynamic", am.RecurrentNet, _randn((5, 2, 4)), _qcm(global_=default_dynamic_qconfig)),
    Case("recurrent_fp16_dynamic", am.RecurrentNet, _randn((5, 2, 4)), _qcm(global_=float16_dynamic_qconfig)),
    Case("recurrent_dynamic_x86_mapping", am.RecurrentNet, _randn((5, 2, 4)),
         lambda: _x86().set_object_type(nn.LSTM, default_dynamic_qconfig)
         .set_object_type(nn.GRU, per_channel_dynamic_qconfig)),
    Case("embedding_recommender", am.EmbeddingRecommender, _recommender_inputs, _recommender_mapping),
    Case("transposed_convs", am.TransposedConvs, _randn((2, 3, 5, 5)), _qcm(global_=default_qconfig)),
    Case("transposed_convs_qnnpack", am.TransposedConvs, _randn((2, 3, 5, 5)),
         lambda: get_default_qconfig_mapping("qnnpack"), backend_config=get_qnnpack_backend_config),
    Case("functional_weighted", am.FunctionalWeighted, _randn((3, 4), (1, 2, 5, 5)), _x86),
    Case("functional_weighted_qnnpack", am.FunctionalWeighted, _randn((3, 4), (1, 2, 5, 5)),
         lambda: get_default_qconfig_mapping("qnnpack"), backend_config=get_qnnpack_backend_config),
    Case("functional_weighted_per_tensor", am.FunctionalWeighted, _randn((3, 4), (1, 2, 5, 5)),
         _qcm(global_=default_qconfig)),
    Case("dynamic_functional_linear", am.DynamicFunctionalLinear, _randn((4, 6)),
         _qcm(global_=default_dynamic_qconfig)),
    Case("dynamic_functional_linear_fp16", am.DynamicFunctionalLinear, _randn((4, 6)),
         _qcm(global_=float16_dynamic_qconfig)),
    Case("binary_ops", am.BinaryOps, _randn((3, 6)), _x86),
    Case("binary_ops_fbgemm", am.BinaryOps, _randn((3, 6)), _fast_mapping("fbgemm"),
         backend_config=get_fbgemm_backend_config),
    Case("binary_ops_qnnpack", am.BinaryOps, _randn((3, 6)), _fast_mapping("qnnpack"),
         backend_config=get_qnnpack_backend_config),
    Case("conv3d_fusions", am.Conv3dNet, _randn((1, 1, 3, 3, 3)), _x86, lowered_engines=("x86", "fbgemm")),
    Case("conv3d_fusions_qat", am.Conv3dNet, _randn((1, 1, 3, 3, 3)), lambda: get_default_qat_qconfig_mapping("x86"),
         kind="qat", lowered_engines=("x86", "fbgemm")),
    Case("norms_activations", am.NormsActivations, _randn((2, 3, 6, 6), (1, 1, 3, 3, 3)),
         lambda: _x86().set_object_type(nn.PReLU, default_qconfig)),
    # PReLU under a per-channel weight observer: torch's quantized PReLU.from_reference fails (IndexError)
    Case("prelu_per_channel", am.NormsActivations, _randn((2, 3, 6, 6), (1, 1, 3, 3, 3)), _x86),
    Case("norms_activations_per_tensor", am.NormsActivations, _randn((2, 3, 6, 6), (1, 1, 3, 3, 3)),
         _qcm(global_=default_qconfig)),
    Case("copy_ops", am.CopyOps, _randn((2, 3, 8, 8)), _x86),
    Case("copy_ops_qnnpack", am.CopyOps, _randn((2, 3, 8, 8)), _fast_mapping("qnnpack"),
         backend_config=get_qnnpack_backend_config),
    # torch lowers these to ConvAdd2d / ConvAddReLU2d / LinearTanh / LinearLeakyReLU; only the onednn engine runs them
    Case("onednn_fusions", am.OnednnFusions, _randn((2, 3, 4, 4)), _onednn_fusions,
         lowered_engines=("onednn", "x86", "fbgemm", "qnnpack"),
         backend_config=get_onednn_backend_config),
    Case("float_island", am.FloatIsland, _randn((3, 6)), _float_island),
    # torch fails on these (mostly when lowering), and qfx must fail with its exception type: IndexError
    # (keyword calls, output indexes past the outputs), KeyError (a fused matmul-ReLU, which has no quantized
    # op; a folded weight read elsewhere; a node nested in a folded weight's arguments; a per-channel dynamic
    # activation, decomposed), AttributeError (a constant where a standalone module takes a quantized input,
    # or as the scale of the model's own quantize after a LayerNorm), TypeError (a computed scale there),
    # NotImplementedError (an fp16 dynamic Linear whose observed output makes it static), RuntimeError (an
    # add torch's lowering erases while a float linear still reads it)
    Case("keyword_calls_static", am.KeywordCalls, _randn((3, 4)), _qcm(global_=default_qconfig)),
    Case("keyword_calls_dynamic", am.KeywordCalls, _randn((3, 4)), _qcm(global_=default_dynamic_qconfig)),
    Case("keyword_calls_unquantized", am.KeywordCalls, _randn((3, 4)), QConfigMapping),
    Case("matmul_relu_pattern", am.MatmulRelu, _randn((2, 4, 4), (2, 4, 4)), _qcm(global_=default_qconfig),
         backend_config=_matmul_relu_backend),
    Case("weight_read_twice", am.WeightReadTwice, _randn((3, 4)), _x86),
    Case("dynamic_per_channel_activation", am.LinearChain, _randn((3, 4)), _dynamic_per_channel_activation),
    Case("standalone_taking_constant", am.StandaloneTakingConstant, _randn((2, 4)), _x86,
         prepare_custom_config=_standalone_taking_constant),
    Case("user_quantize_constant_scale", lambda: am.UserQuantizedLayerNorm(False), _randn((2, 4)),
         lambda: _x86().set_module_name("ln", None)),
    Case("user_quantize_computed_scale", lambda: am.UserQuantizedLayerNorm(True), _randn((2, 4)),
         lambda: _x86().set_module_name("ln", None)),
    Case("add_feeding_float_linear", am.AddFeedingFloatLinear, _randn((4, 6)), _qint8_adds),
    Case("padding_from_input", am.PaddingFromInput, _randn((1, 3, 8, 8)), _x86),
    Case("output_index_out_of_range", am.TwoOutputs, _randn((2, 4)), _x86,
         prepare_custom_config=lambda: PrepareCustomConfig().set_output_quantized_indexes([2])),
    Case("fp16_dynamic_between_static", am.LinearChain, _randn((3, 4)),
         lambda: _x86().set_module_name("b", float16_dynamic_qconfig)),
]

CASES_BY_NAME: dict[str, Case] = {c.name: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"


# ---------------------------------------------------------------------------------------------------------
# preparing


def seeded_inputs(case: Case, seed: int) -> tuple:
    """The case's example inputs drawn with `seed` (float, as the observed model takes them)."""
    torch.manual_seed(seed)
    return case.inputs()


def prepare_case(case: Case) -> tuple[torch.fx.GraphModule, tuple]:
    """Build, prepare and calibrate the case's model deterministically. Returns (observed, example_inputs)."""
    torch.manual_seed(0)
    model = case.model()
    example = seeded_inputs(case, 1)
    kwargs: dict[str, Any] = {"example_inputs": example}
    if case.prepare_custom_config is not None:
        kwargs["prepare_custom_config"] = case.prepare_custom_config()
    if case.backend_config is not None:
        kwargs["backend_config"] = case.backend_config()
    if case.kind == "qat":
        model.train()
        observed = prepare_qat_fx(model, case.qconfig_mapping(), **kwargs)
    else:
        model.eval()
        if case.equalization_config is not None:
            kwargs["_equalization_config"] = case.equalization_config()
        observed = prepare_fx(model, case.qconfig_mapping(), **kwargs)
    with torch.no_grad():
        for i in range(case.calibration_batches):
            observed(*seeded_inputs(case, 10 + i))
    if case.kind == "qat" and not case.keep_training:
        observed.eval()
    return observed, example


def run_inputs(case: Case, seed: int) -> tuple:
    """Inputs for the converted model: the declared quantized input indexes are quantized (per tensor)."""
    inputs = list(seeded_inputs(case, seed))
    for i in case.quantized_inputs:
        inputs[i] = torch.quantize_per_tensor(inputs[i], 0.05, 128, torch.quint8)
    return tuple(inputs)


def convert_kwargs(case: Case) -> dict[str, Any]:
    """Fresh convert-time arguments for one convert call (configs are never shared between calls)."""
    kwargs: dict[str, Any] = {}
    if case.convert_custom_config is not None:
        kwargs["convert_custom_config"] = case.convert_custom_config()
    if case.convert_qconfig_mapping is not None:
        kwargs["qconfig_mapping"] = case.convert_qconfig_mapping()
    if case.backend_config is not None:
        kwargs["backend_config"] = case.backend_config()
    return kwargs
