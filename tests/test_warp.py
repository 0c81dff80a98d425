"""Scale-space warp: identity, integer shifts, and blur growing with sigma."""

import numpy as np
import tensorflow as tf

from model.warp import scale_space_warp


def _image(h=48, w=64, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(size=(2, h, w, 3)), tf.float32)


def test_zero_flow_is_identity():
    image = _image()
    out = scale_space_warp(image, tf.zeros([2, 48, 64, 3]))
    np.testing.assert_array_equal(out.numpy(), image.numpy())


def test_integer_shift_equals_roll_away_from_borders():
    image = _image()
    dx, dy = 3, -2
    flow = tf.concat([tf.fill([2, 48, 64, 1], float(dx)), tf.fill([2, 48, 64, 1], float(dy)), tf.zeros([2, 48, 64, 1])], -1)
    out = scale_space_warp(image, flow).numpy()
    # out[i, j] = image[i + dy, j + dx]  <=>  roll by (-dy, -dx).
    rolled = np.roll(image.numpy(), shift=(-dy, -dx), axis=(1, 2))
    inner = (slice(None), slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(out[inner], rolled[inner], atol=1e-6)


def test_growing_sigma_lowers_high_frequency_energy():
    image = _image(64, 64, seed=3)
    energies = []
    for sigma in [0.0, 0.5, 1.0, 1.5, 3.0, 6.0]:
        flow = tf.concat([tf.zeros([2, 64, 64, 2]), tf.fill([2, 64, 64, 1], sigma)], -1)
        out = scale_space_warp(image, flow).numpy()
        spectrum = np.abs(np.fft.fft2(out, axes=(1, 2))) ** 2
        freq = np.fft.fftfreq(64)
        high = (np.abs(freq)[:, None] > 0.25) | (np.abs(freq)[None, :] > 0.25)
        energies.append(spectrum[:, high].sum())
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_warp_gradients_reach_flow():
    image = _image()
    flow = tf.Variable(tf.fill([2, 48, 64, 3], 0.3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(scale_space_warp(image, flow) ** 2)
    grad = tape.gradient(loss, flow).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
