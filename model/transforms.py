"""Encoder / decoder backbones and the hyperprior (§3.2, App. A).

    Analysis  (E0):  4x features -> DM-C -> down -> DM-C -> down -> DM-C -> conv -> y   (16x)
    Synthesis (D0):  y_hat (16x) -> conv -> DM-C -> up -> DM-C -> up -> DM-C -> features (4x)
    Hyperprior:      E1: y -> conv, down, down -> z (64x);  D1: z_hat -> (mu, sigma) at 16x

All blocks run at 4x, 8x or 16x downsampling (§3.2). The level map is concatenated to every
network input. D1 is built only from 'same' 3x3 convolutions, ReLUs and depth-to-space, so that
the runtime can evaluate it with one canonical implementation on both sides of the channel.
"""

from __future__ import annotations

import tensorflow as tf

from model.layers import DMBlock, Downsample, Upsample, conv
from model.level import with_level_map

layers = tf.keras.layers


class Analysis(layers.Layer):
    """E0: features at 4x -> latent y at 16x (encoder side: wide DM blocks)."""

    def __init__(self, channels: int, latent_channels: int, num_convs: int, **kwargs):
        super().__init__(**kwargs)
        self.stem = conv(channels, name="stem")
        self.block4 = DMBlock(channels, num_convs, name="dm4")
        self.down8 = Downsample(channels, name="down8")
        self.block8 = DMBlock(channels, num_convs, name="dm8")
        self.down16 = Downsample(channels, name="down16")
        self.block16 = DMBlock(channels, num_convs, name="dm16")
        self.out = conv(latent_channels, name="latent")

    def call(self, features, embedding):
        h = self.block4(self.stem(with_level_map(features, embedding)))
        h = self.block8(self.down8(h))
        h = self.block16(self.down16(h))
        return self.out(h)


class Synthesis(layers.Layer):
    """D0 trunk: latent y_hat at 16x -> features at 4x (decoder side: light DM blocks)."""

    def __init__(self, channels: int, num_convs: int, **kwargs):
        super().__init__(**kwargs)
        self.stem = conv(channels, name="stem")
        self.block16 = DMBlock(channels, num_convs, name="dm16")
        self.up8 = Upsample(channels, name="up8")
        self.block8 = DMBlock(channels, num_convs, name="dm8")
        self.up4 = Upsample(channels, name="up4")
        self.block4 = DMBlock(channels, num_convs, name="dm4")

    def call(self, latent, embedding):
        h = self.block16(self.stem(with_level_map(latent, embedding)))
        h = self.block8(self.up8(h))
        return self.block4(self.up4(h))


class HyperAnalysis(layers.Layer):
    """E1: y (16x) -> z (64x)."""

    def __init__(self, channels: int, hyper_latent_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.conv0 = conv(channels, name="conv0", activation="relu")
        self.down1 = conv(channels, stride=2, name="down1", activation="relu")
        self.down2 = conv(hyper_latent_channels, stride=2, name="down2")

    def call(self, latent, embedding):
        # abs(): the hyperprior describes scales; the sign of y carries no information about them.
        h = self.conv0(with_level_map(tf.abs(latent), embedding))
        return self.down2(self.down1(h))


class HyperSynthesis(layers.Layer):
    """D1: z_hat (64x) -> (mu, sigma) at 16x, sigma > 0.

    Layer list (the canonical runtime mirrors exactly this): conv3x3+ReLU, conv3x3 to 4C +
    depth_to_space(2) + ReLU, conv3x3 to 4C + depth_to_space(2) + ReLU, conv3x3 to 2*C_y;
    mu = first C_y channels, sigma = softplus(rest).
    """

    def __init__(self, channels: int, latent_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.latent_channels = latent_channels
        self.conv0 = conv(channels, name="conv0")
        self.up1 = conv(4 * channels, name="up1")
        self.up2 = conv(4 * channels, name="up2")
        self.out = conv(2 * latent_channels, name="params")

    def call(self, hyper_latent, embedding):
        h = tf.nn.relu(self.conv0(with_level_map(hyper_latent, embedding)))
        h = tf.nn.relu(tf.nn.depth_to_space(self.up1(h), 2))
        h = tf.nn.relu(tf.nn.depth_to_space(self.up2(h), 2))
        params = self.out(h)
        mean, raw_scale = tf.split(params, 2, axis=-1)
        return mean, tf.nn.softplus(raw_scale)
