"""App. E level embedding (eq. 4-8) and the per-level quantization-width interpolation."""

import numpy as np
import pytest
import tensorflow as tf

from model.level import interpolate_rows, level_embedding, level_from_embedding


@pytest.mark.parametrize("num_levels", [2, 5, 8])
def test_embedding_is_one_hot_when_dims_match(num_levels):
    levels = np.arange(num_levels, dtype=np.float32)
    emb = level_embedding(levels, num_levels, num_levels).numpy()
    np.testing.assert_array_equal(emb, np.eye(num_levels, dtype=np.float32))


@pytest.mark.parametrize("num_levels,dim", [(8, 8), (8, 4), (32, 8), (8, 3)])
def test_embedding_is_convex_combination(num_levels, dim):
    levels = np.linspace(0, num_levels - 1, 97).astype(np.float32)
    emb = level_embedding(levels, num_levels, dim).numpy()
    assert np.all(emb >= 0)
    np.testing.assert_allclose(emb.sum(axis=1), 1.0, atol=1e-6)
    # At most two adjacent non-zero entries (a linear interpolation of neighbouring one-hots).
    for row in emb:
        nz = np.flatnonzero(row > 1e-7)
        assert len(nz) <= 2 and (len(nz) < 2 or nz[1] - nz[0] == 1)


@pytest.mark.parametrize("num_levels,dim", [(8, 8), (8, 4), (32, 8)])
def test_embedding_moves_monotonically_with_level(num_levels, dim):
    levels = np.linspace(0, num_levels - 1, 301).astype(np.float32)
    emb = level_embedding(levels, num_levels, dim).numpy()
    # The embedding's centre of mass is eq. (4)'s s: strictly increasing in the level.
    centre = emb @ np.arange(dim)
    np.testing.assert_allclose(centre, levels * (dim - 1) / (num_levels - 1), atol=1e-5)
    assert np.all(np.diff(centre) > 0)
    # Mass flows only forwards: the cumulative mass below any index never increases.
    cumulative = np.cumsum(emb, axis=1)
    assert np.all(np.diff(cumulative, axis=0) <= 1e-6)


def test_quant_width_interpolates_rows():
    table = tf.constant([[0.0, 1.0], [2.0, 3.0], [4.0, 7.0]])
    out = interpolate_rows(table, tf.constant([0.0, 0.5, 1.25, 2.0])).numpy()
    np.testing.assert_allclose(out, [[0, 1], [1, 2], [2.5, 4.0], [4, 7]], atol=1e-6)


@pytest.mark.parametrize("num_levels,dim", [(8, 8), (8, 4), (32, 8), (8, 3)])
def test_level_reads_back_from_its_embedding(num_levels, dim):
    levels = np.concatenate([np.arange(num_levels), np.linspace(0, num_levels - 1, 97)]).astype(np.float32)
    back = level_from_embedding(level_embedding(levels, num_levels, dim), num_levels).numpy()
    np.testing.assert_allclose(back, levels, atol=1e-5 * num_levels)


def test_a_single_level_model_reads_level_zero():
    emb = level_embedding(np.array([0.0, 0.0], np.float32), 1, 4)
    np.testing.assert_array_equal(level_from_embedding(emb, 1).numpy(), 0.0)


@pytest.mark.parametrize("num_levels,dim", [(8, 8), (8, 4), (32, 8), (1, 1), (5, 3)])
def test_graph_level_math_matches_the_numpy_one(num_levels, dim):
    """model/level.py (TF, in the graphs) against model/npmath.py (the host's, once for all layers)."""
    from model import npmath

    levels = np.linspace(0, num_levels - 1, 41)
    emb = level_embedding(levels.astype(np.float32), num_levels, dim).numpy()
    want = np.stack([npmath.level_embedding(float(np.float32(s)), num_levels, dim) for s in levels])
    np.testing.assert_allclose(emb, want, atol=1e-6)
    np.testing.assert_allclose(level_from_embedding(emb, num_levels).numpy(), npmath.level_from_embedding(want, num_levels),
                               atol=1e-5)
    table = np.log(np.linspace(4.0, 0.5, num_levels))[:, None] * np.ones((1, 3))
    got = np.exp(interpolate_rows(tf.constant(table, tf.float32), levels.astype(np.float32)).numpy())
    np.testing.assert_allclose(got, np.stack([npmath.quant_width(table, float(np.float32(s))) for s in levels]), rtol=1e-5)


def test_warp_kernel_and_sigmas_come_from_the_numpy_module():
    from model import npmath, warp

    assert warp.scale_space_sigmas(5, 1.0) == npmath.scale_space_sigmas(5, 1.0) == [0.0, 1.0, 2.0, 4.0, 8.0]
    for sigma in (0.5, 1.0, 2.0):  # radius <= 6: a centred impulse never reaches the borders
        kernel = npmath.gaussian_kernel_1d(sigma)
        r = npmath.gaussian_radius(sigma)
        assert kernel.size == 2 * r + 1 and abs(kernel.sum() - 1.0) < 1e-12
        image = np.zeros((1, 21, 21, 1), np.float32)
        image[0, 10, 10, 0] = 1.0
        blurred = warp.gaussian_blur(tf.constant(image), sigma).numpy()[0, :, :, 0]
        np.testing.assert_allclose(blurred[10 - r:11 + r, 10 - r:11 + r], np.outer(kernel, kernel), atol=1e-7)
