"""Cases modelled on PyTorch's own FX quantization tests (test/quantization/fx/test_quantize_fx.py:
TestQuantizeFx and TestQuantizeFxOps), for patterns the main zoo (tests/support/models.py) does not reach:
pixel (un)shuffle, bmm, narrow, softmax, 3-d matmul, functional onednn-style fusions, interpolate modes,
shape ops on quantized tensors, mixed cats, functional norms with weights, embeddings, transposed convs,
dynamic / fp16 quantization of modules and cells, reduce_range and symmetric qconfigs, fixed-qparams ops,
multiple and structured outputs, scalar and in-place arithmetic, quantized batch norm, activations, pools,
QAT under qnnpack (and learnable fake quant, train mode), the executorch / TensorRT / fbgemm backend
configs, equalization, the static custom-module LSTM, quantized input/output indexes, convert-time qconfig
mappings and backend configs, and calibration edge cases (none, all-zero, huge values, float64/float16).

Some cases are ones torch refuses somewhere (its lowering or its converted model's run), commented at the
case: qfx must then fail with torch's exception type.

Names start with "suite_", so test ids never clash with the main zoo's.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (
    MinMaxObserver,
    QConfig,
    QConfigMapping,
    default_dynamic_qconfig,
    default_qconfig,
    default_weight_observer,
    float16_dynamic_qconfig,
    float16_static_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    per_channel_dynamic_qconfig,
)
from torch.ao.quantization.backend_config import (
    get_executorch_backend_config,
    get_fbgemm_backend_config,
    get_onednn_backend_config,
    get_qnnpack_backend_config,
    get_tensorrt_backend_config,
)

from torch.ao.quantization.fx._equalize import default_equalization_qconfig

from tests.support.models import Case, Factory, _qcm, _randn, _x86

BOTH = ("x86", "qnnpack")


# ---------------------------------------------------------------------------------------------------------
# models


class PixelShuffle(nn.Module):
    """F.pixel_shuffle / nn.PixelShuffle / F.pixel_unshuffle / nn.PixelUnshuffle between convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 1)
        self.ps = nn.PixelShuffle(2)
        self.pu = nn.PixelUnshuffle(2)
        self.conv2 = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        y = F.pixel_shuffle(y, 2)
        y = F.pixel_unshuffle(y, 2)
        y = self.pu(self.ps(y))
        return self.conv2(y)


class Bmm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        a = self.fc(x)
        return torch.bmm(a, y.transpose(1, 2)), torch.bmm(a, a.transpose(1, 2))


class Narrow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        a = torch.narrow(y, 1, 0, 2)
        b = y.narrow(1, 2, 2)
        c = y.narrow(dim=3, start=1, length=2)
        return a + b, c


class ClampKwargs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.hardtanh = nn.Hardtanh(min_val=-0.5, max_val=0.5)

    def forward(self, x):
        x = self.conv(x)
        a = F.hardtanh(x, min_val=-1.0, max_val=1.0)
        b = torch.clamp(x, min=-0.3)
        c = x.clamp(max=0.7)
        d = F.relu6(x)
        e = torch.clamp(x, -0.1, 0.1)
        f = F.hardtanh(self.hardtanh(x), inplace=True)
        return a, b, c, d, e, f


class Softmaxes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        y = self.fc(x)
        return self.softmax(y), F.softmax(y, dim=-1), y.softmax(0), torch.softmax(y, 1)


class Matmul3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        a = self.fc(x)
        return torch.matmul(a, y.transpose(-1, -2)), a.matmul(a.transpose(1, 2)), a @ y.transpose(1, 2)


class FunctionalOnednnFusions(nn.Module):
    """Linear + torch.tanh / F.leaky_relu / nn.LeakyReLU, conv + add + F.relu (onednn's fusions, functional)."""

    def __init__(self, functional_leaky: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)
        self.fc3 = nn.Linear(4, 4)
        self.leaky = nn.LeakyReLU(0.05)
        self.conv = nn.Conv2d(2, 2, 1)
        self.tanh = nn.Tanh()
        # torch's onednn fusion of a Linear with a functional leaky_relu or tanh fails in prepare (AssertionError:
        # Incorrect types for input modules): the onednn case uses modules there
        self.functional_leaky = functional_leaky

    def forward(self, x, img):
        a = torch.tanh(self.fc1(x)) if self.functional_leaky else self.tanh(self.fc1(x))
        b = F.leaky_relu(self.fc2(a), negative_slope=0.2) if self.functional_leaky else self.fc2(a)
        c = self.leaky(self.fc3(b))
        d = F.relu(self.conv(img) + img)
        e = torch.add(img, self.conv(img))
        return c, d, e


class Interpolates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.up_bilinear = nn.UpsamplingBilinear2d(scale_factor=2)
        self.up_nearest = nn.UpsamplingNearest2d(size=(5, 5))

    def forward(self, x):
        y = self.conv(x)
        a = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        b = F.interpolate(y, size=(3, 5), mode="nearest")
        c = F.interpolate(y, scale_factor=1.5, mode="bicubic", align_corners=False)
        d = self.up_nearest(self.up_bilinear(self.up(y)))
        e = F.upsample(y, scale_factor=2)
        return a, b, c, d, e


class Interpolate3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return F.interpolate(y, scale_factor=2, mode="nearest"), F.interpolate(y, size=(3, 3, 3), mode="trilinear")


class ShapeOps(nn.Module):
    """Shape ops on a quantized tensor, as TestQuantizeFxOps.test_general_shape_ops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.maxpool1d = nn.MaxPool1d(kernel_size=2)
        self.maxpool2d = nn.MaxPool2d(kernel_size=2)
        self.dropout = nn.Dropout()
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.conv1(x)
        x = self.maxpool2d(x)
        n, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
        y = self.maxpool1d(x.reshape(n, c, h * w))
        y = y.view(n, c, -1).transpose(1, 2).contiguous().permute(0, 2, 1)
        x = x.transpose(2, 3).contiguous()
        x = torch.transpose(x, 2, 3)
        x = x.permute(0, 1, 3, 2).permute(0, 1, 3, 2)
        x = F.dropout(x, training=False)
        x = self.dropout(x)
        x = x.repeat(1, 1, 1, 1)
        x = x.repeat_interleave(1, 1)
        x = torch.repeat_interleave(x, 1, 1)
        x = self.relu(x)
        x = F.relu(x)
        x = x.relu()
        x = torch.unsqueeze(torch.squeeze(x.unsqueeze(0), 0), 0).squeeze(0)
        x = x.detach()
        x = torch.flatten(x, 2).reshape(n, c, h, w)
        a, b = torch.chunk(x, 2, dim=1)
        s1, s2 = torch.split(x, 2, dim=1)
        u = torch.unbind(x, dim=1)
        t = x.chunk(2, 1)[0] + a.sigmoid() * 0
        g = x[:, 0:2, 0, :]
        x = self.conv2(torch.cat([a, b], 1))
        return x, y, s1, s2, u[0], t, g


class GetitemOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        y = self.fc(x)
        return y[0], y[:, 1:3], y[..., -1], y[None], y.split(3, -1)[1], y.view(2, -1, 3).unbind(1)[0]


class MixedCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x, y):
        a = self.fc1(x)
        b = self.fc2(x)
        c = torch.cat([a, b], 0)
        d = torch.cat([a, y], 1)  # y enters unquantized in the graph (an input)
        e = torch.cat((a, a, b), dim=-1)
        f = torch.stack([a, b])
        return c, d, e, f


class MixedCatNone(nn.Module):
    """A cat of a quantized and a float (qconfig None) tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 4)
        self.f = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cat([self.q(x), self.f(x)], 1)


