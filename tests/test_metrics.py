"""runtime/metrics.py: PSNR (RGB and YUV 6:1:1), MS-SSIM and VMAF against known properties."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
from scipy import ndimage

from runtime import metrics
from runtime.metrics import MetricError
from conftest import bikes_path


def _const_clip(shape, value):
    return np.full(shape, value, np.uint8)


def test_psnr_rgb_of_a_known_error():
    ref = _const_clip((2, 8, 8, 3), 100)
    dist = ref.copy()
    dist[0] += 1  # MSE 1 -> 10 log10(255^2) = 48.1308 dB
    dist[1] += 4  # MSE 16 -> 48.1308 - 12.0412 dB
    got = metrics.psnr_rgb(ref, dist)
    assert got == pytest.approx([10 * math.log10(255**2), 10 * math.log10(255**2 / 16)], abs=1e-9)
    assert metrics.psnr_rgb(ref, ref).tolist() == [math.inf, math.inf]


def test_psnr_yuv420_weights_planes_six_one_one():
    t, h, w = 2, 6, 10
    ref = (_const_clip((t, h, w), 90), _const_clip((t, 3, 5), 120), _const_clip((t, 3, 5), 130))
    dist = (ref[0] + 2, ref[1] + 1, ref[2] - 4)  # plane MSE 4, 1, 16
    got = metrics.psnr_yuv420(ref, dist)
    p = lambda mse: 10 * math.log10(255**2 / mse)  # noqa: E731
    assert got.y == pytest.approx([p(4)] * t)
    assert got.u == pytest.approx([p(1)] * t)
    assert got.v == pytest.approx([p(16)] * t)
    assert got.weighted == pytest.approx([(6 * p(4) + p(1) + p(16)) / 8] * t)


def test_odd_sized_yuv_planes_and_bad_inputs():
    ref = (_const_clip((1, 5, 7), 1), _const_clip((1, 3, 4), 1), _const_clip((1, 3, 4), 1))
    assert metrics.psnr_yuv420(ref, ref).weighted[0] == math.inf
    with pytest.raises(MetricError, match="chroma planes must be"):
        metrics.psnr_yuv420(ref, (ref[0], ref[1][:, :2], ref[2]))
    with pytest.raises(MetricError, match="shapes differ"):
        metrics.psnr_rgb(_const_clip((1, 4, 4, 3), 0), _const_clip((1, 4, 5, 3), 0))
    with pytest.raises(MetricError, match="uint8"):
        metrics.psnr_rgb(np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(MetricError, match="too small"):
        metrics.ms_ssim(_const_clip((1, 160, 400, 3), 0), _const_clip((1, 160, 400, 3), 0))


def test_ms_ssim_identity_monotonicity_and_symmetry(bikes_frames):
    ref = bikes_frames[:1]
    assert metrics.ms_ssim(ref, ref)[0] == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    scores = []
    for sigma in (2.0, 8.0, 24.0):
        noisy = np.clip(ref + rng.normal(0, sigma, ref.shape), 0, 255).astype(np.uint8)
        scores.append(metrics.ms_ssim(ref, noisy)[0])
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0
    assert metrics.ms_ssim(noisy, ref)[0] == pytest.approx(scores[2], abs=1e-12)


def test_ms_ssim_matches_tensorflow(bikes_frames):
    """Independent reference: tf.image.ssim_multiscale (same weights, window and padding).

    TF computes in float32, so the two differ by float32 cancellation error only (about 1e-5
    on these frames; in float64 the two agree to 1e-15)."""
    import tensorflow as tf

    ref = bikes_frames[:2, :, :333]  # an odd width exercises the symmetric padding
    blurred = ndimage.gaussian_filter(ref.astype(np.float64), (0, 2.0, 2.0, 0))
    dist = np.clip(np.round(blurred), 0, 255).astype(np.uint8)
    expected = tf.image.ssim_multiscale(tf.constant(ref), tf.constant(dist), 255).numpy()
    got = metrics.ms_ssim(ref, dist)
    assert expected.max() < 0.995  # the distortion is not negligible
    np.testing.assert_allclose(got, expected, atol=1e-4)


def _bikes_yuv(count: int):
    """The first frames of bikes.mp4 as yuv420p planes, decoded by ffmpeg."""
    width, height = 640, 272
    raw = subprocess.run(
        [metrics.ffmpeg_exe(), "-v", "error", "-i", str(bikes_path()), "-frames:v", str(count),
         "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
        capture_output=True, check=True,
    ).stdout
    frame = width * height * 3 // 2
    data = np.frombuffer(raw, np.uint8).reshape(count, frame)
    y = data[:, : width * height].reshape(count, height, width)
    u = data[:, width * height : width * height * 5 // 4].reshape(count, height // 2, width // 2)
    v = data[:, width * height * 5 // 4 :].reshape(count, height // 2, width // 2)
    return y, u, v


def test_vmaf_built_in_model_orders_distortions():
    """libvmaf's built-in model runs offline; the score falls as the blur grows."""
    y, u, v = _bikes_yuv(3)
    ref = (y, u, v)
    scores = [metrics.vmaf(ref, ref).mean()]
    for sigma in (1.0, 2.5):
        blurred = np.clip(np.round(ndimage.gaussian_filter(y.astype(float), (0, sigma, sigma))), 0, 255)
        scores.append(metrics.vmaf(ref, (blurred.astype(np.uint8), u, v)).mean())
    assert scores[0] > 95.0
    assert scores[0] > scores[1] > scores[2]
    with pytest.raises(MetricError, match="shapes differ"):
        metrics.vmaf(ref, (y[:2], u[:2], v[:2]))


