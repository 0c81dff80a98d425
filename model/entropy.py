"""Quantization and the Gaussian entropy model of App. A.

Everything is expressed in *quantization units*: a latent y with mean mu, scale sigma and
quantization width Q_w becomes the symbol k = round((y - mu) / Q_w), coded with a zero-mean
Gaussian of scale sigma / Q_w on unit-width bins. This is App. A's

    p(q | mu, sigma, Q_w) = Phi((q - mu + Q_w/2) / sigma) - Phi((q - mu - Q_w/2) / sigma)

with the mean subtracted *before* rounding (gap: "mean-shifted" quantization). We chose it
because the range coder's tables are then zero-mean and indexed by scale alone, so the coded
size matches the estimate here to within the table's scale quantization.

`QuantMode` makes the quantizer explicit, so training noise can never reach a coding graph:
  NOISE  rate on y + U(-1/2, 1/2); decoder input rounded with a straight-through gradient.
  STE    rate and decoder input both rounded, straight-through gradient.
  ROUND  hard rounding (coding, evaluation, export).
"""

from __future__ import annotations

import enum
import math

import tensorflow as tf

# Scales below SCALE_MIN are clamped (the range coder's scale table); likelihoods below LIKELIHOOD_MIN too.
from model.npmath import LIKELIHOOD_MIN, SCALE_MIN


class QuantMode(enum.Enum):
    NOISE = "noise"
    STE = "ste"
    ROUND = "round"

    @classmethod
    def parse(cls, value) -> "QuantMode":
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown quantization mode {value!r}; valid: noise, ste, round") from None


def ste_round(x):
    """Rounds in the forward pass, identity gradient in the backward pass."""
    return x + tf.stop_gradient(tf.round(x) - x)


def _lower_bound(x, bound):
    """max(x, bound) whose gradient still flows when it would push x up (as TFC's lower_bound)."""
    bounded = tf.maximum(x, bound)
    return x + tf.stop_gradient(bounded - x)


def _standard_normal_cdf(x):
    return 0.5 * tf.math.erfc(-x / math.sqrt(2.0))


def gaussian_likelihood(v, scale):
    """Mass of N(0, scale) on [v - 1/2, v + 1/2] (unit bins), computed in the upper tail.

    Using |v| keeps both CDF arguments in the left tail where erfc is accurate.
    """
    scale = _lower_bound(scale, SCALE_MIN)
    v = tf.abs(v)
    upper = _standard_normal_cdf((0.5 - v) / scale)
    lower = _standard_normal_cdf((-0.5 - v) / scale)
    return upper - lower


def codelength_bits(v, scale):
    """-log2 p(v) elementwise, for symbols v in quantization units and a scale in those units."""
    likelihood = _lower_bound(gaussian_likelihood(v, scale), LIKELIHOOD_MIN)
    return -tf.math.log(likelihood) / math.log(2.0)


def app_a_codelength(q, mu, sigma, quant_width):
    """App. A's codelength -log2 p(q | mu, sigma, Q_w) in the paper's own units (q on the Q_w grid)."""
    return codelength_bits((q - mu) / quant_width, sigma / quant_width)


def quantize(y, mean, quant_width, mode: QuantMode, training_noise_seed=None):
    """Quantizes y around `mean` on a grid of `quant_width`.

    Returns:
      y_hat: the dequantized latent the decoder sees, mean + Q_w * k.
      v_rate: the value (in quantization units, mean removed) whose likelihood gives the rate.
    """
    mode = QuantMode.parse(mode)
    u = (y - mean) / quant_width
    if mode is QuantMode.NOISE:
        v_rate = u + tf.random.uniform(tf.shape(u), -0.5, 0.5, dtype=u.dtype, seed=training_noise_seed)
        v_dec = ste_round(u)
    elif mode is QuantMode.STE:
        v_rate = v_dec = ste_round(u)
    else:
        v_rate = v_dec = tf.round(u)
    return mean + quant_width * v_dec, v_rate
