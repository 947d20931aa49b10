"""Loading MODULE:FUNCTION entry points: from a .py path or an importable module, and each way it can fail."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from qfx.entrypoint import EntryPointError, load_entry_point, looks_like_entry_point

from .clirun import qfx, text

USER_MODEL = Path(__file__).with_name("usermodel.py")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(USER_MODEL, tmp_path / "usermodel_ep.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("usermodel_ep", None)


def test_a_py_path_with_calibration_batches(workdir: Path) -> None:
    entry = load_entry_point(str(workdir / "usermodel_ep.py") + ":build")
    assert isinstance(entry.model, torch.nn.Module)
    assert len(entry.example_inputs) == 1 and len(entry.calibration_batches) == 3


def test_an_importable_module_without_batches_calibrates_on_the_example_inputs(workdir: Path) -> None:
    entry = load_entry_point("usermodel_ep:build_two")
    assert isinstance(entry.example_inputs, tuple) and len(entry.example_inputs) == 1  # one tensor -> a tuple
    assert entry.calibration_batches == (entry.example_inputs,)


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:build", "no module named 'no_such_module_xyz'"),
    ("missing_dir/model.py:build", "no such file 'missing_dir/model.py'"),
    ("usermodel_ep:nope", "has no function 'nope'"),
    ("usermodel_ep:bad_shape", "returned a Net model alone; it must return (model, example_inputs)"),
    ("usermodel_ep:not_a_model", "the model must be a torch.nn.Module, not str"),
    ("justaword", "expected MODULE:FUNCTION"),
])
def test_bad_entry_points_name_what_is_wrong(workdir: Path, spec: str, message: str) -> None:
    with pytest.raises(EntryPointError) as info:
        load_entry_point(spec)
    assert message in str(info.value)


def test_entry_point_or_file(tmp_path: Path) -> None:
    assert looks_like_entry_point("pkg.models:build") and looks_like_entry_point("models/net.py:build")
    assert not looks_like_entry_point("observed.pt")


def test_the_command_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    shutil.copy(USER_MODEL, tmp_path / "usermodel.py")
    result = qfx("convert", "usermodel:bad_shape", cwd=tmp_path)
    out, err = text(result)
    assert result.returncode == 2
    assert err.startswith("qfx: error: entry point 'usermodel:bad_shape' returned") and err.count("\n") == 1
    assert "Traceback" not in err



def test_debug_raises_the_error_itself(workdir: Path) -> None:
    from qfx import cli

    with pytest.raises(EntryPointError, match="returned a Net"):
        cli.main(["--debug", "convert", "usermodel_ep:bad_shape"])


def test_a_package_module_given_by_path_points_to_its_dotted_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("import torch\nWIDTH = 4\n")
    (package / "models.py").write_text(
        "import torch\nfrom .layers import WIDTH\n"
        "def build():\n    return torch.nn.Linear(WIDTH, WIDTH).eval(), (torch.randn(2, WIDTH),)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EntryPointError, match=r"relative import.*give it as a module, e\.g\. 'mypkg\.models:build'"):
        load_entry_point("mypkg/models.py:build")
    assert load_entry_point("mypkg.models:build").model.in_features == 4
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]
