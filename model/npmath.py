"""The codec's closed-form math in numpy, written once: model/, runtime/, export/ and gpu_train/ use it.

TF-free (gpu_train runs without TensorFlow; model/__init__ imports nothing), like model/sampling.py.
The trained networks need the same formulas as tensor ops (tf in model/level.py and model/warp.py,
torch in gpu_train/net.py, for gradients and graphs); those are checked against these
(tests/test_level.py) and take their constants from here.

- App. E, eq. (4)-(8): the level embedding of one continuous level, and the inverse.
- §3.1: a block's quantization width Q_w at a continuous level (the rows' log-linear interpolation).
- §2 (scale-space flow): the blur levels' sigmas and the Gaussian kernel of each; the blur, the
  warp and the block-motion upsampling themselves (the encoder's motion refinement estimates with them).
- §3.2: the motion block size (the flow codelayer's latent grid).
- App. A (entropy model): the range coder's scale table, its boundaries and the index of a scale.
- §4.1: lambda(level), the rate weight of a continuous level (log-linear between the range's ends).
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Motion block size: the stride of the flow codelayer's latent grid (§3.2's 16x).
MOTION_BLOCK = 16


def level_embedding(level: float, num_levels: int, width: int) -> np.ndarray:
    """Eq. (4)-(8) of App. E for one level -> float64 [width]: alpha at u = floor(s) and 1 - alpha
    at u + 1, s = level (L_e - 1) / (L - 1); a one-hot at integer levels when L_e = L. A
    single-level model's embedding is all ones."""
    if num_levels == 1:
        return np.ones(width)
    s = level * (width - 1) / (num_levels - 1)  # eq. (4)
    u = math.floor(s)  # eq. (5)
    alpha = (u + 1) - s  # eq. (6)-(7)
    out = np.zeros(width)
    if 0 <= u < width:  # eq. (8); onehot of an index outside [0, width) is the zero vector
        out[u] = alpha
    if 0 <= u + 1 < width:
        out[u + 1] = 1.0 - alpha
    return out


def level_from_embedding(embedding: np.ndarray, num_levels: int) -> np.ndarray:
    """The inverse of eq. (4)-(8): [..., E] -> [...] levels, sum_i i e_i (L - 1) / (L_e - 1)."""
    embedding = np.asarray(embedding, np.float64)
    width = embedding.shape[-1]
    if num_levels == 1 or width == 1:
        return np.zeros(embedding.shape[:-1])
    return embedding @ (np.arange(width) * ((num_levels - 1) / (width - 1)))


def quant_width(log_quant_width: np.ndarray, level: float) -> np.ndarray:
    """A block's Q_w [C] at a continuous level (§3.1): exp of the linear interpolation of the rows
    of log Q_w [L, C] with eq. (5)-(7)'s weights -> float64 [C]."""
    rows = log_quant_width.shape[0]
    if rows == 1:
        return np.exp(log_quant_width[0])
    u = min(int(math.floor(level)), rows - 1)
    alpha = (u + 1) - level
    v = min(u + 1, rows - 1)  # at the top level alpha is 1: any valid row will do.
    return np.exp(alpha * log_quant_width[u] + (1.0 - alpha) * log_quant_width[v])


def scale_space_sigmas(levels: int, sigma0: float) -> list[float]:
    """Blur levels of the scale-space volume: 0, sigma0, 2 sigma0, 4 sigma0, ..."""
    return [0.0] + [sigma0 * 2.0**i for i in range(levels - 1)]


def gaussian_radius(sigma: float) -> int:
    """Half-width of the blur kernel: 3 sigma, at least 1."""
    return max(1, int(math.ceil(3.0 * sigma)))


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """The normalized 1-D Gaussian of the scale-space blur, float64 [2 r + 1] (r = gaussian_radius)."""
    radius = gaussian_radius(sigma)
    weights = [math.exp(-0.5 * (float(x) / sigma) ** 2) for x in range(-radius, radius + 1)]
    total = sum(weights)
    return np.array([w / total for w in weights], np.float64)


