"""PyTorch mirror of model/'s forward pass, for training on a lent GPU machine.

Why a mirror: the GPU machines this project is lent sometimes (see docs/GPU.md) carry PyTorch but no TensorFlow, have no network, and take at most 64 MiB per call, so
TF 2.14 cannot run there. Everything the codec ships (export, runtime, bitstream) stays Keras;
this module only trains weights, which `gpu_train.weights` moves between the two.

Conventions that make the mirror exact (tests/test_gpu_train.py compares it with Keras):
  * Tensors are NCHW transposes of model/'s NHWC tensors with the same channel order: a concat on
    dim 1 is a concat on TF's last axis, and depth/space rearrangements use TF's channel order
    (`space_to_depth` / `depth_to_space` below), not torch's pixel_shuffle order.
  * Parameters keep Keras' layout ([kh, kw, in, out] kernels) and are named after the Keras
    attribute paths of the tf.train.Checkpoint (`iframe.analysis.block4.convs.0.kernel`), so
    weights move by name, with no reshaping.
  * Convolutions pad like TF 'same' (a stride-2 3x3 on an even size pads 0 before, 1 after).

The equations live in model/ and are cited there (§2, §3.1-3.3, App. A, C, D, E); each piece
here names the model/ function it mirrors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import npmath  # TF-free: the level / warp / motion constants and formulas
from model.config import MOTION_SEARCH_PENALTY  # TF-free
from model.npmath import LIKELIHOOD_MIN, SCALE_MIN  # TF-free: model.entropy's clamps


# -- layout helpers ---------------------------------------------------------------------------
def space_to_depth(x, block: int):
    """tf.nn.space_to_depth on NCHW: channel (i * b + j) * C + c holds pixel (i, j) of a block."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // block, block, w // block, block)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, block * block * c, h // block, w // block)


def depth_to_space(x, block: int):
    """tf.nn.depth_to_space on NCHW (the inverse of space_to_depth above)."""
    b, c, h, w = x.shape
    out = c // (block * block)
    x = x.reshape(b, block, block, out, h, w)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(b, out, h * block, w * block)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def _same_padding(size: int, kernel: int, stride: int):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


#: Convolutions in channels_last layout (NHWC in memory, NCHW in shape), the layout the GPU's
#: tensor cores use; set by gpu_train/train.py on CUDA. Values are the same either way.
CHANNELS_LAST = False


