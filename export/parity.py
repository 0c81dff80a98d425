"""Comparing an exported subgraph with TensorFlow: sample inputs and the error measure.

Relative error, the one definition used everywhere in export/ and in the backend tests:

    rel(a, b) = max |a - b| / max |b|        (per output tensor, b = the TensorFlow reference)

and max |a - b| itself when b is all zeros. It is a per-output measure, not per element: an
element near zero is judged against the output's range, which is what matters for pixels,
flows and latents; a per-element measure would need an arbitrary floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from model.integer_hyper import quantize_embedding
from export.subgraphs import CODING_SUBGRAPHS, SUBGRAPHS

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
    for table in (CODING_SUBGRAPHS, SUBGRAPHS):
        graph = table.get(subgraph)
        for spec in graph.inputs if graph is not None else ():
            if spec.name == input_name:
                return spec.stride
    raise ValueError(f"subgraph {subgraph!r} has no input {input_name!r} in export/subgraphs")


def sample_inputs(
    inputs: Sequence[Tuple[str, int, int]], embed, max_level: float, height: int, width: int, batch: int, rng
) -> Dict[str, np.ndarray]:
    """Random inputs shaped like real ones for a frame of height x width.

    `inputs`: (name, stride, channels) of each input. Pixels are uniform in [0, 1] (residuals
    in [-1/2, 1/2]), flows a few pixels, latents and states unit-scale Gaussians, hyper latents
    integers (the runtime feeds rounded symbols), and the embedding that of a random continuous
    level in [0, max_level], through `embed(levels [B]) -> [B, E]` (host-quantized for the
    integer hyper syntheses).
    """
    feeds = {}
    for name, stride, channels in inputs:
        if stride == 0:
            if name not in ("embedding", "quantized_embedding"):
                raise ValueError(f"no sampler for non-spatial input {name!r}")
            embedding = np.asarray(embed(rng.uniform(0.0, max_level, size=[batch]).astype(np.float32)), np.float32)
            feeds[name] = quantize_embedding(embedding) if name == "quantized_embedding" else embedding
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


def interpolated_one_hot(levels, width: int) -> np.ndarray:
    """App. E's embedding shape without a model: levels [B] in [0, width - 1] -> [B, width],
    linear between neighbouring one-hots (what eq. (8) gives when L_e = L)."""
    levels = np.clip(np.asarray(levels, np.float64), 0.0, width - 1)
    low = np.minimum(np.floor(levels).astype(np.int64), max(width - 2, 0))
    frac = levels - low
    out = np.zeros((levels.size, width), np.float32)
    rows = np.arange(levels.size)
    out[rows, low] = 1.0 - frac
    if width > 1:
        out[rows, low + 1] += frac
    return out


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
