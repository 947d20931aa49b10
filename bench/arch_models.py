"""Real-architecture-shaped benchmark models, written here (torchvision does not load beside the CPU torch).

Unlike the families in `models.py`, which repeat one layer shape, these follow published architectures with
their real layer widths, so nearly every convolution has a shape of its own: bottleneck ResNets, inverted
residuals with depthwise convolutions (MobileNetV2), squeeze-excitation with hardswish/hardsigmoid
(MobileNetV3), SiLU-gated squeeze-excitation in MBConv blocks (EfficientNet-B0), channel split, shuffle and
concatenation (ShuffleNetV2), dense concatenation (DenseNet) and a patch-embedding attention encoder (ViT). Inputs are kept
small (convert's cost does not depend on them; prepare's calibration does).
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


class ResNet50(nn.Module):
    """ResNet-50: stem, four stages of [3, 4, 6, 3] bottlenecks (widths 64..512), pool, classifier."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


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


# name -> (constructor, input shape)
ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet50": (ResNet50, (1, 3, 64, 64)),
    "mobilenet_v2": (MobileNetV2, (1, 3, 64, 64)),
    "mobilenet_v3": (MobileNetV3Small, (1, 3, 64, 64)),
    "efficientnet_b0": (EfficientNetB0, (1, 3, 64, 64)),
    "shufflenet_v2": (ShuffleNetV2, (1, 3, 64, 64)),
    "densenet": (DenseNet, (1, 3, 64, 64)),
    "vit": (ViT, (2, 3, 32, 32)),
}
