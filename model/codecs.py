"""The three coding blocks and the predictor of ELF-VC (Figure 2, §2, §3.3).

    I-frame:  x --s2d4--> E0 --codelayer--> D0 --> x_hat, state
    P-frame t:
      predictor(f_{t-1}, x_{t-2}, x_{t-1}, level)            -> f_bar            (zero bits)
      flow block:    E0(x_t, x_{t-1}, f_bar, s_{t-1}) -> codelayer -> D0(., f_bar, s_{t-1})
                     -> mask m, delta df, state s'
                     (with config.motion_search_radius, latent channels 0-1 are a searched
                     block motion and df gains them upsampled: model/motion.py, a deviation)
                     f_t = m * f_bar + df ;  x_comp = ScaleSpaceWarp(x_{t-1}, f_t)
      residue block: E0(x_t - x_comp, s') -> codelayer -> D0(., s') -> r_t, s_t
                     x_t_hat = x_comp + r_t

Pixels enter the networks by space-to-depth(4) (gap), so every block runs at 4x or coarser
(§3.2); outputs leave through a convolution and depth-to-space(4). Inputs that concatenate
tensors of different scales (flows in pixels, pixels in [-1/2, 1/2], features) pass through
channel normalization (App. C).

Every codelayer quantizes on a grid of width Q_w (§3.1, App. A): the I-frame's is learned per
level and channel as in the paper; the flow and residue codelayers have Q_w = 1 unless
`config.pframe_quant_width` gives them their own (our deviation, see docs/DESIGN.md).

The P-frame output heads (predictor flow, flow mask/delta, residue) start at zero (gap): an
untrained P-frame is then an exact copy of its reference (f_bar = 0, m = 1/2, df = 0, r = 0),
instead of random flows and residues whose huge loss would flow back through the references
into a warm-started I-frame codec and wreck it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from model.codelayer import CodelayerOutput, HyperpriorCodelayer
from model.config import ModelConfig
from model.entropy import QuantMode
from model.layers import ChannelNorm, DMBlock, TwoScaleDMBlock, conv
from model.level import interpolate_rows, with_level_map
from model.motion import block_motion_search, level_penalty, upsample_blocks
from model.transforms import Analysis, Synthesis
from model.warp import scale_space_warp

layers = tf.keras.layers


def to_4x(image):
    """[B, H, W, C] pixels -> [B, H/4, W/4, 16 C], centred."""
    return tf.nn.space_to_depth(image, 4)


def from_4x(features):
    """[B, H/4, W/4, 16 C] -> [B, H, W, C]."""
    return tf.nn.depth_to_space(features, 4)


@dataclass
class IFrameOutput:
    reconstruction: tf.Tensor  # [B, H, W, 3]
    state: tf.Tensor  # [B, H/4, W/4, S]
    code: CodelayerOutput


@dataclass
class PFrameOutput:
    reconstruction: tf.Tensor  # [B, H, W, 3]
    state: tf.Tensor  # [B, H/4, W/4, S]
    flow: tf.Tensor  # [B, H, W, 3] final flow f_t (dx, dy, sigma) in pixels.
    predicted_flow: tf.Tensor  # [B, H, W, 3] f_bar (zeros without the predictor).
    mask: tf.Tensor  # [B, H, W, 3] sigmoid mask m_t (ones without the predictor).
    flow_delta: tf.Tensor  # [B, H, W, 3]
    compensated: tf.Tensor  # [B, H, W, 3] x_comp.
    residue: tf.Tensor  # [B, H, W, 3] r_t.
    flow_code: CodelayerOutput
    residue_code: CodelayerOutput


class _LevelQuantWidth:
    """Learned per-level, per-channel quantization width Q_w (§3.1), stored as its log and
    interpolated between trained levels for fractional ones (App. E)."""

    quant_width_block = "iframe"  # which initial spread of the config (ModelConfig.quant_width_spread)

    def _build_quant_width(self):
        self.log_quant_width = self.add_weight(
            "log_quant_width",
            [self.config.levels, self.config.latent_channels],
            initializer=tf.constant_initializer(self.config.initial_log_quant_width(self.quant_width_block)),
        )

    def quant_width(self, level):
        """Q_w for continuous levels [B] -> [B, C]."""
        return tf.exp(interpolate_rows(self.log_quant_width, level))


class IFrameCodec(_LevelQuantWidth, layers.Layer):
    """Keyframe image codec: backbone + hyperprior, no context model (§2, App. A)."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.analysis = Analysis(config.encoder_channels, config.latent_channels, config.dm_convs, name="analysis")
        self.codelayer = HyperpriorCodelayer(
            config.hyper_channels, config.latent_channels, config.hyper_latent_channels, name="codelayer"
        )
        self.synthesis = Synthesis(config.decoder_width("iframe"), config.dm_convs, name="synthesis")
        self.image_head = conv(48, name="image_head")
        self.state_head = conv(config.state_channels, name="state_head")

    def build(self, input_shape):
        self._build_quant_width()
        super().build(input_shape)

    def encode_latent(self, image, embedding):
        return self.analysis(to_4x(image - 0.5), embedding)

    def decode(self, latent_hat, embedding):
        features = self.synthesis(latent_hat, embedding)
        reconstruction = 0.5 + from_4x(self.image_head(features))
        return reconstruction, self.state_head(features)

    def call(self, image, level, embedding, mode: QuantMode) -> IFrameOutput:
        latent = self.encode_latent(image, embedding)
        code = self.codelayer(latent, embedding, self.quant_width(level), mode)
        reconstruction, state = self.decode(code.latent_hat, embedding)
        return IFrameOutput(reconstruction, state, code)