class FunctionalNormsWeights(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 1)
        self.ln_w = nn.Parameter(torch.rand(3) + 0.5)
        self.ln_b = nn.Parameter(torch.randn(3))
        self.gn_w = nn.Parameter(torch.rand(4) + 0.5)
        self.gn_b = nn.Parameter(torch.randn(4))
        self.in_w = nn.Parameter(torch.rand(4) + 0.5)
        self.in_b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        y = self.conv(x)
        a = F.layer_norm(y, (3,), self.ln_w, self.ln_b, eps=1e-4)
        b = F.group_norm(y, 2, self.gn_w, self.gn_b)
        c = F.instance_norm(y, weight=self.in_w, bias=self.in_b)
        d = F.layer_norm(y, (3, 3))
        return a, b, c, d


class EmbeddingModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 4)
        self.bag_sum = nn.EmbeddingBag(12, 4, mode="sum")
        self.bag_mean = nn.EmbeddingBag(12, 4, mode="mean", include_last_offset=True)
        self.fc = nn.Linear(4, 2)
        self.register_buffer("last", torch.tensor([8]))

    def forward(self, idx, flat, offsets, weights):
        e = self.emb(idx).sum(1)
        s = self.bag_sum(flat, offsets, per_sample_weights=weights)
        m = self.bag_mean(flat, torch.cat([offsets, self.last]))
        return self.fc(e + s), m


def _embedding_inputs() -> tuple:
    flat = torch.randint(0, 12, (8,))
    return (torch.randint(0, 12, (3, 2)), flat, torch.tensor([0, 2, 5]), torch.rand(8))


class EmbeddingBag2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(12, 4, mode="max")

    def forward(self, idx):
        return self.bag(idx)


class ConvTransposes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.t1 = nn.ConvTranspose1d(2, 3, 2, stride=2)
        self.t3 = nn.ConvTranspose3d(1, 2, 2)
        self.relu = nn.ReLU()

    def forward(self, x, v):
        return self.relu(self.t1(x)), self.t3(v)


class FunctionalConvTransposes(nn.Module):
    """F.conv_transpose1d/2d with get_attr weights, all arguments positional (a tuple or an int stride); with
    the stride alone by keyword (`stride="kw"`) torch's conv_transpose1d_prepack misses the padding when
    lowering (RuntimeError)."""

    def __init__(self, stride: Any = (2,)) -> None:
        super().__init__()
        self.stride = stride
        self.w1 = nn.Parameter(torch.randn(2, 3, 2))
        self.b1 = nn.Parameter(torch.randn(3))
        self.w2 = nn.Parameter(torch.randn(2, 3, 2, 2))

    def forward(self, x, y):
        if self.stride == "kw":  # keyword stride: torch's conv_transpose1d_prepack misses padding (RuntimeError)
            a = F.conv_transpose1d(x, self.w1, self.b1, stride=(2,))
        else:
            a = F.conv_transpose1d(x, self.w1, self.b1, self.stride, (0,), (0,), 1, (1,))
        b = F.relu(F.conv_transpose2d(y, self.w2, None, (1, 1), (0, 0), (0, 0), 1, (1, 1)))
        return a, b


class DynamicModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(6, 4)
        self.lstm = nn.LSTM(4, 3)
        self.gru = nn.GRU(4, 3, num_layers=2)

    def forward(self, x):
        y = self.fc2(self.relu(self.fc(x)))
        z, (h, c) = self.lstm(y)
        g, hg = self.gru(y)
        return z, h, c, g, hg


class DynamicCells(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(4, 3)
        self.gru = nn.GRUCell(4, 3)
        self.rnn_tanh = nn.RNNCell(4, 3)
        self.rnn_relu = nn.RNNCell(4, 3, nonlinearity="relu", bias=False)

    def forward(self, x, h):
        hx, cx = self.lstm(x, (h, h))
        g = self.gru(x)
        r = self.rnn_tanh(x, h)
        q = self.rnn_relu(x)
        return hx, cx, g, r, q


class DynamicLinearMultiUse(nn.Module):
    """TestQuantizeFx.test_dynamic_with_fusion_multiple_uses / test_dynamic_linear_input_multiple_use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.fc1(x))
        return self.fc2(y) + self.fc1(y), F.relu(self.fc2(x))


class Fp16Static(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x, y):
        a = self.fc(x)
        b = a + y
        c = torch.cat([a, b], 1)
        d = torch.mul(a, b)
        return self.fc2(F.relu(d)), c, torch.add(a, 1.0)


class Conv2Relu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.relu(self.conv(x))
        return self.fc(y.mean((2, 3)))


class FixedQParams(nn.Module):
    """sigmoid / tanh / hardsigmoid in module, functional, method and in-place forms."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.sigmoid = nn.Sigmoid()
        self.tanh = nn.Tanh()
        self.hardsigmoid = nn.Hardsigmoid()

    def forward(self, x):
        x = self.conv(x)
        a = self.sigmoid(x) + torch.sigmoid(x) + x.sigmoid()
        b = self.tanh(x) * torch.tanh(x) * x.tanh()
        c = self.hardsigmoid(x) - F.hardsigmoid(x)
        d = F.sigmoid(x)
        e = F.tanh(x)
        f = F.hardsigmoid(x, inplace=True)
        return a, b, c, d, e, f


class MultiOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x, img):
        a = self.fc(x)
        c = self.conv(img)
        return {"a": a, "nested": (c, [a, c.size(1)]), "n": x.shape[0]}, F.relu(a)


class CallMethodMixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        y = self.conv(x)
        y = y.reshape(x.size(0), -1)
        z = y.view(y.shape[0], 4, -1).flatten(1)
        return self.fc(z), y.size(-1), z.numel()


class ScalarArith(nn.Module):
    """torch.add with a scalar, operator.mul with a float constant, add/mul then relu, in place."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        a = self.fc(x)
        b = torch.add(a, 3.0)
        c = operator.mul(b, 0.5)
        d = torch.mul(c, 2)
        d = F.relu(d + 1)
        e = torch.relu(torch.add(a, 2))
        f = self.fc2(x)
        f += a
        f = F.relu(f, inplace=True)
        g = self.fc2(x)
        g *= a
        return d, e, f, g, 1.0 + a, 2.0 * a


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1)
        self.conv2 = nn.Conv2d(2, 2, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.conv1(x)
        b = self.conv2(x)
        a += b
        a = self.relu(a)
        b.relu_()
        c = torch.add(a, b)
        c = F.relu(c, inplace=True)
        return c, b


class BatchNorms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn2 = nn.BatchNorm2d(3)
        self.bn3 = nn.BatchNorm3d(2)
        self.relu = nn.ReLU()

    def forward(self, x, v):
        return self.relu(self.bn2(x)), F.relu(self.bn3(v)), self.bn2(x)


class Activations(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu6 = nn.ReLU6()
        self.hswish = nn.Hardswish()
        self.elu = nn.ELU(alpha=0.5)
        self.leaky = nn.LeakyReLU(0.3)
        self.dropout = nn.Dropout(0.2)
        self.silu = nn.SiLU()
        self.gelu = nn.GELU()
        self.mish = nn.Mish()

    def forward(self, x):
        y = self.fc(x)
        a = self.relu6(y) + F.relu6(y)
        b = self.hswish(y) + F.hardswish(y)
        c = self.elu(y) + F.elu(y, alpha=2.0)
        d = self.leaky(y) + F.leaky_relu(y)
        e = self.dropout(y) + F.dropout(y, p=0.1, training=False)
        f = self.silu(y) + F.gelu(y) + self.gelu(y) + self.mish(y)
        return a, b, c, d, e, f


class Pools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.conv1d = nn.Conv1d(2, 2, 1)
        self.conv3d = nn.Conv3d(1, 2, 1)
        self.aap1 = nn.AdaptiveAvgPool1d(2)
        self.aap2 = nn.AdaptiveAvgPool2d((2, 1))
        self.aap3 = nn.AdaptiveAvgPool3d(1)
        self.amp2 = nn.AdaptiveMaxPool2d(2)
        self.ap1 = nn.AvgPool1d(2)
        self.ap3 = nn.AvgPool3d(2)
        self.mp3 = nn.MaxPool3d(2)

    def forward(self, x, s, v):
        y = self.conv(x)
        a = self.aap2(y) + F.adaptive_avg_pool2d(y, 1)
        b = self.amp2(y)
        c = F.adaptive_max_pool2d(y, (1, 2))
        t = self.conv1d(s)
        d = self.aap1(t) + F.adaptive_avg_pool1d(t, 2) + self.ap1(t) + F.avg_pool1d(t, 2)
        w = self.conv3d(v)
        e = self.aap3(w) + F.adaptive_avg_pool3d(w, 1) + self.ap3(w) + self.mp3(w)
        f = F.avg_pool2d(y, 2, stride=1, padding=1, count_include_pad=False)
        return a, b, c, d, e, f


class LinearFromSubmodule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub = nn.Linear(4, 5)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(F.linear(x, self.sub.weight, self.sub.bias))
        return F.linear(y, self.sub.weight.t(), bias=None)


class QatConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv1d = nn.Conv1d(4, 2, 1)
        self.bn1d = nn.BatchNorm1d(2)
        self.relu1d = nn.ReLU()
        self.fc = nn.Linear(2, 2)
        self.fc_relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        y = self.bn2(self.conv2(y)) + y
        z = self.relu1d(self.bn1d(self.conv1d(y.mean(3))))
        return self.fc_relu(self.fc(z.mean(2)))


class SimpleConvLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


class QuantDequantInModel(nn.Module):
    """The user's own quantize_per_tensor / dequantize calls in a model that is also quantized."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        q = torch.quantize_per_tensor(y, 0.1, 10, torch.quint8)
        return q.dequantize() + y, torch.dequantize(q)


