"""`qfx show`: the IR as text, DOT, SVG and PNG (subprocess), node kinds and float islands, and the message
when Graphviz's dot program is missing."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from qfx import cli
from qfx.api import convert_options
from qfx.demo_model import observed_demo_model
from qfx.graphview import INSTALL_HINT, float_islands, node_kinds, to_dot
from qfx.ir.lift import lift
from qfx.passes.pipelines import reference_pipeline

from .clirun import qfx, text

USER_MODEL = Path(__file__).with_name("usermodel.py")
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot program is not installed")


@pytest.fixture(scope="module")
def saved_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("show") / "observed.pt"
    cli.save_observed(observed_demo_model(), path)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(USER_MODEL, tmp_path / "usermodel.py")
    return tmp_path


def test_kinds_and_float_islands_of_the_converted_demo() -> None:
    program = lift(observed_demo_model(), options=convert_options(is_reference=True, convert_custom_config=None))
    kinds = node_kinds(reference_pipeline().run(program))
    assert {"quantize", "dequantize", "quantized", "float"} <= set(kinds.values())
    assert kinds["classifier"] == "float"  # its qconfig is None
    assert kinds["stem"] == "quantized"
    islands = float_islands(reference_pipeline().run(program))
    assert any("classifier" in island for island in islands)
    observed_kinds = node_kinds(program)
    assert "observer" in observed_kinds.values() and "observed" in observed_kinds.values()


def test_dot_has_a_legend_clusters_and_a_colour_per_kind() -> None:
    program = lift(observed_demo_model(), options=convert_options(is_reference=True, convert_custom_config=None))
    source = to_dot(reference_pipeline().run(program)).source
    assert "cluster_legend" in source and "float island" in source
    assert "#ed6a5a" in source and "#f4a259" in source and "#5bc0be" in source


def test_text_after_a_pass_lists_the_float_islands(saved_demo: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["show", str(saved_demo), "--mode", "reference", "--after", "insert-qdq"])
    assert status == 0, err.getvalue()
    assert "graph {" in out.getvalue() and "quantize_per_tensor" in out.getvalue()
    assert "float islands:" in out.getvalue() and "classifier" in out.getvalue()


def test_dot_goes_to_stdout_and_the_summary_to_stderr(workdir: Path) -> None:
    result = qfx("show", "usermodel.py:build", "--format", "dot", cwd=workdir)
    out, err = text(result)
    assert result.returncode == 0, err
    assert out.startswith("digraph qfx {") and "cluster_head" in out  # nodes of self.head cluster together
    assert "float islands:" in err


@needs_dot
def test_svg_and_png_of_the_final_result(workdir: Path) -> None:
    result = qfx("show", "usermodel.py:build", "--after", "final", "--format", "svg", "-o", "model.svg", cwd=workdir)
    out, err = text(result)
    assert result.returncode == 0, err
    assert "wrote model.svg" in out and "island 1 (1 node): softmax" in out
    root = ElementTree.parse(workdir / "model.svg").getroot()
    assert root.tag.endswith("svg")
    labels = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "softmax" in labels and "legend" in labels
    result = qfx("show", "usermodel.py:build", "--after", "final", "--format", "png", "-o", "model.png", cwd=workdir)
    assert result.returncode == 0, text(result)[1]
    from PIL import Image

    with Image.open(workdir / "model.png") as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_the_output_files_extension_chooses_the_format(saved_demo: Path, tmp_path: Path) -> None:
    """Without --format, `-o x.dot` writes DOT (and .svg/.png pictures), any other name text, never text
    under a picture's name."""
    for name, starts in (("x.dot", "digraph qfx {"), ("x.gv", "digraph qfx {"), ("x.txt", "# ")):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["show", str(saved_demo), "-o", str(tmp_path / name)])
        assert status == 0, err.getvalue()
        assert (tmp_path / name).read_text().startswith(starts), name


def test_without_dot_svg_says_how_to_install_it(saved_demo: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # PATH with python but without dot
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    result = qfx("show", str(saved_demo), "--format", "svg", "-o", str(tmp_path / "x.svg"), path=str(bin_dir))
    out, err = text(result)
    assert result.returncode == 2
    assert err.strip() == f"qfx: error: {INSTALL_HINT}" and "apt-get install graphviz" in err
    assert not (tmp_path / "x.svg").exists()


def test_ops_left_between_dequantize_and_quantize_in_a_lowered_model_count_as_float() -> None:
    """Lowering rewrites every reference pattern it can; matmul, softmax and GELU, which have no quantized
    kernel, stay dequantize -> op -> quantize and run in float: the report says so. In the reference model
    they are float too: the second matmul reads the raw input `x`, so no chain of them runs from dequantizes
    to a quantize (while `dequantize(k).transpose()`, quantized right after, does)."""
    import warnings

    import torch
    from torch import nn
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    import qfx
    from qfx.cli.report import count_ops

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.out, self.act = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.GELU()

        def forward(self, x):
            a = torch.softmax(self.q(x) @ self.k(x).transpose(-2, -1), dim=-1)
            return self.out(self.act(a @ x))

    torch.manual_seed(0)
    x = (torch.randn(2, 5, 8),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = prepare_fx(Attention().eval(), get_default_qconfig_mapping("x86"), x)
        observed(*x)
        lowered, reference = qfx.convert_fx(observed), qfx.convert_to_reference_fx(observed)
    assert set(count_ops(lowered, observed).float_nodes) == {"matmul", "softmax", "matmul_1", "act"}
    assert set(count_ops(reference, observed).float_nodes) == {"matmul", "softmax", "matmul_1", "act"}
    assert count_ops(reference, observed).quantized == count_ops(lowered, observed).quantized == 4
