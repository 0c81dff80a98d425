"""The hyperprior codelayer of App. A, shared by the I-frame, flow and residue blocks.

    y --quantize(mu, Q_w)--> y_hat                       (main codelayer q0, stride 16)
    y --E1--> z --round--> z_hat --D1--> (mu, sigma)     (side codelayer q1, stride 64)
    rate = sum -log2 p(k0 | 0, sigma/Q_w) + sum -log2 p(k1 | 0, sigma_1[channel])

sigma_1 is a learned per-channel parameter (App. A). The hyper encoder reads y (not q0) because
with mean-shifted quantization q0 depends on mu, which depends on q1 (see model/entropy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from model.entropy import QuantMode, codelength_bits, quantize
from model.layers import conv_precision
from model.transforms import HyperAnalysis, HyperSynthesis

layers = tf.keras.layers


@dataclass
class CodelayerOutput:
    """Quantized latents and their codelengths. B batch, h x w the 16x grid, C channels."""

    latent_hat: tf.Tensor  # [B, h, w, C] dequantized q0 the decoder sees.
    bits: tf.Tensor  # [B] total bits of q0 and q1.
    bit_map: tf.Tensor  # [B, h, w] bits per 16x16 pixel block (q1 spread over its 4x4 cells).
    symbols: tf.Tensor  # [B, h, w, C] integer-valued k0 (valid in ROUND mode).
    hyper_symbols: tf.Tensor  # [B, h/4, w/4, Cz] integer-valued k1.
    mean: tf.Tensor  # [B, h, w, C]
    scale: tf.Tensor  # [B, h, w, C] in quantization units (sigma / Q_w).


class HyperpriorCodelayer(layers.Layer):
    def __init__(self, hyper_channels: int, latent_channels: int, hyper_latent_channels: int, **kwargs):
        super().__init__(**kwargs)
        with conv_precision("fp32"):  # rates and quantization in FP32 under bf16 training too
            self.hyper_analysis = HyperAnalysis(hyper_channels, hyper_latent_channels, name="hyper_analysis")
            self.hyper_synthesis = HyperSynthesis(hyper_channels, latent_channels, name="hyper_synthesis")
        self.hyper_latent_channels = hyper_latent_channels

    def build(self, input_shape):
        # sigma_1 = softplus(raw): per-channel scale of the side codelayer, initialised near 1.
        self.raw_hyper_scale = self.add_weight(
            "raw_hyper_scale", [self.hyper_latent_channels], initializer=tf.keras.initializers.Constant(0.55)
        )
        super().build(input_shape)

    def hyper_scale(self):
        return tf.nn.softplus(self.raw_hyper_scale)

    def call(self, latent, embedding, quant_width, mode: QuantMode) -> CodelayerOutput:
        mode = QuantMode.parse(mode)
        z = self.hyper_analysis(latent, embedding)
        z_hat, z_rate = quantize(z, 0.0, 1.0, mode)
        hyper_bits = codelength_bits(z_rate, self.hyper_scale())
        mean, sigma = self.hyper_synthesis(z_hat, embedding)
        qw = quant_width[:, None, None, :]
        latent_hat, v_rate = quantize(latent, mean, qw, mode)
        scale = sigma / qw
        main_bits = codelength_bits(v_rate, scale)
        main_map = tf.reduce_sum(main_bits, axis=-1)
        # App. A: per-position bits; each q1 element covers 4x4 q0 positions.
        hyper_map = tf.reduce_sum(hyper_bits, axis=-1)
        hyper_map = tf.repeat(tf.repeat(hyper_map, 4, axis=1), 4, axis=2) / 16.0
        bit_map = main_map + hyper_map
        return CodelayerOutput(
            latent_hat=latent_hat,
            bits=tf.reduce_sum(bit_map, axis=[1, 2]),
            bit_map=bit_map,
            symbols=tf.round((latent_hat - mean) / qw),
            hyper_symbols=tf.round(z_hat),
            mean=mean,
            scale=scale,
        )