class ConvAddPatterns(nn.Module):
    """Conv followed by add with another conv output or a tensor input, relu after (x86 fusions)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 2, 1)
        self.c2 = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()

    def forward(self, x, y):
        a = self.c1(x) + self.c2(y)
        b = self.relu(self.bn(self.c1(a)) + a)
        c = torch.relu(y + self.c2(b))
        return a, b, c


class SumAndMean(nn.Module):
    """Reductions / value ops on quantized tensors (TestQuantizeFxOps.test_general_value_ops style)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.avg = nn.AvgPool2d(2)

    def forward(self, x):
        y = self.conv(x)
        a = y.mean([2, 3], keepdim=True)
        b = torch.mean(y, 1)
        c = self.avg(y) + F.avg_pool2d(y, 2)
        d = y.sum(1)
        e = torch.max(y, 1)[0]
        f = y.clamp(0, 1)
        return a, b, c, d, e, f, torch.sort(y.flatten(1), 1)[0]


class TwoInputsTuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, pair):
        a, b = pair
        return self.fc(x) + a * b, (self.fc(a), b)


class SequentialGetitem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        self.mods = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x):
        y = self.seq(x)
        for m in self.mods:
            y = m(y)
        return y


class ChannelShuffle(nn.Module):
    """TestQuantizeFxOps.test_channel_shuffle_lowering: module, functional and torch forms."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 1)
        self.cs = nn.ChannelShuffle(2)

    def forward(self, x):
        y = self.conv(x)
        return self.cs(y), F.channel_shuffle(y, 2), torch.channel_shuffle(y, 2), torch.native_channel_shuffle(y, 2)


class NonTensorAttrs(nn.Module):
    """TestQuantizeFx.test_getattr_with_nontensor_result: ndim/shape/dtype read off a quantized tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        dims = y.ndim
        dims_sub = dims - 1
        dims_sub2 = dims_sub - 1
        z = torch.add(y, dims_sub2)
        return z, y.dtype, y.shape[-1], y.is_quantized


class ConvVariants(nn.Module):
    """Convs with padding modes, groups, dilation, no bias, tuple strides; Linear on 3-d input, without bias."""

    def __init__(self, circular: bool = False) -> None:
        super().__init__()
        self.reflect = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")
        # (torch's quantized convs refuse 'circular' and 'replicate' when lowering: ValueError)
        self.circular = nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular" if circular else "zeros", bias=False)
        self.grouped = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.replicate = nn.Conv1d(4, 2, 3, padding=1, padding_mode="replicate" if circular else "reflect")
        self.strided = nn.Conv2d(4, 2, (1, 3), stride=(2, 1))
        self.lin = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        y = self.grouped(self.circular(self.reflect(x)))
        a = self.replicate(y.mean(3))
        b = self.lin(self.strided(y))
        return a, b


class FunctionalKwargs(nn.Module):
    """TestQuantizeFx.test_lowering_functional_{linear,conv}_with_kwargs: weights and bias by keyword."""

    def __init__(self, weight_keywords: bool = True) -> None:
        super().__init__()
        # weights by keyword: torch's lowering fails (AssertionError static, ValueError dynamic)
        self.weight_keywords = weight_keywords
        self.w = nn.Parameter(torch.randn(4, 4))
        self.b = nn.Parameter(torch.randn(4))
        self.cw = nn.Parameter(torch.randn(2, 2, 3, 3))
        self.cb = nn.Parameter(torch.randn(2))
        self.tw = nn.Parameter(torch.randn(2, 2, 2))

    def forward(self, x, img, seq):
        if self.weight_keywords:
            a = F.linear(x, weight=self.w, bias=self.b)
            b = F.relu(F.conv2d(img, weight=self.cw, bias=self.cb, stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                                groups=1))
        else:
            a = F.linear(x, self.w, bias=self.b)
            b = F.relu(F.conv2d(img, self.cw, self.cb, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1))
        c = F.conv_transpose1d(seq, self.tw, None, (2,), (0,), (1,), 1, (1,))
        return a, b, c


class AddReluMultiUse(nn.Module):
    """TestQuantizeFxOps.test_add_relu_multiple_uses_of_relu / test_ref_pattern_multi_use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, y):
        a = self.fc(x)
        b = self.relu(a + y)
        c = self.relu(b + b)
        d = F.relu(a)
        return c, d + a, torch.mul(d, c).relu(), a.add(b), a.mul(2.0).add(1.0)


class NoneThenQuantized(nn.Module):
    """TestQuantizeFx.test_default_quant_after_none_qconfig."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1)
        self.conv2 = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        x = self.conv1(x)
        x = x.transpose(1, 2)
        return self.conv2(x)


class PrecedenceSub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(self.fc1(x) + x) + x


class Precedence(nn.Module):
    """TestQuantizeFx.test_qconfig_precedence: global / object type / regex / name / name-type-order."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.sub1 = PrecedenceSub()
        self.sub2 = PrecedenceSub()
        self.module_conv1 = nn.Linear(4, 4)

    def forward(self, x):
        x = self.fc(x)
        x = self.sub1(x)
        x = self.sub2(x)
        return self.module_conv1(torch.sigmoid(x)) + x


class NonTraceableSub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return self.fc(-x)


class WithNonTraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.untraced = NonTraceableSub()

    def forward(self, x):
        return self.fc(self.untraced(self.fc(x)))


class Linear3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(self.relu(self.fc(x))).flatten(start_dim=1)


class BmmCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return torch.bmm(y, y.transpose(1, 2))


class ConvTransposeBn(nn.Module):
    """ConvTranspose + BatchNorm (fused by prepare), conv + bn + functional relu, Linear + BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(2, 2, 2, stride=2)
        self.bn = nn.BatchNorm2d(2)
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn2 = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)
        self.bn1d = nn.BatchNorm1d(3)

    def forward(self, x):
        y = self.bn(self.deconv(x))
        y = F.relu(self.bn2(self.conv(y)))
        return self.bn1d(self.fc(y.mean((2, 3))))


