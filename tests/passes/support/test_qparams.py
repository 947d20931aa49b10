"""The fast qparam paths give exactly the numbers the observers' own calculate_qparams give."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import types
from typing import Iterator
from unittest import mock

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.ao.quantization.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
)

from qfx.passes.support import qparams
from tests.support.kernels import PATHS, assert_kernel_built, taking
from qfx.passes.support.qparams import (
    batched_histogram_qparams,
    batched_per_tensor_qparams,
    histogram_qparams,
    quantization_errors,
)

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


def test_the_scoring_kernel_is_built_and_agrees():
    """Installing qfx with a C compiler builds the scoring kernel, and it passes its own bit-for-bit check
    against the tensor operations (without one, qfx scores with the tensor operations)."""
    assert_kernel_built(qparams)


# How searches run: in the kernel, in lockstep with candidates scored by the kernel, in lockstep with
# tensor operations
SEARCH_PATHS = ("native", "native lockstep", "tensor")


@contextlib.contextmanager
def searching(path: str) -> Iterator[None]:
    """Within the block, searches run the `SEARCH_PATHS` way named `path`."""
    with taking(qparams, "tensor" if path == "tensor" else "native"):
        if path == "native lockstep":
            with mock.patch.object(qparams, "summing_lanes", lambda kernel: None):
                yield
        else:
            yield


def _assert_scored_as_torch(requests: list) -> None:
    """quantization_errors gives torch's _compute_quantization_error for every range, bit for bit, by the
    kernel and by the tensor operations."""
    for path in PATHS:
        with taking(qparams, path):
            got = quantization_errors(requests)
        for (observer, ranges), scored in zip(requests, got):
            want = [observer._compute_quantization_error(start, end) for start, end in ranges]
            assert [float(x).hex() for x in scored] == [float(x).hex() for x in want], path


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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bool])
def test_histograms_with_range_buffers_of_another_dtype_are_left_to_torch(dtype):
    """The search computes in float32; torch in the range buffers' dtype (float64 scores differently, bool
    fails): such observers compute their own qparams."""
    observer = HistogramObserver()
    observer(torch.randn(64) * 3)
    observer.min_val, observer.max_val = observer.min_val.to(dtype), observer.max_val.to(dtype)
    assert histogram_qparams(observer) is None and batched_histogram_qparams([observer]) == {}


HISTOGRAM_DTYPES = [
    {"dtype": torch.quint8}, {"dtype": torch.qint8}, {"dtype": torch.quint8, "reduce_range": True},
    {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}, {"dtype": torch.qint32},
    {"dtype": torch.quint8, "quant_min": 0, "quant_max": 15},
]


class _RangeFromClass(HistogramObserver):
    """A histogram observer whose maximum is a class attribute's, not its buffer's."""

    @property
    def max_val(self):
        return self._buffers["max_val"] * 2


def _range_from_the_class(observer: HistogramObserver) -> None:
    observer.__class__ = _RangeFromClass


def _range_from_the_instance_dict(observer: HistogramObserver) -> None:
    object.__setattr__(observer, "min_val", observer.min_val - 1)


@pytest.mark.parametrize("shadow", [lambda observer: None, _range_from_the_class, _range_from_the_instance_dict],
                         ids=["buffers", "class-attribute", "instance-dict"])
def test_the_batch_reads_the_histogram_and_range_attribute_access_gives(shadow):
    """The batch reads an observer's buffers from its buffer table only where attribute access would find
    them there: a class attribute or an instance-dict entry of the same name is what torch's search reads."""
    observer = HistogramObserver()
    observer(torch.randn(256) * 3)
    shadow(observer)
    scale, zero_point = observer.calculate_qparams()
    assert batched_histogram_qparams([observer]) == {id(observer): (float(scale), int(zero_point))}


