"""Shared by tests/test_export.py, tests/test_backends.py and tests/test_presets.py: an ONNX
backend on the session's export of the shipped small model (the `small_export` session fixture
of conftest.py, made through the backend's own cache path, export/cache.py).

Set ELFVC_TEST_CACHE=DIR to keep that cache between sessions while working on these tests (an
export is reused only if its manifest names the same model and its files match their hashes).
"""

from __future__ import annotations


def onnx_backend(small_export):
    """An OnnxBackend on the session's export (one thread: the suite shares 2 cores)."""
    from runtime.backends import get_backend

    bundle, folder, _, _ = small_export
    return get_backend("onnx", bundle, export_dir=str(folder), threads=1)
