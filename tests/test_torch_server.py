"""The suite's torch fork server (tests/torch_server.py) runs a call as a fresh `python` would:
the same exit status, output, argv, environment and working folder."""

from __future__ import annotations

import os
import subprocess

import pytest

import torch_server
from conftest import REPO
from test_gpu_train import torch_env, torch_python

SCRIPT = r"""
import os, sys
print("argv", sys.argv[1:], "cwd", os.getcwd(), "var", os.environ.get("ELFVC_PROBE"), "main", __name__)
print("to stderr", file=sys.stderr)
what = sys.argv[1]
if what == "message":
    sys.exit("stopped: a message")
if what == "raise":
    raise ValueError("a bad value")
if what == "code":
    sys.exit(3)
"""


@pytest.mark.parametrize("what", ["ok", "message", "raise", "code"])
def test_a_served_call_is_a_fresh_process(what, tmp_path):
    python, base = torch_python(), torch_env()
    env = {**os.environ, **base, "ELFVC_PROBE": what}
    args = ["-c", SCRIPT, what, "second"]
    fresh = subprocess.run([python, *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert torch_server.servable(args, env, base)
    served = torch_server.run(python, args, tmp_path, env, base)
    assert served.returncode == fresh.returncode == {"ok": 0, "message": 1, "raise": 1, "code": 3}[what]
    assert served.stdout == fresh.stdout == f"argv ['{what}', 'second'] cwd {tmp_path} var {what} main __main__\n"
    assert served.stderr.splitlines()[0] == fresh.stderr.splitlines()[0] == "to stderr"
    assert served.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]  # the message, or the exception's line


def test_a_module_runs_as_main_and_other_threads_go_fresh(tmp_path):
    python, base = torch_python(), torch_env()
    env = {**os.environ, **base}
    served = torch_server.run(python, ["-m", "gpu_train.table2", "--help"], REPO, env, base)
    assert served.returncode == 0 and "usage:" in served.stdout
    assert not torch_server.servable(["-m", "x"], {**env, "OMP_NUM_THREADS": "2"}, base)  # OpenMP is loaded with 1
    assert not torch_server.servable(["-W", "error", "-c", "pass"], env, base)  # interpreter flags
