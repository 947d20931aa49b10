"""Real-architecture-shaped benchmark models, written here (torchvision does not load beside the CPU torch).

Unlike the families in `models.py`, which repeat one layer shape, these follow published architectures with
their real layer widths, so nearly every convolution has a shape of its own: bottleneck ResNets (ResNet-50)
and basic-block ones (ResNet-18), inverted residuals with depthwise convolutions (MobileNetV2),
squeeze-excitation with hardswish/hardsigmoid (MobileNetV3), SiLU-gated squeeze-excitation in MBConv blocks
(EfficientNet-B0), group convolutions with ReLU/sigmoid squeeze-excitation (RegNetY-400MF), channel split,
shuffle and concatenation (ShuffleNetV2), dense concatenation (DenseNet), four-branch Inception blocks
concatenated (GoogLeNet), a patch-embedding attention encoder (ViT), 7x7 depthwise convolutions with
channels-last LayerNorm, GELU MLPs and layer scale (ConvNeXt, reduced depths) and shifted-window attention
with relative position bias, torch.roll and patch merging (Swin, reduced depths). Inputs are kept small
(convert's cost does not depend on them; prepare's calibration does).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             act: Callable[[], nn.Module] | None = nn.ReLU) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return layers


class Bottleneck(nn.Module):
    """ResNet-50's bottleneck: 1x1 reduce, 3x3 (strided), 1x1 expand, projection shortcut when needed."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(*_conv_bn(cin, width), *_conv_bn(width, width, 3, stride),
                                  *_conv_bn(width, cout, act=None))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, cout, 1, stride, act=None))
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class StagedClassifier(nn.Module):
    """The ResNet/RegNet layout: stem, stages of blocks, global average pool, flatten, linear classifier."""

    def __init__(self, stem: nn.Module, block: Callable[[int, int, int], nn.Module], cin: int,
                 stages: tuple[tuple[int, int, int], ...], expansion: int = 1, classes: int = 1000) -> None:
        """`stages`: (width, blocks, stride of the first block); a block maps cin to width * expansion."""
        super().__init__()
        self.stem = stem
        blocks = []
        for width, count, stride in stages:
            for i in range(count):
                blocks.append(block(cin, width, stride if i == 0 else 1))
                cin = width * expansion
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class ResNet50(StagedClassifier):
    """ResNet-50: stem, four stages of [3, 4, 6, 3] bottlenecks (widths 64..512), pool, classifier."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__(nn.Sequential(*_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)), Bottleneck, 64,
                         ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), expansion=4, classes=classes)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else _conv_bn(cin, hidden, act=nn.ReLU6)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        layers += _conv_bn(hidden, cout, act=None)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with its published (expansion, channels, repeats, stride) table."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, 32, 3, 2, act=nn.ReLU6)]
        cin = 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += _conv_bn(cin, 1280, act=nn.ReLU6)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: pool, 1x1 reduce + ReLU, 1x1 expand + hardsigmoid, scale the input."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class MobileNetV3Block(nn.Module):
    """MobileNetV3's bneck: expand, depthwise (k x k), optional squeeze-excitation, project."""

    def __init__(self, cin: int, kernel: int, hidden: int, cout: int, se: bool, act: type, stride: int) -> None:
        super().__init__()
        layers = [] if hidden == cin else _conv_bn(cin, hidden, act=act)
        layers += _conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act)
        if se:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4)))
        layers += _conv_bn(hidden, cout, act=None)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small with its published block table (hardswish, squeeze-excitation)."""

    SETTINGS = ((16, 3, 16, 16, True, nn.ReLU, 2), (16, 3, 72, 24, False, nn.ReLU, 2),
                (24, 3, 88, 24, False, nn.ReLU, 1), (24, 5, 96, 40, True, nn.Hardswish, 2),
                (40, 5, 240, 40, True, nn.Hardswish, 1), (40, 5, 240, 40, True, nn.Hardswish, 1),
                (40, 5, 120, 48, True, nn.Hardswish, 1), (48, 5, 144, 48, True, nn.Hardswish, 1),
                (48, 5, 288, 96, True, nn.Hardswish, 2), (96, 5, 576, 96, True, nn.Hardswish, 1),
                (96, 5, 576, 96, True, nn.Hardswish, 1))

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers = [*_conv_bn(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [MobileNetV3Block(*s) for s in self.SETTINGS]
        layers += _conv_bn(96, 576, act=nn.Hardswish)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MBConv(nn.Module):
    """EfficientNet's MBConv: 1x1 expand + SiLU, k x k depthwise + SiLU, squeeze-excitation (SiLU, sigmoid),
    1x1 projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else _conv_bn(cin, hidden, act=nn.SiLU)
        layers += _conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU)
        self.body = nn.Sequential(*layers)
        squeezed = max(1, cin // 4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, squeezed, 1), nn.SiLU(),
                                nn.Conv2d(squeezed, hidden, 1), nn.Sigmoid())
        self.project = nn.Sequential(*_conv_bn(hidden, cout, act=None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.body(x)
        y = self.project(h * self.se(h))
        return x + y if self.residual else y


class EfficientNetB0(nn.Module):
    """EfficientNet-B0 with its published (expansion, channels, repeats, stride, kernel) table."""

    SETTINGS = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
                (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, 32, 3, 2, act=nn.SiLU)]
        cin = 32
        for expand, cout, repeats, stride, kernel in self.SETTINGS:
            for i in range(repeats):
                layers.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        layers += _conv_bn(cin, 1280, act=nn.SiLU)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: interleave the channels of `groups` groups."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: split the channels (stride 1) or branch twice (stride 2), 1x1 / 3x3 depthwise /
    1x1 convolutions, concatenate, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(*_conv_bn(branch_in, half), *_conv_bn(half, half, 3, stride, groups=half, act=None),
                                     *_conv_bn(half, half))
        self.branch1 = (nn.Sequential(*_conv_bn(cin, cin, 3, stride, groups=cin, act=None), *_conv_bn(cin, half))
                        if stride > 1 else nn.Identity())

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 1.0x: stem, three stages of [4, 8, 4] units (116, 232, 464 channels), 1x1 conv, classifier."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1))
        units, cin = [], 24
        for cout, repeats in ((116, 4), (232, 8), (464, 4)):
            for i in range(repeats):
                units.append(ShuffleUnit(cin, cout, 2 if i == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*units)
        self.head = nn.Sequential(*_conv_bn(cin, 1024))
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        return self.fc(self.head(self.stages(self.stem(x))).mean([2, 3]))


class DenseLayer(nn.Module):
    """DenseNet's layer: BN-ReLU-1x1 conv (4k), BN-ReLU-3x3 conv (k), concatenated onto its input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                  nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                  nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet(nn.Module):
    """A DenseNet-121-shaped network (growth 32, blocks of [6, 12, 24, 16] layers) with transitions."""

    def __init__(self, classes: int = 1000, blocks: tuple[int, ...] = (6, 12, 24, 16), growth: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, 1)]
        channels = 64
        for i, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if i != len(blocks) - 1:
                layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels // 2, 1, bias=False),
                           nn.AvgPool2d(2)]
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class EncoderBlock(nn.Module):
    """A ViT encoder block: pre-norm multi-head self-attention (q/k/v projections, matmul, softmax) and MLP."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.scale = (dim // heads) ** -0.5

    def forward(self, x):
        b, n, d = x.shape
        h = self.norm1(x)
        q = self.q(h).reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        k = self.k(h).reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        v = self.v(h).reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        x = x + self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """A ViT-shaped encoder: conv patch embedding, class token and position embedding, encoder blocks."""

    def __init__(self, image: int = 32, patch: int = 8, dim: int = 192, depth: int = 6, heads: int = 3,
                 classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class BasicBlock(nn.Module):
    """ResNet-18's basic block: two 3x3 conv+BN (the first strided), ReLU, projection shortcut when needed."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride), *_conv_bn(cout, cout, 3, act=None))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, cout, 1, stride, act=None))
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet18(StagedClassifier):
    """ResNet-18: stem, four stages of [2, 2, 2, 2] basic blocks (widths 64..512), pool, classifier."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__(nn.Sequential(*_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)), BasicBlock, 64,
                         ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)), classes=classes)