@functools.lru_cache(maxsize=32)
def blur_matrix(size: int, sigma: float, dtype: np.dtype = np.dtype(np.float64)) -> np.ndarray:
    """[size, size] in `dtype` (built in float64): out[j] = sum_i x[i] M[i, j] is the 1-D Gaussian of `sigma` over x with
    mirrored borders (SYMMETRIC padding: ... x1 x0 | x0 x1 ... x_n-1 | x_n-1 x_n-2 ...). Cached (a
    frame size's few sigmas, every P-frame), so read-only. Also gpu_train.net's CPU blur."""
    kernel = gaussian_kernel_1d(sigma)
    radius = (len(kernel) - 1) // 2
    out = np.arange(size)[:, None]
    source = (out + np.arange(-radius, radius + 1)[None, :]) % (2 * size)
    source = np.where(source >= size, 2 * size - 1 - source, source)  # reflected, edge repeated
    matrix = np.zeros((size, size))
    np.add.at(matrix, (source, np.broadcast_to(out, source.shape)), np.broadcast_to(kernel, source.shape))
    matrix = matrix.astype(dtype, copy=False)
    matrix.flags.writeable = False
    return matrix


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """model/warp.py's separable blur of [..., H, W, C] in numpy (mirrored borders), in the image's
    float precision (at least float32): two matrix products with the 1-D blur as a matrix."""
    image = np.asarray(image)
    image = image.astype(np.result_type(image.dtype, np.float32), copy=False)
    if sigma <= 0.0:
        return image
    height, width, channels = image.shape[-3:]
    columns = blur_matrix(width, sigma, image.dtype)  # cached per dtype: no copy per call
    rows = blur_matrix(height, sigma, image.dtype).T
    across = np.swapaxes(np.swapaxes(image, -1, -2) @ columns, -1, -2)  # [..., H, W, C]
    flat = across.reshape(across.shape[:-2] + (width * channels,))
    return (rows @ flat).reshape(image.shape)


class ScaleSpaceVolume:
    """§2's scale-space volume of one image [H, W, C] (model/warp.py scale_space_warp in numpy):
    blurred copies at scale_space_sigmas, each made when a warp first needs it, so that warping one
    image by several flows blurs it once. A pixel's sigma lies between two blur levels, and only
    those two are sampled (the other levels' hat weights are zero), each a bilinear gather."""

    def __init__(self, image: np.ndarray, levels: int, sigma0: float):
        self.image = np.asarray(image, np.float32)
        self.sigmas = np.asarray(scale_space_sigmas(levels, sigma0), np.float64)
        self._blurred: dict = {}
        self._stacks: dict = {}

    def level(self, k: int) -> np.ndarray:
        """Blur level k, float32 [H, W, C]."""
        if k not in self._blurred:
            self._blurred[k] = gaussian_blur(self.image, float(self.sigmas[k])).astype(np.float32)
        return self._blurred[k]

    def _stack(self, levels) -> np.ndarray:
        """The given blur levels as one [len(levels) H W, C] table to gather rows from."""
        key = tuple(int(k) for k in levels)
        if key not in self._stacks:
            self._stacks[key] = np.stack([self.level(k) for k in key]).reshape(-1, self.image.shape[-1])
        return self._stacks[key]

    def warp(self, flow: np.ndarray) -> np.ndarray:
        """flow [H, W, 3] = (dx, dy, sigma) in pixels -> the warped image [H, W, C], float32:
        bilinear in space with edges clamped, linear in sigma (clipped to the volume's range)."""
        flow = np.asarray(flow, np.float32)
        height, width, channels = self.image.shape
        grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
        x = np.clip(grid_x + flow[..., 0], 0.0, width - 1)
        y = np.clip(grid_y + flow[..., 1], 0.0, height - 1)
        x0, y0 = np.floor(x), np.floor(y)
        wx, wy = (x - x0)[..., None], (y - y0)[..., None]
        x0, y0 = x0.astype(np.intp), y0.astype(np.intp)
        x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
        sigmas = self.sigmas.astype(np.float32)
        sigma = np.clip(flow[..., 2], 0.0, sigmas[-1])
        top_level = len(sigmas) - 1
        lower = np.clip(np.searchsorted(sigmas, sigma, side="right") - 1, 0, max(top_level - 1, 0))
        upper = np.minimum(lower + 1, top_level)
        span = sigmas[upper] - sigmas[lower]
        t = np.divide(sigma - sigmas[lower], span, out=np.zeros_like(sigma), where=span > 0)[..., None]
        needed = np.unique(np.concatenate([lower.ravel(), upper.ravel()]))
        volume = self._stack(needed)
        out = np.zeros(self.image.shape, np.float32)
        for levels, weight in ((lower, 1.0 - t), (upper, t)):
            base = np.searchsorted(needed, levels) * (height * width)
            row0, row1 = base + y0 * width, base + y1 * width
            top = np.take(volume, row0 + x0, axis=0) * (1.0 - wx) + np.take(volume, row0 + x1, axis=0) * wx
            bottom = np.take(volume, row1 + x0, axis=0) * (1.0 - wx) + np.take(volume, row1 + x1, axis=0) * wx
            out += weight * (top * (1.0 - wy) + bottom * wy)
        return out


