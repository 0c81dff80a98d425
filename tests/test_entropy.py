"""App. A codelength against an independent computation, and the quantizer modes."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from model.entropy import QuantMode, app_a_codelength, quantize


def test_codelength_matches_scipy_gaussian_mass():
    rng = np.random.default_rng(0)
    n = 4000
    qw = rng.uniform(0.3, 3.0, n)
    sigma = rng.uniform(0.2, 20.0, n) * qw
    mu = rng.normal(0, 5, n)
    q = qw * np.round(rng.normal(mu, sigma * 1.5) / qw)
    expected = -np.log2(
        stats.norm.cdf((q - mu + qw / 2) / sigma) - stats.norm.cdf((q - mu - qw / 2) / sigma)
    )
    keep = expected < 15.5  # above this the 2^-16 likelihood floor (16 bits) is near; tested apart.
    got = app_a_codelength(*(tf.constant(a[keep], tf.float64) for a in (q, mu, sigma, qw))).numpy()
    np.testing.assert_allclose(got, expected[keep], rtol=1e-4)
    got32 = app_a_codelength(*(tf.constant(a[keep], tf.float32) for a in (q, mu, sigma, qw))).numpy()
    np.testing.assert_allclose(got32, expected[keep], rtol=1e-3, atol=1e-4)


def test_codelength_is_floored_far_in_the_tail():
    bits = app_a_codelength(tf.constant(1e4), tf.constant(0.0), tf.constant(1.0), tf.constant(1.0))
    np.testing.assert_allclose(bits.numpy(), 16.0, rtol=1e-5)  # the range coder's 16-bit floor


def test_round_mode_is_exact_grid_and_has_no_noise():
    y = tf.constant(np.random.default_rng(1).normal(0, 4, 1000), tf.float32)
    mean = tf.constant(0.3)
    y_hat, v = quantize(y, mean, 0.5, QuantMode.ROUND)
    k = (y_hat - mean) / 0.5
    np.testing.assert_allclose(k.numpy(), np.round(k.numpy()), atol=1e-5)
    np.testing.assert_array_equal(v.numpy(), np.round(v.numpy()))
    y_hat2, _ = quantize(y, mean, 0.5, QuantMode.ROUND)
    np.testing.assert_array_equal(y_hat.numpy(), y_hat2.numpy())


def test_noise_mode_perturbs_rate_only_and_ste_gradient_is_one():
    y = tf.Variable(np.linspace(-3, 3, 101), dtype=tf.float32)
    with tf.GradientTape() as tape:
        y_hat, v = quantize(y, 0.0, 1.0, QuantMode.NOISE)
        loss = tf.reduce_sum(y_hat)
    np.testing.assert_array_equal(y_hat.numpy(), np.round(y.numpy()))  # decoder sees rounded values
    assert np.all(np.abs(v.numpy() - y.numpy()) <= 0.5) and np.any(v.numpy() != np.round(v.numpy()))
    np.testing.assert_array_equal(tape.gradient(loss, y).numpy(), np.ones(101))


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="quantization mode"):
        QuantMode.parse("float")