class Conv(nn.Module):
    """model.layers.conv: Keras Conv2D, 'same' padding, glorot-uniform kernel, zero bias."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, activation=None, zero_init=False):
        super().__init__()
        self.stride, self.k, self.activation = stride, kernel, activation
        w = torch.empty(kernel, kernel, cin, cout)
        if zero_init:
            nn.init.zeros_(w)
        else:
            limit = math.sqrt(6.0 / (kernel * kernel * (cin + cout)))
            nn.init.uniform_(w, -limit, limit)
        self.kernel = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        weight = self.kernel.permute(3, 2, 0, 1)
        if CHANNELS_LAST:
            weight = weight.contiguous(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if self.stride == 1 and self.k % 2 == 1:
            y = F.conv2d(x, weight, self.bias, padding=self.k // 2)
        else:
            top, bottom = _same_padding(x.shape[2], self.k, self.stride)
            left, right = _same_padding(x.shape[3], self.k, self.stride)
            y = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, self.bias, stride=self.stride)
        return F.relu(y) if self.activation == "relu" else y


# -- model.layers -----------------------------------------------------------------------------
class DMBlock(nn.Module):
    def __init__(self, channels: int, num_convs: int):
        super().__init__()
        self.convs = nn.ModuleList([Conv(channels, channels) for _ in range(num_convs)])
        self.merge = Conv(channels * num_convs, channels, kernel=1)

    def forward(self, x):
        h, acts = x, []
        for i, layer in enumerate(self.convs):
            a = lrelu(layer(h))
            h = a if i == 0 else h + a
            acts.append(a)
        return x + self.merge(torch.cat(acts, 1))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, channels, stride=2)

    def forward(self, x):
        return lrelu(self.conv(x))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, 4 * channels)

    def forward(self, x):
        return lrelu(depth_to_space(self.conv(x), 2))


class TwoScaleDMBlock(nn.Module):
    def __init__(self, channels: int, num_convs: int):
        super().__init__()
        self.down = Downsample(channels)
        self.coarse = DMBlock(channels, num_convs)
        self.up = Upsample(channels)
        self.fine = DMBlock(channels, num_convs)

    def forward(self, x):
        return self.fine(x + self.up(self.coarse(self.down(x))))


class ChannelNorm(nn.Module):
    """model.layers.ChannelNorm (App. C): moving statistics, updated only before freeze_step."""

    def __init__(self, channels: int, freeze_step: int, momentum=0.99, epsilon=1e-5):
        super().__init__()
        self.freeze_step, self.momentum, self.epsilon = freeze_step, momentum, epsilon
        self.register_buffer("moving_mean", torch.zeros(channels))
        self.register_buffer("moving_variance", torch.ones(channels))
        self.register_buffer("num_updates", torch.zeros(()))

    def forward(self, x, step: int, training: bool):
        if training and step < self.freeze_step:
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3))
                var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
                n = self.num_updates
                m = torch.clamp(n / (n + 1.0), max=self.momentum)
                self.moving_mean.copy_(m * self.moving_mean + (1 - m) * mean)
                self.moving_variance.copy_(m * self.moving_variance + (1 - m) * var)
                self.num_updates.add_(1.0)
        mean = self.moving_mean[None, :, None, None]
        scale = torch.rsqrt(self.moving_variance + self.epsilon)[None, :, None, None]
        return (x - mean) * scale


# -- model.level ------------------------------------------------------------------------------
def _weights(position):
    u = torch.floor(position)
    v = u + 1.0
    alpha = (v - position) / ((position - u) + (v - position))
    return u.long(), v.long(), alpha, 1.0 - alpha


def _onehot(index, depth: int):
    valid = (index >= 0) & (index < depth)
    out = F.one_hot(index.clamp(0, depth - 1), depth).float()
    return out * valid[..., None].float()


def level_embedding(level, num_levels: int, dim: int):
    """model.level.level_embedding (eq. 4-8): [B] -> [B, dim]."""
    if num_levels == 1:
        return torch.ones(level.shape[0], dim, device=level.device)
    s = level * (dim - 1) / (num_levels - 1)
    u, v, alpha, beta = _weights(s)
    return alpha[:, None] * _onehot(u, dim) + beta[:, None] * _onehot(v, dim)


def interpolate_rows(table, level):
    """model.level.interpolate_rows: [L, C] at levels [B] -> [B, C]."""
    rows = table.shape[0]
    if rows == 1:
        return table.expand(level.shape[0], -1)
    u, v, alpha, beta = _weights(level)
    v = v.clamp(max=rows - 1)
    return alpha[:, None] * table[u] + beta[:, None] * table[v]


def with_level_map(x, embedding):
    b, _, h, w = x.shape
    return torch.cat([x, embedding[:, :, None, None].expand(b, -1, h, w)], 1)


# -- model.entropy ----------------------------------------------------------------------------
def _lower_bound(x, bound: float):
    return x + (torch.clamp(x, min=bound) - x).detach()


def _phi(x):
    return 0.5 * torch.special.erfc(-x / math.sqrt(2.0))


def codelength_bits(v, scale):
    """model.entropy.codelength_bits: -log2 of N(0, scale)'s mass on [|v| - 1/2, |v| + 1/2]."""
    scale = _lower_bound(scale, SCALE_MIN)
    v = v.abs()
    likelihood = _phi((0.5 - v) / scale) - _phi((-0.5 - v) / scale)
    return -torch.log(_lower_bound(likelihood, LIKELIHOOD_MIN)) / math.log(2.0)


def quantize(y, mean, quant_width, mode: str, noise: Optional[torch.Tensor] = None):
    """model.entropy.quantize; `noise` (U(-1/2, 1/2), y's shape) may be given for exact tests."""
    u = (y - mean) / quant_width
    if mode == "round":
        v_rate = v_dec = torch.round(u)
    else:
        v_dec = u + (torch.round(u) - u).detach()
        if mode == "noise":
            v_rate = u + (noise if noise is not None else torch.rand_like(u) - 0.5)
        else:
            v_rate = v_dec
    return mean + quant_width * v_dec, v_rate


# -- model.transforms / model.codelayer -------------------------------------------------------
class Analysis(nn.Module):
    def __init__(self, cin: int, channels: int, latent: int, num_convs: int, emb: int):
        super().__init__()
        self.stem = Conv(cin + emb, channels)
        self.block4 = DMBlock(channels, num_convs)
        self.down8 = Downsample(channels)
        self.block8 = DMBlock(channels, num_convs)
        self.down16 = Downsample(channels)
        self.block16 = DMBlock(channels, num_convs)
        self.out = Conv(channels, latent)

    def forward(self, x, embedding):
        h = self.block4(self.stem(with_level_map(x, embedding)))
        h = self.block8(self.down8(h))
        return self.out(self.block16(self.down16(h)))


