"""Benchmark models, prepared and calibrated: three families at a parametrised number of blocks, and the
real-architecture-shaped models of `arch_models.py` (one fixed size each, x86 mapping).

Observed node counts (prepare_fx output, MinMax mapping): mlp 2n+3, cnn 7n+5, transformer 30n+3 for n
blocks. prepare_fx itself is quadratic in the graph size (~2 min at 5,000 nodes on 2 cores), so observed
models can be cached on disk (see `observed_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import attrs
import torch
from torch import nn
from torch.ao.quantization import QConfigMapping, default_qconfig, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_fx
from torch.fx import GraphModule

from .arch_models import ARCHITECTURES

CALIBRATION_BATCHES = 2


class MLP(nn.Module):
    """n blocks of Linear + ReLU."""

    def __init__(self, blocks: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.blocks = nn.Sequential(*layers)

    def forward(self, x):
        return self.blocks(x)


class ResidualBlock(nn.Module):
    """Conv+BN+ReLU, Conv+BN, add the input, ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + x)


class ResNet(nn.Module):
    """A stem convolution, then n residual blocks."""

    def __init__(self, blocks: int, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])

    def forward(self, x):
        return self.blocks(self.stem(x))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention (q/k/v Linear, matmul, softmax, out projection) and an MLP, with residual adds."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(2 * dim, dim)
        self.scale = dim**-0.5

    def forward(self, x):
        h = self.norm1(x)
        scores = torch.matmul(self.q(h), self.k(h).transpose(-2, -1)) * self.scale
        x = x + self.out(torch.matmul(torch.softmax(scores, dim=-1), self.v(h)))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class Transformer(nn.Module):
    """n transformer blocks."""

    def __init__(self, blocks: int, dim: int = 16) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[TransformerBlock(dim) for _ in range(blocks)])

    def forward(self, x):
        return self.blocks(x)


@attrs.frozen
class Family:
    """A model family: how to build it with n blocks, an input shape, and n -> observed node count."""

    name: str
    build: Callable[[int], nn.Module]
    input_shape: tuple[int, ...]
    nodes_per_block: int
    fixed_nodes: int

    def expected_nodes(self, blocks: int) -> int:
        """Observed node count for `blocks` blocks (MinMax mapping)."""
        return self.nodes_per_block * blocks + self.fixed_nodes


FAMILIES: dict[str, Family] = {
    "mlp": Family("mlp", MLP, (4, 16), 2, 3),
    "cnn": Family("cnn", ResNet, (1, 3, 8, 8), 7, 5),
    "transformer": Family("transformer", Transformer, (2, 8, 16), 30, 3),
}

MAPPINGS: dict[str, Callable[[], QConfigMapping]] = {
    "minmax": lambda: QConfigMapping().set_global(default_qconfig),
    "x86": lambda: get_default_qconfig_mapping("x86"),
}


@attrs.frozen(eq=False)
class Observed:
    """One prepared and calibrated benchmark model."""

    family: str
    blocks: int
    mapping: str
    model: GraphModule = attrs.field(repr=False)
    example_inputs: tuple = attrs.field(repr=False)
    prepare_seconds: float  # prepare_fx + calibration, when it was built (possibly in an earlier run)
    cached: bool  # loaded from the on-disk cache rather than prepared in this process

    @property
    def nodes(self) -> int:
        return len(self.model.graph.nodes)


def input_shape(family: str) -> tuple[int, ...]:
    """The input shape of a family or of an architecture (a name in `ARCHITECTURES`)."""
    return FAMILIES[family].input_shape if family in FAMILIES else ARCHITECTURES[family][1]


def example_inputs(family: str, seed: int = 0) -> tuple[torch.Tensor]:
    """A deterministic input batch for `family` (or an architecture)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*input_shape(family), generator=g),)


def float_model(family: str, blocks: int) -> nn.Module:
    """The float model in eval mode, seeded: the same weights every call (and as its observed model has).
    `blocks` is ignored for architectures."""
    torch.manual_seed(0)
    if family in FAMILIES:
        return FAMILIES[family].build(blocks).eval()
    return ARCHITECTURES[family][0]().eval()


def prepare_observed(family: str, blocks: int, mapping: str) -> Observed:
    """Build the float model (seeded), prepare_fx it with `mapping` and calibrate it."""
    model = float_model(family, blocks)
    inputs = example_inputs(family)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(model, MAPPINGS[mapping](), inputs)
        with torch.no_grad():
            for batch in range(CALIBRATION_BATCHES):
                observed(*example_inputs(family, seed=1 + batch))
    return Observed(family, blocks, mapping, observed, inputs, time.perf_counter() - start, cached=False)


def default_cache_dir() -> Path:
    """Where observed models are cached: $QFX_BENCH_CACHE, else ~/.cache/qfx-bench."""
    if "QFX_BENCH_CACHE" in os.environ:
        return Path(os.environ["QFX_BENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "qfx-bench"


CACHE_FORMAT = 1  # bump when the stored form changes


def _cache_key(family: str, blocks: int, mapping: str) -> str:
    # The torch version and this file decide what prepare_fx produces; for an architecture, its file too
    # (editing an architecture does not throw away the families' models, some of which take many minutes).
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{torch.__version__}|{family}|{blocks}|{mapping}".encode())
    digest.update(Path(__file__).read_bytes())
    if family in ARCHITECTURES:
        digest.update(Path(__file__).with_name("arch_models.py").read_bytes())
    return digest.hexdigest()[:16]


def observed_model(family: str, blocks: int, mapping: str, cache_dir: Path | None = None) -> Observed:
    """The observed model for (family, blocks, mapping), prepared once.

    With a `cache_dir`, a model prepared in an earlier run is loaded from there (it is stored with
    qfx.cli.save_observed, which keeps the graph, the modules, the observer statistics and prepare's
    facts exactly), and a newly prepared one is stored."""
    if cache_dir is None:
        return prepare_observed(family, blocks, mapping)
    from qfx.cli import load_observed, save_observed

    path = cache_dir / f"{family}-{blocks}-{mapping}-{_cache_key(family, blocks, mapping)}.pt"
    info = path.with_suffix(".json")
    if path.is_file() and info.is_file():
        try:
            recorded = json.loads(info.read_text())
            model, inputs = load_observed(path)
            if len(model.graph.nodes) == recorded["nodes"] and inputs is not None:
                return Observed(family, blocks, mapping, model, tuple(inputs), recorded["prepare_seconds"], cached=True)
        except Exception:  # unreadable (e.g. written by an older qfx): prepare again and overwrite it
            pass
    fresh = prepare_observed(family, blocks, mapping)
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_observed(fresh.model, path, fresh.example_inputs)
    info.write_text(json.dumps({"prepare_seconds": fresh.prepare_seconds, "nodes": fresh.nodes}))
    return fresh
