"""The packages point one way: model -> export -> runtime -> benchmarks, with gpu_train beside model.

A module may import its own package and the packages before it, never one after it:

    model       model (model/clikit.py, the command-line kit, is here so every layer can use it)
    gpu_train   gpu_train, model (the TF-free modules: gpu_train runs in .venv-torch)
    export      export, model
    runtime     runtime, export, model
    benchmarks  benchmarks, runtime, export, model

Every import counts, the ones inside functions too. No module imports a private (_name) from
another package. KNOWN lists the imports that still point the wrong way, each with what fixes
it; the test fails on a new one and on a listed one that is gone (so the list only shrinks).
"""

from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "model": {"model"},
    "gpu_train": {"gpu_train", "model"},
    "export": {"export", "model"},
    "runtime": {"runtime", "export", "model"},
    "benchmarks": {"benchmarks", "runtime", "export", "model"},
}
#: "importing module -> imported module": what fixes it.
KNOWN = {
}
#: Private names still imported from another package.
KNOWN_PRIVATE = {
}


def _modules():
    for package in MAY_IMPORT:
        for path in sorted((REPO / package).rglob("*.py")):
            yield package, ".".join(path.relative_to(REPO).with_suffix("").parts), path


def _imports(path: pathlib.Path):
    """(imported module, [imported names]) for every absolute import in the file, nested ones too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [alias.name for alias in node.names]


def test_imports_point_one_way():
    wrong = set()
    for package, module, path in _modules():
        for imported, _ in _imports(path):
            top = imported.split(".")[0]
            if top in MAY_IMPORT and top not in MAY_IMPORT[package]:
                wrong.add(f"{module} -> {imported}")
    assert not wrong - set(KNOWN), f"imports against model -> export -> runtime -> benchmarks: {sorted(wrong - set(KNOWN))}"
    assert not set(KNOWN) - wrong, f"fixed: remove from KNOWN: {sorted(set(KNOWN) - wrong)}"


def test_no_private_names_across_packages():
    private = []
    for package, module, path in _modules():
        for imported, names in _imports(path):
            top = imported.split(".")[0]
            if top in MAY_IMPORT and top != package:
                private += [f"{module}: from {imported} import {n}" for n in names if n.startswith("_")]
    assert not set(private) - set(KNOWN_PRIVATE), sorted(set(private) - set(KNOWN_PRIVATE))
    assert not set(KNOWN_PRIVATE) - set(private), f"fixed: remove from KNOWN_PRIVATE: {sorted(set(KNOWN_PRIVATE) - set(private))}"
