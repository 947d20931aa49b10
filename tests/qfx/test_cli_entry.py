"""`qfx convert MODULE:FUNCTION` as a user runs it (subprocess): the report, --check-against-torch, --save,
--dump-ir, and the one-line errors; `qfx --help` and each subcommand's help show an example."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.ao.quantization.quantize_fx import convert_fx, convert_to_reference_fx

from qfx import cli
from qfx.cli.prepare import calibrate, prepare_entry_point
from qfx.compare import same_value
from qfx.entrypoint import load_entry_point

from .clirun import qfx, text

USER_MODEL = Path(__file__).with_name("usermodel.py")


@pytest.fixture(autouse=True)
def keep_engine() -> None:
    """qfx convert --backend sets torch's quantized engine (a process-wide setting): restore it after."""
    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(USER_MODEL, tmp_path / "usermodel.py")
    return tmp_path


def torch_result(workdir: Path, spec: str, convert: object) -> tuple[torch.nn.Module, tuple]:
    """torch's convert of the entry point's model, prepared and calibrated as qfx convert does."""
    entry = load_entry_point(str(workdir / spec))
    with contextlib.redirect_stdout(io.StringIO()):
        observed = prepare_entry_point(entry, "x86", qat=False)
        from rich.console import Console
        calibrate(observed, entry.calibration_batches, Console(file=io.StringIO()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(observed), entry.example_inputs


def outputs(model: torch.nn.Module, inputs: tuple) -> object:
    with torch.no_grad():
        return model(*inputs)


def test_convert_reports_checks_and_saves_a_loadable_module(workdir: Path) -> None:
    result = qfx("convert", "usermodel.py:build", "--mode", "reference", "--check-against-torch",
                 "--save", "quantized.pt", cwd=workdir)
    out, err = text(result)
    assert result.returncode == 0, err
    assert "traced and prepared with prepare_fx (x86 backend" in out and "calibrating" in out
    for name in ("swap-modules", "insert-qdq", "total"):
        assert name in out  # the per-pass table
    assert "run quantized, 1 in float in 1 island (softmax)" in out
    assert "output error against the float model on 3 calibration batches: max abs" in out and "dB" in out
    assert "latency" in out and "float" in out and "quantized" in out
    assert "equal to torch's convert_to_reference_fx: yes (same code, same state_dict, identical outputs)" in out
    saved = torch.load(workdir / "quantized.pt", weights_only=False)
    expected, inputs = torch_result(workdir, "usermodel.py:build", convert_to_reference_fx)
    assert saved.code == expected.code
    assert same_value(outputs(saved, inputs), outputs(expected, inputs))


def test_convert_lowered_by_default_with_a_custom_pipeline_and_ir_dumps(workdir: Path) -> None:
    result = qfx("convert", "usermodel:build", "--backend", "fbgemm", "--check-against-torch", "--dump-ir", "ir",
                 "--save", "lowered.pt", cwd=workdir)
    out, err = text(result)
    assert "lowered convert: qfx.convert_fx" in out
    line = next(l for l in out.splitlines() if l.startswith("equal to torch's convert_fx: "))
    saved = torch.load(workdir / "lowered.pt", weights_only=False)
    torch.backends.quantized.engine = "fbgemm"
    expected, inputs = torch_result(workdir, "usermodel.py:build", convert_fx)
    same = saved.code == expected.code and same_value(outputs(saved, inputs), outputs(expected, inputs))
    assert line.startswith("equal to torch's convert_fx: yes") == same  # the line tells the truth
    assert result.returncode == (0 if line.endswith("identical outputs)") else 1), err
    assert (workdir / "ir" / "00-input.ir").is_file() and len(list((workdir / "ir").glob("*.ir"))) > 10

    prefix = qfx("convert", "usermodel.py:build", "--pipeline", "apply-qconfig-mapping,observe-weights,dce",
                 "--print-ir-after-all", cwd=workdir)
    out, err = text(prefix)
    assert prefix.returncode == 0, err
    assert "pipeline 'apply-qconfig-mapping,observe-weights,dce' (lowered options)" in out
    assert "IR after observe-weights" in err


def test_convert_checks_a_model_torch_cannot_save_against_torch(workdir: Path) -> None:
    """Under qnnpack a lowered 3-D conv's packed weight cannot be unpacked: torch's model and qfx's both
    fail state_dict() and deepcopy. The check says the state_dicts fail alike and still compares the
    outputs (of the models themselves, which nothing in them can change)."""
    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build_video"), "--backend", "qnnpack",
                                      "--check-against-torch")
    assert status == 0, err
    assert ("equal to torch's convert_fx: yes (same code, state_dict() failing alike: RuntimeError: QNNPACK only "
            "supports conv2d_unpack right now., identical outputs)") in out


def test_convert_reports_a_converted_model_that_fails_where_the_float_one_ran(workdir: Path) -> None:
    """The lowered model's quantized pool returns channels-last strides that its `.view` refuses: qfx says the
    converted model fails on batches the observed model ran on (not that the inputs do not fit), skips the
    measurements, and the check against torch says torch's model fails alike."""
    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build_flattening"),
                                      "--check-against-torch")
    assert status == 1
    assert ("output error and latency not measured: the converted model fails on the calibration batches the "
            "observed model ran on (RuntimeError: view size is not compatible") in out
    assert "equal to torch's convert_fx: yes (same code, same state_dict, failing alike on the example inputs: " \
           "RuntimeError: view size is not compatible" in out
    assert "latency" not in out.replace("output error and latency", "") and "def forward" not in err + out

    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build_flattening"), "--mode", "reference")
    assert status == 0, err
    assert "SQNR" in out and "latency (median forward" in out


