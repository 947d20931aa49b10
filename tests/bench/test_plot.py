"""bench/plot.py: the log-log plot of a bench run and the fitted scaling exponents; `make bench` draws it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.plot import exponent_lines, scaling_exponent, series

REPO = Path(__file__).resolve().parents[2]


def rows(exponent_qfx: float, exponent_torch: float) -> list[dict]:
    """Bench rows of one family whose times grow as nodes^k exactly."""
    return [{"family": "mlp", "mapping": "minmax", "nodes": n,
             "convert": {"reference": {"status": "ok", "qfx": 1e-5 * n**exponent_qfx, "torch": 1e-5 * n**exponent_torch},
                         "lowered": {"status": "error", "qfx": None, "torch": None}}}
            for n in (100, 300, 1000, 3000)]


def test_the_fitted_exponent_recovers_the_power_law() -> None:
    found = series(rows(1.0, 1.3))
    assert set(found) == {("reference", "mlp", "minmax", "qfx"), ("reference", "mlp", "minmax", "torch")}
    assert scaling_exponent(found[("reference", "mlp", "minmax", "qfx")]) == pytest.approx(1.0)
    assert scaling_exponent([(10, 1.0)]) is None
    assert exponent_lines(rows(1.0, 1.3)) == [
        "scaling exponent (time ~ nodes^k), mlp minmax reference: qfx 1.00, torch 1.30"]


def test_the_plot_command_draws_a_png(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rows": rows(1.1, 1.4)}))
    done = subprocess.run([sys.executable, "-m", "bench.plot", str(results)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mlp minmax reference: qfx 1.10, torch 1.40" in done.stdout
    from PIL import Image

    with Image.open(tmp_path / "convert_time.png") as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_a_bench_run_writes_json_and_the_plot(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--families", "mlp", "--mappings", "minmax",
                           "--sizes", "2,6", "--arch", "none", "--repeat", "1", "--no-cache", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "scaling exponent (time ~ nodes^k), mlp minmax reference: qfx" in done.stdout, done.stderr
    assert f"convert time plot written to {tmp_path / 'convert_time.png'}" in " ".join(done.stdout.split())
    assert json.loads(out.read_text())["rows"]
    from PIL import Image

    with Image.open(tmp_path / "convert_time.png") as image:
        assert image.format == "PNG"