class YBlock(nn.Module):
    """RegNetY's block: 1x1 conv, 3x3 group conv (group width 8, strided), squeeze-excitation (ReLU, sigmoid;
    squeezed to a quarter of the block's input width), 1x1 conv, residual add (projected when needed), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 8) -> None:
        super().__init__()
        squeezed = int(round(0.25 * cin))
        self.a = nn.Sequential(*_conv_bn(cin, cout))
        self.b = nn.Sequential(*_conv_bn(cout, cout, 3, stride, groups=cout // group_width))
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cout, squeezed, 1), nn.ReLU(),
                                nn.Conv2d(squeezed, cout, 1), nn.Sigmoid())
        self.c = nn.Sequential(*_conv_bn(cout, cout, act=None))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, cout, 1, stride, act=None))
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.b(self.a(x))
        return self.relu(self.shortcut(x) + self.c(h * self.se(h)))


class RegNetY400MF(StagedClassifier):
    """RegNetY-400MF: 3x3 stem (32), four stages of [1, 3, 6, 6] Y blocks (widths 48, 104, 208, 440), pool,
    classifier."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__(nn.Sequential(*_conv_bn(3, 32, 3, 2)), YBlock, 32,
                         ((48, 1, 2), (104, 3, 2), (208, 6, 2), (440, 6, 2)), classes=classes)


