"""Every entry point behaves the same way (model/clikit.py): `--help` prints the usage and the flags
and exits 0, a bad flag is exit 2 with exactly one `prog: error: ...` line, and no TensorFlow C++
log line shows. The entry points are listed here, in one place; a new `__main__` module that is
not listed fails test_every_entry_point_is_listed.

In-process through main() where the module imports in this environment; the PyTorch-only ones
(gpu_train.table2 imports torch at module level) run in .venv-torch.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TORCH_PYTHON = REPO / ".venv-torch" / "bin" / "python"

#: module -> (prog of its error lines, argv convention). "argv0": main(argv) with argv[0] the
#: program (absl-flag tools); "args": main(args) without it (argparse tools, default sys.argv[1:]).
ENTRY_POINTS = {
    "model.train": ("train", "argv0"),
    "model.summary": ("summary", "argv0"),
    "export.export_trt": ("export_trt", "argv0"),
    "benchmarks.drift": ("drift", "argv0"),
    "benchmarks.bench_backends": ("bench_backends", "argv0"),
    "runtime.cli": ("elfvc", "argv0"),
    "runtime.demo": ("demo", "argv0"),
    "runtime.bundle": ("python -m runtime.bundle", "argv0"),
    "runtime.measure_codec": ("measure_codec", "argv0"),
    "runtime.fuzz": ("python -m runtime.fuzz", "args"),
    "benchmarks.bench_rd": ("bench_rd", "argv0"),
    "benchmarks.bench_fps": ("bench_fps", "argv0"),
    "benchmarks.bench_image": ("bench_image", "argv0"),
    "benchmarks.flow_probe": ("flow_probe", "argv0"),
    "benchmarks.level_sweep": ("level_sweep", "argv0"),
    "benchmarks.plot": ("plot", "argv0"),
    "benchmarks.bd_compare": ("bd_compare", "argv0"),
    "benchmarks.range_coder_speed": ("python -m benchmarks.range_coder_speed", "args"),
    "benchmarks.decoder_memory": ("python -m benchmarks.decoder_memory", "args"),
    "benchmarks.preset_speed": ("preset_speed", "argv0"),
    "gpu_train.train": ("python -m gpu_train.train", "args"),  # plain argparse: flags and errors frozen for running jobs
    "gpu_train.campaign": ("python3 -m gpu_train.campaign", "args"),
    "gpu_train.diagnose": ("python -m gpu_train.diagnose", "args"),
    "gpu_train.ceiling": ("python -m gpu_train.ceiling", "args"),
    "gpu_train.pack": ("python -m gpu_train.pack", "args"),
    "gpu_train.table2": ("python -m gpu_train.table2", "args"),
    "gpu_train.weights": ("python -m gpu_train.weights", "args"),
    "gpu_train.compare": ("python -m gpu_train.compare", "args"),
}
#: Subcommands answer --help too.
SUBCOMMANDS = {
    "runtime.cli": ["encode", "decode", "info", "plot_rc", "visualize"],
    "runtime.bundle": ["pin", "info"],
    "gpu_train.weights": ["to_npz", "from_npz", "to_warm"],
}
TORCH_ONLY = {"gpu_train.table2"}
#: TensorFlow's C++ log (glog / absl format) and its start-up notes.
TF_LOG = re.compile(r"tensorflow/|external/local_xla|oneDNN|TensorFlow binary|Unable to register cu|"
                    r"cuda drivers|absl::InitializeLog|^[IWEF]\d{4} \d\d:", re.MULTILINE)


def _call(module: str, args: list) -> tuple:
    """(exit status, stdout, stderr) of the module's main on `args` (the arguments after the program)."""
    prog, convention = ENTRY_POINTS[module]
    if module in TORCH_ONLY:
        if not TORCH_PYTHON.exists():
            pytest.skip(".venv-torch is missing")
        from test_gpu_train import run_torch

        r = run_torch(["-m", module, *args])
        return r.returncode, r.stdout, r.stderr
    main = importlib.import_module(module).main
    argv = [prog, *args] if convention == "argv0" else list(args)
    try:
        return main(argv), None, None
    except SystemExit as e:  # the plain-argparse modules
        return (e.code if isinstance(e.code, int) else 1), None, None


def _run(module, args, capfd):
    """(status, stdout, the stderr a TF log check may read). In-process, TensorFlow's own first
    import logs at the suite's level (conftest), which no command controls: stderr is then left to
    test_tensorflow_stays_quiet_where_a_command_imports_it."""
    tf_loaded = "tensorflow" in sys.modules
    code, out, err = _call(module, args)
    if out is None:
        out, err = capfd.readouterr()
        if not tf_loaded and "tensorflow" in sys.modules:
            err = TF_LOG.sub("", err)
    return code, out, err