class ConstantsAndPassThrough(nn.Module):
    """Buffers and parameters as operands of quantized ops, the input returned as is, x.float() / x.to()."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("offset", torch.randn(4))
        self.scale = nn.Parameter(torch.rand(4) + 0.5)
        self.ident = nn.Identity()

    def forward(self, x, flag: bool = True):
        y = self.fc(x)
        a = y + self.offset
        b = torch.mul(y, self.scale)
        c = self.ident(y).float().to(torch.float32)
        d = torch.cat([y, y], 0)
        return x, a, b, c, d, flag


class CustomBackendOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        a = F.gelu(y)
        b = torch.add(a, y)
        return self.fc2(b), F.silu(b)


class DoubleModel(nn.Module):
    """A float64 model (Linear + ReLU + Conv): observers see float64 tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        y = self.relu(self.fc(x))
        return self.conv(y.unsqueeze(0).unsqueeze(0)), torch.sigmoid(y) + y


class _InnerLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return F.linear(x, self.w) + x


class _InnerAdds(nn.Module):
    def forward(self, x, y):
        for _ in range(6):
            x = torch.add(x, y)
            y = x * y
        return x, y


class ScopedNames(nn.Module):
    """Qparams attribute names: an unquantized module's output read by a root add and by an F.linear deep
    in a submodule (torch names the input's qparams after the linear's scope), and a dozen binary ops at
    the root and in a submodule (names past _scale_9)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.sub = nn.Sequential(_InnerLinear())
        self.adds = _InnerAdds()

    def forward(self, x):
        y = self.a(x)
        z = torch.add(y, x)
        w = self.sub(y)
        p, q = self.adds(z, w)
        for _ in range(6):
            p = p + q
            q = torch.mul(p, q)
        return p, q


class VarArgs(nn.Module):
    """*args inputs, an unused input, a plain (unregistered) tensor attribute, a None output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.plain = torch.randn(4)

    def forward(self, *xs):
        y = self.fc(xs[0])
        return y + self.plain, torch.mul(y, xs[1]), None, (xs[0],)


class KeywordOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, unused, *, y):
        return self.fc(x) - y, self.fc(y)


class ReuseInput(nn.Module):
    """TestQuantizeFx.test_reuse_input_qconfig: a reshape under default_reuse_input_qconfig, after a conv and alone."""

    def __init__(self, with_conv: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3) if with_conv else nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        return x.reshape(-1), torch.flatten(x, 1)


class EqualizationChain(nn.Module):
    """Equalization across fused Linear+ReLU and Conv+BN+ReLU, F.linear, and a Linear whose qconfig is None."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 1)
        self.bn1 = nn.BatchNorm2d(3)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.fc1 = nn.Linear(3, 4)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(4, 4)
        # (a buffer: torch's equalization cannot write a plain tensor into a Parameter slot, a TypeError)
        self.register_buffer("w", torch.randn(4, 4))
        self.fc3 = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv2(self.relu1(self.bn1(self.conv1(x))))
        z = self.fc2(self.relu2(self.fc1(y.mean((2, 3)))))
        return self.fc3(F.linear(z, self.w))


class StaticLSTMVariants(nn.Module):
    """A 2-layer bidirectional batch-first LSTM as torch's static custom module, called with a state or
    without one (torch's convert refuses that: AssertionError)."""

    def __init__(self, with_state: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.lstm = nn.LSTM(3, 2, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(4, 2)
        self.with_state = with_state

    def forward(self, x, h0, c0):
        out, (h, c) = self.lstm(self.fc(x), (h0, c0)) if self.with_state else self.lstm(self.fc(x))
        return self.head(out), h.sum(0), c


class DeadResults(nn.Module):
    """Results nobody reads: a Linear call, an add, an in-place relu_ on a quantized tensor; a torch._assert
    on a size read after a quantized layer (TestQuantizeFx.test_assert_on_size_after_quant_layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        self.fc2(y)
        torch.add(y, y)
        y.relu_()
        torch._assert(y.size(1) == 4, "wrong size")
        return self.fc2(y)


class MixedConsumers(nn.Module):
    """One input read by Linears of four qconfigs (int8 static, fp16 static, int8 dynamic, None), their
    outputs combined."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.c = nn.Linear(4, 4)
        self.d = nn.Linear(4, 4)
        self.e = nn.Linear(4, 4)

    def forward(self, x):
        a, b, c, d = self.a(x), self.b(x), self.c(x), self.d(x)
        return self.e(a + b), torch.cat([a, c, d], 1), F.relu(b) * c


# ---------------------------------------------------------------------------------------------------------
# configs


def _mixed_cat_none() -> QConfigMapping:
    return _x86().set_module_name("f", None)


def _reduce_range_qconfig() -> QConfigMapping:
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
        weight=default_weight_observer,
    )
    return QConfigMapping().set_global(qconfig)


def _qint8_symmetric() -> QConfigMapping:
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
        weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    )
    return QConfigMapping().set_global(qconfig)


def _qint8_symmetric_qnnpack() -> QConfigMapping:
    from torch.ao.quantization.qconfig_mapping import _get_symmetric_qnnpack_qconfig_mapping

    return _get_symmetric_qnnpack_qconfig_mapping()


def _embedding_mapping(qconfig: Any, bag_qconfig: Any = None) -> Factory:
    return _qcm(global_=default_qconfig, object_type=[(nn.Embedding, qconfig),
                                                      (nn.EmbeddingBag, bag_qconfig or qconfig)])


def _fast_qnnpack() -> QConfigMapping:
    from torch.ao.quantization.qconfig_mapping import _get_default_qconfig_mapping_with_default_qconfig

    qconfig = QConfig(activation=MinMaxObserver.with_args(reduce_range=False), weight=default_weight_observer)
    return _get_default_qconfig_mapping_with_default_qconfig(False, "qnnpack", qconfig)


def _onednn_mapping() -> QConfigMapping:
    qconfig = QConfig(activation=MinMaxObserver.with_args(reduce_range=False), weight=default_weight_observer)
    # a global qconfig only: the Tanh fused into LinearTanh must have the Linear's qconfig (not fixed qparams)
    return QConfigMapping().set_global(qconfig)


def _default_mapping_fixed() -> QConfigMapping:
    """get_default_qconfig_mapping's fixed-qparams qconfigs with default_qconfig elsewhere."""
    return get_default_qconfig_mapping("fbgemm").set_global(default_qconfig)


def _mixed_fixed_default() -> QConfigMapping:
    """Fixed-qparams ops under plain default_qconfig (torch warns and leaves them float... or refuses)."""
    return QConfigMapping().set_global(default_qconfig)


def _dynamic_mapping(qconfig: Any) -> Factory:
    return _qcm(object_type=[(nn.Linear, qconfig), (nn.ReLU, qconfig), (nn.LSTM, qconfig), (nn.GRU, qconfig)])


def _cells_mapping(qconfig: Any) -> Factory:
    return _qcm(object_type=[(nn.LSTMCell, qconfig), (nn.GRUCell, qconfig), (nn.RNNCell, qconfig)])


def _precedence() -> QConfigMapping:
    fast = QConfig(activation=MinMaxObserver.with_args(reduce_range=False), weight=default_weight_observer)
    return (
        QConfigMapping()
        .set_global(fast)
        .set_object_type(nn.Linear, default_qconfig)
        .set_module_name_regex("sub1.*", None)
        .set_module_name("sub2.fc1", None)
        .set_module_name_object_type_order("sub2", operator.add, 1, None)
        .set_module_name("module_conv1", float16_static_qconfig)
    )


def _fixed_wrong_qconfig() -> QConfigMapping:
    """A plain min/max qconfig on the fixed-qparams ops: torch warns and leaves them unquantized."""
    return _x86().set_object_type(nn.Sigmoid, default_qconfig).set_object_type(torch.tanh, default_qconfig)


def _bmm_backend() -> Any:
    from torch.ao.quantization.backend_config import BackendPatternConfig, DTypeConfig, ObservationType
    from torch.ao.quantization.backend_config import get_native_backend_config

    dtype = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8)
    return get_native_backend_config().set_backend_pattern_config(
        BackendPatternConfig(torch.bmm)
        .set_observation_type(ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT)
        .add_dtype_config(dtype))


