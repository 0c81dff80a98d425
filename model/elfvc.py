"""The ELF-VC model: an I-frame then P-frames, with level conditioning (Figure 2).

`ELFVC.forward_gop` is the one forward pass for training (IPPP) and evaluation (16-frame GOPs):

    frames [B, T, H, W, 3] in [0, 1], levels [B, T] in [0, L-1]
      t = 0:  I-frame codec                                   -> x_hat_0, s_0
      t >= 1: predictor -> flow block -> warp -> residue block -> x_hat_t, s_t, f_t
    -> GopOutput(reconstructions [B, T, H, W, 3], bits [B, T], bit_maps [B, T, H/16, W/16])

References are always the model's own reconstructions, never the originals. The runtime
calls the same `iframe_step` / `pframe_step` pieces with hard rounding, so there is one
implementation of the decoder half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from model.codecs import FlowBlock, FlowPredictor, IFrameCodec, IFrameOutput, PFrameOutput, ResidueBlock
from model.config import FRAME_MULTIPLE, ModelConfig
from model.entropy import QuantMode
from model.level import level_embedding


@dataclass
class ReferenceState:
    """What the decoder carries from frame to frame (reset at every I-frame)."""

    previous: tf.Tensor  # x_hat_{t-1} [B, H, W, 3]
    previous2: tf.Tensor  # x_hat_{t-2} [B, H, W, 3]
    flow: tf.Tensor  # f_{t-1} [B, H, W, 3]
    state: tf.Tensor  # s_{t-1} [B, H/4, W/4, S]


@dataclass
class GopOutput:
    reconstructions: tf.Tensor  # [B, T, H, W, 3]
    bits: tf.Tensor  # [B, T] estimated codelength of each frame.
    bit_maps: tf.Tensor  # [B, T, H/16, W/16] bits per 16x16 block (App. A's spatial allocation).
    frames: list = field(default_factory=list)  # per-frame IFrameOutput / PFrameOutput.

    def bpp(self):
        """[B, T] bits per pixel."""
        shape = tf.shape(self.reconstructions)
        return self.bits / tf.cast(shape[2] * shape[3], tf.float32)


def validate_frames(frames) -> tf.Tensor:
    """Checks and stacks GOP input; raises ValueError naming the problem."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("frames: empty GOP (need at least one frame)")
        shapes = {tuple(np.shape(f)) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames have different sizes: {sorted(shapes)}")
        frames = tf.stack([tf.convert_to_tensor(f, tf.float32) for f in frames], axis=1)
    frames = tf.convert_to_tensor(frames)
    if frames.shape.rank != 5:
        raise ValueError(f"frames must have rank 5 [batch, time, height, width, 3], got shape {frames.shape}")
    if frames.shape[-1] != 3:
        raise ValueError(f"frames must have 3 (RGB) channels, got {frames.shape[-1]}")
    if frames.shape[1] is not None and frames.shape[1] < 1:
        raise ValueError("frames: empty GOP (need at least one frame)")
    for axis, name in ((2, "height"), (3, "width")):
        size = frames.shape[axis]
        if size is not None and size % FRAME_MULTIPLE:
            raise ValueError(f"frame {name} {size} is not a multiple of {FRAME_MULTIPLE}; pad the frames first")
    if not frames.dtype.is_floating:
        raise ValueError(f"frames must be floats in [0, 1], got dtype {frames.dtype.name}")
    return tf.cast(frames, tf.float32)


class ELFVC(tf.keras.Model):
    """ELF-VC. Sub-layers are the subgraphs the exporter cuts out (see export/)."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(name=kwargs.pop("name", "elfvc"), **kwargs)
        self.config = config
        # Optimizer step shared with the channel normalizations (frozen after App. C's 2000).
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.iframe = IFrameCodec(config, name="iframe")
        self.predictor = FlowPredictor(config, self.step, name="predictor") if config.use_predictor else None
        self.flow = FlowBlock(config, self.step, name="flow")
        self.residue = ResidueBlock(config, self.step, name="residue")

    # -- level handling -------------------------------------------------------------------
    def check_levels(self, levels, batch: int, length: int) -> tf.Tensor:
        levels = np.asarray(levels, dtype=np.float32) if not tf.is_tensor(levels) else levels
        levels = tf.cast(levels, tf.float32)
        if levels.shape.rank == 0:
            levels = tf.fill([batch, length], levels)
        elif levels.shape.rank == 1:
            levels = tf.broadcast_to(levels[None, :], [batch, length])
        if levels.shape.rank != 2:
            raise ValueError(f"levels must be a scalar, [time] or [batch, time], got shape {levels.shape}")
        if tf.executing_eagerly():
            values = levels.numpy()
            if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > self.config.max_level:
                raise ValueError(
                    f"level out of range: levels must lie in [0, {self.config.max_level:g}], "
                    f"got min {values.min():g}, max {values.max():g}"
                )
        return levels

    def embed(self, level):
        return level_embedding(level, self.config.levels, self.config.embedding_width)

    # -- one frame each ---------------------------------------------------------------------
    def iframe_step(self, frame, level, mode: QuantMode):
        """Codes an I-frame; returns (IFrameOutput, ReferenceState for the next frame)."""
        out = self.iframe(frame, level, self.embed(level), mode)
        refs = ReferenceState(
            previous=out.reconstruction,
            previous2=out.reconstruction,
            flow=tf.zeros_like(out.reconstruction),
            state=out.state if self.config.use_state else tf.zeros_like(out.state),
        )
        return out, refs

    def predict_flow(self, refs: ReferenceState, embedding, training=False):
        if self.predictor is None:
            return tf.zeros_like(refs.flow)
        return self.predictor(refs.flow, refs.previous2, refs.previous, embedding, training=training)

    def pframe_step(self, frame, level, refs: ReferenceState, mode: QuantMode, training=False):
        """Codes a P-frame against `refs`; returns (PFrameOutput, next ReferenceState)."""
        embedding = self.embed(level)
        predicted = self.predict_flow(refs, embedding, training)
        flow_latent = self.flow.encode_latent(frame, refs.previous, predicted, refs.state, embedding, training)
        flow_code = self.flow.codelayer(flow_latent, embedding, self.flow.quant_width(level), mode)
        flow, mask, delta, compensated, state = self.flow.decode(
            flow_code.latent_hat, refs.previous, predicted, refs.state, embedding, training
        )
        residue_latent = self.residue.encode_latent(frame - compensated, compensated, state, embedding, training)
        residue_code = self.residue.codelayer(residue_latent, embedding, self.residue.quant_width(level), mode)
        reconstruction, residue, state = self.residue.decode(
            residue_code.latent_hat, compensated, state, embedding, training
        )
        out = PFrameOutput(
            reconstruction=reconstruction,
            state=state,
            flow=flow,
            predicted_flow=predicted,
            mask=mask,
            flow_delta=delta,
            compensated=compensated,
            residue=residue,
            flow_code=flow_code,
            residue_code=residue_code,
        )
        refs = ReferenceState(previous=reconstruction, previous2=refs.previous, flow=flow, state=state)
        return out, refs

    # -- the GOP --------------------------------------------------------------------------------
    def forward_gop(self, frames, levels, mode: Union[QuantMode, str] = QuantMode.ROUND, training=False) -> GopOutput:
        """Runs an I-frame followed by P-frames over `frames` [B, T, H, W, 3]."""
        mode = QuantMode.parse(mode)
        frames = validate_frames(frames)
        batch = frames.shape[0] if frames.shape[0] is not None else tf.shape(frames)[0]
        length = int(frames.shape[1])
        levels = self.check_levels(levels, batch, length)
        outputs, recons, bits, maps = [], [], [], []
        refs: Optional[ReferenceState] = None
        for t in range(length):
            if t == 0:
                out, refs = self.iframe_step(frames[:, 0], levels[:, 0], mode)
                frame_bits, frame_map = out.code.bits, out.code.bit_map
            else:
                out, refs = self.pframe_step(frames[:, t], levels[:, t], refs, mode, training)
                frame_bits = out.flow_code.bits + out.residue_code.bits
                frame_map = out.flow_code.bit_map + out.residue_code.bit_map
            outputs.append(out)
            recons.append(out.reconstruction)
            bits.append(frame_bits)
            maps.append(frame_map)
        return GopOutput(
            reconstructions=tf.stack(recons, axis=1),
            bits=tf.stack(bits, axis=1),
            bit_maps=tf.stack(maps, axis=1),
            frames=outputs,
        )

    def call(self, frames, levels=0.0, training=False):
        mode = QuantMode.NOISE if training else QuantMode.ROUND
        return self.forward_gop(frames, levels, mode, training=training).reconstructions

    def build_weights(self):
        """Creates every variable by running a tiny 2-frame GOP."""
        frames = tf.zeros([1, 2, FRAME_MULTIPLE, FRAME_MULTIPLE, 3])
        self.forward_gop(frames, 0.0, QuantMode.ROUND)
        return self


# -- parameter accounting (Table 3) ------------------------------------------------------------
def _count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def parameter_counts(model: ELFVC) -> dict:
    """Trainable parameters of the encoder-only and decoder subgraphs.

    'decoder' holds every network the decoder runs (hyper synthesis, synthesis, predictor, the
    learned scales); 'encoder_only' the analysis transforms the decoder never runs. The encoder
    runs both (it keeps its own reconstructions), so 'encoder' = encoder_only + decoder.
    """
    blocks = [model.iframe, model.flow, model.residue]
    encoder_only = [
        v for block in blocks for part in (block.analysis, block.codelayer.hyper_analysis)
        for v in part.trainable_variables
    ]
    encoder_ids = {id(v) for v in encoder_only}
    decoder = [v for v in model.trainable_variables if id(v) not in encoder_ids]
    return {
        "encoder_only": _count(encoder_only),
        "decoder": _count(decoder),
        "encoder": _count(encoder_only) + _count(decoder),
        "total": _count(model.trainable_variables),
    }