class Synthesis(nn.Module):
    def __init__(self, latent: int, channels: int, num_convs: int, emb: int):
        super().__init__()
        self.stem = Conv(latent + emb, channels)
        self.block16 = DMBlock(channels, num_convs)
        self.up8 = Upsample(channels)
        self.block8 = DMBlock(channels, num_convs)
        self.up4 = Upsample(channels)
        self.block4 = DMBlock(channels, num_convs)

    def forward(self, x, embedding):
        h = self.block16(self.stem(with_level_map(x, embedding)))
        return self.block4(self.up4(self.block8(self.up8(h))))


class HyperAnalysis(nn.Module):
    def __init__(self, latent: int, channels: int, hyper_latent: int, emb: int):
        super().__init__()
        self.conv0 = Conv(latent + emb, channels, activation="relu")
        self.down1 = Conv(channels, channels, stride=2, activation="relu")
        self.down2 = Conv(channels, hyper_latent, stride=2)

    def forward(self, y, embedding):
        return self.down2(self.down1(self.conv0(with_level_map(y.abs(), embedding))))


class HyperSynthesis(nn.Module):
    def __init__(self, hyper_latent: int, channels: int, latent: int, emb: int):
        super().__init__()
        self.latent = latent
        self.conv0 = Conv(hyper_latent + emb, channels)
        self.up1 = Conv(channels, 4 * channels)
        self.up2 = Conv(channels, 4 * channels)
        self.out = Conv(channels, 2 * latent)

    def forward(self, z_hat, embedding):
        h = F.relu(self.conv0(with_level_map(z_hat, embedding)))
        h = F.relu(depth_to_space(self.up1(h), 2))
        h = F.relu(depth_to_space(self.up2(h), 2))
        params = self.out(h)
        return params[:, : self.latent], F.softplus(params[:, self.latent :])


@dataclass
class Code:
    latent_hat: torch.Tensor
    bits: torch.Tensor  # [B]


class Codelayer(nn.Module):
    """model.codelayer.HyperpriorCodelayer (App. A)."""

    def __init__(self, cfg):
        super().__init__()
        emb = cfg["embedding_width"]
        self.hyper_analysis = HyperAnalysis(cfg["latent_channels"], cfg["hyper_channels"], cfg["hyper_latent_channels"], emb)
        self.hyper_synthesis = HyperSynthesis(cfg["hyper_latent_channels"], cfg["hyper_channels"], cfg["latent_channels"], emb)
        self.raw_hyper_scale = nn.Parameter(torch.full((cfg["hyper_latent_channels"],), 0.55))

    def forward(self, latent, embedding, quant_width, mode: str, noise=None) -> Code:
        # Rates and quantization in FP32 whatever the autocast around (bf16 training keeps them exact).
        with torch.autocast(latent.device.type, enabled=False):
            return self._forward(latent.float(), embedding.float(), quant_width.float(), mode, noise)

    def _forward(self, latent, embedding, quant_width, mode: str, noise=None) -> Code:
        z = self.hyper_analysis(latent, embedding)
        z_hat, z_rate = quantize(z, 0.0, 1.0, mode, None if noise is None else noise[0])
        hyper_bits = codelength_bits(z_rate, F.softplus(self.raw_hyper_scale)[None, :, None, None])
        mean, sigma = self.hyper_synthesis(z_hat, embedding)
        qw = quant_width[:, :, None, None]
        latent_hat, v_rate = quantize(latent, mean, qw, mode, None if noise is None else noise[1])
        main_bits = codelength_bits(v_rate, sigma / qw)
        return Code(latent_hat, main_bits.sum(dim=(1, 2, 3)) + hyper_bits.sum(dim=(1, 2, 3)))


# -- model.warp -------------------------------------------------------------------------------
scale_space_sigmas = npmath.scale_space_sigmas

def _symmetric_index(n: int, radius: int, device):
    i = torch.arange(-radius, n + radius, device=device)
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= n, 2 * n - i - 1, i)


_CONSTANTS: dict = {}


def _constant(key, make):
    """A tensor built once per key (dtype and device in the key) and kept: no host-to-device copy
    per call, which CUDA-graph capture forbids (gpu_train/train.py captures the training step)."""
    if key not in _CONSTANTS:
        _CONSTANTS[key] = make()
    return _CONSTANTS[key]


def _gaussian_kernel(sigma: float, radius: int, dtype, device):
    def make():
        xs = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (xs / sigma) ** 2)
        return (k / k.sum()).to(dtype).to(device)

    return _constant(("gauss", sigma, radius, dtype, str(device)), make)


