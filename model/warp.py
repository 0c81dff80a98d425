"""Scale-space flow warping (§2, after Agustsson et al. 2020, the paper's reference [2]).

A flow has three channels (dx, dy, sigma) in pixel units. The previous reconstruction is blurred
into a Gaussian scale-space volume (copies at sigma = 0, s0, 2 s0, 4 s0, ...), and each output
pixel samples it at (x + dx, y + dy, sigma): bilinearly in space, linearly in scale.

Coordinates stay in pixels and in float32 (see DESIGN.md: FP16 cannot address pixel positions past
1024 finely enough, and normalized coordinates break when the frame size changes). The sampler is
gather-based so that it exports through tf2onnx (opset 17) and matches TF in ONNX Runtime.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from model.npmath import gaussian_kernel_1d, scale_space_sigmas  # noqa: F401  (scale_space_sigmas: re-exported)




def _symmetric_correlation(x, kernel, height, width):
    """VALID correlation of [B, height + 2r, width + 2r, C] with the symmetric 1-D `kernel` (2r + 1
    taps, numpy) along x, then y, as sums of shifted slices: k_r x_r + sum_t k_t (x_t + x_(2r-t)).

    Why not depthwise_conv2d: TensorFlow's CPU depthwise kernel ran these 3-channel, 9-49 tap
    blurs at under 1 GFLOP/s (an AVX2 EPYC: 160 of a CIF flow decode's 290 ms went to the four
    blurs); the sliced sums are memory-bound element-wise work, 3x faster at CIF, and equal to
    it within float rounding (docs/BENCHMARKS.md "Speed floor").
    """
    radius = (len(kernel) - 1) // 2

    def along(values, size, shift):
        terms = [float(kernel[radius]) * shift(values, radius, size)]
        for t in range(radius):
            terms.append(float(kernel[t]) * (shift(values, t, size) + shift(values, 2 * radius - t, size)))
        return tf.add_n(terms)

    rows = along(x, width, lambda v, t, n: v[:, :, t : t + n])
    return along(rows, height, lambda v, t, n: v[:, t : t + n])


_SLICED = [False]


@contextlib.contextmanager
def sliced_blur():
    """Within it, gaussian_blur builds the sliced sums (_symmetric_correlation) instead of TensorFlow's
    depthwise convolution: the same values within float rounding (3e-7), 3x faster to run on the
    CPU, but ~100 graph nodes per blur instead of 2.

    What runs a graph many times takes it: the runtime's TF backend (export/subgraphs.py,
    `sliced_blur=True`), where it saves ~110 ms of a CIF flow decode for ~1.3 s more tracing once
    per process. Outside it, the default: the Keras trainer, whose training step took 50 s longer
    to trace with the slices and ran no faster (the warp alone 2x, the whole `base` step 0.31-0.36
    against 0.30-0.35 steps/s, batch 4 x GOP 4 x 128^2), and the ONNX exporter, whose
    tf2onnx passes slowed 6x on the flow synthesis (the GridSample lowering replaces the warp
    anyway). A tf.function keeps the graph of its first trace."""
    previous = _SLICED[0]
    _SLICED[0] = True
    try:
        yield
    finally:
        _SLICED[0] = previous


def _depthwise_blur(padded, kernel, channels: int):
    kernel = tf.constant(kernel, tf.float32)
    kx = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    ky = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "VALID")


def gaussian_blur(image, sigma: float):
    """Separable Gaussian blur of [B, H, W, C]; borders are mirrored (SYMMETRIC padding)."""
    if sigma <= 0.0:
        return image
    kernel = gaussian_kernel_1d(sigma)
    radius = (len(kernel) - 1) // 2
    padded = tf.pad(image, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    if not _SLICED[0]:
        return _depthwise_blur(padded, kernel, image.shape[-1])
    shape = tf.shape(image)
    return _symmetric_correlation(padded, kernel, shape[1], shape[2])


def bilinear_sample(image, x, y):
    """Samples `image` [B, H, W, C] at float pixel coordinates x, y [B, H, W], clamping to edges."""
    shape = tf.shape(image)
    batch, height, width = shape[0], shape[1], shape[2]
    x = tf.clip_by_value(x, 0.0, tf.cast(width - 1, tf.float32))
    y = tf.clip_by_value(y, 0.0, tf.cast(height - 1, tf.float32))
    x0 = tf.floor(x)
    y0 = tf.floor(y)
    wx = (x - x0)[..., None]
    wy = (y - y0)[..., None]
    x0i = tf.cast(x0, tf.int32)
    y0i = tf.cast(y0, tf.int32)
    x1i = tf.minimum(x0i + 1, width - 1)
    y1i = tf.minimum(y0i + 1, height - 1)
    flat = tf.reshape(image, [batch, height * width, -1])

    def gather(yi, xi):
        index = tf.reshape(yi * width + xi, [batch, -1])
        values = tf.gather(flat, index, batch_dims=1)
        return tf.reshape(values, tf.concat([tf.shape(x), [-1]], 0))

    top = gather(y0i, x0i) * (1.0 - wx) + gather(y0i, x1i) * wx
    bottom = gather(y1i, x0i) * (1.0 - wx) + gather(y1i, x1i) * wx
    return top * (1.0 - wy) + bottom * wy


def scale_space_warp(image, flow, levels: int = 5, sigma0: float = 1.0):
    """Warps `image` [B, H, W, C] by `flow` [B, H, W, 3] = (dx, dy, sigma) in pixels.

    Output pixel (i, j) takes the scale-space volume at (j + dx, i + dy, sigma); sigma is clipped
    to the volume's range. Zero flow returns `image` exactly.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    flow = tf.cast(flow, tf.float32)
    shape = tf.shape(image)
    height, width = shape[1], shape[2]
    grid_y, grid_x = tf.meshgrid(
        tf.range(tf.cast(height, tf.float32)), tf.range(tf.cast(width, tf.float32)), indexing="ij"
    )
    x = grid_x[None] + flow[..., 0]
    y = grid_y[None] + flow[..., 1]
    sigmas = scale_space_sigmas(levels, sigma0)
    sigma = tf.clip_by_value(flow[..., 2], 0.0, sigmas[-1])
    # One bilinear sample of the whole volume (the levels stacked on channels): every level is
    # sampled at the same (x, y), so 4 gathers serve all levels, with the same arithmetic per value.
    channels = image.shape[-1]
    sampled = bilinear_sample(tf.concat([gaussian_blur(image, s) for s in sigmas], axis=-1), x, y)
    out = tf.zeros_like(image)
    for k, s in enumerate(sigmas):
        # Linear interpolation in scale: a hat function around sigma_k on the sigma axis.
        lo = sigmas[k - 1] if k > 0 else None
        hi = sigmas[k + 1] if k + 1 < len(sigmas) else None
        weight = tf.ones_like(sigma)
        if lo is not None:
            weight = tf.where(sigma < s, (sigma - lo) / (s - lo), weight)
        if hi is not None:
            weight = tf.where(sigma > s, (hi - sigma) / (hi - s), weight)
        weight = tf.clip_by_value(weight, 0.0, 1.0)
        out += weight[..., None] * sampled[..., k * channels : (k + 1) * channels]
    return out