@st.composite
def histogram_states(draw, bin_counts=(1, 2, 7, 64, 256, 2048)):
    """A HistogramObserver with a drawn histogram and range, degenerate ones included: all-zero counts, mass
    in one bin, a zero-width or huge range, few or many bins."""
    bins = draw(st.sampled_from(bin_counts))
    observer = HistogramObserver(bins=bins, **draw(st.sampled_from(HISTOGRAM_DTYPES)))
    shape = draw(st.sampled_from(["random", "zeros", "one_bin", "spiky"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if shape == "random":
        counts = torch.rand(bins, generator=g) * draw(st.floats(1.0, 1e6))
    elif shape == "zeros":
        counts = torch.zeros(bins)
    elif shape == "one_bin":
        counts = torch.zeros(bins)
        counts[draw(st.integers(0, bins - 1))] = draw(st.floats(1.0, 1e7))
    else:
        counts = (torch.randn(bins, generator=g) * 3).exp().floor()
    low = draw(st.floats(-1e6, 1e6))
    width = draw(st.sampled_from([0.0, 1e-30, 1e-6, 1.0, 1e3, 1e30]))
    observer.histogram = counts.float()
    observer.min_val = torch.tensor(low)
    observer.max_val = torch.tensor(low + width)
    return observer


@settings(max_examples=80, deadline=None)
# (40,000 bins: above torch's reduction grain, where a vector is summed in pieces)
@given(st.lists(histogram_states((1, 2, 7, 64, 256, 2048, 40000)), min_size=1, max_size=4), st.data())
def test_batched_quantization_errors_match_torch(observers, data):
    """quantization_errors equals torch's _compute_quantization_error bit for bit, range by range, with the
    ranges of several observers (alike or not in bin count and dtype) scored in one call."""
    requests = []
    for observer in observers:
        bins = observer.bins
        ranges = data.draw(st.lists(st.tuples(st.integers(0, bins - 1), st.integers(0, bins - 1)).map(sorted)
                                    .map(tuple), min_size=0, max_size=9))
        requests.append((observer, ranges))
    _assert_scored_as_torch(requests)


@settings(max_examples=60, deadline=None)
@given(histogram_states((1, 2, 7, 64, 256, 2048)), st.data())
def test_the_kernel_writes_the_tensor_operations_bits(observer, data):
    """Bin by bin, the compiled kernel writes the very float32 values (signs of zeros included) the tensor
    operations write, on the rows it is used for, both ways it can score rows of tiny destination bins."""
    kernel = qparams.native_kernel()
    if kernel is None:
        pytest.skip("the scoring kernel is not built")
    bins = observer.bins
    ranges = data.draw(st.lists(st.tuples(st.integers(0, bins - 1), st.integers(0, bins - 1)).map(sorted),
                                min_size=1, max_size=6))
    low, high = observer.min_val.item(), observer.max_val.item()
    bin_width = (high - low) / bins
    rows = [(0, k, observer, start, bin_width, bin_width * (end - start + 1) / observer.dst_nbins)
            for k, (start, end) in enumerate(ranges)]
    assume(qparams._ErrorWork(1, bins, torch.device("cpu"))._quotients_are_small(rows))
    for emulated in (True, False):
        with qparams.tiny_row_emulation(kernel, emulated):
            assert qparams.kernel_writes_the_terms(kernel, rows, bins, observer.dst_nbins - 1), emulated


def test_the_kernels_known_answer_is_the_tensor_operations_answer():
    """The digest the kernel's check compares with is that of the terms the tensor operations write for the
    check's rows; the kernel writes those terms, both ways it can score tiny rows, and its check then runs
    no tensor operation."""
    rows, bins, top = qparams._check_rows()
    work = qparams._ErrorWork(len(rows), bins, torch.device("cpu"))
    table = work.density_rows({id(row[2]): (row[2], row[4]) for row in rows})
    index = torch.tensor([table[id(row[2])] for row in rows])
    buffers = work._first_rows(len(rows))
    work._error_terms(qparams._columns(rows, work.device).unsqueeze(2), index, top, True, buffers)
    assert hashlib.sha256(buffers[6].contiguous().numpy().tobytes()).hexdigest() == qparams._CHECK_ROWS_TERMS
    kernel = qparams.native_kernel()
    if kernel is None:
        pytest.skip("the scoring kernel is not built")
    with mock.patch.object(qparams._ErrorWork, "_error_terms", side_effect=AssertionError("tensor operations ran")):
        assert qparams._kernel_agrees(kernel, emulated=True) and qparams._kernel_agrees(kernel, emulated=False)


def test_a_kernel_off_the_known_answer_is_checked_against_the_tensor_operations():
    """A kernel whose terms are not the known answer is compared with the tensor operations themselves: it
    is refused only if they differ."""
    kernel = qparams.native_kernel()
    if kernel is None:
        pytest.skip("the scoring kernel is not built")
    with mock.patch.object(qparams, "_CHECK_ROWS_TERMS", "another answer"):
        assert not qparams._writes_the_known_terms(kernel)
        assert qparams._kernel_agrees(kernel, emulated=True)
        assert not qparams._kernel_agrees(types.SimpleNamespace(score_rows=lambda *args: None,
                                                                set_tiny_row_emulation=lambda flag: True), True)


def test_a_kernel_built_from_older_sources_is_not_used(monkeypatch):
    """A kernel lacking a function this module calls (an editable install not rebuilt since the sources
    changed) is not used: the tensor operations do the work."""
    assert_kernel_built(qparams)
    monkeypatch.setattr(qparams, "_KERNEL_FUNCTIONS", (*qparams._KERNEL_FUNCTIONS, "a_function_of_tomorrow"))
    assert qparams.native_kernel.__wrapped__() is None


def test_a_block_scoring_tiny_rows_the_other_way_restores_the_setting():
    """`tiny_row_emulation` switches the way the kernel scores rows of tiny destination bins within its block
    only (the kernel is set to the faster way, timed when it is first asked for)."""
    kernel = qparams.native_kernel()
    if kernel is None:
        pytest.skip("the scoring kernel is not built")
    setting = kernel.set_tiny_row_emulation(True)
    kernel.set_tiny_row_emulation(setting)
    with qparams.tiny_row_emulation(kernel, not setting):
        assert kernel.set_tiny_row_emulation(not setting) is (not setting)  # (reads it, leaves it)
    assert kernel.set_tiny_row_emulation(setting) is setting


@settings(max_examples=10, deadline=None)
@given(histogram_states())
def test_histogram_search_on_drawn_histograms_matches_torch(observer):
    """The whole search (qparams) equals torch's on drawn histograms, degenerate ones included (few
    examples: torch's own search takes up to seconds on narrow histograms; the range scoring, where the
    batching lives, is covered range by range above)."""
    try:
        theirs = observer.calculate_qparams()
    except Exception as exc:  # noqa: BLE001 - torch refuses some degenerate states; then so must we
        try:
            histogram_qparams(observer)
        except type(exc):
            return
        raise AssertionError(f"torch raised {exc!r}, qfx did not")
    for path in SEARCH_PATHS:
        with searching(path):
            ours = histogram_qparams(observer)
            assert ours is not None
            assert torch.equal(ours[0], theirs[0]) and ours[0].dtype == theirs[0].dtype
            assert torch.equal(ours[1], theirs[1]) and ours[1].dtype == theirs[1].dtype
            # the batched path computes the searched range and the qparams of alike observers together
            assert batched_histogram_qparams([observer]) == {id(observer): (float(theirs[0]), int(theirs[1]))}


@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(observations, st.sampled_from(OBSERVER_KWARGS[:3]), st.sampled_from([64, 2048])),
                min_size=1, max_size=5))
def test_searches_of_many_observers_match_torch(specs):
    """Searches of several observers give each observer torch's qparams: in the kernel, one by one, or in
    lockstep (their candidates scored together, by the kernel or by tensor operations)."""
    observers = []
    for batches, kwargs, bins in specs:
        observer = HistogramObserver(bins=bins, **kwargs)
        for kind, scale, seed in batches:
            observer(_data(kind, scale, seed))
        observers.append(observer)
    for path in SEARCH_PATHS:
        with searching(path):
            got = batched_histogram_qparams(observers + [MinMaxObserver()])
        assert len(got) == len(observers)
        for observer in observers:
            scale, zero_point = observer.calculate_qparams()
            assert got[id(observer)] == (float(scale), int(zero_point)), path


@pytest.mark.parametrize("native", [True, False])
def test_a_shared_observer_is_searched_once(monkeypatch, native):
    """prepare_fx shares one observer between nodes whose outputs share qparams: it is searched once (by the
    kernel, or in the lockstep searches)."""
    observer = HistogramObserver()
    observer(_data(0, 1.0, 0))
    searched = []
    original_errors, original_search = qparams.quantization_errors, qparams._search_natively
    monkeypatch.setattr(qparams, "quantization_errors",
                        lambda requests, scorers=None: (searched.extend(r for _, r in requests),
                                                        original_errors(requests, scorers))[1])
    monkeypatch.setattr(qparams, "_search_natively",
                        lambda *args: (searched.append(args[2]), original_search(*args))[1])
    with taking(qparams, "native" if native else "tensor"):
        once = batched_histogram_qparams([observer])
        count = len(searched)
        assert count > 0
        assert batched_histogram_qparams([observer, observer, observer]) == once
    assert len(searched) == 2 * count


def test_the_kernel_sums_as_torch_sums():
    """The kernel's sums of vectors agree with torch's at some vector width (its own check, on first use):
    otherwise every search would run in lockstep with tensor sums."""
    assert_kernel_built(qparams)
    assert qparams.summing_lanes(qparams.native_kernel()) is not None


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 32768), st.sampled_from(["normal", "spread", "integers", "tiny"]), st.integers(0, 2**16))
def test_vector_sums_are_torchs(n, kind, seed):
    """The kernel's sum of a float32 vector of up to one grain is torch's, bit for bit, at its lanes: values
    of spread magnitudes make any other order of additions show."""
    kernel = qparams.native_kernel()
    if kernel is None:
        pytest.skip("the scoring kernel is not built")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float32)
    if kind == "spread":
        x.mul_(torch.randn(n, generator=g, dtype=torch.float32).mul_(8).exp_())
    elif kind == "integers":
        x = x.mul_(1000).floor_()
    elif kind == "tiny":
        x.mul_(1e-42)
    lanes = qparams.summing_lanes(kernel)
    assert kernel.vector_sum(x.data_ptr(), n, lanes).hex() == x.sum().item().hex()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40000), st.sampled_from(["counts", "spread", "tiny"]), st.integers(0, 2**16))
