"""The README, followed as a new user would (subprocess): its model file and the commands that convert and
show it, the API example and the pass-composition example run as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch

from .clirun import qfx, text

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def block_after(marker: str, lang: str = "python") -> str:
    """The first fenced block of `lang` ("" for a plain block) after the line containing `marker`."""
    found = re.search(rf"```{lang}\n(.*?)```", README[README.index(marker):], re.S)
    assert found is not None, marker
    return found.group(1)


def command(line: str) -> list[str]:
    """A README command line (`.venv/bin/qfx ...`) as argv for `qfx` (run through python -m qfx.cli)."""
    argv = shlex.split(line.strip())
    assert argv[0].endswith("qfx"), line
    return argv[1:]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("readme")
    (directory / "mymodels.py").write_text(block_after("Convert your own model"))
    return directory


def test_convert_your_own_model(user_dir: Path) -> None:
    line = ".venv/bin/qfx convert" + README.split("```\n.venv/bin/qfx convert")[1].split("\n")[0]
    result = qfx(*command(line), cwd=user_dir)
    out, err = text(result)
    assert "equal to torch's convert_fx: " in out, err
    assert "run quantized" in out and "SQNR" in out and "latency" in out
    model = torch.load(user_dir / "quantized.pt", weights_only=False)
    with torch.no_grad():
        assert model(torch.randn(4, 3, 8, 8)).shape == (4, 10)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_show_your_model(user_dir: Path) -> None:
    line = ".venv/bin/qfx show" + README.split("```\n.venv/bin/qfx show")[1].split("\n")[0]
    result = qfx(*command(line), cwd=user_dir)
    assert result.returncode == 0, text(result)[1]
    assert ElementTree.parse(user_dir / "model.svg").getroot().tag.endswith("svg")


def test_the_checked_in_picture_is_an_svg() -> None:
    root = ElementTree.parse(REPO / "docs" / "show.svg").getroot()
    assert root.tag.endswith("svg")
    assert "classifier" in " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))


@pytest.mark.parametrize("marker, expected", [
    ("## API", "nodes in the reference model"),
    ("## Composing passes", "quantize ops"),
])
def test_the_api_examples_run(tmp_path: Path, marker: str, expected: str) -> None:
    (tmp_path / "example.py").write_text(block_after(marker))
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    if marker == "## Composing passes":
        assert done.stdout.strip().endswith("True")
        assert (tmp_path / "ir-dump" / "02-count-quantize.ir").is_file()
