"""The model `qfx demo` converts: a small CNN with an attention-style head, prepared and calibrated.

It is chosen to touch the main shapes of convert: a fused conv/bn/relu, a residual add, a functional
linear whose weight prepare observes, matmul/softmax between observed activations, and a Linear the user
asked not to quantize (its qconfig is None).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import QConfigMapping, default_qconfig
from torch.ao.quantization.quantize_fx import prepare_fx
from torch.fx import GraphModule

CALIBRATION_BATCHES = 4


class DemoNet(nn.Module):
    """conv/bn/relu stem, one residual conv block, then attention over the 4x4 feature map's positions."""

    def __init__(self, channels: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.stem_relu = nn.ReLU()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.query = nn.Linear(channels, channels)
        # The key projection is a functional linear: prepare observes its weight as a graph input.
        self.key_weight = nn.Parameter(torch.randn(channels, channels) / channels**0.5)
        self.key_bias = nn.Parameter(torch.zeros(channels))
        self.value = nn.Linear(channels, channels)
        self.classifier = nn.Linear(channels, classes)  # kept in float: its qconfig is None
        self.scale = channels**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        x = self.relu(self.bn(self.conv(x)) + x)
        tokens = self.pool(x).flatten(2).transpose(1, 2)
        q = self.query(tokens)
        k = F.linear(tokens, self.key_weight, self.key_bias)
        v = self.value(tokens)
        attention = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        pooled = torch.matmul(attention, v).mean(1)
        return self.classifier(pooled)


def demo_qconfig_mapping() -> QConfigMapping:
    """MinMax int8 everywhere except the classifier, which stays in float."""
    return QConfigMapping().set_global(default_qconfig).set_module_name("classifier", None)


def example_inputs(seed: int = 0) -> tuple[torch.Tensor]:
    """One deterministic batch of inputs for the demo model."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 8, 8, generator=g),)


def observed_demo_model(seed: int = 0) -> GraphModule:
    """The demo model after prepare_fx and calibration. Deterministic: the same seed gives the same weights
    and the same observer statistics."""
    torch.manual_seed(seed)
    model = DemoNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        observed = prepare_fx(model, demo_qconfig_mapping(), example_inputs(seed))
    with torch.no_grad():
        for batch in range(CALIBRATION_BATCHES):
            observed(*example_inputs(seed + 1 + batch))
    return observed