def test_the_kernels_cumulative_sums_are_torchs(n, kind, seed):
    """The cumulative counts the kernel's search takes are torch.cumsum's, bit for bit."""
    kernel = qparams.native_kernel()
    if kernel is None:
        pytest.skip("the scoring kernel is not built")
    g = torch.Generator().manual_seed(seed)
    if kind == "counts":
        values = torch.randint(0, 1000, (n,), generator=g).float()
    elif kind == "spread":
        values = torch.randn(n, generator=g).mul_(torch.randn(n, generator=g).mul_(8).exp_())
    else:
        values = torch.rand(n, generator=g).mul_(1e-38)
    out = torch.full((n,), float("nan"))
    kernel.cumulative_sum(values.data_ptr(), n, out.data_ptr())
    assert torch.equal(out.view(torch.int32), torch.cumsum(values, 0).view(torch.int32))


def test_tied_scores_go_on_as_torch_goes_on():
    """torch stops at a candidate scoring worse than the last one accepted, not at one scoring the same: on a
    range so narrow that every error underflows to zero, every candidate ties and the search runs to its
    end, in the kernel as in lockstep."""
    observer = HistogramObserver(bins=256)
    observer.histogram = torch.rand(256, generator=torch.Generator().manual_seed(3)) * 100
    observer.min_val, observer.max_val = torch.tensor(0.0), torch.tensor(1e-30)
    assert observer._compute_quantization_error(3, 200) == 0.0
    want = [x.item().hex() for x in observer._non_linear_param_search()]
    assert want != [x.item().hex() for x in qparams._searched_range(observer, 1, 255)]  # (not the first move)
    for path in SEARCH_PATHS:
        with searching(path):
            (start, end), = qparams._histogram_bin_searches([observer])
        assert [x.item().hex() for x in qparams._searched_range(observer, start, end)] == want, path


