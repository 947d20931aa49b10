"""bench/run.py in-process on tiny models, so the bench code cannot rot: every mode (lowered included), the
architecture rows with their tensor floor, the latency table, the targets, and bench/floor.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from bench import run as bench_run
from bench.arch_models import ARCHITECTURES
from bench.floor import floor_seconds, floor_work
from bench.kinds import KINDS
from bench.models import observed_model
from qfx.cli import MODES
from qfx.compare import fingerprint, same_fingerprint


class TinyArch(nn.Module):
    """A stand-in architecture: conv-bn-relu, depthwise conv, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.fixture
def tiny_arch(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(ARCHITECTURES, "tiny", (TinyArch, (1, 3, 8, 8)))
    return "tiny"


def test_the_quick_plan_has_a_lowered_row_and_an_architecture_row() -> None:
    args = bench_run.parse_args(["--quick"])
    assert "lowered" in MODES and bench_run.plan(args) and bench_run.arch_plan(args)
    assert bench_run.arch_plan(bench_run.parse_args(["--arch", "none"])) == []
    assert bench_run.kind_plan(args) == [] and bench_run.kind_plan(bench_run.parse_args([])) == list(KINDS)
    assert bench_run.kind_plan(bench_run.parse_args(["--kinds", "decoder"])) == ["decoder"]
    huge = bench_run.plan(bench_run.parse_args(["--families", "mlp", "--mappings", "minmax", "--huge"]))
    assert max(b for _, b, _ in huge) * 2 + 3 >= 25_000


def test_a_run_in_process_measures_every_table(tiny_arch: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results.json"
    threads = torch.get_num_threads()
    status = bench_run.main(["--families", "mlp", "--mappings", "minmax", "--sizes", "2,4", "--arch", tiny_arch,
                             "--kinds", "recurrent", "--repeat", "2", "--no-cache", "--json", str(out)])
    printed = " ".join(capsys.readouterr().out.split())
    assert status == 0, printed
    assert torch.get_num_threads() == threads  # the bench's one thread is restored
    payload = json.loads(out.read_text())
    assert [r["blocks"] for r in payload["rows"]] == [2, 4]
    for row in payload["rows"] + payload["architectures"]:
        for mode in MODES:
            cell = row["convert"][mode]
            assert cell["status"] == "ok" and cell["equal"] and cell["input_unchanged"], (mode, cell)
            assert len(cell["qfx_runs"]) == len(cell["torch_runs"]) == 2
        assert row["latency"]["median"]["qfx"] > 0 and row["latency"]["median"]["float"] > 0
    (arch,) = payload["architectures"]
    assert arch["family"] == "tiny"
    for mode in bench_run.FLOOR_MODES:
        assert arch["convert"][mode]["floor_weights"] == 3
        assert arch["convert"][mode]["floor"] > 0 and arch["convert"][mode]["over_floor"] > 0
    assert "floor" not in arch["convert"]["decomposed"]
    (kind,) = payload["kinds"]
    assert kind["family"] == "recurrent" and list(kind["convert"]) == list(bench_run.KIND_MODES)
    for cell in kind["convert"].values():
        assert cell["status"] == "ok" and cell["equal"] and cell["input_unchanged"], cell
    for text in ("Real architectures", "Inference latency", "low qfx", "target: faster than torch on every lowered row",
                 "target: >= 3x faster than torch on every real-architecture row",
                 "target: within 2x of the tensor floor", "qfx µs/node as mlp minmax lowered grows",
                 "Other kinds of models"):
        assert text in printed
    assert (tmp_path / "convert_time.png").is_file()


def _row(family: str, nodes: int, mapping: str, ratio: float, over_floor: float | None = None) -> dict:
    cell = {"status": "ok", "qfx": 1e-6 * nodes, "torch": ratio * 1e-6 * nodes, "ratio": ratio, "over_floor": over_floor}
    return {"family": family, "nodes": nodes, "mapping": mapping, "blocks": 1, "convert": {m: cell for m in MODES}}


def test_targets_say_no_when_missed() -> None:
    rows = [_row("mlp", 1003, "minmax", 4.0), _row("mlp", 5003, "minmax", 6.0)]
    lines = bench_run.target_lines(rows, [_row("resnet50", 189, "x86", 2.5, over_floor=3.0)])
    joined = "\n".join(lines)
    assert "target: >= 5x in reference mode on minmax graphs of 1,000+ nodes: NO on 1 of 2" in joined
    assert "target: >= 3x in lowered mode on all graphs of 1,000+ nodes: yes" in joined
    assert "real-architecture row: NO on 2 of 2" in joined
    assert "within 2x of the tensor floor on every real-architecture row: NO on 2 of 2" in joined
    assert "flat up to 5,003 nodes" in joined


def test_the_floor_finds_each_observed_weight_and_leaves_the_model_alone(tiny_arch: str) -> None:
    observed = observed_model(tiny_arch, 0, "x86", None)
    before = fingerprint(observed.model)
    work = floor_work(observed.model)
    assert [w.axis for w in work.weights] == [0, 0, 0]  # x86: per-channel weights, channel axis 0
    assert [w.weight.shape[0] for w in work.weights] == [8, 8, 4]
    code = observed.model.code
    assert floor_seconds(work, code, lowered=False) > 0
    assert floor_seconds(work, code, lowered=True) > 0
    assert same_fingerprint(before, fingerprint(observed.model))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_latency_orders_balance_positions_and_neighbours(n: int) -> None:
    """Every model stands in every position equally often and follows every other model equally often."""
    orders = bench_run.carryover_balanced_orders(n)
    assert all(sorted(order) == list(range(n)) for order in orders)
    for position in range(n):
        assert Counter(order[position] for order in orders) == Counter({i: len(orders) // n for i in range(n)})
    pairs = Counter((a, b) for order in orders for a, b in zip(order, order[1:]))
    assert set(pairs.values()) == {len(orders) // n} and len(pairs) == n * (n - 1)


def test_latency_times_two_models_per_side_and_counts_the_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model built first in a row runs slower whoever built it: each side is timed on two models built in
    turn, in balanced orders, and counts its faster one."""
    calls: list[str] = []
    slow = {"qfx#1": 2.0}

    def recorder(name: str):
        return lambda *inputs: calls.append(name)

    def timed(fn, *inputs):  # the first-built qfx model takes 2 s a forward, every other 1 s
        fn(*inputs)
        return slow.get(calls[-1], 1.0), None

    monkeypatch.setattr(bench_run, "float_model", lambda family, blocks: recorder("float"))
    monkeypatch.setattr(bench_run, "timed", timed)
    observed = type("Observed", (), {"family": "mlp", "blocks": 1, "example_inputs": ()})()
    built = {"qfx": [recorder("qfx#1"), recorder("qfx#2")], "torch": [recorder("torch#1"), recorder("torch#2")]}
    found = bench_run.measure_latency(observed, built, 10)
    assert calls[:5] == ["qfx#1", "qfx#2", "torch#1", "torch#2", "float"]  # the untimed calls
    timed_calls = calls[5:]
    assert Counter(timed_calls) == Counter({name: 10 for name in ("qfx#1", "qfx#2", "torch#1", "torch#2", "float")})
    assert len({tuple(timed_calls[i:i + 5]) for i in range(0, 50, 5)}) == 10  # ten different orders
    assert found["per_model"]["qfx#1"] == 2.0 and found["median"]["qfx"] == 1.0
    assert found["qfx_over_torch"] == 1.0