def forget_usermodel() -> None:
    """Drop the modules in-process runs imported usermodel.py as (its stem, or a private name when taken)."""
    for name in ("usermodel", "qfx_entry_usermodel"):
        sys.modules.pop(name, None)


def run_in_process(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_a_saved_model_with_classes_of_the_users_file_loads_where_that_file_imports(workdir: Path) -> None:
    """A model file is imported under its stem, so the classes its nodes' meta names (the residual block's)
    pickle as `usermodel.Residual`: the saved model loads from the file's folder, in another process."""
    result = qfx("convert", "usermodel.py:build_residual", "--mode", "reference", "--save", "q.pt", cwd=workdir)
    assert result.returncode == 0, text(result)[1]
    load = ("import torch; m = torch.load('q.pt', weights_only=False); print(sorted({t.__module__ "
            "for n in m.graph.nodes for _, t in n.meta.get('nn_module_stack', {}).values()}))")
    loaded = subprocess.run([sys.executable, "-c", load], cwd=workdir, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert "usermodel" in loaded.stdout and "qfx_entry" not in loaded.stdout


def test_a_saved_model_whose_modules_are_torchs_loads_where_the_users_file_does_not_import(workdir: Path) -> None:
    """The residual block's class is named only by node meta: elsewhere it loads as a stand-in of that name,
    and the model runs as before."""
    result = qfx("convert", "usermodel.py:build_residual", "--save", "q.pt", cwd=workdir)
    assert result.returncode == 0, text(result)[1]
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    load = ("import torch, warnings; warnings.simplefilter('ignore'); torch.manual_seed(0); "
            "x = torch.randn(2, 3, 8, 8); m = torch.load('{path}', weights_only=False); "
            "t = [t for n in m.graph.nodes for _, t in n.meta.get('nn_module_stack', {{}}).values()]; "
            "print(sorted({{(c.__module__, c.__qualname__, c.__mro__[1].__name__) for c in t}})); "
            "print(m(x).dequantize().sum().item() if m(x).is_quantized else m(x).sum().item())")
    here = subprocess.run([sys.executable, "-c", load.format(path="q.pt")], cwd=workdir, capture_output=True,
                          text=True)
    there = subprocess.run([sys.executable, "-c", load.format(path="../q.pt")], cwd=elsewhere, capture_output=True,
                           text=True)
    assert here.returncode == 0 and there.returncode == 0, here.stderr + there.stderr
    assert "('usermodel', 'Residual', 'Module')" in here.stdout
    assert "('usermodel', 'Residual', 'MissingClass')" in there.stdout
    assert here.stdout.splitlines()[1] == there.stdout.splitlines()[1]


def test_a_saved_observed_model_of_a_scripts_classes_loads_unless_it_holds_one(tmp_path: Path) -> None:
    """Classes defined in the script that saved the model (its `__main__`) import nowhere else: where only
    node meta and prepare's module scopes name them (the block's forward was traced through), the model
    loads with stand-ins and converts; where it holds an instance (a block left untraced), the error says
    why it cannot load."""
    script = tmp_path / "save_it.py"
    script.write_text(
        "import torch\nfrom torch import nn\nfrom torch.ao.quantization import get_default_qconfig_mapping\n"
        "from torch.ao.quantization.fx.custom_config import PrepareCustomConfig\n"
        "from torch.ao.quantization.quantize_fx import prepare_fx\nfrom qfx.cli import save_observed\n"
        "class Block(nn.Module):\n    def __init__(self):\n        super().__init__(); self.fc = nn.Linear(4, 4)\n"
        "    def forward(self, x):\n        return torch.relu(self.fc(x))\n"
        "x = (torch.randn(3, 4),)\n"
        "held = PrepareCustomConfig().set_non_traceable_module_names(['0'])\n"
        "for name, config in (('traced', None), ('held', held)):\n"
        "    observed = prepare_fx(nn.Sequential(Block(), nn.Linear(4, 2)).eval(), get_default_qconfig_mapping('x86'), "
        "x, prepare_custom_config=config)\n"
        "    observed(*x)\n    save_observed(observed, name + '.pt', x)\n")
    saved = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert saved.returncode == 0, saved.stderr
    result = qfx("convert", "traced.pt", "--mode", "reference", "--check-against-torch", cwd=tmp_path)
    out, err = text(result)
    assert result.returncode == 0, err
    assert "equal to torch's convert_to_reference_fx: yes" in out
    result = qfx("convert", "held.pt", cwd=tmp_path)
    out, err = text(result)
    assert result.returncode == 2
    assert "uses a class defined in the script that saved it" in err and "'Block'" in err, err


@pytest.mark.parametrize("argv, message", [
    (("convert", "usermodel.py:build", "--pipeline", "dce,,cleanup"), "malformed pipeline spec 'dce,,cleanup'"),
    (("convert", "usermodel.py:build", "--pipeline", "dce,no-such-pass"), "unknown pass 'no-such-pass'"),
    (("convert", "usermodel.py:nope"), "has no function 'nope'"),
    (("convert", "usermodel.py:bad_shape"), "it must return (model, example_inputs)"),
    (("convert", "nomodule_q:build"), "no module named 'nomodule_q'"),
    (("convert", "notamodel.pt"), "cannot load 'notamodel.pt'"),
    (("convert", "usermodel.py"), "'usermodel.py' names a Python file, not a saved model: add the function that "
                                  "builds the model, as 'usermodel.py:build'"),
    (("show", "usermodel.py:"), "'usermodel.py:' names a Python file, not a saved model"),
    (("show", "usermodel.py:build", "--after", "no-such-pass"), "--after 'no-such-pass': not a pass"),
    (("show", "usermodel.py:build", "--after", "dce#4"), "the lowered pipeline runs dce 3 times; use dce#1 or "
                                                         "dce#2 or dce#3"),
    (("convert", "usermodel.py:build:x"), "expected MODULE:FUNCTION with one ':' between them, e.g. "
                                          "'usermodel.py:build'"),
    (("convert", "usermodel.py:build_exiting"), "'build_exiting' called sys.exit(3); it must return the model"),
    (("convert", "usermodel.py:torch"), "'torch' is a module, not a function"),
    (("convert", "usermodel.py:Net"), "returned a Net model alone; it must return (model, example_inputs)"),
    (("convert", "usermodel.py:build", "--save", "no/such/folder/q.pt"),
     "cannot write the converted model to 'no/such/folder/q.pt': the folder 'no/such/folder' does not exist"),
    (("show", "usermodel.py:build", "-o", "no/such/folder/q.svg"), "cannot write the SVG picture"),
    (("convert", "usermodel.py:build", "--pipeline", "apply-qconfig-mapping,dce", "--check-against-torch"),
     "--pipeline 'apply-qconfig-mapping,dce' is not the whole lowered pipeline"),
    (("convert", ":build"), "':build' names no module before the ':'"),
    *([(("convert", "usermodel.py:build", "--save", "/proc/q.pt"),
        "cannot write the converted model to '/proc/q.pt': no file can be created there")]
      if Path("/proc/self").is_dir() and os.geteuid() == 0 else []),
])
def test_bad_input_is_one_line_with_exit_2(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                          argv: tuple[str, ...], message: str) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "notamodel.pt").write_text("not a model\n")
    status, out, err = run_in_process(*argv)
    forget_usermodel()
    assert status == 2
    assert err.startswith("qfx: error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "calibrating" not in out + err  # (each is found before any work)


@pytest.mark.parametrize("argv", [(), ("convert",), ("show",), ("demo",), ("passes",)])
def test_help_shows_an_example(argv: tuple[str, ...]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        cli.main([*argv, "--help"])
    assert info.value.code == 0
    assert "example" in out.getvalue() and "qfx " in out.getvalue().split("example", 1)[1]


def test_qat_prepares_with_prepare_qat_fx_and_runs_no_training(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    status, out, err = run_in_process("convert", "usermodel.py:build", "--qat", "--backend", "qnnpack",
                                      "--mode", "reference", "--check-against-torch")
    forget_usermodel()
    assert status == 0, err
    assert "prepared with prepare_qat_fx (qnnpack backend, its default QAT qconfig mapping)" in out
    assert "equal to torch's convert_to_reference_fx: yes" in out
    assert torch.backends.quantized.engine == "qnnpack"


def test_output_error_of_models_with_nan_outputs_is_not_a_number() -> None:
    """NaN outputs made the error read "max abs 0, SQNR -inf dB" (perfect and worthless at once)."""
    import math

    from qfx.cli.report import output_error

    class Log(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x)

    class Exact(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clone()

    batches = ((torch.tensor([-1.0, 2.0]),),)
    error = output_error(Log(), Log(), batches)
    assert math.isnan(error.max_abs) and math.isnan(error.sqnr_db)
    error = output_error(Exact(), Exact(), batches)
    assert error.max_abs == 0 and error.sqnr_db == math.inf


def test_a_calibration_failure_on_inputs_the_float_model_takes_does_not_blame_the_inputs(workdir: Path) -> None:
    status, _, err = run_in_process("convert", str(workdir / "usermodel.py:build_scaled"))
    forget_usermodel()
    assert status == 2
    assert ("calibrating: the prepared model on batch 1 of 1 failed (AttributeError: 'float' object has no "
            "attribute 'numel'), although the float model runs on it") in err
    assert "check that the example and calibration inputs fit" not in err  # (test_cli: where they do not)


def test_a_file_that_exits_while_imported_says_where_script_code_belongs(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "script_q.py").write_text("import sys\nsys.exit(2)\n")
    monkeypatch.chdir(tmp_path)
    status, out, err = run_in_process("convert", "script_q.py:build")
    assert status == 2 and "'script_q.py' called sys.exit(2) while being imported" in err, err
    assert 'belongs under `if __name__ == "__main__":`' in err and "script_q" not in sys.modules


def test_a_model_editing_its_inputs_in_place_is_measured_on_the_batches_as_given(workdir: Path) -> None:
    """Calibration and each measured run get their own copy of every batch: a model that scales its input in
    place would otherwise be measured on inputs calibration (and the float run) had scaled already."""
    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build_editing_inputs"),
                                      "--check-against-torch")
    forget_usermodel()
    assert status == 0, err
    sqnr = float(out.split("SQNR ")[1].split(" dB")[0])
    assert sqnr > 30, out  # (3.3 dB when measured on the edited batches)
    assert "equal to torch's convert_fx: yes" in out


@pytest.mark.parametrize("mode", ["reference", "lowered"])
def test_op_counts_agree_between_modes_on_float_modules_and_unpacked_inputs(workdir: Path, mode: str) -> None:
    """An embedding and an LSTM the default static mapping leaves in float, fed by the raw input, are float
    in both modes (the reference model has no dequantize before them); items taken out of a dict input are
    input, not float ops."""
    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build_tagger"), "--mode", mode)
    assert status == 0, err
    assert "ops: 1 run quantized, 3 in float in 1 island (emb, lstm, getitem)" in out, out
    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build_dict_input"), "--mode", mode)
    forget_usermodel()
    assert status == 0, err
    assert "ops: 2 run quantized, 0 in float" in out, out


@pytest.mark.parametrize("spec, reference, lowered", [
    # a lowered model without quantized modules or ops is still lowered: its GELU runs in float
    ("build_pools_and_gelu", "ops: 5 run quantized, 0 in float", "ops: 4 run quantized, 1 in float in 1 island (gelu)"),
    # x.size(0) and x.shape[0] // 2 compute nothing: the reshape of the conv's output runs quantized
    ("build_view_by_size", "ops: 3 run quantized, 0 in float", "ops: 3 run quantized, 0 in float"),
])
def test_op_counts_of_lowered_models_without_quantized_ops_and_of_shape_queries(
        workdir: Path, spec: str, reference: str, lowered: str) -> None:
    for mode, expected in (("reference", reference), ("lowered", lowered)):
        status, out, err = run_in_process("convert", str(workdir / f"usermodel.py:{spec}"), "--mode", mode)
        assert status == 0, err
        assert expected in out, out
    forget_usermodel()


def test_a_model_calling_functions_torch_makes_in_a_factory_saves_and_loads(workdir: Path) -> None:
    """F.max_pool2d is boolean_dispatch's inner function: saved by its module and name."""
    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build_pools_and_gelu"),
                                      "--save", str(workdir / "q.pt"))
    forget_usermodel()
    assert status == 0, err
    loaded = torch.load(workdir / "q.pt", weights_only=False)
    assert any(n.target is torch.nn.functional.max_pool2d for n in loaded.graph.nodes)
    theirs, inputs = torch_result(workdir, "usermodel.py:build_pools_and_gelu", convert_fx)
    forget_usermodel()
    assert loaded.code == theirs.code and same_value(outputs(loaded, inputs), outputs(theirs, inputs))


def test_a_partial_pipeline_says_its_observers_are_still_in_place(workdir: Path) -> None:
    status, out, err = run_in_process("convert", str(workdir / "usermodel.py:build"),
                                      "--pipeline", "apply-qconfig-mapping,dce")
    forget_usermodel()
    assert status == 0, err
    assert "observers / fake-quantizes still in place (the pipeline ends before insert-qdq converts them)" in out


def test_show_after_a_pass_run_more_than_once_says_which_run(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    status, first, err = run_in_process("show", "usermodel.py:build", "--after", "dce")
    assert status == 0, err
    assert first.startswith("# usermodel.py:build after dce (the first of its 3 runs in the lowered pipeline; "
                            "dce#2, dce#3 name the others)\n")
    status, third, err = run_in_process("show", "usermodel.py:build", "--after", "dce#3")
    forget_usermodel()
    assert status == 0, err
    assert third.startswith("# usermodel.py:build after dce#3 (lowered pipeline)\n")
    # before lowering a dequantize per quantized op; after it, the output's one
    assert "1 dequantize," in third and "1 dequantize," not in first


def test_a_pipeline_may_name_passes_the_entry_points_module_registers(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from qfx.passes.manager import REGISTRY

    (tmp_path / "with_pass_q.py").write_text(
        "import torch\nfrom torch import nn\nfrom qfx.passes import register\n"
        "@register('users-own-pass', replace=True)\ndef users_own_pass(program):\n    return program\n"
        "def build():\n    return nn.Sequential(nn.Linear(4, 4)).eval(), (torch.randn(2, 4),)\n")
    monkeypatch.chdir(tmp_path)
    try:
        status, out, err = run_in_process("convert", "with_pass_q.py:build", "--mode", "reference", "--pipeline",
                                          "apply-qconfig-mapping,equalize,observe-weights,swap-modules,insert-qdq,"
                                          "dce,cleanup,users-own-pass")
        assert status == 0, err
        assert "users-own-pass" in out and "ops: 1 run quantized" in out
        status, out, err = run_in_process("convert", "with_pass_q.py:build", "--pipeline", "dce,not-registered")
        assert status == 2 and "unknown pass 'not-registered'" in err and "calibrating" not in out + err
    finally:
        REGISTRY.pop("users-own-pass", None)
        sys.modules.pop("with_pass_q", None)