def test_searches_beyond_the_kernels_flooring_run_in_lockstep(monkeypatch):
    """qint32's 2**32 destination bins take every candidate beyond the kernel's exact flooring: the kernel
    declines the search, which runs in lockstep with torch's floor division and gives torch's qparams; an
    8-bit search runs in the kernel."""
    if qparams.native_kernel() is None:
        pytest.skip("the scoring kernel is not built")
    lockstep = []
    original = qparams._lockstep_searches
    monkeypatch.setattr(qparams, "_lockstep_searches",
                        lambda observers, *args: (lockstep.extend(observers), original(observers, *args))[1])
    for dtype, declined in ((torch.qint32, True), (torch.quint8, False)):
        observer = HistogramObserver(dtype=dtype)
        observer(_data(0, 3.0, 1))
        lockstep.clear()
        scale, zero_point = observer.calculate_qparams()
        assert batched_histogram_qparams([observer]) == {id(observer): (float(scale), int(zero_point))}
        assert lockstep == ([observer] if declined else [])


def test_quantile_bounds_are_torchs_repeated_additions():
    """The alphas and betas are the floats torch's loop holds after each step: alpha += 1e-5 and
    beta -= 1e-5 done one at a time on Python floats."""
    alphas, betas = qparams._quantile_bounds()
    assert len(alphas) == len(betas) == int(1 / 1e-5) + 9
    alpha, beta = 0.0, 1.0
    for k in range(len(alphas)):
        assert alphas[k].hex() == alpha.hex() and betas[k].hex() == beta.hex(), k
        alpha += 1e-5
        beta -= 1e-5


