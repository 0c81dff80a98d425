"""One TensorRT engine run on a CUDA stream: its execution context and its device / pinned host
buffers. Used by the runtime's `tensorrt` backend (runtime/backends/tensorrt_backend.py) and by the
engine check after a build (export/tensorrt_build.py, verify_engine); it lives in export/ so
that the runtime imports the export layer and not the other way round. numpy only: TensorRT and
pycuda come in as arguments.
"""

from __future__ import annotations

from typing import Dict

import numpy as np


class TensorBuffers:
    """Device memory and a pinned host mirror for one tensor, grown on demand, freed by free()."""

    def __init__(self, cuda):
        self._cuda = cuda
        self.device = None
        self._host = None  # pinned float32 [capacity]
        self.capacity = 0  # elements

    def view(self, shape) -> np.ndarray:
        """The pinned host buffer as float32 `shape` (reallocating both sides if too small)."""
        count = int(np.prod(shape))
        if count > self.capacity:
            self.free()
            self.capacity = max(count, 1)
            self.device = self._cuda.mem_alloc(self.capacity * 4)
            self._host = self._cuda.pagelocked_empty(self.capacity, np.float32)
        return self._host[:count].reshape(shape)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
            self.device = None
        if self._host is not None:
            self._host.base.free()
            self._host = None
        self.capacity = 0


class EngineRunner:
    """One deserialized engine, its execution context and its I/O buffers, on `stream`.

    Call with the CUDA context current. `infer` takes and returns float32 arrays keyed by the
    engine's tensor names (the ONNX names of the export manifest).
    """

    def __init__(self, trt, cuda, runtime, engine_bytes: bytes, stream, label: str):
        self._cuda = cuda
        self.label = label
        self.runtime = runtime  # must outlive the engine
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError(f"{label}: TensorRT could not deserialize the engine (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.stream = stream
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise RuntimeError(f"{label}: engine tensor {name!r} is {self.engine.get_tensor_dtype(name)}, not float32")
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        self._buffers = {name: TensorBuffers(cuda) for name in self.inputs + self.outputs}

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cuda, context = self._cuda, self.context
        for name in self.inputs:
            value = feeds[name]
            if not context.set_input_shape(name, tuple(value.shape)):
                raise ValueError(f"{self.label}: input {name!r} shape {value.shape} is outside the engine's profile")
            host = self._buffers[name].view(value.shape)
            host[...] = value
            cuda.memcpy_htod_async(self._buffers[name].device, host, self.stream)
            context.set_tensor_address(name, int(self._buffers[name].device))
        hosts = {}
        for name in self.outputs:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{self.label}: output {name!r} shape {shape} unresolved after setting the inputs")
            hosts[name] = self._buffers[name].view(shape)
            context.set_tensor_address(name, int(self._buffers[name].device))
        if not context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"{self.label}: TensorRT execution failed")
        for name in self.outputs:
            cuda.memcpy_dtoh_async(hosts[name], self._buffers[name].device, self.stream)
        self.stream.synchronize()
        return {name: np.array(host, copy=True) for name, host in hosts.items()}

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers = {}
        self.context = None
        self.engine = None
        self.runtime = None
