"""The fast qparam paths give exactly the numbers the observers' own calculate_qparams give."""

from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
)

from qfx.passes.support.qparams import batched_per_tensor_qparams, histogram_qparams

OBSERVER_KWARGS = [
    {},
    {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric},
    {"reduce_range": True},
    {"dtype": torch.quint8, "qscheme": torch.per_tensor_symmetric, "quant_min": 0, "quant_max": 127},
    {"dtype": torch.qint32},
]


def _data(kind: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == 0:
        return torch.randn(64, 16, generator=g) * scale
    if kind == 1:
        return torch.rand(200, generator=g) * scale - 0.3
    if kind == 2:
        return torch.randn(100, generator=g).exp() * scale
    if kind == 3:
        return torch.zeros(10)
    return torch.cat([torch.randn(500, generator=g) * scale, torch.tensor([50.0 * scale])])


observations = st.lists(
    st.tuples(st.integers(0, 4), st.floats(1e-3, 1e3), st.integers(0, 2**16)), min_size=1, max_size=3
)


@settings(max_examples=40, deadline=None)
@given(observations, st.sampled_from(OBSERVER_KWARGS[:3]))
def test_histogram_search_matches_torch(batches, kwargs):
    observer = HistogramObserver(**kwargs)
    for kind, scale, seed in batches:
        observer(_data(kind, scale, seed))
    before = copy.deepcopy(observer.state_dict())
    ours = histogram_qparams(observer)
    theirs = observer.calculate_qparams()
    assert ours is not None
    assert torch.equal(ours[0], theirs[0]) and ours[0].dtype == theirs[0].dtype
    assert torch.equal(ours[1], theirs[1]) and ours[1].dtype == theirs[1].dtype
    assert all(torch.equal(before[k], v) for k, v in observer.state_dict().items())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(observations, st.integers(0, len(OBSERVER_KWARGS) - 1), st.booleans()),
                min_size=1, max_size=6))
def test_batched_minmax_qparams_match_torch(specs):
    observers = []
    for batches, which, moving in specs:
        observer = (MovingAverageMinMaxObserver if moving else MinMaxObserver)(**OBSERVER_KWARGS[which])
        for kind, scale, seed in batches:
            observer(_data(kind, scale, seed))
        observers.append(observer)
    got = batched_per_tensor_qparams(observers)
    for observer in observers:
        scale, zero_point = observer.calculate_qparams()
        assert got[id(observer)] == (float(scale), int(zero_point))


def test_unsupported_observers_are_left_to_themselves():
    uncalibrated = MinMaxObserver()
    per_channel = PerChannelMinMaxObserver()
    per_channel(torch.randn(4, 3))
    assert batched_per_tensor_qparams([uncalibrated, per_channel]) == {}
    assert histogram_qparams(HistogramObserver()) is None
    assert histogram_qparams(per_channel) is None