def _torch_candidates(observer: HistogramObserver, limit: int) -> list[tuple[int, int]]:
    """HistogramObserver._non_linear_param_search's candidate ranges, step by step with its tensor
    comparisons, each assumed accepted (the first `limit` of them)."""
    total = torch.sum(observer.histogram).item()
    c_sum = torch.cumsum(observer.histogram, dim=0)
    alpha, beta = 0.0, 1.0
    start_bin, end_bin = 0, observer.bins - 1
    found: list[tuple[int, int]] = []
    while alpha < beta and len(found) < limit:
        next_alpha, next_beta = alpha + 1e-5, beta - 1e-5
        left, right = start_bin, end_bin
        while left < end_bin and c_sum[left] < next_alpha * total:
            left += 1
        while right > start_bin and c_sum[right] > next_beta * total:
            right -= 1
        next_start, next_end = start_bin, end_bin
        if (left - start_bin) > (end_bin - right):
            next_start, alpha = left, next_alpha
        else:
            next_end, beta = right, next_beta
        if (next_start, next_end) != (start_bin, end_bin):
            found.append((next_start, next_end))
            start_bin, end_bin = next_start, next_end
    return found


@st.composite
def sparse_histograms(draw):
    """Few bins hold mass, with small and large counts side by side: bounds then pass several bins in one
    step, or none for many steps."""
    bins = draw(st.sampled_from([16, 64, 256]))
    counts = draw(st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 1e3, 1e5]), min_size=bins, max_size=bins))
    observer = HistogramObserver(bins=bins)
    observer.histogram = torch.tensor(counts)
    observer.min_val, observer.max_val = torch.tensor(-1.0), torch.tensor(3.0)
    return observer