CASES = [(m, []) for m in ENTRY_POINTS] + [(m, [c]) for m, cs in SUBCOMMANDS.items() for c in cs]


@pytest.mark.parametrize("module, sub", CASES, ids=[" ".join([m, *s]) for m, s in CASES])
def test_help_prints_the_flags_and_exits_0(module, sub, capfd):
    code, out, err = _run(module, [*sub, "--help"], capfd)
    assert code == 0, (code, err)
    assert "usage:" in out and "--" in out, out
    assert not TF_LOG.search(out + err), err


@pytest.mark.parametrize("module", list(ENTRY_POINTS))
def test_a_bad_flag_is_exit_2_with_one_error_line(module, capfd):
    prog, _ = ENTRY_POINTS[module]
    args = ["info", "x.elfvc"] if module in ("runtime.cli", "runtime.bundle") else []
    code, out, err = _run(module, [*args, "--no_such_flag_anywhere"], capfd)
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2, (code, err)
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err and not TF_LOG.search(err), err


def test_every_entry_point_is_listed():
    found = set()
    for package in ("model", "export", "runtime", "benchmarks", "gpu_train"):
        for path in (REPO / package).rglob("*.py"):
            if re.search(r"^if __name__ == .__main__.:", path.read_text(), re.MULTILINE):
                found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    assert found == set(ENTRY_POINTS), (sorted(found - set(ENTRY_POINTS)), sorted(set(ENTRY_POINTS) - found))


def test_tensorflow_stays_quiet_where_a_command_imports_it(tmp_path):
    """`python -m runtime.bundle info` on a folder with a config but no weights builds the model
    (TensorFlow loads) and then fails on the missing checkpoint: its C++ start-up log (oneDNN, CUDA
    plugin registration) must not show, only the one-line error; TF_CPP_MIN_LOG_LEVEL set by the
    user wins."""
    from model.bundle import CHECKPOINTS_DIR, CONFIG_FILE

    (tmp_path / CONFIG_FILE).write_text((CHECKPOINTS_DIR / "small" / CONFIG_FILE).read_text())
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-m", "runtime.bundle", "info", str(tmp_path)], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 1 and "holds no TF checkpoint" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not TF_LOG.search(r.stdout + r.stderr), r.stderr


def test_the_kit_maps_outcomes_to_exit_statuses(capsys):
    from model import clikit

    def raises(exc):
        def body(argv):
            raise exc

        return body

    assert clikit.run("p", lambda argv: None, ["p"]) == 0
    assert clikit.run("p", lambda argv: 3, ["p"]) == 3
    assert clikit.run("p", raises(clikit.UsageError("bad\nflag")), ["p"]) == 2
    assert clikit.run("p", raises(clikit.Failed("no such file")), ["p"]) == 1
    assert clikit.run("p", raises(ValueError("bad value")), ["p"], failures=(ValueError,)) == 1
    assert clikit.run("p", raises(KeyboardInterrupt()), ["p"]) == 130
    assert clikit.run("p", raises(RuntimeError("a bug")), ["p"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["p: error: bad flag (see 'p --help')", "p: error: no such file", "p: error: bad value",
                   "p: error: interrupted",
                   "p: error: internal error: RuntimeError: a bug (ELFVC_DEBUG=1 shows the traceback)"]
    assert clikit.run("p", raises(RuntimeError("a bug")), ["p"], tracebacks=True) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "p: error: internal error: RuntimeError: a bug"

    import signal
    import time

    def terminated(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the handler's exception
        finally:
            cleaned.append(True)

    cleaned = []
    assert clikit.run("p", terminated, ["p"]) == 143 and cleaned == [True]
    assert capsys.readouterr().err == "p: error: terminated\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_usage_examples_keep_their_line_breaks():
    """A module docstring (what --help prints) that continues a shell line with a single `\\`
    inside a non-raw string has Python join the lines: the example prints as one run-on line."""
    import ast

    joined = []
    for path in sorted(REPO.glob("*/*.py")):
        if path.parts[-2] not in ("model", "export", "runtime", "benchmarks", "gpu_train"):
            continue
        source = path.read_text()
        body = ast.parse(source).body
        if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)):
            continue
        text = ast.get_source_segment(source, body[0])
        if not text.startswith(("r", "R")) and re.search(r"(?<!\\)\\\n", text):
            joined.append(str(path.relative_to(REPO)))
    assert joined == []