def _non_traceable() -> Any:
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

    return PrepareCustomConfig().set_non_traceable_module_names(["untraced"])


def _constrained_backend() -> Any:
    """A backend whose add requires a scale of at least 2**-6 and whose gelu / silu share their input's
    observer: adds observed with a finer scale are left in float (the dtype check fails at prepare)."""
    from torch.ao.quantization.backend_config import (
        BackendConfig, BackendPatternConfig, DTypeConfig, DTypeWithConstraints, ObservationType)
    from torch.ao.quantization.backend_config.native import get_native_backend_config

    act = DTypeWithConstraints(dtype=torch.quint8, scale_min_lower_bound=2 ** -6)
    constrained = DTypeConfig(input_dtype=act, output_dtype=act, weight_dtype=torch.qint8, bias_dtype=torch.float)
    plain = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8, weight_dtype=torch.qint8,
                        bias_dtype=torch.float)
    native = get_native_backend_config()
    config = BackendConfig("constrained")
    for pattern in (nn.Linear, F.linear):
        config.set_backend_pattern_config(native.configs[[c.pattern for c in native.configs].index(pattern)])
    config.set_backend_pattern_config(
        BackendPatternConfig(torch.add).set_observation_type(ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT)
        .add_dtype_config(constrained))
    for op in (F.gelu, F.silu):
        config.set_backend_pattern_config(
            BackendPatternConfig(op).set_observation_type(ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT)
            .add_dtype_config(plain))
    return config


def _preserve(names: list[str]) -> Any:
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig

    return ConvertCustomConfig().set_preserved_attributes(names)

def _reuse_input() -> QConfigMapping:
    from torch.ao.quantization.qconfig import default_reuse_input_qconfig

    return (QConfigMapping().set_global(default_qconfig).set_object_type("reshape", default_reuse_input_qconfig)
            .set_object_type(torch.flatten, default_reuse_input_qconfig))


def _linear_axis1() -> QConfigMapping:
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    weight = PerChannelMinMaxObserver.with_args(ch_axis=1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return QConfigMapping().set_global(QConfig(activation=MinMaxObserver, weight=weight))


def _learnable_qat() -> QConfigMapping:
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver

    act = _LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                           dtype=torch.quint8, use_grad_scaling=True)
    weight = _LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128,
                                              quant_max=127, dtype=torch.qint8,
                                              qscheme=torch.per_tensor_symmetric, use_grad_scaling=True)
    return QConfigMapping().set_global(QConfig(activation=act, weight=weight))


def _lstm_prepare() -> Any:
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

    return PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, torch.ao.nn.quantizable.LSTM)


def _lstm_convert() -> Any:
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig

    return ConvertCustomConfig().set_observed_to_quantized_mapping(torch.ao.nn.quantizable.LSTM,
                                                                   torch.ao.nn.quantized.LSTM)


def _io(inputs: list[int], outputs: list[int]) -> Factory:
    def build() -> Any:
        from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

        return PrepareCustomConfig().set_input_quantized_indexes(inputs).set_output_quantized_indexes(outputs)

    return build


def _mixed_consumers() -> QConfigMapping:
    return (_x86().set_module_name("b", float16_static_qconfig).set_module_name("c", default_dynamic_qconfig)
            .set_module_name("d", None))


def _bmm_inputs() -> tuple:
    return (torch.randn(2, 3, 4), torch.randn(2, 5, 4))


# ---------------------------------------------------------------------------------------------------------
# cases

X86 = _x86

