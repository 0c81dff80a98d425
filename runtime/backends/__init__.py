"""Backends that run the coding subgraphs: tf (reference), onnx, tensorrt (see base.py)."""

from runtime.backends.base import BACKENDS, Backend, backend_names, get_backend

__all__ = ["BACKENDS", "Backend", "backend_names", "get_backend"]