#: On the CPU, images up to this side are blurred by two matrix products (npmath.blur_matrix) instead
#: of two depthwise convolutions: the same sums (the borders folded into the matrix, float
#: rounding apart: within 5e-7 of the convolutions in FP32; tests/test_gpu_campaign.py checks values
#: and gradients in float64, tests/test_gpu_train.py the mirror against Keras) at 4x the speed in FP32
#: and 9x in bf16 on this 2-core CPU (8 x 3 x 128^2, the four blurs of a warp, forward and backward:
#: 80 -> 18 ms and 90 -> 10 ms), where the convolutions took ~10% of a training step of `base`'s
#: P path. Larger images, and CUDA (unmeasured there), keep the convolutions: a dense n x n matrix
#: costs 2n multiply-adds a pixel against the kernel's 2 (6 sigma + 1).
BLUR_MATMUL_MAX_SIDE = 512


def _blur_matrix(sigma: float, n: int, dtype, device):
    """npmath.blur_matrix (x @ M: the 1-D blur of x, length n, SYMMETRIC borders) as a tensor, kept."""
    return _constant(("blur_matrix", sigma, n, dtype, str(device)),
                     lambda: torch.tensor(npmath.blur_matrix(n, sigma), dtype=dtype, device=device))  # a copy: read-only


