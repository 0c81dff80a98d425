"""The `tensorrt` backend: the coding subgraphs as TensorRT 10 engines on an NVIDIA GPU (§4).

    TensorRTBackend(bundle)
      export (cached ONNX, export/cache.py) -> engines (cached, export/tensorrt_build.py:
      FP16, the integer hyper syntheses FP32 with TF32 off, the warp pinned FP32)
      one CUDA stream for the backend (one backend = one coding pipeline)
      per subgraph an EngineRunner: execution context + device buffers + pinned host buffers

    run(subgraph, **inputs):
      check names / dtypes / shapes (export manifest) and the engine profile's size range
      pinned host <- inputs ; async H2D ; execute_async_v3 ; async D2H ; stream.synchronize()
      -> outputs copied out of the pinned buffers (which the next call reuses)

Buffers have explicit lifetimes: a `TensorBuffers` grows to the largest shape seen and is freed
by `close()` (the backend is a context manager); nothing is left to garbage collection while
the CUDA context is not current. The backend pushes its (primary) CUDA context around every
call, so it can be used from any thread, one call at a time.

The integer hyper syntheses run in true FP32 and must reproduce TF bit for bit; the exporter's
`verify_engine` checks exactly that after every build.
"""

from __future__ import annotations

import pathlib
from typing import Dict, Optional

import numpy as np

from export.tensorrt_runner import EngineRunner, TensorBuffers  # noqa: F401  (TensorBuffers: re-exported)
from runtime.backends.base import Backend


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        bundle,
        export_dir: Optional[str] = None,
        cache_root: Optional[str] = None,
        profile=None,
        device: int = 0,
    ):
        """
        Args:
          bundle: runtime.bundle.ModelBundle.
          export_dir: an export folder (default: the cache's, exported on first use).
          cache_root: the export / engine cache root (default $ELFVC_CACHE or ~/.cache/elfvc).
          profile: export.tensorrt_build.EngineProfile (default CIF..1080p, batch 1).
          device: CUDA device index.
        """
        from export.cache import resolve_export
        from export.tensorrt_build import EngineProfile, ensure_engines, make_logger, require_cuda, require_tensorrt

        trt = require_tensorrt()
        cuda, dev = require_cuda(device)
        self.profile = profile or EngineProfile()
        self.export_dir, self.manifest = resolve_export(bundle, export_dir, cache_root)
        self.model_id = bundle.model_id
        self.engines = ensure_engines(self.export_dir, self.manifest, cache_root, self.profile)
        self._cuda = cuda
        self._runners: Dict[str, EngineRunner] = {}
        self._stream = self._runtime = None
        self._context = dev.retain_primary_context()
        self._context.push()
        try:
            self._runtime = trt.Runtime(make_logger(trt))
            self._stream = cuda.Stream()
            for name, record in self.engines.items():
                data = pathlib.Path(record.path).read_bytes()
                self._runners[name] = EngineRunner(trt, cuda, self._runtime, data, self._stream, f"{name} engine")
        except BaseException:
            self._release()
            cuda.Context.pop()
            self._context.detach()
            self._context = None
            raise
        cuda.Context.pop()

    def run(self, subgraph: str, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        self.ensure_open(subgraph)
        if subgraph not in self._runners:
            raise ValueError(f"unknown subgraph {subgraph!r}; valid: {', '.join(self._runners)}")
        graph = self.manifest.subgraph(subgraph)
        feeds, (batch, height, width) = graph.check_inputs(inputs)
        if not self.profile.admits(height, width, batch):
            p = self.profile
            raise ValueError(
                f"{subgraph}: padded frame {width}x{height} (batch {batch}) is outside the TensorRT engines' profile "
                f"{p.min_size[1]}x{p.min_size[0]}..{p.max_size[1]}x{p.max_size[0]} (batch <= {p.max_batch}); "
                "pass another EngineProfile (export_trt --min_size/--max_size)"
            )
        self._context.push()
        try:
            values = self._runners[subgraph].infer(feeds)
        finally:
            self._cuda.Context.pop()
        return {info.name: values[info.onnx_name] for info in graph.outputs}

    def _release(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners = {}
        self._stream = None
        self._runtime = None

    def close(self) -> None:
        self.closed = True
        if self._context is None:
            return
        self._context.push()
        try:
            if self._stream is not None:
                self._stream.synchronize()
            self._release()
        finally:
            self._cuda.Context.pop()
            self._context.detach()
            self._context = None
