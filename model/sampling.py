"""The numpy-only pieces of training-data sampling (§4.1), shared by model/ and gpu_train/.

gpu_train runs on machines without TensorFlow, so these live apart from model/data.py and
model/losses.py (which import TF and re-export them).
"""

from __future__ import annotations

import numpy as np


def area_downscale(frame: np.ndarray, factor: int) -> np.ndarray:
    """Averages factor x factor blocks of a uint8 [H, W, 3] frame (edges that do not fill a block are cut)."""
    if factor == 1:
        return frame
    h, w = frame.shape[0] // factor, frame.shape[1] // factor
    blocks = frame[: h * factor, : w * factor].reshape(h, factor, w, factor, -1).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def level_random_walk(rng: np.random.Generator, batch: int, length: int, num_levels: int, sigma: float = 0.5):
    """§4.1: l_0 uniform on {0..L-1}; l_t = clip(round(l_{t-1} + N(0, sigma)), 0, L-1).

    Returns int32 [batch, length], one independent walk per batch element.
    """
    levels = np.empty((batch, length), np.int32)
    levels[:, 0] = rng.integers(0, num_levels, size=batch)
    for t in range(1, length):
        step = rng.normal(0.0, sigma, size=batch)
        levels[:, t] = np.clip(np.rint(levels[:, t - 1] + step), 0, num_levels - 1)
    return levels