SUITE_CASES: list[Case] = [
    Case("suite_pixel_shuffle", PixelShuffle, _randn((1, 2, 4, 4)), X86, lowered_engines=BOTH),
    Case("suite_pixel_shuffle_qnnpack", PixelShuffle, _randn((1, 2, 4, 4)), _fast_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=BOTH),
    Case("suite_bmm", Bmm, _bmm_inputs, X86, lowered_engines=BOTH),
    Case("suite_narrow", Narrow, _randn((1, 3, 4, 4)), X86, lowered_engines=BOTH),
    Case("suite_clamp_kwargs", ClampKwargs, _randn((1, 3, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_softmax", Softmaxes, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_matmul_3d", Matmul3d, _bmm_inputs, X86, lowered_engines=BOTH),
    Case("suite_onednn_functional_fusions", lambda: FunctionalOnednnFusions(functional_leaky=False),
         _randn((3, 4), (1, 2, 3, 3)), _onednn_mapping,
         backend_config=get_onednn_backend_config, lowered_engines=("onednn", "x86")),
    Case("suite_onednn_functional_fusions_x86", FunctionalOnednnFusions, _randn((3, 4), (1, 2, 3, 3)), X86,
         lowered_engines=BOTH),
    Case("suite_interpolate", Interpolates, _randn((1, 2, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_interpolate_3d", Interpolate3d, _randn((1, 1, 2, 2, 2)), X86, lowered_engines=("x86",)),
    Case("suite_shape_ops", ShapeOps, _randn((1, 3, 4, 4)), X86, lowered_engines=BOTH),
    Case("suite_shape_ops_qnnpack", ShapeOps, _randn((1, 3, 4, 4)), _fast_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_getitem_ops", GetitemOps, _randn((2, 4)), X86, lowered_engines=BOTH),
    Case("suite_mixed_cat", MixedCat, _randn((3, 4), (3, 2)), X86, lowered_engines=BOTH),
    Case("suite_mixed_cat_none", MixedCatNone, _randn((3, 4)), _mixed_cat_none, lowered_engines=BOTH),
    Case("suite_functional_norms_weights", FunctionalNormsWeights, _randn((1, 2, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_embeddings_float_qparams", EmbeddingModules, _embedding_inputs,
         _embedding_mapping(float_qparams_weight_only_qconfig), lowered_engines=BOTH),
    Case("suite_embeddings_4bit", EmbeddingModules, _embedding_inputs,
         _embedding_mapping(float_qparams_weight_only_qconfig_4bit), lowered_engines=BOTH),
    Case("suite_embeddings_mixed_bits", EmbeddingModules, _embedding_inputs,
         _embedding_mapping(float_qparams_weight_only_qconfig, float_qparams_weight_only_qconfig_4bit),
         lowered_engines=BOTH),
    Case("suite_embedding_bag_max", EmbeddingBag2d, lambda: (torch.randint(0, 12, (3, 4)),),
         _embedding_mapping(float_qparams_weight_only_qconfig), lowered_engines=BOTH),
    Case("suite_conv_transpose_1d_3d", ConvTransposes, _randn((1, 2, 3), (1, 1, 2, 2, 2)),
         _qcm(global_=default_qconfig), lowered_engines=("x86",)),
    Case("suite_functional_conv_transposes", FunctionalConvTransposes, _randn((1, 2, 3), (1, 2, 3, 3)),
         _qcm(global_=default_qconfig), lowered_engines=BOTH),
    Case("suite_dynamic_modules", DynamicModules, _randn((3, 2, 4)), _dynamic_mapping(default_dynamic_qconfig),
         lowered_engines=BOTH),
    Case("suite_dynamic_modules_fp16", DynamicModules, _randn((3, 2, 4)), _dynamic_mapping(float16_dynamic_qconfig),
         lowered_engines=BOTH),
    Case("suite_dynamic_modules_per_channel", DynamicModules, _randn((3, 2, 4)),
         _dynamic_mapping(per_channel_dynamic_qconfig), lowered_engines=("x86",)),
    Case("suite_dynamic_cells", DynamicCells, _randn((2, 4), (2, 3)), _cells_mapping(default_dynamic_qconfig),
         lowered_engines=BOTH),
    Case("suite_dynamic_cells_fp16", DynamicCells, _randn((2, 4), (2, 3)), _cells_mapping(float16_dynamic_qconfig),
         lowered_engines=BOTH),
    Case("suite_dynamic_linear_multi_use", DynamicLinearMultiUse, _randn((3, 4)),
         _qcm(global_=default_dynamic_qconfig), lowered_engines=BOTH),
    Case("suite_dynamic_linear_multi_use_fp16", DynamicLinearMultiUse, _randn((3, 4)),
         _qcm(global_=float16_dynamic_qconfig), lowered_engines=BOTH),
    Case("suite_fp16_static", Fp16Static, _randn((3, 4), (3, 4)), _qcm(global_=float16_static_qconfig),
         lowered_engines=BOTH),
    Case("suite_fp16_static_mixed", Fp16Static, _randn((3, 4), (3, 4)),
         lambda: _x86().set_object_type(torch.cat, float16_static_qconfig)
         .set_object_type(operator.add, float16_static_qconfig), lowered_engines=BOTH),
    Case("suite_reduce_range", Conv2Relu, _randn((1, 3, 4, 4)), _reduce_range_qconfig, lowered_engines=BOTH),
    Case("suite_qint8_symmetric", Conv2Relu, _randn((1, 3, 4, 4)), _qint8_symmetric, lowered_engines=BOTH),
    Case("suite_qint8_symmetric_qnnpack", Conv2Relu, _randn((1, 3, 4, 4)), _qint8_symmetric_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_fixed_qparams", FixedQParams, _randn((1, 2, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_fixed_qparams_default_qconfig", FixedQParams, _randn((1, 2, 3, 3)), _mixed_fixed_default,
         lowered_engines=BOTH),
    Case("suite_fixed_qparams_default_mapping", FixedQParams, _randn((1, 2, 3, 3)), _default_mapping_fixed,
         lowered_engines=BOTH),
    Case("suite_multi_outputs", MultiOutputs, _randn((3, 4), (1, 1, 2, 2)), X86, lowered_engines=BOTH),
    Case("suite_call_method_mixed", CallMethodMixed, _randn((2, 2, 2, 2)), X86, lowered_engines=BOTH),
    Case("suite_scalar_arith", ScalarArith, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_scalar_arith_qnnpack", ScalarArith, _randn((3, 4)), _fast_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_in_place", InPlace, _randn((1, 2, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_batch_norms", BatchNorms, _randn((2, 3, 3, 3), (2, 2, 2, 2, 2)), X86, lowered_engines=("x86",)),
    Case("suite_batch_norms_default", BatchNorms, _randn((2, 3, 3, 3), (2, 2, 2, 2, 2)),
         _qcm(global_=default_qconfig), lowered_engines=("x86",)),
    Case("suite_activations", Activations, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_activations_qnnpack", Activations, _randn((3, 4)), _fast_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_pools", Pools, _randn((1, 2, 4, 4), (1, 2, 4), (1, 1, 4, 4, 4)), X86, lowered_engines=("x86",)),
    Case("suite_linear_from_submodule", LinearFromSubmodule, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_qat_conv_bn_relu_qnnpack", QatConvBnRelu, _randn((2, 3, 4, 4)),
         lambda: get_default_qat_qconfig_mapping("qnnpack"), kind="qat",
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_qat_conv_bn_relu_x86", QatConvBnRelu, _randn((2, 3, 4, 4)),
         lambda: get_default_qat_qconfig_mapping("x86"), kind="qat", lowered_engines=BOTH),
    Case("suite_quant_dequant_in_model", QuantDequantInModel, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_conv_add_patterns", ConvAddPatterns, _randn((1, 2, 3, 3), (1, 2, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_value_ops", SumAndMean, _randn((1, 2, 4, 4)), X86, lowered_engines=BOTH),
    Case("suite_tuple_input", TwoInputsTuple, lambda: (torch.randn(3, 4), (torch.randn(3, 4), torch.randn(3, 4))),
         X86, lowered_engines=BOTH),
    Case("suite_sequential_getitem", SequentialGetitem, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_simple_conv_linear", SimpleConvLinear, _randn((1, 2, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_channel_shuffle", ChannelShuffle, _randn((1, 2, 3, 3)), X86, lowered_engines=BOTH),
    Case("suite_nontensor_attrs", NonTensorAttrs, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_conv_variants", ConvVariants, _randn((1, 2, 5, 5)), X86, lowered_engines=BOTH),
    Case("suite_conv_variants_circular", lambda: ConvVariants(circular=True), _randn((1, 2, 5, 5)), X86,
         lowered_engines=("x86",)),
    Case("suite_functional_kwargs", FunctionalKwargs, _randn((3, 4), (1, 2, 3, 3), (1, 2, 3)),
         _qcm(global_=default_qconfig), lowered_engines=BOTH),
    Case("suite_functional_tail_kwargs", lambda: FunctionalKwargs(False), _randn((3, 4), (1, 2, 3, 3), (1, 2, 3)),
         _qcm(global_=default_qconfig), lowered_engines=BOTH),
    Case("suite_functional_tail_kwargs_dynamic", lambda: FunctionalKwargs(False),
         _randn((3, 4), (1, 2, 3, 3), (1, 2, 3)), _qcm(global_=default_dynamic_qconfig), lowered_engines=BOTH),
    Case("suite_functional_kwargs_dynamic", FunctionalKwargs, _randn((3, 4), (1, 2, 3, 3), (1, 2, 3)),
         _qcm(global_=default_dynamic_qconfig), lowered_engines=BOTH),
    Case("suite_add_relu_multi_use", AddReluMultiUse, _randn((3, 4), (3, 4)), X86, lowered_engines=BOTH),
    Case("suite_add_relu_multi_use_qnnpack", AddReluMultiUse, _randn((3, 4), (3, 4)), _fast_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_none_then_quantized", NoneThenQuantized, _randn((1, 2, 2, 3)),
         lambda: _x86().set_module_name("conv1", None), lowered_engines=BOTH),
    Case("suite_qconfig_precedence", Precedence, _randn((3, 4)), _precedence, lowered_engines=BOTH),
    Case("suite_fixed_qparams_fp16", FixedQParams, _randn((1, 2, 3, 3)), _qcm(global_=float16_static_qconfig),
         lowered_engines=BOTH),
    Case("suite_fixed_qparams_wrong_qconfig", FixedQParams, _randn((1, 2, 3, 3)), _fixed_wrong_qconfig,
         lowered_engines=BOTH),
    Case("suite_non_traceable_module", WithNonTraceable, _randn((3, 4)), X86, prepare_custom_config=_non_traceable,
         lowered_engines=BOTH),
    Case("suite_linear_3d_input", Linear3d, _randn((2, 3, 4)), X86, lowered_engines=BOTH),
    Case("suite_linear_3d_input_dynamic", Linear3d, _randn((2, 3, 4)), _qcm(global_=default_dynamic_qconfig),
         lowered_engines=BOTH),
    Case("suite_bmm_custom_backend", BmmCustom, _randn((2, 3, 4)), _qcm(global_=default_qconfig),
         backend_config=_bmm_backend, lowered_engines=BOTH),
    Case("suite_conv_transpose_bn", ConvTransposeBn, _randn((2, 2, 2, 2)), _qcm(global_=default_qconfig),
         lowered_engines=BOTH),
    Case("suite_conv_transpose_bn_x86", ConvTransposeBn, _randn((2, 2, 2, 2)),
         lambda: get_default_qconfig_mapping("x86"), lowered_engines=BOTH),
    Case("suite_functional_conv_transposes_kw_stride", lambda: FunctionalConvTransposes("kw"),
         _randn((1, 2, 3), (1, 2, 3, 3)), _qcm(global_=default_qconfig), lowered_engines=BOTH),
    Case("suite_functional_conv_transposes_int_stride", lambda: FunctionalConvTransposes(2),
         _randn((1, 2, 3), (1, 2, 3, 3)), _qcm(global_=default_qconfig), lowered_engines=BOTH),
    Case("suite_functional_conv_transposes_per_channel", FunctionalConvTransposes, _randn((1, 2, 3), (1, 2, 3, 3)),
         X86, lowered_engines=BOTH),
    Case("suite_qat_conv_bn_relu_train_mode", QatConvBnRelu, _randn((2, 3, 4, 4)),
         lambda: get_default_qat_qconfig_mapping("x86"), kind="qat", keep_training=True, lowered_engines=BOTH),
    Case("suite_constants_pass_through", ConstantsAndPassThrough, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_constrained_backend", CustomBackendOps, _randn((3, 4)), _qcm(global_=default_qconfig),
         backend_config=_constrained_backend, lowered_engines=BOTH),
    Case("suite_constrained_backend_loose", CustomBackendOps, lambda: (torch.randn(3, 4) * 50,),
         _qcm(global_=default_qconfig), backend_config=_constrained_backend, lowered_engines=BOTH),
    # other backend configs: executorch (quint8 activations), TensorRT (qint8 symmetric), fbgemm
    Case("suite_executorch_conv_add", ConvAddPatterns, _randn((1, 2, 3, 3), (1, 2, 3, 3)), _fast_qnnpack,
         backend_config=get_executorch_backend_config, lowered_engines=BOTH),
    Case("suite_executorch_shape_ops", ShapeOps, _randn((1, 3, 4, 4)), _fast_qnnpack,
         backend_config=get_executorch_backend_config, lowered_engines=BOTH),
    Case("suite_executorch_activations", Activations, _randn((3, 4)), _fast_qnnpack,
         backend_config=get_executorch_backend_config, lowered_engines=BOTH),
    Case("suite_executorch_qat", QatConvBnRelu, _randn((2, 3, 4, 4)),
         lambda: get_default_qat_qconfig_mapping("qnnpack"),
         kind="qat", backend_config=get_executorch_backend_config, lowered_engines=BOTH),
    Case("suite_executorch_dynamic", DynamicLinearMultiUse, _randn((3, 4)), _qcm(global_=default_dynamic_qconfig),
         backend_config=get_executorch_backend_config, lowered_engines=BOTH),
    Case("suite_executorch_embeddings", EmbeddingModules, _embedding_inputs,
         _embedding_mapping(float_qparams_weight_only_qconfig), backend_config=get_executorch_backend_config,
         lowered_engines=BOTH),
    Case("suite_tensorrt_conv_add", ConvAddPatterns, _randn((1, 2, 3, 3), (1, 2, 3, 3)), _qint8_symmetric,
         backend_config=get_tensorrt_backend_config, lowered_engines=BOTH),
    Case("suite_tensorrt_simple", SimpleConvLinear, _randn((1, 2, 3, 3)), _qint8_symmetric,
         backend_config=get_tensorrt_backend_config, lowered_engines=BOTH),
    Case("suite_tensorrt_shape_ops", ShapeOps, _randn((1, 3, 4, 4)), _qint8_symmetric,
         backend_config=get_tensorrt_backend_config, lowered_engines=BOTH),
    Case("suite_fbgemm_activations", Activations, _randn((3, 4)), _qcm(global_=default_qconfig),
         backend_config=get_fbgemm_backend_config, lowered_engines=("fbgemm", "x86")),
    # symmetric qint8 (qnnpack's constrained dtype configs) on more ops
    Case("suite_qint8_symmetric_shape_ops", ShapeOps, _randn((1, 3, 4, 4)), _qint8_symmetric_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_qint8_symmetric_add_relu", AddReluMultiUse, _randn((3, 4), (3, 4)), _qint8_symmetric_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_qint8_symmetric_fixed_qparams", FixedQParams, _randn((1, 2, 3, 3)), _qint8_symmetric_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    Case("suite_qint8_symmetric_softmax", Softmaxes, _randn((3, 4)), _qint8_symmetric_qnnpack,
         backend_config=get_qnnpack_backend_config, lowered_engines=("qnnpack",)),
    # calibration edge cases: none at all, all-zero data, huge values, float64 / float16 models, channels-last
    Case("suite_uncalibrated_activations", Activations, _randn((3, 4)), X86, calibration_batches=0,
         lowered_engines=BOTH),
    Case("suite_uncalibrated_qat", QatConvBnRelu, _randn((2, 3, 4, 4)), lambda: get_default_qat_qconfig_mapping("x86"),
         kind="qat", calibration_batches=0, lowered_engines=BOTH),
    Case("suite_uncalibrated_embeddings", EmbeddingModules, _embedding_inputs,
         _embedding_mapping(float_qparams_weight_only_qconfig), calibration_batches=0, lowered_engines=BOTH),
    Case("suite_zero_calibration", AddReluMultiUse, lambda: (torch.zeros(3, 4), torch.zeros(3, 4)), X86,
         lowered_engines=BOTH),
    Case("suite_huge_values", AddReluMultiUse, lambda: (torch.randn(3, 4) * 1e30, torch.randn(3, 4) * 1e-30), X86,
         lowered_engines=BOTH),
    # torch's lowered float64 / float16 models fail when run (RuntimeError): qfx's must fail the same way
    Case("suite_double_model", lambda: DoubleModel().double(), lambda: (torch.randn(3, 4, dtype=torch.float64),),
         X86, lowered_engines=BOTH),
    Case("suite_half_model", lambda: DoubleModel().half(), lambda: (torch.randn(3, 4).half(),),
         _qcm(global_=default_qconfig), lowered_engines=BOTH),
    Case("suite_channels_last", ConvAddPatterns,
         lambda: tuple(torch.randn(1, 2, 3, 3).contiguous(memory_format=torch.channels_last) for _ in range(2)),
         X86, lowered_engines=BOTH),
    Case("suite_scoped_names", ScopedNames, _randn((3, 4)), lambda: _x86().set_module_name("a", None),
         lowered_engines=BOTH),
    Case("suite_var_args", VarArgs, _randn((3, 4), (3, 4), (3, 4)), X86, lowered_engines=BOTH),
    Case("suite_keyword_only", KeywordOnly, _randn((3, 4), (3, 4), (3, 4)), X86, lowered_engines=BOTH),
    Case("suite_dynamic_conv", Conv2Relu, _randn((1, 3, 4, 4)), _qcm(global_=default_dynamic_qconfig),
         lowered_engines=BOTH),
    Case("suite_weight_only_linear", Conv2Relu, _randn((1, 3, 4, 4)), _qcm(global_=float_qparams_weight_only_qconfig),
         lowered_engines=BOTH),
    Case("suite_reuse_input", ReuseInput, _randn((1, 3, 4, 4)), _reuse_input, lowered_engines=BOTH),
    Case("suite_reuse_input_alone", lambda: ReuseInput(False), _randn((1, 3, 4, 4)), _reuse_input,
         lowered_engines=BOTH),
    Case("suite_linear_weight_axis1", Linear3d, _randn((2, 3, 4)), _linear_axis1, lowered_engines=BOTH),
    Case("suite_qat_fixed_qparams", FixedQParams, _randn((1, 2, 3, 3)), lambda: get_default_qat_qconfig_mapping("x86"),
         kind="qat", lowered_engines=BOTH),
    Case("suite_qat_learnable", Conv2Relu, _randn((1, 3, 4, 4)), _learnable_qat, kind="qat", lowered_engines=BOTH),
    Case("suite_equalization_x86", EqualizationChain, _randn((2, 2, 3, 3)), X86,
         equalization_config=_qcm(global_=default_equalization_qconfig), lowered_engines=BOTH),
    Case("suite_equalization_partial", EqualizationChain, _randn((2, 2, 3, 3)),
         lambda: _x86().set_module_name("fc3", None),
         equalization_config=lambda: QConfigMapping().set_global(default_equalization_qconfig)
         .set_module_name("fc1", None), lowered_engines=BOTH),
    Case("suite_equalization_qnnpack", EqualizationChain, _randn((2, 2, 3, 3)), _fast_qnnpack,
         backend_config=get_qnnpack_backend_config, equalization_config=_qcm(global_=default_equalization_qconfig),
         lowered_engines=("qnnpack",)),
    Case("suite_static_lstm_no_state", lambda: StaticLSTMVariants(False), _randn((2, 3, 3), (4, 2, 2), (4, 2, 2)),
         X86, prepare_custom_config=_lstm_prepare, convert_custom_config=_lstm_convert, lowered_engines=("x86",)),
    Case("suite_static_lstm_variants", StaticLSTMVariants, _randn((2, 3, 3), (4, 2, 2), (4, 2, 2)), X86,
         prepare_custom_config=_lstm_prepare, convert_custom_config=_lstm_convert, lowered_engines=BOTH),
    Case("suite_static_lstm_variants_qnnpack", StaticLSTMVariants, _randn((2, 3, 3), (4, 2, 2), (4, 2, 2)),
         _fast_qnnpack,
         backend_config=get_qnnpack_backend_config, prepare_custom_config=_lstm_prepare,
         convert_custom_config=_lstm_convert, lowered_engines=("qnnpack",)),
    # quantized inputs / outputs (prepare_custom_config) on copy ops, dynamic and fp16 models, pixel shuffle
    Case("suite_quantized_io_shape_ops", ShapeOps, _randn((1, 3, 4, 4)), X86, prepare_custom_config=_io([0], [0, 2]),
         quantized_inputs=(0,), lowered_engines=BOTH),
    Case("suite_quantized_io_dynamic", DynamicLinearMultiUse, _randn((3, 4)), _qcm(global_=default_dynamic_qconfig),
         prepare_custom_config=_io([0], [0]), quantized_inputs=(0,), lowered_engines=BOTH),
    Case("suite_quantized_io_fp16", Fp16Static, _randn((3, 4), (3, 4)), _qcm(global_=float16_static_qconfig),
         prepare_custom_config=_io([1], [0]), quantized_inputs=(1,), lowered_engines=BOTH),
    Case("suite_quantized_io_mixed_cat", MixedCat, _randn((3, 4), (3, 2)), X86,
         prepare_custom_config=_io([0, 1], [1, 3]),
         quantized_inputs=(0, 1), lowered_engines=BOTH),
    Case("suite_quantized_output_dict", MultiOutputs, _randn((3, 4), (1, 1, 2, 2)), X86,
         prepare_custom_config=_io([], [0, 1]), lowered_engines=BOTH),
    Case("suite_dead_results", DeadResults, _randn((3, 4)), X86, lowered_engines=BOTH),
    Case("suite_dead_results_dynamic", DeadResults, _randn((3, 4)), _qcm(global_=default_dynamic_qconfig),
         lowered_engines=BOTH),
    Case("suite_mixed_consumers", MixedConsumers, _randn((3, 4)), _mixed_consumers, lowered_engines=BOTH),
    Case("suite_mixed_consumers_fp16_dynamic", MixedConsumers, _randn((3, 4)),
         lambda: _mixed_consumers().set_module_name("a", float16_dynamic_qconfig)
         .set_module_name("e", per_channel_dynamic_qconfig), lowered_engines=BOTH),
]

SUITE_CASES_BY_NAME: dict[str, Case] = {c.name: c for c in SUITE_CASES}
assert len(SUITE_CASES_BY_NAME) == len(SUITE_CASES), "case names must be unique"

# (case, mode, extra convert arguments): flags beyond each case's own
SUITE_VARIANTS: list[tuple[str, str, Factory]] = [
    ("suite_simple_conv_linear", "lowered", lambda: {"_remove_qconfig": False}),
    ("suite_simple_conv_linear", "reference", lambda: {"_remove_qconfig": False}),
    ("suite_linear_from_submodule", "lowered", lambda: {"keep_original_weights": True}),
    ("suite_functional_conv_transposes", "lowered", lambda: {"keep_original_weights": True}),
    ("suite_qat_conv_bn_relu_qnnpack", "lowered", lambda: {"_remove_qconfig": False}),
    ("suite_dynamic_cells", "lowered", lambda: {"_remove_qconfig": False}),
    ("suite_qconfig_precedence", "reference", lambda: {"_remove_qconfig": False}),
    ("suite_functional_tail_kwargs", "lowered", lambda: {"keep_original_weights": True}),
    ("suite_functional_tail_kwargs_dynamic", "lowered", lambda: {"keep_original_weights": True}),
    # convert-time qconfig mappings that set some of prepare's qconfigs to None
    ("suite_dynamic_modules", "lowered",
     lambda: {"qconfig_mapping": _dynamic_mapping(default_dynamic_qconfig)().set_object_type(nn.LSTM, None)}),
    ("suite_dynamic_modules", "reference",
     lambda: {"qconfig_mapping": _dynamic_mapping(default_dynamic_qconfig)().set_object_type(nn.GRU, None)}),
    ("suite_scalar_arith", "lowered", lambda: {"qconfig_mapping": _x86().set_object_type(operator.add, None)}),
    ("suite_scalar_arith", "reference", lambda: {"qconfig_mapping": _x86().set_object_type(torch.mul, None)}),
    ("suite_activations", "lowered", lambda: {"qconfig_mapping": _x86().set_object_type(nn.Hardswish, None)
                                              .set_object_type(F.elu, None)}),
    ("suite_embeddings_float_qparams", "lowered",
     lambda: {"qconfig_mapping": _embedding_mapping(float_qparams_weight_only_qconfig)()
              .set_object_type(nn.Embedding, None)}),
    ("suite_fixed_qparams", "lowered", lambda: {"qconfig_mapping": _x86().set_object_type(torch.sigmoid, None)}),
    ("suite_shape_ops", "lowered", lambda: {"qconfig_mapping": _x86().set_module_name("conv2", None)}),
    ("suite_fp16_static_mixed", "lowered",
     lambda: {"qconfig_mapping": _x86().set_object_type(torch.cat, None).set_object_type(operator.add, None)}),
    # convert-time backend configs other than prepare's
    ("suite_activations", "lowered", lambda: {"backend_config": get_qnnpack_backend_config()}),
    ("suite_shape_ops", "lowered", lambda: {"backend_config": get_executorch_backend_config()}),
    ("suite_onednn_functional_fusions_x86", "lowered", lambda: {"backend_config": get_onednn_backend_config()}),
    ("suite_conv_add_patterns", "lowered", lambda: {"backend_config": get_onednn_backend_config()}),
    ("suite_fixed_qparams", "lowered", lambda: {"backend_config": get_tensorrt_backend_config()}),
    ("suite_tensorrt_simple", "lowered", lambda: {"backend_config": get_fbgemm_backend_config()}),
    ("suite_dynamic_modules", "decomposed", lambda: {"backend_config": get_executorch_backend_config()}),
    # torch.ao.quantization.fx.convert.convert(is_reference=True) called directly
    ("suite_qat_conv_bn_relu_train_mode", "raw", dict),
    ("suite_dynamic_modules", "raw", dict),
    ("suite_static_lstm_variants", "raw", dict),
    ("suite_equalization_partial", "raw", dict),
    ("suite_quantized_output_dict", "raw", dict),
    ("suite_mixed_consumers", "raw", dict),
    ("suite_qconfig_precedence", "raw", lambda: {"_remove_qconfig_flag": False}),
    ("suite_embeddings_mixed_bits", "raw", lambda: {"is_decomposed": True}),
    # preserved attributes
    ("suite_multi_outputs", "lowered", lambda: {"convert_custom_config": _preserve(["fc", "missing"])}),
]
