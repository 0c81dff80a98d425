"""Level conditioning: App. E's level embedding (eq. 4-8) and the level maps of §3.1.

A continuous level s in [0, L-1] selects a point on the R-D curve. It is embedded into an
L_e-dimensional vector that reduces to a one-hot when L_e = L and s is an integer, and
interpolates linearly between neighbouring one-hots otherwise. The vector is tiled spatially
("level map") and concatenated to the input of every encoder and decoder, and of the predictor.
"""

from __future__ import annotations

import tensorflow as tf


def interpolation_weights(position, size: int):
    """Eq. (5)-(7): (u, v, alpha, beta) for a continuous `position` on a grid of `size` points.

    u = floor(position), v = u + 1, alpha = v - position, beta = 1 - alpha. Weights on grid points
    outside [0, size) are dropped by the caller (onehot of an out-of-range index is zero).
    """
    position = tf.convert_to_tensor(position, tf.float32)
    u = tf.floor(position)
    v = u + 1.0
    d_u = position - u
    d_v = v - position
    alpha = d_v / (d_u + d_v)
    beta = 1.0 - alpha
    return tf.cast(u, tf.int32), tf.cast(v, tf.int32), alpha, beta


def level_embedding(level, num_levels: int, embedding_dim: int):
    """Eq. (4)-(8): embeds levels of shape [B] into [B, embedding_dim].

    Args:
      level: float levels in [0, num_levels - 1], shape [B] (or scalar).
      num_levels: L, the number of trained levels.
      embedding_dim: L_e.
    """
    level = tf.convert_to_tensor(level, tf.float32)
    if num_levels == 1:  # single-level model: the "embedding" is a constant.
        return tf.ones(tf.concat([tf.shape(level), [embedding_dim]], 0), tf.float32)
    s = level * (embedding_dim - 1) / (num_levels - 1)  # eq. (4)
    u, v, alpha, beta = interpolation_weights(s, embedding_dim)  # eq. (5)-(7)
    # eq. (8); tf.one_hot returns the zero vector for indices outside [0, depth), as onehot(a|b).
    return alpha[..., None] * tf.one_hot(u, embedding_dim) + beta[..., None] * tf.one_hot(v, embedding_dim)


def level_from_embedding(embedding, num_levels: int):
    """The inverse of eq. (4)-(8): [B, E] embeddings -> [B] levels.

    An embedding holds alpha at u and 1 - alpha at u + 1, so sum_i i e_i = u + 1 - alpha = s
    (eq. 4-7), and level = s (L - 1) / (L_e - 1). Exact for every level in [0, L - 1], fractional
    ones included; graphs that receive only the embedding (the exported subgraphs) read the level
    this way. A single-level model (L = 1 or L_e = 1) is always at level 0.
    """
    embedding = tf.convert_to_tensor(embedding, tf.float32)
    width = int(embedding.shape[-1])
    if num_levels == 1 or width == 1:
        return tf.zeros_like(embedding[:, 0])
    ramp = tf.range(width, dtype=tf.float32) * ((num_levels - 1) / (width - 1))
    return tf.reduce_sum(embedding * ramp, axis=-1)


def interpolate_rows(table, level):
    """Linearly interpolates rows of `table` [L, C] at continuous `level` [B] -> [B, C].

    Used for the per-level, per-channel quantization widths (§3.1): fractional levels
    blend the two neighbouring trained rows with eq. (5)-(7)'s weights.
    """
    num_rows = table.shape[0]
    level = tf.convert_to_tensor(level, tf.float32)
    if num_rows == 1:
        return tf.repeat(table, tf.size(level), axis=0)
    u, v, alpha, beta = interpolation_weights(level, num_rows)
    v = tf.minimum(v, num_rows - 1)  # at the top level beta is 0: any valid row will do.
    return alpha[:, None] * tf.gather(table, u) + beta[:, None] * tf.gather(table, v)


def level_map(embedding, like):
    """Tiles `embedding` [B, E] to the spatial size of `like` [B, H, W, C] -> [B, H, W, E]."""
    shape = tf.shape(like)
    return tf.tile(embedding[:, None, None, :], [1, shape[1], shape[2], 1])


def with_level_map(x, embedding):
    """Concatenates the tiled level map to `x` along channels."""
    return tf.concat([x, level_map(tf.cast(embedding, x.dtype), x)], axis=-1)
