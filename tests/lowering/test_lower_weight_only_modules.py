"""lower-weight-only-modules: reference Embedding / EmbeddingBag become torch's quantized Embedding /
EmbeddingBag (8-bit and 4-bit weights), the graph stays as it is, modules equal torch's convert_fx's."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
from torch.ao.quantization import (
    QConfigMapping,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
)

from qfx.lowering.support.engine import EngineError
from qfx.lowering.lower_weight_only_modules import lower_weight_only_modules
from qfx.passes import Pipeline
from tests.support.lowering import assert_same_module, calibrated, reference_program, torch_lowered

LOWER = Pipeline.parse("lower-weight-only-modules")


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.bag = nn.EmbeddingBag(10, 8, mode="sum")
        self.fc = nn.Linear(8, 8)

    def forward(self, idx, offsets):
        return self.fc(self.emb(idx).sum(0)), self.bag(idx, offsets), self.emb(idx + 1)


INPUTS = (torch.tensor([1, 2, 4, 5]), torch.tensor([0, 2]))


def _mapping(qconfig) -> QConfigMapping:
    return (QConfigMapping().set_object_type(nn.Embedding, qconfig).set_object_type(nn.EmbeddingBag, qconfig))


@pytest.mark.parametrize("qconfig", [float_qparams_weight_only_qconfig, float_qparams_weight_only_qconfig_4bit],
                         ids=["8bit", "4bit"])
def test_reference_embeddings_become_quantized_embeddings(qconfig) -> None:
    observed = calibrated(Embeddings(), _mapping(qconfig), INPUTS)
    before = reference_program(observed)
    assert type(before.modules["emb"]) is nnqr.Embedding and type(before.modules["bag"]) is nnqr.EmbeddingBag
    after = LOWER.run(before)
    expected = torch_lowered(observed)
    assert type(after.modules["emb"]) is nnq.Embedding and type(after.modules["bag"]) is nnq.EmbeddingBag
    for path in ("emb", "bag"):
        assert_same_module(after.modules[path], expected.get_submodule(path), path)
    assert after.modules["fc"] is before.modules["fc"]  # not a weight-only module: untouched
    assert after.graph == before.graph


def test_a_path_no_node_calls_is_left_alone() -> None:
    observed = calibrated(Embeddings(), _mapping(float_qparams_weight_only_qconfig), INPUTS)
    before = reference_program(observed)
    nodes = [n for n in before.graph.nodes]
    # a reference embedding in the table that no node calls (torch walks nodes, not modules)
    extra = before.with_modules({"spare": before.modules["emb"]})
    after = LOWER.run(extra.with_nodes(nodes))
    assert after.modules["spare"] is before.modules["emb"]
    assert type(after.modules["emb"]) is nnq.Embedding


def test_an_engine_refusal_is_a_typed_runtime_error(monkeypatch) -> None:
    observed = calibrated(Embeddings(), _mapping(float_qparams_weight_only_qconfig), INPUTS)
    program = reference_program(observed)

    def refuse(cls, mod):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(nnq.EmbeddingBag, "from_reference", classmethod(refuse))
    with pytest.raises(EngineError, match="node 'bag'.*no kernel") as info:
        lower_weight_only_modules(program)
    assert isinstance(info.value, RuntimeError)


def test_nothing_to_lower_returns_the_input() -> None:
    observed = calibrated(nn.Sequential(nn.Sigmoid()), _mapping(float_qparams_weight_only_qconfig),
                       (torch.randn(2, 3),))
    program = reference_program(observed)
    assert LOWER.run(program) is program
