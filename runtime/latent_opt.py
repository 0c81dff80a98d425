"""Encoder-side latent optimization of I-frames and P-frame residues (the `slow` preset; no model
or bitstream change).

The analysis transform is trained to be good on average; for one given frame the encoder can do
better by searching the latent itself (Campos et al. 2019, "Content adaptive optimization for
neural image compression"; Yang, Bamler and Mandt 2020, "Improving inference for neural image
compression"). Starting from the analysis output y0, `steps` Adam steps on

    J(y) = D(x, g_s(y_hat)) + lambda(level) * R(y_hat, z_hat) / pixels          (eq. 1 units)

with D the MSE of [0, 1] RGB, R the model's own codelength in bits (App. A: the hyper latent
z = h_a(y) at unit width, the latent at the level's Q_w around the hyper synthesis' mean) and
lambda(level) the training's rate weight (runtime/motion_refine.py's interpolation of the
model card's `lambda_range`). Rounding is relaxed to the soft rounding of Agustsson and Theis
(2020), s_a(u) = floor(u) + 1/2 + tanh(a r) / (2 tanh(a / 2)), r = u - floor(u) - 1/2, with the
hardness a annealed from SOFT_START to SOFT_END over the steps, so the last steps optimize
nearly the hard-rounded objective; the hyper latent is rounded straight-through. The encoder
then codes the optimized latent exactly as it codes the analysis output (hyper analysis,
rounding, range coding through the backend), and `runtime/codec.py` keeps it only if its real
cost (bits of the coded frame, distortion of the decoder's reconstruction) is no larger than
plain coding's: the optimization never loses on its own criterion. A decoder sees ordinary
symbols.

P-frames: the residue latent is searched the same way, with the residue decoder given the
compensated frame and state of the motion already coded (the flow latent is not searched: the
motion refinement, runtime/motion_refine.py, chooses its block motion instead).

The gradient runs through the float Keras model (bundle.model) on the CPU whatever the backend;
the integer hyper synthesis the codec entropy-codes with differs from the float one only by its
rounding, and the guard measures the real thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from model.npmath import ScaledLambda, check_lambda_range

SOFT_START = 1.0  # soft-rounding hardness at the first step (nearly the identity)
SOFT_END = 16.0  # ... and at the last (nearly hard rounding)


@dataclass(frozen=True)
class LatentOptimization(ScaledLambda):
    """Settings of the I-frame latent search; steps == 0 disables it."""

    steps: int = 0
    learning_rate: float = 0.02  # Adam step, in latent units (the latents' spread is ~1-10)
    lambda_range: Optional[Tuple[float, float]] = None  # None: the model card's, else model.npmath.DEFAULT_LAMBDA_RANGE
    lambda_scale: float = 1.0
    # Search the hyper latent as a free variable too (else it follows h_a(y) straight-through).
    # Measured on bikes.mp4 (base, 50 steps): 3-9% more bits than searching y alone at levels 3-7
    # for the same PSNR, so it is off in the slow preset.
    hyper: bool = False
    # Search the P-frames' residue latents too (else I-frames only: one search a GOP instead of
    # one a frame, so the encoding time grows by a small factor instead of ~10x).
    residues: bool = True

    def __post_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"latent optimization steps must be an integer >= 0, got {self.steps!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"latent optimization learning rate must be positive, got {self.learning_rate}")
        if not (self.lambda_scale > 0 and math.isfinite(self.lambda_scale)):
            raise ValueError(f"latent optimization lambda scale must be positive, got {self.lambda_scale}")
        check_lambda_range(self.lambda_range, "latent optimization")

    @property
    def enabled(self) -> bool:
        return self.steps > 0


def soft_round(u, hardness):
    """Agustsson & Theis' soft rounding: the identity as hardness -> 0, rounding as it -> inf."""
    import tensorflow as tf

    m = tf.floor(u) + 0.5
    r = u - m
    return m + tf.tanh(hardness * r) / (2.0 * tf.tanh(hardness / 2.0))


