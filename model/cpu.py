"""What this CPU computes in hardware (no TensorFlow, no torch): bf16 pays only with bf16 instructions.

Both trainers run bf16 convolutions on the CPU when asked (`model.train --precision=bf16`,
`gpu_train.train --precision=bf16`, or `auto` there). With AMX or AVX512-BF16 that was 1.4x FP32's
speed (docs/TRAINING.md, "Training throughput: each path"); without them the frameworks emulate
bf16, and on an AVX2-only AMD EPYC the same steps ran 7.5x (Keras) and 10x (PyTorch) slower than
in FP32 (docs/TRAINING.md, "bf16 only where the CPU has bf16 instructions").
"""

from __future__ import annotations

import pathlib
from typing import Optional

#: /proc/cpuinfo flags of native bf16 arithmetic: AMX tiles, or AVX-512's BF16 dot products.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

#: What a trainer prints when bf16 is asked for on a CPU without NATIVE_BF16_FLAGS.
EMULATED_BF16_WARNING = (
    "warning: this CPU has no bf16 instructions (AMX or AVX512-BF16), so bf16 is emulated "
    "(7.5-10x slower than fp32 on an AVX2 CPU: docs/TRAINING.md); fp32 trains faster here")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Optional[set[str]]:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where it cannot be read."""
    try:
        text = pathlib.Path(cpuinfo).read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return flags


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> Optional[bool]:
    """Whether the CPU does bf16 arithmetic in hardware (NATIVE_BF16_FLAGS); None: unknown."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else any(f in flags for f in NATIVE_BF16_FLAGS)
