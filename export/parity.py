"""Comparing an exported subgraph with TensorFlow: sample inputs and the error measure.

Relative error, the one definition used everywhere in export/ and in the backend tests:

    rel(a, b) = max |a - b| / max |b|        (per output tensor, b = the TensorFlow reference)

and max |a - b| itself when b is all zeros. It is a per-output measure, not per element: an
element near zero is judged against the output's range, which is what matters for pixels,
flows and latents; a per-element measure would need an arbitrary floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping

import numpy as np

from runtime.subgraphs import SUBGRAPHS

#: Default sizes (height, width) of the two parity checks: one small, one not a multiple of 128.
CHECK_SIZES = ((64, 128), (192, 256))
TOLERANCE = 1e-4


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max|actual - reference| / max|reference| (absolute error if the reference is all zeros)."""
    actual = np.asarray(actual, np.float64)
    reference = np.asarray(reference, np.float64)
    if actual.shape != reference.shape:
        raise ValueError(f"shape mismatch: {actual.shape} vs reference {reference.shape}")
    if reference.size == 0:
        return 0.0
    diff = float(np.max(np.abs(actual - reference)))
    scale = float(np.max(np.abs(reference)))
    return diff / scale if scale > 0 else diff


@dataclass(frozen=True)
class OutputError:
    """Error of one output at one check size."""

    output: str
    height: int
    width: int
    relative: float
    max_abs: float


def input_stride(subgraph: str, input_name: str) -> int:
    """Spatial stride of a subgraph input relative to the padded frame (0: no spatial dims)."""
    graph = SUBGRAPHS.get(subgraph)
    if graph is not None:
        for spec in graph.inputs:
            if spec.name == input_name:
                return spec.stride
    raise ValueError(f"subgraph {subgraph!r} has no input {input_name!r} in runtime/subgraphs.SUBGRAPHS")


def sample_inputs(
    subgraph: str, signature, embed, max_level: float, height: int, width: int, batch: int, rng
) -> Dict[str, np.ndarray]:
    """Random inputs shaped like real ones for a frame of height x width.

    Pixels are uniform in [0, 1] (residuals in [-1/2, 1/2]), flows a few pixels, latents and
    states unit-scale Gaussians, hyper latents integers (the runtime feeds rounded symbols), and
    the embedding that of a random continuous level in [0, max_level], through
    `embed(levels [B]) -> [B, E]`.
    """
    feeds = {}
    for spec in signature:
        name = spec.name
        stride = input_stride(subgraph, name)
        channels = int(spec.shape[-1])
        if stride == 0:
            if name != "embedding":
                raise ValueError(f"{subgraph}: no sampler for non-spatial input {name!r}")
            feeds[name] = np.asarray(embed(rng.uniform(0.0, max_level, size=[batch]).astype(np.float32)), np.float32)
            continue
        shape = (batch, height // stride, width // stride, channels)
        if name == "residual":
            value = rng.uniform(-0.5, 0.5, shape)
        elif name.endswith("flow"):
            value = rng.normal(0.0, 4.0, shape)
        elif stride == 1:
            value = rng.uniform(0.0, 1.0, shape)
        elif name == "hyper_latent":
            value = np.round(rng.normal(0.0, 3.0, shape))
        else:
            value = rng.normal(0.0, 1.0, shape)
        feeds[name] = value.astype(np.float32)
    return feeds


def output_strides(outputs: Mapping[str, np.ndarray], height: int) -> Dict[str, int]:
    """Stride of each 4-D output, from its height at a known frame height (0 for 2-D outputs)."""
    strides = {}
    for name, value in outputs.items():
        if np.ndim(value) == 4:
            if height % value.shape[1]:
                raise ValueError(f"output {name!r} height {value.shape[1]} does not divide the frame height {height}")
            strides[name] = height // value.shape[1]
        else:
            strides[name] = 0
    return strides
