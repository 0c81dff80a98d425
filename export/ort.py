"""ONNX Runtime sessions, configured once for the exporter's checks and the `onnx` backend.

CPU only. Choices (measured in docs/DESIGN.md, export decisions):
- intra-op threads = the CPUs this process may run on (os.sched_getaffinity; onnxruntime's
  own default counts the host's cores, which in a container can exceed the share granted).
  Until session 38 it was one fewer, for the range coder and TensorFlow's threads: that choice
  was measured with a training job loading the machine (1 thread 5.66 / 8.15 FPS against 2
  threads' 5.33 / 8.22, `small`), where MLAS's static split of each convolution stalls on a
  preempted worker. On an idle machine the range coder is 1-3% of the time and the second
  thread pays: `base` at CIF-like 384x320, GOP 16, 1.11 / 2.66 FPS on one thread, 1.56 / 3.93 on
  two (docs/BENCHMARKS.md "Speed floor"). `threads=` still picks any count.
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
    """Intra-op threads when none are asked for: the available CPUs, at most OMP_NUM_THREADS when
    that is set to a positive integer (the usual cap for a process's thread pools; the test suite
    sets it to each pytest-xdist worker's share of the cores)."""
    cpus = available_cpus()
    try:
        cap = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return cpus
    return min(cpus, cap) if cap > 0 else cpus


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
