"""App. C channel normalization: tracks statistics, then freezes."""

import numpy as np
import tensorflow as tf

from model.layers import ChannelNorm


def test_channel_norm_tracks_then_freezes():
    step = tf.Variable(0, dtype=tf.int64)
    norm = ChannelNorm(step, freeze_step=5)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(3.0, 2.0, (4, 8, 8, 6)), tf.float32)
    for i in range(5):
        step.assign(i)
        norm(x, training=True)
    np.testing.assert_allclose(norm.moving_mean.numpy(), x.numpy().mean(axis=(0, 1, 2)), rtol=1e-4)
    out = norm(x, training=False).numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    frozen_mean = norm.moving_mean.numpy().copy()
    frozen_var = norm.moving_variance.numpy().copy()
    step.assign(5)  # at the freeze step: no more updates, even with very different data.
    for _ in range(3):
        norm(x * 10.0 + 7.0, training=True)
        step.assign_add(1)
    np.testing.assert_array_equal(norm.moving_mean.numpy(), frozen_mean)
    np.testing.assert_array_equal(norm.moving_variance.numpy(), frozen_var)


def test_channel_norm_does_not_update_outside_training():
    step = tf.Variable(0, dtype=tf.int64)
    norm = ChannelNorm(step, freeze_step=100)
    x = tf.ones([1, 4, 4, 2]) * 5.0
    norm(x, training=False)
    np.testing.assert_array_equal(norm.moving_mean.numpy(), [0.0, 0.0])


def test_channel_norm_updates_inside_tf_function():
    step = tf.Variable(0, dtype=tf.int64)
    norm = ChannelNorm(step, freeze_step=2)
    fn = tf.function(lambda x: norm(x, training=True))
    fn(tf.ones([1, 4, 4, 2]) * 3.0)
    np.testing.assert_allclose(norm.moving_mean.numpy(), [3.0, 3.0])
    step.assign(2)
    fn(tf.ones([1, 4, 4, 2]) * 9.0)
    np.testing.assert_allclose(norm.moving_mean.numpy(), [3.0, 3.0])