def _block_interpolation(cells: int, block: int) -> np.ndarray:
    """[cells * block, cells] weights of bilinear resizing with half-pixel centres, edges clamped."""
    source = np.clip((np.arange(cells * block) + 0.5) / block - 0.5, 0.0, cells - 1)
    lower = np.floor(source).astype(np.intp)
    upper = np.minimum(lower + 1, cells - 1)
    weights = np.zeros((cells * block, cells))
    rows = np.arange(cells * block)
    weights[rows, lower] = 1.0 - (source - lower)
    weights[rows, upper] += source - lower  # at the clamped edges upper == lower: the weights sum to 1
    return weights


def upsample_blocks(field: np.ndarray, mode: str = "nearest", block: int = MOTION_BLOCK) -> np.ndarray:
    """model/motion.py's upsample_blocks in numpy: [h, w, C] per-block values -> [h block, w block,
    C] float64, each block constant ("nearest") or bilinear between block centres ("bilinear")."""
    field = np.asarray(field, np.float64)
    if mode == "nearest":
        return np.repeat(np.repeat(field, block, axis=0), block, axis=1)
    if mode != "bilinear":
        raise ValueError(f"upsample_blocks: unknown mode {mode!r}")
    rows = _block_interpolation(field.shape[0], block)
    cols = _block_interpolation(field.shape[1], block)
    columns_done = np.tensordot(rows, field, axes=(1, 0))  # [h block, w, C]
    return np.moveaxis(np.tensordot(columns_done, cols, axes=(1, 1)), 1, 2)  # [h block, C, w block] -> [.., w block, C]


#: The scale table (quantization units): SCALE_COUNT log-spaced values in [SCALE_MIN, SCALE_MAX].
#: SCALE_MIN is also the model's clamp (model/entropy.py): a narrower Gaussian is no longer
#: representable by the range coder's integer CDFs (as in tensorflow-compression).
SCALE_COUNT = 64
SCALE_MIN = 0.11
SCALE_MAX = 256.0
#: Probability floor of the model's codelength estimate, equal to the range coder's resolution
#: (16-bit integer CDFs, runtime/entropy_coding.py PRECISION): the coder never charges a symbol
#: more than 16 bits (escapes aside), so a lower floor would make the estimate, and the training
#: rate, charge bits the stream never spends (with 1e-9, up to 30 bits: streams came out 4-6%
#: below it).
LIKELIHOOD_MIN = 2.0**-16


def scale_table() -> np.ndarray:
    """[SCALE_COUNT] float64 scales, log-spaced."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_COUNT))


def scale_boundaries() -> np.ndarray:
    """[SCALE_COUNT - 1] geometric midpoints between neighbouring table scales."""
    table = scale_table()
    return np.sqrt(table[:-1] * table[1:])


def scale_index(scales) -> np.ndarray:
    """Nearest table entry (log domain) of each scale -> int32 indices in [0, SCALE_COUNT)."""
    return np.searchsorted(scale_boundaries(), np.asarray(scales, np.float64), side="right").astype(np.int32)


#: The `small` model's training lambdas at level 0 and at the top level (its training.json): the
#: rate weight of eq. (1) with D the MSE of [0, 1] RGB and R in bits per pixel. Used when neither
#: the settings nor the model card (`lambda_range`) give one.
DEFAULT_LAMBDA_RANGE = (0.6, 0.0011)


def training_lambda(level: float, max_level: float, lambda_range=None) -> float:
    """lambda(level) of the training (§4.1: linear in log space between the range's ends,
    fractional levels too); `lambda_range` None: DEFAULT_LAMBDA_RANGE."""
    first, last = (float(v) for v in (lambda_range or DEFAULT_LAMBDA_RANGE))
    t = level / max_level if max_level > 0 else 0.0
    return first * (last / first) ** t


def check_lambda_range(lambda_range, what: str) -> None:
    """ValueError unless `lambda_range` is None or two finite positive numbers."""
    if lambda_range is None:
        return
    if isinstance(lambda_range, (str, bytes)):
        raise ValueError(f"{what} lambda range must be two positive numbers, got {lambda_range!r}")
    try:
        first, last = (float(v) for v in lambda_range)
    except (TypeError, ValueError):
        raise ValueError(f"{what} lambda range must be two positive numbers, got {lambda_range!r}") from None
    if not (first > 0 and last > 0 and math.isfinite(first) and math.isfinite(last)):
        raise ValueError(f"{what} lambda range must be two positive numbers, got {lambda_range!r}")


class ScaledLambda:
    """Mixin for encoder settings with `lambda_range` (None: the model's) and `lambda_scale`: the
    rate weight an encoder-side rate-distortion choice uses at a level."""

    def rd_lambda(self, level: float, max_level: float, model_range=None) -> float:
        """training_lambda(level) over this range (else `model_range`, the card's), times the scale."""
        return self.lambda_scale * training_lambda(level, max_level, self.lambda_range or model_range)
