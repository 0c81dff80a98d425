"""Encoder-side block motion search and the decoder's block-motion path (our deviation from §2).

The paper's flow encoder E0 sees (x_t, x_hat_{t-1}, f_bar, s_{t-1}) and must learn motion
estimation end to end (§2, §3.3), which takes far more steps than a CPU can give: docs/DESIGN.md ("An encoder-side block motion search")
measures a flow block that, trained alone on a warp loss with no rate and no
quantization, still warps no better than copying after 400 steps, while a classical block search
gains 3.4-5.2 dB on the same pairs (benchmarks/flow_probe.py). With `config.motion_search_radius = R > 0`:

  encoder:  the first two channels of the flow latent y are the integer block motion (dx, dy)
            in pixels of each 16x16 block (the codelayer's own grid), found by exhaustive search
            over |dx|, |dy| <= R on luma; the analysis network fills the other channels.
  decoder:  the flow delta gains those two dequantized channels, upsampled to pixels (nearest, or
            bilinear between block centres with `config.block_motion_upsample`):
            f_t = m * f_bar + delta_net + up16(y_hat[..., :2]).

Both halves code nothing new: the two channels are ordinary latents of the flow codelayer, so the
hyperprior learns their distribution and Q_w their precision, and the bitstream format does not
change (the model id does, through the config). The search runs in the encoder only, like motion
estimation in any codec; decoders never repeat it.

Rate awareness: the search minimizes MAD + penalty (|dx| + |dy|), the penalty standing in for the
bits of a vector. A vector's bits matter more at low rates, so with `config.motion_search_penalty_top`
set the penalty follows the level (level_penalty): motion_search_penalty at level 0,
motion_search_penalty_top at the top, geometric in between, like the lambdas of §4.1. The flow
encoder receives only the level embedding, and reads the level back from it exactly
(model/level.py, level_from_embedding), so the exported subgraphs keep their inputs.

Sign convention (the warp's, model/warp.py): x_comp(p) = x_hat_{t-1}(p + f(p)), so a block whose
content moved right by 3 px between the reference and the target gets dx = -3.
"""

from __future__ import annotations

import math

import tensorflow as tf

from model.config import MOTION_SEARCH_PENALTY, ModelConfig
from model.level import level_from_embedding
from model.npmath import MOTION_BLOCK

#: Motion block size: the stride of the flow codelayer's latent grid (§3.2's 16x; model/npmath.py).
BLOCK = MOTION_BLOCK
#: Default cost added per pixel of |dx| + |dy| (in mean absolute luma difference, pixels in
#: [0, 1]; `config.motion_search_penalty`): ties and near-ties in flat areas go to the shorter
#: vector, which costs fewer bits.
MOTION_PENALTY = MOTION_SEARCH_PENALTY


def _luma(image):
    return tf.reduce_mean(image, axis=-1, keepdims=True)


def _edge_padded(image, radius: int):
    """[B, H, W, 1] -> [B, H + 2R, W + 2R, 1] with borders repeated, as the warp clamps to edges."""
    height, width = tf.shape(image)[1], tf.shape(image)[2]
    rows = tf.clip_by_value(tf.range(-radius, height + radius), 0, height - 1)
    cols = tf.clip_by_value(tf.range(-radius, width + radius), 0, width - 1)
    return tf.gather(tf.gather(image, rows, axis=1), cols, axis=2)


def block_motion_search(target, reference, radius: int, penalty: float = MOTION_PENALTY):
    """Exhaustive integer block search: [B, H, W, 3] x 2 -> [B, H/16, W/16, 2] (dx, dy) pixels.

    Each 16x16 block of `target` gets the shift s minimizing mean |luma(target(p)) -
    luma(reference(p + s))| + penalty (|dx| + |dy|) over |dx|, |dy| <= radius; the
    reference is edge-clamped outside the frame. `penalty` is a number >= 0 or a [B] tensor (one
    per example). H and W must be multiples of 16. No gradient.
    """
    if radius < 1:
        raise ValueError(f"motion search radius must be >= 1, got {radius}")
    if not tf.is_tensor(penalty) and penalty < 0:  # a [B] tensor comes from level_penalty (> 0).
        raise ValueError(f"motion search penalty must be >= 0, got {penalty}")
    target = tf.stop_gradient(_luma(tf.convert_to_tensor(target, tf.float32)))
    reference = tf.stop_gradient(_luma(tf.convert_to_tensor(reference, tf.float32)))
    height, width = tf.shape(target)[1], tf.shape(target)[2]
    padded = _edge_padded(reference, radius)
    span = range(-radius, radius + 1)
    # Every horizontal shift reference(p + (dx, 0)) as one channel (2R + 1 slices); the block
    # costs then one row of shifts dy at a time, channel (dy + R) (2R + 1) + (dx + R). Row by row,
    # not all (2R + 1)^2 candidates at once: the full [B, H, W, 289] volume is 117 MB at CIF and
    # the search ran 2.7x slower through memory (same costs, same vectors; docs/BENCHMARKS.md).
    columns = tf.concat([padded[:, :, radius + dx : radius + dx + width] for dx in span], axis=-1)
    block_costs = [
        tf.nn.avg_pool2d(tf.abs(target - columns[:, radius + dy : radius + dy + height]), BLOCK, BLOCK, "VALID")
        for dy in span
    ]
    vectors = [(float(dx), float(dy)) for dy in span for dx in span]
    norms = tf.constant([abs(dx) + abs(dy) for dx, dy in vectors], tf.float32)
    lengths = tf.reshape(tf.cast(penalty, tf.float32), [-1, 1, 1, 1]) * norms  # [1 or B, 1, 1, K]
    costs = tf.concat(block_costs, axis=-1) + lengths
    best = tf.argmin(costs, axis=-1)
    return tf.gather(tf.constant(vectors, tf.float32), best)


def level_penalty(config: ModelConfig, embedding):
    """The search penalty of each example: [B, E] level embeddings -> [B] penalties, or the
    constant `config.motion_search_penalty` (a number) when no top-level penalty is set.

    penalty(l) = p_0 (p_top / p_0)^(l / (L - 1)), l read back from the embedding.
    """
    if config.motion_search_penalty_top is None:
        return config.motion_search_penalty
    first = config.motion_search_penalty
    level = level_from_embedding(embedding, config.levels)
    return first * tf.exp(math.log(config.motion_search_penalty_top / first) * level / config.max_level)


def upsample_blocks(field, mode: str = "nearest"):
    """[B, h, w, C] per-16x16-block values -> [B, 16 h, 16 w, C]: each block constant ("nearest"),
    or interpolated bilinearly between block centres, the outer half-blocks held at their block's
    value ("bilinear": half-pixel centres, edges clamped; torch's align_corners=False)."""
    if mode == "bilinear":
        size = tf.shape(field)[1:3] * BLOCK
        return tf.cast(tf.image.resize(field, size, method="bilinear"), field.dtype)
    if mode != "nearest":
        raise ValueError(f"upsample_blocks: unknown mode {mode!r}")
    # depth_to_space reads channel (i * 16 + j) * C + c for offset (i, j): a tiled field gives c.
    return tf.nn.depth_to_space(tf.tile(field, [1, 1, 1, BLOCK * BLOCK]), BLOCK)
