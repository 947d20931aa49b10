"""Other kinds of models users convert, beside the feed-forward families and the architectures: QAT-trained
convnets, recurrent nets under dynamic quantization, embedding tables with float-qparams weights and a
transposed-conv decoder. Each is prepared in-process (seconds), seeded, calibrated on two batches."""

from __future__ import annotations

import time
import warnings
from typing import Callable

import torch
from torch import nn
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx
from torch.fx import GraphModule

from .arch_models import ARCHITECTURES
from .models import Observed


class RecurrentNet(nn.Module):
    """A two-layer LSTM, a GRU and a Linear head (a speech/text encoder's shape)."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.lstm = nn.LSTM(width, width, num_layers=2)
        self.gru = nn.GRU(width, width)
        self.head = nn.Linear(width, width)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        return self.head(y)


class EmbeddingBags(nn.Module):
    """Four embedding tables of 50k rows pooled per sample, then a Linear (a recommender's sparse side)."""

    def __init__(self, rows: int = 50_000, dim: int = 64, tables: int = 4) -> None:
        super().__init__()
        self.bags = nn.ModuleList([nn.EmbeddingBag(rows, dim, mode="sum") for _ in range(tables)])
        self.top = nn.Linear(dim * tables, 1)

    def forward(self, indices, offsets):
        return self.top(torch.cat([bag(indices, offsets) for bag in self.bags], 1))


class Decoder(nn.Module):
    """Four stride-2 transposed convs from 512 channels down to an image (a generator's or U-Net's upsampling)."""

    def __init__(self) -> None:
        super().__init__()
        widths = [512, 256, 128, 64]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def _calibrated(model: nn.Module, prepare: Callable[..., GraphModule], mapping: QConfigMapping,
                batches: list[tuple]) -> GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare(model, mapping, batches[0])
        with torch.no_grad():
            for batch in batches[1:]:
                observed(*batch)
    return observed


def _qat(architecture: str) -> tuple[GraphModule, tuple]:
    build, shape = ARCHITECTURES[architecture]
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(*shape, generator=g),) for _ in range(3)]
    observed = _calibrated(build().train(), prepare_qat_fx, get_default_qat_qconfig_mapping("x86"), batches)
    return observed.eval(), batches[0]  # (training steps, then converted in eval mode)


def _recurrent() -> tuple[GraphModule, tuple]:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(10, 2, 256, generator=g),) for _ in range(3)]
    mapping = QConfigMapping()
    for kind in (nn.LSTM, nn.GRU, nn.Linear):
        mapping.set_object_type(kind, default_dynamic_qconfig)
    return _calibrated(RecurrentNet().eval(), prepare_fx, mapping, batches), batches[0]


def _embedding_bags() -> tuple[GraphModule, tuple]:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 50_000, (64,), generator=g), torch.arange(0, 64, 8)) for _ in range(3)]
    mapping = get_default_qconfig_mapping("x86").set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)
    return _calibrated(EmbeddingBags().eval(), prepare_fx, mapping, batches), batches[0]


def _decoder() -> tuple[GraphModule, tuple]:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(1, 512, 4, 4, generator=g),) for _ in range(3)]
    return _calibrated(Decoder().eval(), prepare_fx, get_default_qconfig_mapping("x86"), batches), batches[0]


# name -> (what it is, how to prepare it)
KINDS: dict[str, tuple[str, Callable[[], tuple[GraphModule, tuple]]]] = {
    "qat_resnet18": ("ResNet-18 trained with QAT (x86), conv-BatchNorm folded at convert", lambda: _qat("resnet18")),
    "qat_mobilenet_v2": ("MobileNetV2 trained with QAT (x86)", lambda: _qat("mobilenet_v2")),
    "recurrent": ("2-layer LSTM + GRU + Linear, width 256, dynamic qint8", _recurrent),
    "embedding_bags": ("4 EmbeddingBags of 50k x 64 (float qparams) + Linear", _embedding_bags),
    "decoder": ("4 stride-2 ConvTranspose2d, 512 channels down to 3 (x86)", _decoder),
}


def prepare_kind(name: str) -> Observed:
    """The observed model of kind `name`, prepared now (seeded: the same model every call)."""
    torch.manual_seed(0)
    start = time.perf_counter()
    model, inputs = KINDS[name][1]()
    return Observed(name, 0, "kind", model, tuple(inputs), time.perf_counter() - start, cached=False)