class FlowPredictor(layers.Layer):
    """In-loop flow predictor (§3.3): f_bar from f_{t-1}, x_{t-2}, x_{t-1} and the level."""

    def __init__(self, config: ModelConfig, step, **kwargs):
        super().__init__(**kwargs)
        self.norm = ChannelNorm(step, config.norm_freeze_steps, name="norm")
        self.stem = conv(config.predictor_channels, name="stem")
        self.blocks = [
            TwoScaleDMBlock(config.predictor_channels, config.dm_convs, name=f"block{i}")
            for i in range(config.predictor_blocks)
        ]
        self.head = conv(48, name="head", zero_init=True)
        self.scale = config.flow_output_scale

    def call(self, previous_flow, previous2, previous1, embedding, training=False):
        inputs = tf.concat([to_4x(previous_flow), to_4x(previous2 - 0.5), to_4x(previous1 - 0.5)], axis=-1)
        h = self.stem(with_level_map(self.norm(inputs, training=training), embedding))
        for block in self.blocks:
            h = block(h)
        return self.scale * from_4x(self.head(h))


class _InterBlock(_LevelQuantWidth, layers.Layer):
    """What the flow and residue blocks share (§2): a normalized encoder input, the backbone
    analysis, the hyperprior codelayer, and a decoder whose 4x features are merged with
    normalized side inputs (the state, and for the flow the predicted flow) by a DM block.

    Q_w is 1 (the paper's P-frames) unless `config.pframe_quant_width` gives the block its own
    per-level Q_w (our deviation)."""

    def __init__(self, config: ModelConfig, step, decoder: str, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.encoder_norm = ChannelNorm(step, config.norm_freeze_steps, name="encoder_norm")
        self.analysis = Analysis(config.encoder_channels, config.latent_channels, config.dm_convs, name="analysis")
        self.codelayer = HyperpriorCodelayer(
            config.hyper_channels, config.latent_channels, config.hyper_latent_channels, name="codelayer"
        )
        width = config.decoder_width(decoder)
        self.synthesis = Synthesis(width, config.dm_convs, name="synthesis")
        self.decoder_norm = ChannelNorm(step, config.norm_freeze_steps, name="decoder_norm")
        self.merge = conv(width, name="merge")
        self.merge_block = DMBlock(width, config.dm_convs, name="merge_block")
        if config.pframe_quant_width:  # created here: the blocks are used through methods, never built.
            self._build_quant_width()

    def quant_width(self, level):
        if not self.config.pframe_quant_width:
            level = tf.convert_to_tensor(level, tf.float32)
            return tf.ones([tf.size(level), self.config.latent_channels])
        return super().quant_width(level)

    def decoder_features(self, latent_hat, side, embedding, training=False):
        """Synthesis trunk merged with the normalized side inputs, at 4x."""
        features = self.synthesis(latent_hat, embedding)
        side = self.decoder_norm(side, training=training)
        return self.merge_block(tf.nn.leaky_relu(self.merge(tf.concat([features, side], axis=-1)), 0.2))


class FlowBlock(_InterBlock):
    """Flow autoencoder (§2, §3.3): codes a refinement of f_bar, updates the state, warps."""

    quant_width_block = "flow"

    def __init__(self, config: ModelConfig, step, **kwargs):
        super().__init__(config, step, "flow", **kwargs)
        self.flow_head = conv(16 * 6, name="flow_head", zero_init=True)  # mask logits (3) and delta (3) per pixel.
        self.state_head = conv(config.state_channels, name="state_head")

    def encoder_inputs(self, target, previous, predicted_flow, state):
        return tf.concat([to_4x(target - 0.5), to_4x(previous - 0.5), to_4x(predicted_flow), state], axis=-1)

    def encode_latent(self, target, previous, predicted_flow, state, embedding, training=False):
        inputs = self.encoder_norm(self.encoder_inputs(target, previous, predicted_flow, state), training=training)
        latent = self.analysis(inputs, embedding)
        radius = self.config.motion_search_radius
        if radius:  # deviation (model/motion.py): channels 0-1 carry the searched block motion.
            motion = block_motion_search(target, previous, radius, level_penalty(self.config, embedding))
            latent = tf.concat([motion, latent[..., 2:]], axis=-1)
        return latent

    def decode(self, latent_hat, previous, predicted_flow, state, embedding, training=False):
        """Decoder half: -> (flow, mask, delta, compensated, new_state)."""
        h = self.decoder_features(latent_hat, tf.concat([to_4x(predicted_flow), state], axis=-1), embedding, training)
        mask_logits, delta = tf.split(from_4x(self.flow_head(h)), 2, axis=-1)
        delta = self.config.flow_output_scale * delta
        if self.config.motion_search_radius:  # deviation (model/motion.py): the block-motion path.
            block_flow = upsample_blocks(latent_hat[..., :2], self.config.block_motion_upsample)
            delta = delta + tf.concat([block_flow, tf.zeros_like(block_flow[..., :1])], axis=-1)
        if self.config.use_predictor:
            mask = tf.sigmoid(mask_logits)
            flow = mask * predicted_flow + delta
        else:
            mask = tf.ones_like(delta)
            flow = delta
        compensated = scale_space_warp(
            previous, flow, self.config.scale_space_levels, self.config.scale_space_sigma0
        )
        new_state = self.state_head(h) if self.config.use_state else state
        return flow, mask, delta, compensated, new_state


class ResidueBlock(_InterBlock):
    """Residue autoencoder (§2): codes x_t - x_comp, returns the residue and the next state."""

    quant_width_block = "residue"

    def __init__(self, config: ModelConfig, step, **kwargs):
        super().__init__(config, step, "residue", **kwargs)
        self.image_head = conv(48, name="image_head", zero_init=True)
        self.state_head = conv(config.state_channels, name="state_head")

    def encode_latent(self, residual, compensated, state, embedding, training=False):
        inputs = tf.concat([to_4x(residual), to_4x(compensated - 0.5), state], axis=-1)
        return self.analysis(self.encoder_norm(inputs, training=training), embedding)

    def decode(self, latent_hat, compensated, state, embedding, training=False):
        """Decoder half: -> (reconstruction, residue, new_state)."""
        h = self.decoder_features(latent_hat, state, embedding, training)
        residue = from_4x(self.image_head(h))
        new_state = self.state_head(h) if self.config.use_state else state
        return compensated + residue, residue, new_state
