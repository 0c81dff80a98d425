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


def test_blur_gradient_is_its_adjoint():
    """gaussian_blur in the TF backend's sliced form is linear, and its gradient must be its
    adjoint: <blur(y), g> = <y, grad_x <blur(x), g>> for any y; it equals autodiff through TF's
    depthwise convolution (the default form) and so do the values. Sigma 8 mirrors a 40-row frame
    twice."""
    from model.warp import gaussian_blur, sliced_blur

    rng = np.random.default_rng(8)
    for sigma, (height, width) in ((1.0, (24, 32)), (2.0, (17, 29)), (8.0, (40, 56))):
        x = tf.Variable(rng.normal(size=(2, height, width, 3)).astype(np.float32))
        y = rng.normal(size=(2, height, width, 3)).astype(np.float64)
        g = rng.normal(size=(2, height, width, 3)).astype(np.float32)
        with tf.GradientTape() as tape, sliced_blur():
            loss = tf.reduce_sum(gaussian_blur(x, sigma) * g)
        adjoint = tape.gradient(loss, x).numpy().astype(np.float64)
        with sliced_blur():
            sliced = gaussian_blur(x, sigma).numpy()
            forward = gaussian_blur(tf.constant(y, tf.float32), sigma).numpy().astype(np.float64)
        assert abs(np.sum(forward * g) - np.sum(y * adjoint)) < 1e-4 * np.sum(np.abs(forward * g)), sigma

        with tf.GradientTape() as tape:
            blurred = gaussian_blur(x, sigma)
            loss = tf.reduce_sum(blurred * g)
        np.testing.assert_allclose(tape.gradient(loss, x).numpy(), adjoint, atol=2e-5)
        np.testing.assert_allclose(blurred.numpy(), sliced, atol=1e-6)

    def traced_ops():
        function = tf.function(lambda t: gaussian_blur(t, 2.0))
        return {op.type for op in function.get_concrete_function(tf.TensorSpec([1, 32, 32, 3])).graph.get_operations()}

    with sliced_blur():
        assert "DepthwiseConv2dNative" not in traced_ops()
    assert "DepthwiseConv2dNative" in traced_ops()  # the default is back after the block


# -- the numpy mirror (model/npmath.py; the encoder's motion refinement estimates with it) ------
def test_numpy_blur_matches_tf():
    from model import npmath
    from model.warp import gaussian_blur

    image = _image(40, 56, seed=4).numpy()
    np.testing.assert_array_equal(npmath.gaussian_blur(image, 0.0), image)
    for sigma in (1.0, 2.0, 8.0):  # 8: a kernel wider than half the frame (mirrored twice over)
        np.testing.assert_allclose(npmath.gaussian_blur(image, sigma), gaussian_blur(image, sigma).numpy(), atol=1e-6)


def test_numpy_scale_space_warp_matches_tf():
    """Displacements past the borders, sigma below 0, on blur levels, between them and above the
    top: the numpy warp samples only the two levels around each pixel's sigma, and agrees."""
    from model import npmath

    rng = np.random.default_rng(5)
    image = _image(48, 64, seed=5).numpy()
    sigma = rng.uniform(-1.0, 10.0, size=(2, 48, 64, 1))
    sigma[:, :8] = 2.0  # exactly on a level
    flow = np.concatenate([rng.normal(0, 6, size=(2, 48, 64, 2)), sigma], -1).astype(np.float32)
    for levels, sigma0 in ((5, 1.0), (3, 0.5), (1, 1.0)):
        expected = scale_space_warp(image, flow, levels, sigma0).numpy()
        for b in range(2):
            volume = npmath.ScaleSpaceVolume(image[b], levels, sigma0)
            np.testing.assert_allclose(volume.warp(flow[b]), expected[b], atol=2e-5)
    small = np.concatenate([rng.normal(0, 2, size=(48, 64, 2)), rng.uniform(0, 0.9, size=(48, 64, 1))], -1)
    volume = npmath.ScaleSpaceVolume(image[0], 5, 1.0)
    volume.warp(small)
    assert sorted(volume._blurred) == [0, 1]  # sigma < 1 everywhere: the coarser levels never blurred


def test_numpy_upsample_blocks_matches_tf():
    from model import npmath
    from model.motion import upsample_blocks

    field = np.random.default_rng(6).normal(0, 3, size=(3, 5, 2)).astype(np.float32)
    for mode in ("nearest", "bilinear"):
        np.testing.assert_allclose(npmath.upsample_blocks(field, mode),
                                   upsample_blocks(tf.constant(field[None]), mode).numpy()[0], atol=1e-6)  # fmt: skip
    import pytest

    with pytest.raises(ValueError, match="unknown mode 'cubic'"):
        npmath.upsample_blocks(field, "cubic")
