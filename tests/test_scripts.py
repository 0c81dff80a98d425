"""scripts/*.sh, the commands behind the recorded numbers, run for minutes to hours, so the suite
does not run them; it checks what breaks them before they start: bash syntax, the executable bit,
a usage line in the header, and that every `python -m MODULE` they call exists."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
MODULE = re.compile(r"-m\s+((?:model|export|runtime|benchmarks|gpu_train)(?:\.\w+)+)")


def test_there_are_scripts():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_says_how_to_use_it(script):
    if shutil.which("bash") is None:
        pytest.skip("no bash on this machine")
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    head = script.read_text().split("\nset ", 1)[0]  # the comment block before `set -euo pipefail`
    assert "usage:" in head, f"{script.name}: no usage line in its header"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_module_a_script_calls_exists(script):
    modules = set(MODULE.findall(script.read_text()))
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert not missing, f"{script.name} calls modules that do not exist: {missing}"