def _basic_conv(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    """GoogLeNet's BasicConv2d: conv (no bias), BN (eps 0.001), ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout, eps=0.001),
                         nn.ReLU())


class Inception(nn.Module):
    """GoogLeNet's Inception block: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 (torchvision's 3x3 where the paper has 5x5);
    3x3 max pool (stride 1) -> 1x1; the four branches concatenated."""

    def __init__(self, cin: int, ch1: int, ch3_reduce: int, ch3: int, ch5_reduce: int, ch5: int,
                 pool_proj: int) -> None:
        super().__init__()
        self.branch1 = _basic_conv(cin, ch1)
        self.branch2 = nn.Sequential(_basic_conv(cin, ch3_reduce), _basic_conv(ch3_reduce, ch3, 3))
        self.branch3 = nn.Sequential(_basic_conv(cin, ch5_reduce), _basic_conv(ch5_reduce, ch5, 3))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _basic_conv(cin, pool_proj))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """GoogLeNet with torchvision's channel table (inception 3a..5b), stem convs and max pools, no aux heads."""

    SETTINGS = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
                "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
                "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
                "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
                "5b": (832, 384, 192, 384, 48, 128, 128)}

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        s = self.SETTINGS
        self.stem = nn.Sequential(_basic_conv(3, 64, 7, 2), nn.MaxPool2d(3, 2, ceil_mode=True), _basic_conv(64, 64),
                                  _basic_conv(64, 192, 3), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.inception3 = nn.Sequential(Inception(*s["3a"]), Inception(*s["3b"]), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.inception4 = nn.Sequential(*[Inception(*s[k]) for k in ("4a", "4b", "4c", "4d", "4e")],
                                        nn.MaxPool2d(2, 2, ceil_mode=True))
        self.inception5 = nn.Sequential(Inception(*s["5a"]), Inception(*s["5b"]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.inception5(self.inception4(self.inception3(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor: permute to channels-last, nn.LayerNorm, permute back."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: 7x7 depthwise conv, channels-last LayerNorm, Linear 4x, GELU, Linear, layer scale
    (a learnt per-channel gamma, initially `layer_scale`), residual add."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.fc2(self.act(self.fc1(h))) * self.gamma
        return x + h.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """A ConvNeXt-T-shaped network with its real widths (96, 192, 384, 768) and reduced depths: 4x4 stride-4
    stem + LayerNorm, stages of blocks, LayerNorm + 2x2 stride-2 conv between stages, mean-pool, LayerNorm,
    classifier."""

    def __init__(self, classes: int = 1000, depths: tuple[int, ...] = (1, 1, 3, 1),
                 widths: tuple[int, ...] = (96, 192, 384, 768)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, 4), ChannelsFirstLayerNorm(widths[0])]
        for i, (depth, width) in enumerate(zip(depths, widths)):
            if i:
                layers += [ChannelsFirstLayerNorm(widths[i - 1]), nn.Conv2d(widths[i - 1], width, 2, 2)]
            layers += [ConvNeXtBlock(width) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.head = nn.Linear(widths[-1], classes)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean([-2, -1])))


class WindowAttention(nn.Module):
    """Swin's window attention: qkv Linear, scaled q @ k^T plus a relative position bias (a learnt table
    indexed by a long buffer), the shift mask when given, softmax, @ v, proj Linear."""

    def __init__(self, dim: int, heads: int, window: int, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.heads, self.tokens = heads, window * window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("bias_index", relative[..., 0] * (2 * window - 1) + relative[..., 1])
        self.masked = mask is not None
        if mask is not None:
            self.register_buffer("mask", mask)
            self.windows = mask.shape[0]

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = torch.matmul(q, k.transpose(-2, -1))
        bias = self.bias_table[self.bias_index.view(-1)].view(self.tokens, self.tokens, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if self.masked:
            attn = attn.view(-1, self.windows, self.heads, n, n) + self.mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = torch.softmax(attn, dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, n, c))


def _shift_mask(side: int, window: int, shift: int) -> torch.Tensor:
    """Swin's attention mask for shifted windows over a side x side map: -100 between tokens that come from
    different regions of the unrolled map, 0 within one. Shape (windows, window^2, window^2)."""
    region = torch.zeros(side, side)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(cuts):
        for j, cols in enumerate(cuts):
            region[rows, cols] = i * 3 + j
    cells = side // window
    region = region.view(cells, window, cells, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    different = region[:, None, :] != region[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, -100.0)


class SwinBlock(nn.Module):
    """Swin's block on a (B, side, side, C) map: LayerNorm, cyclic shift (torch.roll) on alternate blocks,
    window partition (view/permute/reshape), window attention, reverse, residual; LayerNorm, GELU MLP, residual.
    Windows no larger than the map: a map of one window is not shifted."""

    def __init__(self, dim: int, heads: int, side: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.window = min(window, side)
        self.shift = self.window // 2 if shifted and side > self.window else 0
        self.side, self.dim = side, dim
        self.norm1 = nn.LayerNorm(dim)
        mask = _shift_mask(side, self.window, self.shift) if self.shift else None
        self.attn = WindowAttention(dim, heads, self.window, mask)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        s, w, c, cells = self.side, self.window, self.dim, self.side // self.window
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = h.view(-1, cells, w, cells, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)
        h = self.attn(h)
        h = h.view(-1, cells, cells, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Swin's patch merging: the four 2x2-strided sub-maps concatenated on channels, LayerNorm, Linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))


class SwinTransformer(nn.Module):
    """A Swin-T-shaped network (dim 96, heads 3, 6, 12, 24, patch 4, window 4) with reduced depths [2, 2, 2, 2]:
    conv patch embedding + LayerNorm, stages of (shifted-)window blocks with patch merging between them,
    LayerNorm, mean-pool, classifier."""

    def __init__(self, image: int = 64, patch: int = 4, dim: int = 96, depths: tuple[int, ...] = (2, 2, 2, 2),
                 heads: tuple[int, ...] = (3, 6, 12, 24), window: int = 4, classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.embed_norm = nn.LayerNorm(dim)
        layers: list[nn.Module] = []
        side = image // patch
        for i, (depth, head) in enumerate(zip(depths, heads)):
            if i:
                layers.append(PatchMerging(dim))
                dim, side = dim * 2, side // 2
            layers += [SwinBlock(dim, head, side, window, shifted=j % 2 == 1) for j in range(depth)]
        self.stages = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        return self.head(self.norm(self.stages(x)).mean([1, 2]))


# name -> (constructor, input shape)
ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet50": (ResNet50, (1, 3, 64, 64)),
    "mobilenet_v2": (MobileNetV2, (1, 3, 64, 64)),
    "mobilenet_v3": (MobileNetV3Small, (1, 3, 64, 64)),
    "efficientnet_b0": (EfficientNetB0, (1, 3, 64, 64)),
    "shufflenet_v2": (ShuffleNetV2, (1, 3, 64, 64)),
    "densenet": (DenseNet, (1, 3, 64, 64)),
    "vit": (ViT, (2, 3, 32, 32)),
    "resnet18": (ResNet18, (1, 3, 64, 64)),
    "regnet": (RegNetY400MF, (1, 3, 64, 64)),
    "googlenet": (GoogLeNet, (1, 3, 64, 64)),
    "convnext": (ConvNeXt, (1, 3, 64, 64)),
    "swin": (SwinTransformer, (1, 3, 64, 64)),
}
