"""scripts/*.sh, the commands behind the recorded numbers, run for minutes to hours, so the suite
does not run them; it checks what breaks them before they start: bash syntax, the executable bit,
a usage line in the header, that every `python -m MODULE` they call exists, and that every name
their inline Python imports from this repository (`from model.bundle import ...`) is defined
there (read from the module's source, not imported)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
PACKAGES = r"(?:model|export|runtime|benchmarks|gpu_train)"
MODULE = re.compile(rf"-m\s+({PACKAGES}(?:\.\w+)+)")
FROM_IMPORT = re.compile(rf"from\s+({PACKAGES}(?:\.\w+)+)\s+import\s+([\w, ]+?)(?:\s+as\s+\w+)?\s*(?:;|$|\n)", re.MULTILINE)


def test_there_are_scripts():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_says_how_to_use_it(script):
    if shutil.which("bash") is None:
        pytest.skip("no bash on this machine")
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    text = script.read_text()
    assert "\nset -euo pipefail\n" in text, f"{script.name}: no `set -euo pipefail`"
    head = text.split("\nset -euo pipefail\n", 1)[0]  # the comment block before it
    assert "usage:" in head, f"{script.name}: no usage line in its header"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_module_a_script_calls_exists(script):
    modules = set(MODULE.findall(script.read_text()))
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert not missing, f"{script.name} calls modules that do not exist: {missing}"


def _top_level_names(module: str) -> set:
    tree = ast.parse(pathlib.Path(importlib.util.find_spec(module).origin).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_name_a_script_imports_exists(script):
    missing = []
    for module, names in FROM_IMPORT.findall(script.read_text()):
        if importlib.util.find_spec(module) is None:
            missing.append(module)
            continue
        defined = _top_level_names(module)
        missing += [f"{module}.{n.strip()}" for n in names.split(",") if n.strip() not in defined]
    assert not missing, f"{script.name} imports names that do not exist: {missing}"


def test_the_import_check_sees_the_scripts_imports():
    found = {m for s in SCRIPTS for m, _ in FROM_IMPORT.findall(s.read_text())}
    assert {"model.bundle", "gpu_train.weights", "gpu_train.campaign", "model.samples"} <= found


def test_ship_refuses_in_one_line_before_touching_the_shipped_model(tmp_path):
    """scripts/ship.sh writes into runtime/checkpoints/base: what it cannot ship is refused first,
    in one `ship:` line, and the shipped folder is left as it was."""
    if shutil.which("bash") is None:
        pytest.skip("no bash on this machine")
    shipped = {p.name: p.stat().st_mtime_ns for p in (REPO / "runtime/checkpoints/base").iterdir()}

    def ship(*args, env=None):
        return subprocess.run(["bash", str(REPO / "scripts/ship.sh"), *args], capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=60)

    r = ship(str(tmp_path / "none"))  # no NOTE
    assert r.returncode != 0 and "usage: scripts/ship.sh RUN_DIR" in r.stderr
    r = ship(str(tmp_path / "none"), "a note")
    assert r.returncode == 1 and r.stderr.strip() == f"ship: {tmp_path / 'none'} has no progress.json (a gpu_train.train --out_dir is needed)"
    (tmp_path / "run").mkdir()
    (tmp_path / "run/progress.json").write_text("{}")
    r = ship(str(tmp_path / "run"), "a note", env={"EVAL": str(tmp_path)})
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"ship: no {tmp_path}/street_320x180_21f.y4m (EVAL=DIR names the eval videos' folder)"]
    # A finished run that did not start from the shipped step, nor from a run that did (gpu_train/lineage.py).
    (tmp_path / "street_320x180_21f.y4m").write_bytes(b"")
    (tmp_path / "run/progress.json").write_text(json.dumps(
        {"model_step": 10, "steps_here": 5, "final": True, "args": {"init": str(tmp_path / "elsewhere.npz")}}))
    r = ship(str(tmp_path / "run"), "a note", env={"EVAL": str(tmp_path)})
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"ship: {tmp_path / 'run'} started at model step 5, not at the shipped "
        f"{json.loads((REPO / 'runtime/checkpoints/base/training.json').read_text())['model_step']}, and its --init "
        f"({tmp_path / 'elsewhere.npz'}) is not a run to follow back: ship it by hand"], r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (REPO / "runtime/checkpoints/base").iterdir()} == shipped
