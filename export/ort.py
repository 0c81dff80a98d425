"""ONNX Runtime sessions, configured once for the exporter's checks and the `onnx` backend.

CPU only. Choices (measured in docs/DESIGN.md, export decisions):
- intra-op threads = the CPUs this process may run on (os.sched_getaffinity; onnxruntime's
  own default counts the host's cores, which in a container can exceed the share granted)
  minus one, at least one. The spare core is for the host side of the pipeline in the same
  process: the range coder's thread pool and TensorFlow's, which spin after each op. MLAS
  splits a convolution statically between the intra-op threads, so one preempted worker stalls
  the whole op; on the 2-core machine here 1 thread beats 2 for both configs.
- no spinning: idle pool threads busy-wait by default, and in the codec they then starve the
  range coder and TensorFlow's threads (measured: the whole codec ran 4x slower).
- denormals flushed to zero, as TensorFlow's CPU kernels do.
- one inter-op thread, sequential execution: the subgraphs are chains of convolutions with no
  branch parallelism worth a second pool.
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


def default_threads() -> int:
    """Intra-op threads when none are asked for: available CPUs - 1, at least 1."""
    return max(1, available_cpus() - 1)


def create_session(model, threads: Optional[int] = None, spinning: bool = False):
    """An onnxruntime.InferenceSession on the CPU for `model` (a path or the ONNX bytes).

    Args:
      threads: intra-op threads (default: default_threads()).
      spinning: let idle pool threads spin between ops (faster when this is the only work; set
        False when other threads, such as the range coder's, share the cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3  # errors only: ORT warns about every unused initializer.
    model = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