@st.composite
def staircase_histograms(draw):
    """Small integer counts around one heavy bin, with a round total: the quantile bounds (multiples of
    1e-5 of the total) then land a hair above or below whole cumulative counts at nearly every step, where
    only comparing with the bound rounded to float32, as torch does, moves the pointers right."""
    bins = draw(st.sampled_from([64, 256, 2048]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    counts = (torch.rand(bins, generator=g) < draw(st.sampled_from([0.3, 1.0]))).float() * draw(st.integers(1, 3))
    counts[draw(st.integers(0, bins - 1))] += draw(st.sampled_from([10**5, 2 * 10**5, 3 * 10**5, 10**7])) - counts.sum()
    observer = HistogramObserver(bins=bins)
    observer.histogram = counts
    observer.min_val, observer.max_val = torch.tensor(-1.0), torch.tensor(3.0)
    return observer


@settings(max_examples=15, deadline=None)
@given(st.one_of(histogram_states(), sparse_histograms(), staircase_histograms()))
def test_candidate_ranges_follow_torchs_steps(observer):
    """The candidate ranges, with runs of idle steps skipped by bisection, are torch's, in its order."""
    limit = 40
    ours = list(itertools.islice(qparams._candidate_ranges(observer), limit))
    assert ours == _torch_candidates(observer, limit)


@settings(max_examples=150, deadline=None)
@given(st.one_of(histogram_states((1, 2, 7, 64, 256, 2048)), sparse_histograms(), staircase_histograms()))
def test_the_kernels_search_is_the_lockstep_search(observer):
    """The kernel's search settles on the bins the lockstep search (whose candidate steps and scores are
    tested against torch's above) settles on, over many more histograms than torch's own slow search can be
    run on here: sparse ones, whose bounds pass several bins in one step or none for many steps, and
    staircases, whose bounds graze cumulative counts."""
    kernel = qparams.native_kernel()
    if kernel is None:
        pytest.skip("the scoring kernel is not built")
    ranges = qparams._observed_ranges([observer])
    native = qparams._search_natively(kernel, qparams.summing_lanes(kernel), observer, ranges[id(observer)],
                                      observer.histogram)
    assume(native is not None)
    assert [native] == qparams._lockstep_searches([observer], qparams._cumulative_histograms([observer]), ranges)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(histogram_states((7, 64, 2048, 40000)), sparse_histograms()), min_size=1, max_size=6))
def test_cumulative_histograms_of_many_observers_are_torchs(observers):
    """The totals and cumulative counts of alike observers, reduced together, are each observer's own
    torch.sum(histogram).item() and torch.cumsum(histogram, 0), bit for bit (above one grain of bins each
    observer is reduced alone)."""
    got = qparams._cumulative_histograms(observers)
    for observer, (total, cumulative) in zip(observers, got):
        want = torch.cumsum(observer.histogram, dim=0)
        assert float(total).hex() == torch.sum(observer.histogram).item().hex()
        assert [float(x).hex() for x in cumulative] == [float(x).hex() for x in want.tolist()]


@settings(max_examples=60, deadline=None)
@given(histogram_states(), st.data())
def test_searched_range_as_floats_is_torchs_tensor_arithmetic(observer, data):
    """The searched range's ends computed on Python floats rounded to float32 equal torch's float32 tensor
    arithmetic (HistogramObserver's new_min / new_max), huge and degenerate ranges included."""
    start = data.draw(st.integers(0, observer.bins - 1))
    end = data.draw(st.integers(start, observer.bins - 1))
    low, high = qparams._searched_range_floats(observer, start, end)
    want_low, want_high = qparams._searched_range(observer, start, end)
    assert (float(low).hex(), float(high).hex()) == (want_low.item().hex(), want_high.item().hex())


def test_searched_range_as_floats_on_ordinary_ranges():
    """The same on ordinary calibrated ranges, where every rounding step shows (skipping the rounding of
    the bin offset before adding the minimum gives other floats for most of these)."""
    g = torch.Generator().manual_seed(0)
    observer = HistogramObserver()
    for _ in range(200):
        low = float(torch.rand((), generator=g)) * -10
        observer.min_val = torch.tensor(low)
        observer.max_val = torch.tensor(low + 0.1 + float(torch.rand((), generator=g)) * 20)
        start = int(torch.randint(0, observer.bins, (), generator=g))
        end = int(torch.randint(start, observer.bins, (), generator=g))
        low_end, high_end = qparams._searched_range_floats(observer, start, end)
        want_low, want_high = qparams._searched_range(observer, start, end)
        assert (low_end, high_end) == (want_low.item(), want_high.item())


