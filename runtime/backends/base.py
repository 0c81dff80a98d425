"""The backend interface: one way to run the coding subgraphs, whatever executes them.

A backend runs the networks of `export.subgraphs.CODING_SUBGRAPHS` (the model's subgraphs with
the three hyper syntheses replaced by their integer versions, model/integer_hyper.py) by name:

    backend.run("iframe_analysis", image=x, embedding=e) -> {"latent": y}

Inputs and outputs are float32 numpy arrays, NHWC, batch first. Backends: "tf" (TensorFlow, the
reference, runtime/backends/tf_backend.py), "onnx" (ONNX Runtime, onnx_backend.py) and
"tensorrt" (TensorRT + pycuda, tensorrt_backend.py); the last two are imported only when asked
for, so a machine without them still runs "tf".
"""

from __future__ import annotations

import abc
import importlib
from typing import Dict, Optional

import numpy as np

from runtime.types import CodecError

#: name -> (module, class) of every backend, imported lazily by `get_backend`.
BACKENDS = {
    "tf": ("runtime.backends.tf_backend", "TFBackend"),
    "onnx": ("runtime.backends.onnx_backend", "OnnxBackend"),
    "tensorrt": ("runtime.backends.tensorrt_backend", "TensorRTBackend"),
}


class Backend(abc.ABC):
    """Runs coding subgraphs by name. Use as a context manager or call `close()`."""

    name: str = "abstract"
    #: The id of the model the backend runs (each backend sets it from its bundle): an Encoder or
    #: Decoder refuses a backend of another model, whose symbols its stream header would misname.
    model_id: Optional[bytes] = None
    closed: bool = False

    def ensure_open(self, subgraph: str) -> None:
        """CodecError once `close()` has run: a closed backend runs nothing (some would reopen
        their sessions quietly, others had emptied their table of subgraphs)."""
        if self.closed:
            raise CodecError(f"the {self.name} backend is closed: it cannot run {subgraph}")

    @abc.abstractmethod
    def run(self, subgraph: str, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Runs `subgraph` on named float32 inputs -> its named float32 outputs."""

    def close(self) -> None:
        """Releases whatever the backend holds (sessions, engines, device memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def backend_names() -> list:
    return list(BACKENDS)


def get_backend(name: str, bundle, **options) -> Backend:
    """A backend by name ('tf', 'onnx', 'tensorrt') for `bundle`; options go to its constructor."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(bundle, **options)
