"""Eq. 1-3, §4.1's lambdas and level random walk, and App. D's loss modulator."""

import math

import numpy as np
import pytest
import tensorflow as tf

from model.losses import (
    LAMBDA_RANGES,
    LossModulator,
    ModulatorConfig,
    lambdas,
    level_random_walk,
    ms_ssim_distortion,
    ms_ssim_scales,
    multilevel_loss,
    per_frame_level_sums,
    psnr_from_mse,
)


def test_lambdas_are_log_spaced_over_the_papers_ranges():
    low = lambdas(LAMBDA_RANGES["low"], 8)
    np.testing.assert_allclose(np.log10(low[[0, -1]]), [-1.7, -3.7], rtol=1e-5)
    np.testing.assert_allclose(np.diff(np.log10(low)), -2.0 / 7, rtol=1e-4)
    high = lambdas(LAMBDA_RANGES["high"], 8)
    np.testing.assert_allclose(np.log10(high[[0, -1]]), [-3, -5], rtol=1e-5)
    assert lambdas((0.1, 0.01), 1).tolist() == pytest.approx([0.1])
    with pytest.raises(ValueError, match="positive"):
        lambdas((0.0, 1e-3), 8)


def test_level_walk_starts_uniform_and_steps_like_a_rounded_gaussian():
    rng = np.random.default_rng(0)
    walks = level_random_walk(rng, 40000, 4, 8)
    assert walks.dtype == np.int32 and walks.min() >= 0 and walks.max() <= 7
    counts = np.bincount(walks[:, 0], minlength=8)
    assert np.all(np.abs(counts / len(walks) - 1 / 8) < 0.01)  # l_0 uniform
    steps = np.diff(walks, axis=1)
    assert np.all(np.abs(steps) <= 3)
    # Away from the clip at 0 and L-1, a step happens iff |N(0, 0.5)| > 0.5: P = 2 (1 - Phi(1)).
    interior = (walks[:, :-1] >= 2) & (walks[:, :-1] <= 5)
    changed = np.mean(steps[interior] != 0)
    assert changed == pytest.approx(1 - math.erf(1 / math.sqrt(2)), abs=0.01)
    # and it is symmetric
    assert abs(np.mean(steps[interior])) < 0.01


def test_multilevel_loss_is_eq_3():
    rng = np.random.default_rng(1)
    dist = rng.uniform(0, 0.01, [2, 3]).astype(np.float32)
    bpp = rng.uniform(0, 1, [2, 3]).astype(np.float32)
    levels = np.array([[0, 1, 1], [7, 6, 7]], np.int32)
    mu = rng.uniform(1, 10, [3, 8]).astype(np.float32)
    lam = lambdas(LAMBDA_RANGES["low"], 8)
    loss = multilevel_loss(dist, bpp, levels, mu, lam, global_batch=2).numpy()
    expected = np.mean([
        mu[t, levels[b, t]] * (dist[b, t] + lam[levels[b, t]] / mu[t, levels[b, t]] * bpp[b, t])
        for b in range(2) for t in range(3)
    ])
    assert loss == pytest.approx(expected, rel=1e-5)
    # A replica holding half of a global batch of 4 contributes half as much per element.
    half = multilevel_loss(dist, bpp, levels, mu, lam, global_batch=4).numpy()
    assert half == pytest.approx(expected / 2, rel=1e-5)


def test_per_frame_level_sums_scatter_by_level():
    values = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    levels = tf.constant([[0, 2], [0, 1]])
    sums, counts = per_frame_level_sums(values, levels, 3)
    np.testing.assert_array_equal(sums.numpy(), [[4, 0, 0], [0, 4, 2]])
    np.testing.assert_array_equal(counts.numpy(), [[2, 0, 0], [0, 1, 1]])


def _feed(modulator, iframe_mse, pframe_mse, level=3, steps=1):
    gop, levels = modulator.gop, modulator.num_levels
    sums = np.zeros([gop, levels], np.float32)
    counts = np.zeros([gop, levels], np.float32)
    sums[0, level], counts[0, level] = iframe_mse, 1
    sums[1:, level], counts[1:, level] = pframe_mse, 1
    for _ in range(steps):
        modulator.update(tf.constant(sums), tf.constant(counts))


def test_modulator_threshold_is_176_db():
    assert ModulatorConfig().delta_db == pytest.approx(1.76, abs=0.005)


def test_modulator_raises_mu_of_lagging_pframes_only():
    modulator = LossModulator(3, 8, ModulatorConfig(step=0.5))
    # P-frame MSE 2x the I-frame's (PSNR 3 dB lower > 1.76 dB): mu_t grows.
    _feed(modulator, 0.001, 0.002, steps=4)
    mu = modulator.mu.numpy()
    np.testing.assert_allclose(mu[1:, 3], 3.0)
    np.testing.assert_array_equal(mu[0], 1.0)  # I-frame fixed at 1
    np.testing.assert_array_equal(np.delete(mu, 3, axis=1), 1.0)  # unseen levels untouched
    # Then the P-frames catch up (1.2x < 1.5x): mu falls back, never below 1.
    _feed(modulator, 0.001, 0.0012, steps=200)
    np.testing.assert_allclose(modulator.mu.numpy()[1:, 3], 1.0)


def test_modulator_clips_mu_at_10_and_can_be_disabled():
    modulator = LossModulator(2, 8, ModulatorConfig(step=1.0, decay=0.0))
    _feed(modulator, 0.001, 0.01, steps=30)
    assert modulator.mu.numpy()[1, 3] == 10.0
    off = LossModulator(2, 8, ModulatorConfig(step=1.0, enabled=False))
    _feed(off, 0.001, 0.01, steps=5)
    np.testing.assert_array_equal(off.mu.numpy(), 1.0)
    assert off.average.numpy()[1, 3] == pytest.approx(0.01)  # averages still tracked


def test_modulator_state_is_checkpointed(tmp_path):
    modulator = LossModulator(2, 8, ModulatorConfig(step=0.5))
    _feed(modulator, 0.001, 0.01, steps=3)
    path = tf.train.Checkpoint(modulator=modulator).write(str(tmp_path / "m"))
    fresh = LossModulator(2, 8)
    tf.train.Checkpoint(modulator=fresh).read(path).assert_consumed()
    np.testing.assert_array_equal(fresh.mu.numpy(), modulator.mu.numpy())
    np.testing.assert_array_equal(fresh.average.numpy(), modulator.average.numpy())


def test_psnr_and_ms_ssim():
    assert psnr_from_mse(1e-3) == pytest.approx(30.0)
    assert float(psnr_from_mse(tf.constant(1e-4))) == pytest.approx(40.0, rel=1e-5)
    assert ms_ssim_scales(128, 128) == 4 and ms_ssim_scales(256, 256) == 5 and ms_ssim_scales(64, 64) == 3
    x = tf.random.stateless_uniform([1, 2, 128, 128, 3], seed=[1, 1])
    same = ms_ssim_distortion(x, x).numpy()
    np.testing.assert_allclose(same, 0.0, atol=1e-5)
    noisy = ms_ssim_distortion(x, tf.clip_by_value(x + 0.1 * tf.random.stateless_normal(x.shape, [2, 2]), 0, 1)).numpy()
    assert noisy.shape == (1, 2) and np.all(noisy > 0.01) and np.all(noisy <= 1.0)