# -- block edges ------------------------------------------------------------------------------
def test_block_edge_ratio_of_known_pictures():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (3, 256, 256, 3)).astype(np.uint8)
    # i.i.d. pixels: the pairs across the grid and inside it have one distribution (the ratio's
    # spread over 256 x 15 pairs per axis is ~0.02; 0.1 is five of it).
    assert np.all(np.abs(metrics.block_edge_ratio(noise) - 1.0) < 0.1)
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, None, :, None], (1, 48, 1, 3))
    assert metrics.block_edge_ratio(ramp) == pytest.approx([1.0])  # equal steps everywhere
    flat_blocks = np.repeat(np.repeat(rng.integers(0, 256, (1, 4, 4, 3)), 16, 1), 16, 2).astype(np.uint8)
    assert metrics.block_edge_ratio(flat_blocks) == [np.inf]
    assert metrics.block_edge_ratio(flat_blocks[:, 8:-8, 8:-8]) == [0.0]  # off the grid: steps only inside blocks
    assert metrics.block_edge_ratio(flat_blocks, block=8) == [np.inf]  # a 16-pixel grid lies on the 8-pixel one


def test_block_edge_ratio_grows_with_the_step_at_the_grid():
    rng = np.random.default_rng(1)
    texture = rng.normal(128, 8, (1, 128, 128, 1)).repeat(3, axis=-1)
    offsets = rng.normal(0, 1, (1, 8, 8, 1)).repeat(16, 1).repeat(16, 2)  # one offset per 16x16 block
    scores = [metrics.block_edge_ratio(np.clip(texture + a * offsets, 0, 255).round().astype(np.uint8))[0]
              for a in (0, 4, 8, 16)]  # fmt: skip
    assert abs(scores[0] - 1) < 0.1 and all(a < b for a, b in zip(scores, scores[1:])), scores


def test_block_edge_ratio_bad_inputs():
    good = np.zeros((1, 32, 32, 3), np.uint8)
    for frames, block, message in [(good.astype(np.float32), 16, "uint8"), (good[..., 0], 16, "uint8"),
                                   (good[:, :31], 16, "smaller than two"), (good, 1, "integer >= 2"),
                                   (good[:0], 16, "uint8")]:  # fmt: skip
        with pytest.raises(MetricError, match=message):
            metrics.block_edge_ratio(frames, block)