class LatentSearch:
    """The search for one model's I-frame and residue latents:
    `search_iframe(image, embedding, quant_width, rd_lambda, latent0)` and
    `search_residue(image, compensated, state, embedding, quant_width, rd_lambda, latent0)`."""

    def __init__(self, model, settings: LatentOptimization):
        import tensorflow as tf

        self.model = model
        self.settings = settings
        self._iframe_grad = tf.function(self._iframe_objective, reduce_retracing=True, autograph=False)
        self._residue_grad = tf.function(self._residue_objective, reduce_retracing=True, autograph=False)

    @staticmethod
    def _objective(codelayer, decode, y, z, image, embedding, quant_width, rd_lambda, hardness):
        """(J, (dJ/dy, dJ/dz)): D(image, decode(y_hat)) + lambda R(y_hat, z_hat) / pixels, with the
        hyper latent z a free variable (soft-rounded like y) when given, else h_a(y) rounded
        straight-through (dJ/dz is then zero)."""
        import tensorflow as tf

        from model.entropy import codelength_bits

        pixels = tf.cast(tf.shape(image)[1] * tf.shape(image)[2], tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(y)
            tape.watch(z)
            if z.shape[1] == 0:  # no free hyper latent: it follows the analysis of y
                z_free = codelayer.hyper_analysis(y, embedding)
                z_hat = z_free + tf.stop_gradient(tf.round(z_free) - z_free)
            else:
                z_hat = soft_round(z, hardness)
            hyper_bits = tf.reduce_sum(codelength_bits(z_hat, codelayer.hyper_scale()))
            mean, sigma = codelayer.hyper_synthesis(z_hat, embedding)
            u = soft_round((y - mean) / quant_width, hardness)
            main_bits = tf.reduce_sum(codelength_bits(u, sigma / quant_width))
            reconstruction = decode(mean + quant_width * u)
            distortion = tf.reduce_mean(tf.math.squared_difference(image, reconstruction))
            objective = distortion + rd_lambda * (hyper_bits + main_bits) / pixels
        gy, gz = tape.gradient(objective, [y, z], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return objective, gy, gz

    def _iframe_objective(self, y, z, image, embedding, quant_width, rd_lambda, hardness):
        codec = self.model.iframe
        return self._objective(codec.codelayer, lambda latent_hat: codec.decode(latent_hat, embedding)[0],
                               y, z, image, embedding, quant_width, rd_lambda, hardness)  # fmt: skip

    def _residue_objective(self, y, z, image, compensated, state, embedding, quant_width, rd_lambda, hardness):
        block = self.model.residue
        return self._objective(block.codelayer, lambda latent_hat: block.decode(latent_hat, compensated, state, embedding)[0],
                               y, z, image, embedding, quant_width, rd_lambda, hardness)  # fmt: skip

    def _adam(self, grad, codelayer, latent0, embedding):
        """`steps` Adam steps on grad(y, z, hardness) -> (J, dJ/dy, dJ/dz) from the analysis output
        latent0 (and, with settings.hyper, the free hyper latent from z0 = h_a(latent0)), the
        hardness annealed. Returns (latent, hyper latent or None)."""
        import tensorflow as tf

        steps, lr = self.settings.steps, self.settings.learning_rate
        y = tf.constant(latent0, tf.float32)
        if self.settings.hyper:
            z = tf.constant(codelayer.hyper_analysis(y, tf.constant(embedding, tf.float32)))
        else:
            z = tf.zeros([1, 0, 0, 1])  # no free hyper latent
        moments = [(tf.zeros_like(v), tf.zeros_like(v)) for v in (y, z)]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(steps):
            t = step / max(steps - 1, 1)
            hardness = tf.constant(SOFT_START * (SOFT_END / SOFT_START) ** t, tf.float32)
            _, gy, gz = grad(y, z, hardness)
            new = []
            for v, g, (m, s2) in zip((y, z), (gy, gz), moments):
                m = beta1 * m + (1 - beta1) * g
                s2 = beta2 * s2 + (1 - beta2) * g * g
                step_size = lr * (m / (1 - beta1 ** (step + 1))) / (tf.sqrt(s2 / (1 - beta2 ** (step + 1))) + eps)
                new.append((v - step_size, (m, s2)))
            (y, moments[0]), (z, moments[1]) = new
        out = y.numpy().astype(np.float32)
        hyper = z.numpy().astype(np.float32) if self.settings.hyper else None
        if not np.all(np.isfinite(out)) or (hyper is not None and not np.all(np.isfinite(hyper))):
            return np.asarray(latent0, np.float32), None  # a diverged search is no candidate
        return out, hyper

    def search_iframe(self, image, embedding, quant_width, rd_lambda: float, latent0):
        """image float32 [1, H, W, 3] in [0, 1] (padded), embedding [1, E], quant_width [1, 1, 1, C],
        latent0 the analysis output [1, h, w, C] -> (searched latent, searched hyper latent or None)."""
        import tensorflow as tf

        args = [tf.constant(x, tf.float32) for x in (image, embedding, quant_width, rd_lambda)]
        return self._adam(lambda y, z, hardness: self._iframe_grad(y, z, *args, hardness),
                          self.model.iframe.codelayer, latent0, embedding)  # fmt: skip

    def search_residue(self, image, compensated, state, embedding, quant_width, rd_lambda: float, latent0):
        """The residue latent of a P-frame, given the (already coded) motion's compensated frame and
        state: the same objective with the residue decoder's reconstruction."""
        import tensorflow as tf

        args = [tf.constant(x, tf.float32) for x in (image, compensated, state, embedding, quant_width, rd_lambda)]
        return self._adam(lambda y, z, hardness: self._residue_grad(y, z, *args, hardness),
                          self.model.residue.codelayer, latent0, embedding)  # fmt: skip
