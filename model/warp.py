"""Scale-space flow warping (§2, after Agustsson et al. 2020, the paper's reference [2]).

A flow has three channels (dx, dy, sigma) in pixel units. The previous reconstruction is blurred
into a Gaussian scale-space volume (copies at sigma = 0, s0, 2 s0, 4 s0, ...), and each output
pixel samples it at (x + dx, y + dy, sigma): bilinearly in space, linearly in scale.

Coordinates stay in pixels and in float32 (see DESIGN.md: FP16 cannot address pixel positions past
1024 finely enough, and normalized coordinates break when the frame size changes). The sampler is
gather-based so that it exports through tf2onnx (opset 17) and matches TF in ONNX Runtime.
"""

from __future__ import annotations


import tensorflow as tf

from model.npmath import gaussian_kernel_1d, scale_space_sigmas  # noqa: F401  (scale_space_sigmas: re-exported)




def gaussian_blur(image, sigma: float):
    """Separable Gaussian blur of [B, H, W, C]; borders are mirrored (SYMMETRIC padding)."""
    if sigma <= 0.0:
        return image
    kernel = tf.constant(gaussian_kernel_1d(sigma), tf.float32)
    radius = (int(kernel.shape[0]) - 1) // 2
    channels = image.shape[-1]
    padded = tf.pad(image, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    kx = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    ky = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "VALID")


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
        out += weight[..., None] * bilinear_sample(gaussian_blur(image, s), x, y)
    return out
