"""Small float models shaped like what users bring to lowering (convert_fx), one per branch of the lowering.

Each model is tiny (a convert takes well under a second) but has the structure of a real architecture or of
one lowering rule: a ResNet bottleneck, MobileNet inverted residuals with squeeze-excitation, a transformer
block, the distinctive blocks of the bench's larger architectures (a RegNetY block with group convs and
sigmoid squeeze-excitation, GoogLeNet's Inception with ceil_mode pools, ConvNeXt's 7x7 depthwise conv with
channels-last LayerNorm and layer scale, Swin's shifted-window attention with relative position bias,
torch.roll and patch merging), recurrent nets, embedding bags, transposed convs, functional conv/linear
(+relu), binary ops with scalars, copy ops, norms and activations, onednn's fused Conv+Add(+ReLU) and
Linear+Tanh/LeakyReLU, and a region left float by a None qconfig. `tests/support/models.py` turns them into
`Case`s.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.arch_models import (
    ChannelsFirstLayerNorm,
    ConvNeXtBlock,
    Inception,
    PatchMerging,
    StagedClassifier,
    SwinBlock,
    YBlock,
    _basic_conv,
    _conv_bn,
)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, strided 3x3, 1x1 expand, a strided conv+bn downsample on the shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNetBottleneckNet(nn.Module):
    """Stem conv-bn-relu + maxpool, two bottlenecks (one strided with downsample), adaptive pool, flatten, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(Bottleneck(8, 4, 16, 1), Bottleneck(16, 4, 16, 1))
        self.layer2 = nn.Sequential(Bottleneck(16, 8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    """MobileNet block: 1x1 expand, depthwise 3x3 (groups = channels), optional SE, 1x1 project, residual."""

    def __init__(self, cin: int, expanded: int, cout: int, stride: int, act: type, se: bool) -> None:
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [nn.Conv2d(cin, expanded, 1, bias=False), nn.BatchNorm2d(expanded), act()]
        layers += [nn.Conv2d(expanded, expanded, 3, stride=stride, padding=1, groups=expanded, bias=False),
                   nn.BatchNorm2d(expanded), act()]
        if se:
            layers.append(SqueezeExcitation(expanded, max(expanded // 4, 2)))
        layers += [nn.Conv2d(expanded, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetLike(nn.Module):
    """Stem conv-bn-hardswish, inverted residuals with ReLU6 and Hardswish, SE, pooled classifier with Dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.Hardswish())
        self.blocks = nn.Sequential(
            InvertedResidual(8, 16, 8, 1, nn.ReLU6, False),
            InvertedResidual(8, 16, 12, 2, nn.Hardswish, True),
            InvertedResidual(12, 24, 12, 1, nn.Hardswish, True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(12, 16), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(16, 4))

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


class TransformerBlock(nn.Module):
    """Pre-norm attention (q/k/v linears, matmul, scalar scale by mul and div, softmax) and a GELU MLP."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        y = self.norm1(x)
        q = self.q(y).reshape(b, t, h, d // h).transpose(1, 2) * 0.5
        k = self.k(y).reshape(b, t, h, d // h).transpose(1, 2)
        v = self.v(y).reshape(b, t, h, d // h).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) / 1.5
        att = att.softmax(dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))) + self.gelu(self.fc1(x)))


class RecurrentNet(nn.Module):
    """An LSTM feeding a GRU feeding a Linear head (all dynamically quantized)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6)
        self.gru = nn.GRU(6, 5, batch_first=False)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        z, hz = self.gru(y)
        return self.head(z), h, hz


class EmbeddingRecommender(nn.Module):
    """Embedding bags (sum and mean, with per-sample weights) and an Embedding, concatenated into an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.user = nn.EmbeddingBag(30, 8, mode="sum")
        self.item = nn.EmbeddingBag(30, 8, mode="mean")
        self.ctx = nn.Embedding(30, 8)
        self.fc = nn.Linear(24, 6)
        self.relu = nn.ReLU()
        self.out = nn.Linear(6, 1)

    def forward(self, idx, offsets, ctx):
        u = self.user(idx, offsets, per_sample_weights=torch.ones(idx.numel()))
        i = self.item(idx, offsets)
        c = self.ctx(ctx).mean(dim=1)
        return self.out(self.relu(self.fc(torch.cat([u, i, c], dim=1))))


class TransposedConvs(nn.Module):
    """ConvTranspose1d and ConvTranspose2d modules and an F.conv_transpose2d with get_attr weights."""

    def __init__(self) -> None:
        super().__init__()
        self.up1d = nn.ConvTranspose1d(3, 4, 3, stride=2)
        self.up2d = nn.ConvTranspose2d(3, 4, 2, stride=2)
        self.w = nn.Parameter(torch.randn(4, 2, 3, 3))
        self.b = nn.Parameter(torch.randn(2))

    def forward(self, x):
        a = self.up1d(x.mean(dim=3))
        y = self.up2d(x)
        # torch lowers functional convs only with their conv arguments positional and 2-d ones as tuples
        z = F.conv_transpose2d(y, self.w, self.b, (1, 1), (1, 1), (0, 0), 1, (1, 1))
        return a, z


class FunctionalWeighted(nn.Module):
    """F.linear / F.conv2d with ReLU through torch.relu and nn.ReLU, and without."""

    def __init__(self) -> None:
        super().__init__()
        self.w_lin = nn.Parameter(torch.randn(6, 4))
        self.b_lin = nn.Parameter(torch.randn(6))
        self.w_lin2 = nn.Parameter(torch.randn(4, 6))
        self.w_conv = nn.Parameter(torch.randn(4, 2, 3, 3))
        self.b_conv = nn.Parameter(torch.randn(4))
        self.w_conv2 = nn.Parameter(torch.randn(4, 4, 1, 1))
        self.relu = nn.ReLU()

    def forward(self, x, img):
        a = torch.relu(F.linear(x, self.w_lin, self.b_lin))
        a = F.linear(a, self.w_lin2)
        # torch lowers functional convs only with their conv arguments positional and 2-d/3-d ones as tuples
        c = self.relu(F.conv2d(img, self.w_conv, self.b_conv, (1, 1), (1, 1), (1, 1), 1))
        c = F.conv2d(c, self.w_conv2, None, (1, 1), (0, 0), (1, 1), 1)
        return a, c


class DynamicFunctionalLinear(nn.Module):
    """Dynamically quantized F.linear, with and without bias, one followed by F.relu."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 6))
        self.b1 = nn.Parameter(torch.randn(8))
        self.w2 = nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        return F.linear(F.relu(F.linear(x, self.w1, self.b1)), self.w2)


class BinaryOps(nn.Module):
    """Quantized add/mul between tensors and with scalars, relu after them, and matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.fa = nn.Linear(6, 6)
        self.fb = nn.Linear(6, 6)
        self.relu = nn.ReLU()

    def forward(self, x):
        a, b = self.fa(x), self.fb(x)
        s = torch.add(a, b)
        s = self.relu(s + 1.0)
        m = torch.mul(a, b) * 2
        m = F.relu(m * b)
        r = torch.relu(torch.add(s, m))
        mm = torch.matmul(a.unsqueeze(2), b.unsqueeze(1))
        return r + 0.5, mm, a - b, 3 * s


class NormsActivations(nn.Module):
    """ELU, LeakyReLU, InstanceNorm, GroupNorm, LayerNorm, Dropout, PReLU, Hardswish, BatchNorm2d+ReLU (fused to
    BNReLU2d), BatchNorm3d (+ReLU, fused to BNReLU3d) and the Conv1d+ReLU fusion."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.elu = nn.ELU()
        self.leaky = nn.LeakyReLU(0.2)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.gnorm = nn.GroupNorm(2, 4)
        self.dropout = nn.Dropout(0.3)
        self.prelu = nn.PReLU()
        self.bn = nn.BatchNorm2d(4)
        self.bn_relu = nn.ReLU()
        self.hswish = nn.Hardswish()
        self.conv1d = nn.Conv1d(4, 4, 3)
        self.relu1d = nn.ReLU()
        self.bn3d = nn.BatchNorm3d(1)
        self.bn3d_relu = nn.ReLU()
        self.bn3d_plain = nn.BatchNorm3d(1)
        self.ln = nn.LayerNorm(4)

    def forward(self, x, vol):
        x = self.conv(x)
        x = self.leaky(self.elu(x))
        x = self.gnorm(self.inorm(x))
        x = self.prelu(self.dropout(x))
        x = self.bn_relu(self.bn(x))
        x = self.hswish(x)
        s = self.relu1d(self.conv1d(x.mean(dim=3)))
        v = self.bn3d_plain(self.bn3d_relu(self.bn3d(vol)))
        return self.ln(x.permute(0, 2, 3, 1)), s, v


class Conv3dNet(nn.Module):
    """Conv3d+ReLU (fused), Conv3d+BatchNorm3d+ReLU (fused), and F.conv3d + F.relu."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 2)
        self.relu = nn.ReLU()
        self.cbr = nn.Sequential(nn.Conv3d(2, 2, 1), nn.BatchNorm3d(2), nn.ReLU())
        self.w = nn.Parameter(torch.randn(2, 2, 1, 1, 1))

    def forward(self, vol):
        v = self.cbr(self.relu(self.conv(vol)))
        return F.relu(F.conv3d(v, self.w, None, (1, 1, 1), (0, 0, 0), (1, 1, 1), 1))


class CopyOps(nn.Module):
    """Ops that keep their input's quantization: interpolate, pooling, clamp, hardtanh, flatten, and shape reads
    (getattr shape, size(), dim()) feeding reshapes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(2)
        self.adaptive = nn.AdaptiveAvgPool2d((2, 2))
        self.hardtanh = nn.Hardtanh(-1.0, 1.0)
        self.relu6 = nn.ReLU6()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        y = self.conv(x)
        n, c = y.shape[0], y.size(1)
        y = F.interpolate(self.maxpool(y), scale_factor=2, mode="nearest")
        y = F.interpolate(y, size=(8, 8), mode="bilinear", align_corners=False)
        y = F.max_pool2d(self.avgpool(y), 2)
        y = torch.clamp(self.hardtanh(y), -0.5, 0.8)
        y = F.hardtanh(self.relu6(y), 0.0, 0.5).clamp(min=0.1, max=0.4)
        y = F.adaptive_avg_pool2d(self.adaptive(y), (2, 2))
        z = self.fc(y.reshape(n, c * 4))
        return z.view(z.size(0), -1), y.dim(), y.shape


class OnednnFusions(nn.Module):
    """Patterns only onednn's backend config fuses: Conv2d+add, Conv2d+BN+add+ReLU, Linear+Tanh,
    Linear+LeakyReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.bn3 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(16, 8)
        self.tanh = nn.Tanh()
        self.fc2 = nn.Linear(8, 4)
        self.leaky = nn.LeakyReLU(0.1)

    def forward(self, x):
        x = self.conv1(x)
        y = self.conv2(x) + x
        z = self.relu(self.bn3(self.conv3(y)) + y)
        f = F.adaptive_avg_pool2d(z, 2).flatten(1)
        return self.leaky(self.fc2(self.tanh(self.fc1(f))))


class FloatIsland(nn.Module):
    """A quantized head and tail around a block whose qconfig is None (it stays float), with an add and a
    linear inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 6)
        self.island = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6))
        self.tail = nn.Linear(6, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.head(x))
        i = self.island(h) + h
        return self.tail(i), i


class KeywordCalls(nn.Module):
    """A Linear and a ReLU module called with their input as a keyword argument: torch's lowering reads
    each node's first positional argument (an IndexError where there is none)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(input=self.fc(input=x))


class WeightReadTwice(nn.Module):
    """A functional linear's weight also read by another op: lowering folds it into packed params."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return F.linear(x, self.w, self.b), self.w.sum()


class PaddingFromInput(nn.Module):
    """A functional conv whose padding is read off the input (a node nested in its padding tuple)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 3, 3, 3))
        self.b = nn.Parameter(torch.randn(3))

    def forward(self, x):
        p = x.size(0)
        return F.conv2d(x, self.w, self.b, 1, (p, p))


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        return y, torch.relu(y)


class ScaledAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x, y):
        return self.linear(x) + y


class StandaloneTakingConstant(nn.Module):
    """A standalone submodule called with a constant where it takes a quantized input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.sub = ScaledAdd()

    def forward(self, x):
        return self.sub(self.linear(x), 2.0)


class UserQuantizedLayerNorm(nn.Module):
    """A LayerNorm (left float) whose output the model quantizes itself, with a constant or computed scale."""

    def __init__(self, computed: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.computed = computed

    def forward(self, x):
        scale = x.abs().max() / 100 if self.computed else 0.1
        return torch.quantize_per_tensor(self.ln(self.fc(x)), scale, 0, torch.quint8).dequantize()


class _AddChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        x = F.linear(x, self.l1.weight, self.l1.bias)
        z = F.relu(torch.add(x, 1.0) + x).relu()
        z = torch.sigmoid(self.l2(z))
        return F.linear(z, self.l1.weight) + z


class AddFeedingFloatLinear(nn.Module):
    """Two add chains where qint8 activations (torch lowers no such linear) leave the first chain's final add
    feeding both a quantize and the second chain's float F.linear: torch's binary-op lowering then erases
    an op that still has a user."""

    def __init__(self) -> None:
        super().__init__()
        self.sub, self.sub2, self.head = _AddChain(), _AddChain(), nn.Linear(6, 3)

    def forward(self, x):
        a = self.sub(x)
        c = torch.mul(a, self.sub2(a))
        return self.head(torch.cat([c, c], 0)).relu()


class MatmulRelu(nn.Module):
    def forward(self, x, y):
        return torch.relu(torch.matmul(x, y))


class LinearChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


# the patterns of the bench's larger architectures (bench/arch_models.py), at test size ---------------------


class YBlockNet(StagedClassifier):
    """A RegNetY-shaped net: 3x3 stem, a strided Y block (four groups of width 4) with a projection shortcut
    and an identity one, pool, flatten, classifier. (Not group width 2: torch's fbgemm kernels for two
    channels per group give run-to-run different outputs.)"""

    def __init__(self) -> None:
        super().__init__(nn.Sequential(*_conv_bn(3, 8, 3, 2)),
                         lambda cin, width, stride: YBlock(cin, width, stride, group_width=4), 8, ((16, 2, 2),),
                         classes=5)


class InceptionNet(nn.Module):
    """A GoogLeNet-shaped net: strided stem, an Inception block, a ceil_mode max pool (8x8 -> 4x4, where floor
    would give 3x3), a second Inception block, adaptive pool, flatten, dropout, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _basic_conv(3, 8, 3, 2)
        self.inception1 = Inception(8, 4, 4, 6, 2, 4, 4)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception2 = Inception(18, 6, 4, 6, 2, 2, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.inception2(self.pool1(self.inception1(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class ConvNeXtBlockNet(nn.Module):
    """A ConvNeXt-shaped net: 4x4 stride-4 stem + channels-first LayerNorm, a block, LayerNorm + 2x2 stride-2
    downsampling conv, a block, mean over [-2, -1], LayerNorm, classifier. Layer scale starts at 0.1 (not
    ConvNeXt's 1e-6), so the blocks' branches show in the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 4, 4), ChannelsFirstLayerNorm(8), ConvNeXtBlock(8, 0.1),
                                      ChannelsFirstLayerNorm(8), nn.Conv2d(8, 12, 2, 2), ConvNeXtBlock(12, 0.1))
        self.norm = nn.LayerNorm(12, eps=1e-6)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean([-2, -1])))


class SwinBlockNet(nn.Module):
    """A Swin-shaped net on a (B, 3, 16, 16) input: 4x4 conv patch embedding + channels-last LayerNorm (a 4x4
    map, dim 8), a window block and a shifted-window block (window 2, heads 2), patch merging, LayerNorm,
    mean over [1, 2], classifier."""

    def __init__(self, image: int = 16, patch: int = 4, dim: int = 8, heads: int = 2, window: int = 2) -> None:
        super().__init__()
        side = image // patch
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.embed_norm = nn.LayerNorm(dim)
        self.stages = nn.Sequential(SwinBlock(dim, heads, side, window, shifted=False),
                                    SwinBlock(dim, heads, side, window, shifted=True), PatchMerging(dim))
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, 5)

    def forward(self, x):
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        return self.head(self.norm(self.stages(x)).mean([1, 2]))