def gaussian_blur(image, sigma: float):
    """model.warp.gaussian_blur: separable, SYMMETRIC (edge-repeating mirror) borders."""
    if sigma <= 0.0:
        return image
    radius = npmath.gaussian_radius(sigma)
    c, h, w = image.shape[1], image.shape[2], image.shape[3]
    if image.device.type == "cpu" and max(h, w) <= BLUR_MATMUL_MAX_SIDE:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else image.dtype
        rows = _blur_matrix(sigma, h, dtype, image.device)
        cols = _blur_matrix(sigma, w, dtype, image.device)
        return torch.matmul(torch.matmul(rows.t(), image), cols)
    k = _gaussian_kernel(sigma, radius, image.dtype, image.device)
    padded = image.index_select(2, _symmetric_index(h, radius, image.device))
    padded = padded.index_select(3, _symmetric_index(w, radius, image.device))
    out = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def bilinear_sample(image, x, y):
    """model.warp.bilinear_sample: image [B, C, H, W] at pixel coordinates x, y [B, H, W]."""
    b, c, h, w = image.shape
    x = x.clamp(0.0, w - 1.0)
    y = y.clamp(0.0, h - 1.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = (x - x0)[:, None], (y - y0)[:, None]
    x0i, y0i = x0.long(), y0.long()
    x1i, y1i = (x0i + 1).clamp(max=w - 1), (y0i + 1).clamp(max=h - 1)
    flat = image.reshape(b, c, h * w)

    def gather(yi, xi):
        index = (yi * w + xi).reshape(b, 1, -1).expand(b, c, -1)
        return flat.gather(2, index).reshape(b, c, *x.shape[1:])

    top = gather(y0i, x0i) * (1.0 - wx) + gather(y0i, x1i) * wx
    bottom = gather(y1i, x0i) * (1.0 - wx) + gather(y1i, x1i) * wx
    return top * (1.0 - wy) + bottom * wy


def _level_weights(sigma, sigmas):
    """The tent weights of each scale-space level at blur `sigma` [B, H, W] -> list of [B, H, W]."""
    weights = []
    for k, s in enumerate(sigmas):
        lo = sigmas[k - 1] if k > 0 else None
        hi = sigmas[k + 1] if k + 1 < len(sigmas) else None
        weight = torch.ones_like(sigma)
        if lo is not None:
            weight = torch.where(sigma < s, (sigma - lo) / (s - lo), weight)
        if hi is not None:
            weight = torch.where(sigma > s, (hi - sigma) / (hi - s), weight)
        weights.append(weight.clamp(0.0, 1.0))
    return weights


#: The warp samples every scale-space level with one F.grid_sample call (bilinear, border
#: clamping, align_corners: model.warp's sampling exactly, up to float rounding of the
#: coordinates) instead of four gathers per level; scale_space_warp_reference keeps the
#: gather form, which tests compare it with.
FUSED_WARP = True


def scale_space_warp(image, flow, levels: int = 5, sigma0: float = 1.0):
    """model.warp.scale_space_warp: flow [B, 3, H, W] = (dx, dy, sigma) in pixels."""
    if not FUSED_WARP:
        return scale_space_warp_reference(image, flow, levels, sigma0)
    b, c, h, w = image.shape
    sigmas = scale_space_sigmas(levels, sigma0)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device)
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device)
    x = xs[None, None, :] + flow[:, 0]
    y = ys[None, :, None] + flow[:, 1]
    # Pixel coordinates -> grid_sample's [-1, 1] (align_corners=True: -1 and 1 are the edge pixels' centres).
    grid = torch.stack([x * (2.0 / max(w - 1, 1)) - 1.0, y * (2.0 / max(h - 1, 1)) - 1.0], dim=-1)
    stack = torch.cat([gaussian_blur(image, s) for s in sigmas], 1)  # [B, L*C, H, W]
    sampled = F.grid_sample(stack, grid.to(stack.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    sigma = flow[:, 2].clamp(0.0, sigmas[-1])
    weights = torch.stack(_level_weights(sigma, sigmas), 1)  # [B, L, H, W]
    return (sampled.view(b, len(sigmas), c, h, w) * weights[:, :, None]).sum(1)


def scale_space_warp_reference(image, flow, levels: int = 5, sigma0: float = 1.0):
    """model.warp.scale_space_warp in its gather form (bilinear_sample per level)."""
    b, _, h, w = image.shape
    gy, gx = torch.meshgrid(
        torch.arange(h, dtype=image.dtype, device=image.device),
        torch.arange(w, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    x = gx[None] + flow[:, 0]
    y = gy[None] + flow[:, 1]
    sigmas = scale_space_sigmas(levels, sigma0)
    sigma = flow[:, 2].clamp(0.0, sigmas[-1])
    out = torch.zeros_like(image)
    for weight, s in zip(_level_weights(sigma, sigmas), sigmas):
        out = out + weight[:, None] * bilinear_sample(gaussian_blur(image, s), x, y)
    return out


# -- model.motion -----------------------------------------------------------------------------
MOTION_BLOCK = npmath.MOTION_BLOCK  # model.motion.BLOCK


def level_from_embedding(embedding, num_levels: int):
    """model.level.level_from_embedding (the inverse of eq. 4-8): [B, E] -> [B] levels."""
    width = embedding.shape[1]
    if num_levels == 1 or width == 1:
        return torch.zeros_like(embedding[:, 0])
    ramp = torch.arange(width, dtype=torch.float32, device=embedding.device) * ((num_levels - 1) / (width - 1))
    return (embedding * ramp).sum(1)


def level_penalty(c: dict, embedding):
    """model.motion.level_penalty: [B] search penalties, or the config's constant."""
    top = c.get("motion_search_penalty_top")
    if top is None:
        return c["motion_search_penalty"]
    first = c["motion_search_penalty"]
    level = level_from_embedding(embedding, c["levels"])
    return first * torch.exp(math.log(top / first) * level / (c["levels"] - 1))


@torch.no_grad()
def block_motion_search(target, reference, radius: int, penalty):
    """model.motion.block_motion_search: [B, 3, H, W] x 2 -> [B, 2, H/16, W/16] (dx, dy) pixels;
    `penalty` a number or a [B] tensor. No gradient (the vectors are a table lookup).

    The (2R + 1)^2 candidate shifts are costed one row of shifts (2R + 1 of them) at a time, as the
    TF original does (since session 38): the same numbers in the same order (equal vectors,
    tests/test_gpu_train.py), without materializing (2R + 1)^2 shifted frames (289 at R = 8: about
    75 MB for 4 x 128^2), which made the search ~10x slower on a CPU."""
    target, reference = target.mean(1, keepdim=True), reference.mean(1, keepdim=True)
    height, width = target.shape[2:]
    device = target.device
    rows = torch.arange(-radius, height + radius, device=device).clamp(0, height - 1)
    cols = torch.arange(-radius, width + radius, device=device).clamp(0, width - 1)
    padded = reference[:, :, rows][:, :, :, cols]
    span = range(-radius, radius + 1)
    columns = torch.cat([padded[:, :, :, radius + dx : radius + dx + width] for dx in span], 1)
    # channel (dy + R) (2R + 1) + (dx + R), as model.motion builds its candidates
    sad = torch.cat([F.avg_pool2d((target - columns[:, :, radius + dy : radius + dy + height]).abs_(), MOTION_BLOCK)
                     for dy in span], 1)
    vectors = [(float(dx), float(dy)) for dy in span for dx in span]
    table = _constant(("motion_vectors", radius, str(device)), lambda: torch.tensor(vectors, device=device))
    norms = _constant(
        ("motion_norms", radius, str(device)),
        lambda: torch.tensor([abs(dx) + abs(dy) for dx, dy in vectors], device=device)[None, :, None, None],
    )
    if not torch.is_tensor(penalty):
        penalty = _constant(("penalty", float(penalty), str(device)), lambda: torch.tensor(float(penalty), device=device))
    lengths = penalty.float().reshape(-1, 1, 1, 1) * norms
    costs = sad + lengths
    best = costs.argmin(1)
    return table[best].permute(0, 3, 1, 2)


def upsample_blocks(field, mode: str = "nearest"):
    """model.motion.upsample_blocks: [B, C, h, w] -> [B, C, 16 h, 16 w], each block constant
    ("nearest") or bilinear between block centres ("bilinear")."""
    if mode == "bilinear":
        return F.interpolate(field, scale_factor=MOTION_BLOCK, mode="bilinear", align_corners=False)
    if mode != "nearest":
        raise ValueError(f"upsample_blocks: unknown mode {mode!r}")
    return field.repeat_interleave(MOTION_BLOCK, 2).repeat_interleave(MOTION_BLOCK, 3)


# -- model.codecs -----------------------------------------------------------------------------
def _cfg(config: dict) -> dict:
    c = dict(config)
    c.setdefault("motion_search_radius", 0)
    c.setdefault("motion_search_penalty", MOTION_SEARCH_PENALTY)
    c.setdefault("motion_search_penalty_top", None)
    c.setdefault("block_motion_upsample", "nearest")
    levels = 1 if c.get("single_level") else c["num_levels"]
    c["levels"] = levels
    c["embedding_width"] = 1 if c.get("single_level") else c["embedding_dim"]

    def width(which):
        return c["encoder_channels"] if c.get("symmetric") else c[f"{which}_decoder_channels"]

    c["width"] = width
    return c


def initial_log_quant_width(c: dict, block: str):
    """model.config.ModelConfig.initial_log_quant_width."""
    first, last = c["quant_width_first"], c["quant_width_last"]
    if block == "flow" and c.get("flow_quant_width_first") is not None:
        first, last = c["flow_quant_width_first"], c["flow_quant_width_last"]
    rows = torch.linspace(math.log(first), math.log(last), c["levels"]) if c["levels"] > 1 else torch.tensor([math.log(first)])
    return rows[:, None].repeat(1, c["latent_channels"]).float()


class IFrameCodec(nn.Module):
    def __init__(self, c):
        super().__init__()
        e = c["embedding_width"]
        self.log_quant_width = nn.Parameter(initial_log_quant_width(c, "iframe"))
        self.analysis = Analysis(48, c["encoder_channels"], c["latent_channels"], c["dm_convs"], e)
        self.codelayer = Codelayer(c)
        width = c["width"]("iframe")
        self.synthesis = Synthesis(c["latent_channels"], width, c["dm_convs"], e)
        self.image_head = Conv(width, 48)
        self.state_head = Conv(width, c["state_channels"])

    def encode(self, image, embedding):
        """The analysis transform: image [B, 3, H, W] in [0, 1] -> latent [B, C, H/16, W/16]."""
        return self.analysis(space_to_depth(image - 0.5, 4), embedding)

    def quant_width(self, level):
        """The level's per-channel quantization width [B, C]."""
        return torch.exp(interpolate_rows(self.log_quant_width, level))

    def decode(self, latent_hat, embedding):
        """The synthesis transform: -> (reconstruction [B, 3, H, W], state)."""
        features = self.synthesis(latent_hat, embedding)
        return 0.5 + depth_to_space(self.image_head(features).float(), 4), self.state_head(features).float()

    def forward(self, image, level, embedding, mode, noise=None):
        code = self.codelayer(self.encode(image, embedding), embedding, self.quant_width(level), mode, noise)
        return (*self.decode(code.latent_hat, embedding), code)


class FlowPredictor(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = c["predictor_channels"]
        self.norm = ChannelNorm(144, c["norm_freeze_steps"])
        self.stem = Conv(144 + c["embedding_width"], p)
        self.blocks = nn.ModuleList([TwoScaleDMBlock(p, c["dm_convs"]) for _ in range(c["predictor_blocks"])])
        self.head = Conv(p, 48, zero_init=True)
        self.scale = c["flow_output_scale"]

    def forward(self, previous_flow, previous2, previous1, embedding, step, training):
        x = torch.cat([space_to_depth(previous_flow, 4), space_to_depth(previous2 - 0.5, 4), space_to_depth(previous1 - 0.5, 4)], 1)
        h = self.stem(with_level_map(self.norm(x, step, training), embedding))
        for block in self.blocks:
            h = block(h)
        return self.scale * depth_to_space(self.head(h).float(), 4)


class _InterBlock(nn.Module):
    def __init__(self, c, block: str, encoder_in: int, side: int):
        super().__init__()
        self.c = c
        e = c["embedding_width"]
        width = c["width"](block)
        self.encoder_norm = ChannelNorm(encoder_in, c["norm_freeze_steps"])
        self.analysis = Analysis(encoder_in, c["encoder_channels"], c["latent_channels"], c["dm_convs"], e)
        self.codelayer = Codelayer(c)
        self.synthesis = Synthesis(c["latent_channels"], width, c["dm_convs"], e)
        self.decoder_norm = ChannelNorm(side, c["norm_freeze_steps"])
        self.merge = Conv(width + side, width)
        self.merge_block = DMBlock(width, c["dm_convs"])
        if c["pframe_quant_width"]:
            self.log_quant_width = nn.Parameter(initial_log_quant_width(c, block))

    def quant_width(self, level):
        if not self.c["pframe_quant_width"]:
            return torch.ones(level.shape[0], self.c["latent_channels"], device=level.device)
        return torch.exp(interpolate_rows(self.log_quant_width, level))

    def decoder_features(self, latent_hat, side, embedding, step, training):
        features = self.synthesis(latent_hat, embedding)
        side = self.decoder_norm(side, step, training)
        return self.merge_block(lrelu(self.merge(torch.cat([features, side], 1))))


class FlowBlock(_InterBlock):
    def __init__(self, c):
        super().__init__(c, "flow", 96 + 48 + c["state_channels"], 48 + c["state_channels"])
        width = c["width"]("flow")
        self.flow_head = Conv(width, 96, zero_init=True)
        self.state_head = Conv(width, c["state_channels"])

    def encode_latent(self, target, previous, predicted, state, embedding, step, training):
        x = torch.cat([space_to_depth(target - 0.5, 4), space_to_depth(previous - 0.5, 4), space_to_depth(predicted, 4), state], 1)
        latent = self.analysis(self.encoder_norm(x, step, training), embedding)
        radius = self.c["motion_search_radius"]
        if radius:
            motion = block_motion_search(target, previous, radius, level_penalty(self.c, embedding))
            latent = torch.cat([motion, latent[:, 2:]], 1)
        return latent

    def decode(self, latent_hat, previous, predicted, state, embedding, step, training):
        c = self.c
        h = self.decoder_features(latent_hat, torch.cat([space_to_depth(predicted, 4), state], 1), embedding, step, training)
        out = depth_to_space(self.flow_head(h).float(), 4)
        mask_logits, delta = out[:, :3], c["flow_output_scale"] * out[:, 3:]
        if c["motion_search_radius"]:
            block_flow = upsample_blocks(latent_hat[:, :2], c["block_motion_upsample"])
            delta = delta + torch.cat([block_flow, torch.zeros_like(block_flow[:, :1])], 1)
        if c["use_predictor"]:
            mask = torch.sigmoid(mask_logits)
            flow = mask * predicted + delta
        else:
            flow = delta
        compensated = scale_space_warp(previous, flow, c["scale_space_levels"], c["scale_space_sigma0"])
        new_state = self.state_head(h).float() if c["use_state"] else state
        return flow, compensated, new_state


class ResidueBlock(_InterBlock):
    def __init__(self, c):
        super().__init__(c, "residue", 96 + c["state_channels"], c["state_channels"])
        width = c["width"]("residue")
        self.image_head = Conv(width, 48, zero_init=True)
        self.state_head = Conv(width, c["state_channels"])

    def encode_latent(self, residual, compensated, state, embedding, step, training):
        x = torch.cat([space_to_depth(residual, 4), space_to_depth(compensated - 0.5, 4), state], 1)
        return self.analysis(self.encoder_norm(x, step, training), embedding)

    def decode(self, latent_hat, compensated, state, embedding, step, training):
        h = self.decoder_features(latent_hat, state, embedding, step, training)
        residue = depth_to_space(self.image_head(h).float(), 4)
        new_state = self.state_head(h).float() if self.c["use_state"] else state
        return compensated + residue, new_state


@dataclass
class GopResult:
    reconstructions: torch.Tensor  # [B, T, 3, H, W]
    bits: torch.Tensor  # [B, T]
    compensated: List[torch.Tensor]  # x_comp of every P-frame, [B, 3, H, W] each
    carry: Optional["GopCarry"] = None  # the decoder's memory after the last frame


@dataclass
class GopCarry:
    """What the next P-frame reads of the frames before it: the last two reconstructions, the
    last decoded flow and the recurrent state (Sec. 3.1), and the last frame's bits. It lets a
    GOP go on from where an earlier forward_gop stopped (gpu_train.train's --rollout)."""

    previous: torch.Tensor
    previous2: torch.Tensor
    flow: torch.Tensor
    state: torch.Tensor
    bits: torch.Tensor  # [B]

    def detached(self) -> "GopCarry":
        return GopCarry(*(t.detach() for t in (self.previous, self.previous2, self.flow, self.state, self.bits)))


class ELFVC(nn.Module):
    """model.elfvc.ELFVC.forward_gop, frames [B, T, 3, H, W] in [0, 1], levels [B, T] float."""

    def __init__(self, config: dict):
        super().__init__()
        self.c = c = _cfg(config)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.step_int: Optional[int] = None  # a host copy of `step` a training loop may keep, to avoid a sync per frame
        self.iframe = IFrameCodec(c)
        self.predictor = FlowPredictor(c) if c["use_predictor"] else None
        self.flow = FlowBlock(c)
        self.residue = ResidueBlock(c)

    def embed(self, level):
        return level_embedding(level, self.c["levels"], self.c["embedding_width"])

    def forward_gop(self, frames, levels, mode: str = "round", training: bool = False, noise=None,
                    carry: Optional[GopCarry] = None) -> GopResult:
        """`noise`, for exact tests only: per frame, per codelayer, the (hyper, main) U(-1/2, 1/2) draws.
        With `carry` (an earlier call's `GopResult.carry`, whose last frame is frames[:, 0]) the
        GOP goes on from there: frame 0 is not coded again (its reconstruction and bits are the
        carry's), frames 1.. are P-frames, as if the two calls were one."""
        step = self.step_int if self.step_int is not None else int(self.step)
        c = self.c
        recons, bits, comps = [], [], []
        if carry is None:
            emb = self.embed(levels[:, 0])
            x_hat, state, code = self.iframe(frames[:, 0], levels[:, 0], emb, mode, None if noise is None else noise[0][0])
            if not c["use_state"]:
                state = torch.zeros_like(state)
            previous, previous2, flow = x_hat, x_hat, torch.zeros_like(x_hat)
            recons.append(x_hat)
            bits.append(code.bits)
        else:
            previous, previous2, flow, state = carry.previous, carry.previous2, carry.flow, carry.state
            recons.append(previous)
            bits.append(carry.bits)
        for t in range(1, frames.shape[1]):
            frame, level = frames[:, t], levels[:, t]
            emb = self.embed(level)
            if self.predictor is None:
                predicted = torch.zeros_like(flow)
            else:
                predicted = self.predictor(flow, previous2, previous, emb, step, training)
            latent = self.flow.encode_latent(frame, previous, predicted, state, emb, step, training)
            fcode = self.flow.codelayer(latent, emb, self.flow.quant_width(level), mode, None if noise is None else noise[t][0])
            flow, compensated, state = self.flow.decode(fcode.latent_hat, previous, predicted, state, emb, step, training)
            latent = self.residue.encode_latent(frame - compensated, compensated, state, emb, step, training)
            rcode = self.residue.codelayer(latent, emb, self.residue.quant_width(level), mode, None if noise is None else noise[t][1])
            x_hat, state = self.residue.decode(rcode.latent_hat, compensated, state, emb, step, training)
            previous2, previous = previous, x_hat
            recons.append(x_hat)
            bits.append(fcode.bits + rcode.bits)
            comps.append(compensated)
        return GopResult(torch.stack(recons, 1), torch.stack(bits, 1), comps,
                         GopCarry(previous, previous2, flow, state, bits[-1]))


# -- model.losses -----------------------------------------------------------------------------
def lambdas(first: float, last: float, num_levels: int):
    """model.losses.lambdas: linear in log space, level 0 first."""
    if num_levels == 1:
        return torch.tensor([first])
    return torch.logspace(math.log10(first), math.log10(last), num_levels, dtype=torch.float64).float()


def multilevel_loss(dist, bpp, levels, mu, lambda_table):
    """model.losses.multilevel_loss (eq. 1-3), one process: sum(mu D + lambda R) / (B T)."""
    b, t = levels.shape
    frame_index = torch.arange(t, device=levels.device)[None].expand(b, t)
    per_frame = mu[frame_index, levels] * dist + lambda_table[levels] * bpp
    return per_frame.sum() / (b * t)


class LossModulator:
    """model.losses.LossModulator (App. D), state as plain tensors."""

    def __init__(self, gop: int, num_levels: int, device, factor=1.5, step=0.01, decay=0.99, enabled=True):
        self.factor, self.step, self.decay, self.enabled = factor, step, decay, enabled
        self.mu = torch.ones(gop, num_levels, device=device)
        self.average = torch.zeros(gop, num_levels, device=device)
        self.seen = torch.zeros(gop, num_levels, device=device)

    @torch.no_grad()
    def update(self, dist, levels):
        num_levels = self.mu.shape[1]
        onehot = F.one_hot(levels, num_levels).float()  # [B, T, L]
        dist_sum = (onehot * dist[..., None]).sum(0)
        count = onehot.sum(0)
        has = count > 0
        batch_mean = dist_sum / count.clamp(min=1.0)
        decay = torch.where(self.seen > 0, torch.full_like(self.seen, self.decay), torch.zeros_like(self.seen))
        self.average.copy_(torch.where(has, decay * self.average + (1 - decay) * batch_mean, self.average))
        self.seen.add_(has.float())
        if not self.enabled:
            return
        known = (self.seen > 0) & (self.seen[:1] > 0)
        behind = self.average > self.factor * self.average[:1]
        move = torch.where(behind, self.step, -self.step) * known.float()
        mu = (self.mu + move).clamp(1.0, 10.0)
        mu[0] = 1.0
        self.mu.copy_(mu)  # in place: a captured training step (CUDA graph) reads this tensor