def test_many_rows_are_scored_in_chunks_exactly():
    """More ranges than one chunk holds (several chunks per bin count) are each scored as torch scores them."""
    observers = []
    for seed, kwargs in enumerate(HISTOGRAM_DTYPES[:3]):
        observer = HistogramObserver(**kwargs)
        observer(_data(seed % 3, 10.0, seed))
        observers.append(observer)
    requests = [(o, [(s, o.bins - 1 - e) for s in range(0, 40, 3) for e in range(0, 30, 7)]) for o in observers]
    assert sum(len(r) for _, r in requests) > 2 * (qparams._CHUNK_ELEMENTS // 2048)
    _assert_scored_as_torch(requests)


@st.composite
def floor_division_cases(draw):
    """float32 numerators and per-row widths whose quotients stay below 2**21, as the histogram scoring
    hands them to `_floor_quotients`: exact multiples of the width and their float32 neighbours (where a
    rounded quotient lands on an integer the exact one does not reach), signed zeros, random values."""
    rows, columns = draw(st.integers(1, 4)), draw(st.integers(1, 64))
    exponent = draw(st.integers(-120, 100))
    widths = torch.tensor([draw(st.floats(1.0, 2.0)) * 2.0**exponent for _ in range(rows)], dtype=torch.float32)
    k = torch.randint(-2**21 + 2, 2**21 - 2, (rows, columns), generator=torch.Generator().manual_seed(
        draw(st.integers(0, 2**16))))
    k = torch.where(torch.rand(rows, columns) < 0.5, k % 300 - 20, k)  # mostly near the clamp range
    multiples = (k.to(torch.float32) * widths[:, None])
    nudge = draw(st.sampled_from(["none", "up", "down", "random"]))
    if nudge == "up":
        x = torch.nextafter(multiples, torch.full_like(multiples, float("inf")))
    elif nudge == "down":
        x = torch.nextafter(multiples, torch.full_like(multiples, float("-inf")))
    elif nudge == "random":
        x = multiples + torch.rand(rows, columns) * widths[:, None]
    else:
        x = multiples
    x[0, 0] = draw(st.sampled_from([0.0, -0.0, float(x[0, 0])]))
    return x.to(torch.float32), widths[:, None], draw(st.sampled_from([0, 1, 255, 65535, 2**32 - 1]))


@settings(max_examples=300, deadline=None)
@given(floor_division_cases())
def test_floor_quotients_equal_torchs_floor_division(case):
    x, width, top = case
    assume(bool((x.abs() / width < 2.0**21).all()))
    want = torch.div(x, width, rounding_mode="floor").clamp_(0, top)
    got = torch.empty_like(x)
    qparams._floor_quotients(x, width.double().reciprocal(), top, torch.empty_like(x, dtype=torch.float64), got)
    assert torch.equal(got, want)  # (equal as numbers: only a zero's sign may differ, which scoring never sees)


def test_huge_bin_quotients_take_torchs_floor_division(monkeypatch):
    """qint32's 2**32 destination bins put begin / width far above 2**21, where torch's float32 floor
    division and the exact floor part ways: those rows are scored with torch's; 8-bit rows are not (by the
    kernel or, without it, by `_floor_quotients`)."""
    used = []
    real = qparams._floor_quotients
    monkeypatch.setattr(qparams, "_floor_quotients", lambda x, *args: (used.append(x.shape), real(x, *args))[1])
    kernel = qparams.native_kernel()
    if kernel is not None:
        spy = types.SimpleNamespace(score_rows=lambda *args: (used.append(args[4]), kernel.score_rows(*args))[1])
        monkeypatch.setattr(qparams, "native_kernel", lambda: spy)
    for path in PATHS:
        with taking(qparams, path):
            for dtype, expect_fast in ((torch.qint32, False), (torch.quint8, True)):
                observer = HistogramObserver(dtype=dtype)
                observer.histogram = torch.rand(observer.bins, generator=torch.Generator().manual_seed(0)) * 100
                observer.min_val, observer.max_val = torch.tensor(-3.7), torch.tensor(11.3)
                ranges = [(0, 2047), (5, 2000), (100, 1900), (311, 1277)]
                want = [observer._compute_quantization_error(start, end) for start, end in ranges]
                used.clear()
                got, = quantization_errors([(observer, ranges)])
                assert [float(x).hex() for x in got] == [float(x).hex() for x in want]
                assert bool(used) == expect_fast

