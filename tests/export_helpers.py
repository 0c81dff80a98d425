"""Shared by tests/test_export.py and tests/test_backends.py: one ONNX export of the default
(small) model per test session, made through the backend's own cache path (export/cache.py),
in a temporary folder removed at exit.

Set ELFVC_TEST_CACHE=DIR to keep that cache between sessions while working on these tests (an
export is reused only if its manifest names the same model and its files match their hashes).
"""

from __future__ import annotations

import atexit
import functools
import os
import pathlib
import shutil
import tempfile


@functools.lru_cache(maxsize=None)
def small_export():
    """(bundle, export folder, manifest, cache root) of the shipped small model, exported once."""
    from export.cache import ensure_onnx_export
    from runtime.bundle import shipped_bundle

    bundle = shipped_bundle("small")
    if os.environ.get("ELFVC_TEST_CACHE"):
        root = pathlib.Path(os.environ["ELFVC_TEST_CACHE"])
    else:
        root = pathlib.Path(tempfile.mkdtemp(prefix="elfvc-test-cache-"))
        atexit.register(shutil.rmtree, root, True)
    folder, manifest = ensure_onnx_export(bundle, cache_root=root)
    return bundle, folder, manifest, root


def onnx_backend():
    """An OnnxBackend on the session's export (one thread: the suite shares 2 cores)."""
    from runtime.backends import get_backend

    bundle, folder, _, _ = small_export()
    return get_backend("onnx", bundle, export_dir=str(folder), threads=1)
