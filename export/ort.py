"""ONNX Runtime sessions, configured once for the exporter's checks and the `onnx` backend.

CPU only. Choices (measured in WORKSPACE.md, "Export and deployment"):
- intra-op threads = the CPUs this process may run on (os.sched_getaffinity), not
  onnxruntime's default (physical cores of the host, which in a container can exceed the
  share actually granted); one inter-op thread, sequential execution: the subgraphs are
  chains of convolutions with no branch parallelism worth a second pool.
- every graph optimization on (ORT_ENABLE_ALL), which includes the NCHWc layout transform
  that removes the NHWC<->NCHW transposes tf2onnx puts around each convolution.
"""

from __future__ import annotations

import os
from typing import Optional


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def create_session(model, threads: Optional[int] = None, spinning: bool = False):
    """An onnxruntime.InferenceSession on the CPU for `model` (a path or the ONNX bytes).

    Args:
      threads: intra-op threads (default: available_cpus()).
      spinning: let idle pool threads spin between ops (faster when this is the only work; set
        False when other threads, such as the range coder's, share the cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # Flush denormals to zero, as TensorFlow's CPU kernels do: untrained (and some trained)
    # weights drive activations into the denormal range, where x86 float math is ~100x slower.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3  # errors only: ORT warns about every unused initializer.
    model = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
