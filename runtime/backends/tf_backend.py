"""The TensorFlow backend: the reference every other backend is compared with.

Runs the `tf.function`s of `export.subgraphs.coding_subgraph_functions` eagerly on numpy inputs.
"""

from __future__ import annotations

import logging
from typing import Dict

import numpy as np

from runtime.backends.base import Backend


class _NoRetracingWarning(logging.Filter):
    """Each subgraph is traced once (fixed input signatures); TF's "excessive retracing" warning
    counts those first traces across the ~13 subgraphs and would print noise on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_tracing() -> None:
    import tensorflow as tf

    logger = tf.get_logger()
    if not any(isinstance(f, _NoRetracingWarning) for f in logger.filters):
        logger.addFilter(_NoRetracingWarning())


class TFBackend(Backend):
    name = "tf"

    def __init__(self, bundle):
        from export.subgraphs import CODING_SUBGRAPHS, coding_subgraph_functions

        _quiet_tracing()
        self.model_id = bundle.model_id
        self._functions = coding_subgraph_functions(bundle, sliced_blur=True)  # run many times: model/warp.py
        self._inputs = {name: [spec.name for spec in CODING_SUBGRAPHS[name].inputs] for name in self._functions}

    def run(self, subgraph: str, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        self.ensure_open(subgraph)
        if subgraph not in self._functions:
            raise ValueError(f"unknown subgraph {subgraph!r}; valid: {', '.join(self._functions)}")
        expected = self._inputs[subgraph]
        if sorted(inputs) != sorted(expected):
            raise ValueError(f"{subgraph}: inputs {sorted(inputs)} != expected {sorted(expected)}")
        args = [np.ascontiguousarray(inputs[name], np.float32) for name in expected]
        return {name: value.numpy() for name, value in self._functions[subgraph](*args).items()}

    def close(self) -> None:
        self.closed = True
        self._functions = {}
