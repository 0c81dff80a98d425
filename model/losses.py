"""The multi-level training loss (§3.1 eq. 1-3), the level random walk (§4.1) and App. D's
dynamic loss modulator.

Units. Distortion D is the MSE of RGB in [0, 1] (or 1 - MS-SSIM for fine-tuning); rate R is in
bits per pixel. With these units the paper's lambda ranges are sensible: at the low-rate model's
lambda = 10^-1.7 a frame at 0.05 bpp pays 1e-3, about the MSE of a 30 dB reconstruction.

Level convention: level 0 has the largest lambda (lowest rate), level L-1 the smallest (highest
rate), so quality rises with the level, as the rate controllers expect.

One GOP of T frames, batch element b, frame t, level l = l_{b,t}:

    loss = 1/(B T) sum_{b,t} [ mu_t^(l) D_{b,t} + lambda^(l) R_{b,t} ]        (eq. 1 + 2, eq. 3)

which is eq. 3's mu (L_rec + lambda / mu R): mu scales the distortion only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import tensorflow as tf

from model.sampling import level_random_walk  # noqa: F401  (re-exported)

from model.config import LAMBDA_RANGES  # noqa: F401  (re-exported; §4.1's ranges)

#: App. D: f(delta) = 10^(delta / 10) = 1.5, i.e. delta = 1.76 dB.
MODULATOR_FACTOR = 1.5
MU_MIN, MU_MAX = 1.0, 10.0


def lambdas(lambda_range: Tuple[float, float], num_levels: int) -> np.ndarray:
    """§4.1: L regularization weights, linear in log space from range[0] (level 0) to range[1]."""
    first, last = lambda_range
    if first <= 0 or last <= 0:
        raise ValueError(f"lambda range must be positive, got {lambda_range}")
    if num_levels == 1:
        return np.array([first], np.float32)
    return np.logspace(math.log10(first), math.log10(last), num_levels).astype(np.float32)


# -- distortion -------------------------------------------------------------------------------
def mse(frames, reconstructions):
    """[B, T, H, W, 3] x2 -> [B, T] mean squared error on [0, 1] RGB."""
    return tf.reduce_mean(tf.math.squared_difference(frames, reconstructions), axis=[2, 3, 4])


def psnr_from_mse(value):
    """PSNR in dB of a [0, 1] signal; works on numpy arrays and tensors."""
    if tf.is_tensor(value):
        return -10.0 * tf.math.log(tf.maximum(value, 1e-12)) / math.log(10.0)
    return -10.0 * np.log10(np.maximum(value, 1e-12))


_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_scales(height: int, width: int, filter_size: int = 11) -> int:
    """Scales of MS-SSIM that fit a crop: the coarsest scale must still hold one filter window."""
    scales = 1
    while scales < len(_MS_SSIM_WEIGHTS) and min(height, width) // 2 ** scales >= filter_size:
        scales += 1
    return scales


def ms_ssim_distortion(frames, reconstructions):
    """[B, T, H, W, 3] x2 -> [B, T] 1 - MS-SSIM (Wang et al. weights, truncated to the crop)."""
    shape = frames.shape
    scales = ms_ssim_scales(int(shape[2]), int(shape[3]))
    weights = _MS_SSIM_WEIGHTS[:scales]
    flat = lambda x: tf.reshape(x, [-1, shape[2], shape[3], 3])
    value = tf.image.ssim_multiscale(
        flat(frames), flat(tf.clip_by_value(reconstructions, 0.0, 1.0)), max_val=1.0, power_factors=weights
    )
    return 1.0 - tf.reshape(value, tf.shape(frames)[:2])


DISTORTIONS = {"mse": mse, "ms_ssim": ms_ssim_distortion}


def distortion(metric: str):
    if metric not in DISTORTIONS:
        raise ValueError(f"unknown distortion {metric!r}; valid: {', '.join(sorted(DISTORTIONS))}")
    return DISTORTIONS[metric]


# -- eq. 1-3 ----------------------------------------------------------------------------------
def multilevel_loss(dist, bpp, levels, mu, lambda_table, global_batch: int):
    """Eq. 1-3 for one replica's share of the batch.

    Args:
      dist: [B, T] distortion D(x_t, x_hat_t^(l)).
      bpp: [B, T] rate R_t^(l) in bits per pixel.
      levels: [B, T] int levels l_{b,t}.
      mu: [T, L] modulator weights mu_t^(l).
      lambda_table: [L] lambda_reg^(l).
      global_batch: batch size over all replicas, so that summing replicas gives the mean.
    Returns:
      scalar loss: sum over this replica of (mu D + lambda R) / (global_batch * T).
    """
    levels = tf.cast(levels, tf.int32)
    length = tf.shape(levels)[1]
    frame_index = tf.broadcast_to(tf.range(length)[None, :], tf.shape(levels))
    mu_bt = tf.gather_nd(mu, tf.stack([frame_index, levels], axis=-1))
    lambda_bt = tf.gather(lambda_table, levels)
    per_frame = mu_bt * dist + lambda_bt * bpp
    return tf.reduce_sum(per_frame) / tf.cast(global_batch * length, tf.float32)


def per_frame_level_sums(values, levels, num_levels: int):
    """Scatters [B, T] values into [T, L] sums by level, plus the [T, L] counts."""
    onehot = tf.one_hot(tf.cast(levels, tf.int32), num_levels, dtype=tf.float32)  # [B, T, L]
    return tf.reduce_sum(onehot * values[..., None], axis=0), tf.reduce_sum(onehot, axis=0)


# -- App. D -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModulatorConfig:
    factor: float = MODULATOR_FACTOR  # f(delta): P-frame may be this much worse in MSE than I.
    step: float = 0.01  # "increased by a small value" per optimizer step.
    decay: float = 0.99  # moving average of the distortion per (frame, level).
    enabled: bool = True  # False: mu = 1 everywhere (Table 3's "no modulation" ablation).

    @property
    def delta_db(self) -> float:
        return 10.0 * math.log10(self.factor)


class LossModulator(tf.Module):
    """App. D: mu_t^(l) in [1, 10], one per GOP frame t and level l; mu_0^(l) = 1.

    Keeps moving averages E D_t^(l). After each step, for every t >= 1 and l for which both
    E D_t^(l) and E D_0^(l) have data: if E D_t^(l) > f * E D_0^(l) (the P-frame's PSNR is more
    than delta below the I-frame's) mu_t^(l) grows by `step`, otherwise it shrinks by `step`;
    then it is clipped to [1, 10]. All state is non-trainable variables, so it is checkpointed.
    """

    def __init__(self, gop: int, num_levels: int, config: ModulatorConfig = ModulatorConfig(), name="modulator"):
        super().__init__(name=name)
        self.config = config
        self.gop, self.num_levels = gop, num_levels
        shape = [gop, num_levels]
        self.mu = tf.Variable(tf.ones(shape), trainable=False, name="mu")
        self.average = tf.Variable(tf.zeros(shape), trainable=False, name="average_distortion")
        self.seen = tf.Variable(tf.zeros(shape), trainable=False, name="seen")

    def update(self, dist_sum, count):
        """Folds one step's [T, L] distortion sums and counts into the averages, then moves mu."""
        has = count > 0
        batch_mean = dist_sum / tf.maximum(count, 1.0)
        # Bias-free start: the first observation sets the average.
        decay = tf.where(self.seen > 0, self.config.decay, 0.0)
        average = tf.where(has, decay * self.average + (1.0 - decay) * batch_mean, self.average)
        seen = self.seen + tf.cast(has, tf.float32)
        self.average.assign(average)
        self.seen.assign(seen)
        if not self.config.enabled:
            return
        iframe = average[:1]  # [1, L]
        known = (seen > 0) & (seen[:1] > 0)
        behind = average > self.config.factor * iframe
        move = tf.where(behind, self.config.step, -self.config.step) * tf.cast(known, tf.float32)
        mu = tf.clip_by_value(self.mu + move, MU_MIN, MU_MAX)
        is_iframe = tf.range(self.gop)[:, None] == 0
        self.mu.assign(tf.where(is_iframe, tf.ones_like(mu), mu))
