"""Quality metrics on decoded frames: PSNR (RGB and YUV 4:2:0), MS-SSIM and VMAF [Sec. 4.2].

The paper evaluates PSNR and MS-SSIM in RGB "to compare against existing ML-based approaches"
and VMAF through its FFmpeg hook; it notes YUV 4:2:0 would be preferable, so the YUV PSNR with
the customary 6:1:1 (Y:U:V) weighting is reported beside it.

Conventions (the same for every codec the benchmarks measure):

- Inputs are uint8 frames. RGB clips are [T, H, W, 3]; YUV 4:2:0 clips are a `(y, u, v)`
  triple of planes, y [T, H, W], u and v [T, ceil(H/2), ceil(W/2)].
- Every function returns one value per frame (float64 [T]); a sequence score is the mean of
  the per-frame scores (the convention of the learned-video-coding literature, e.g. DCVC).
- PSNR of identical frames is +inf (MSE 0); no cap is applied.
- MS-SSIM follows Wang, Simoncelli and Bovik (2003): 5 scales with weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an 11x11 Gaussian window of sigma 1.5, K1 = 0.01,
  K2 = 0.03, 2x2 average-pool downsampling; computed per RGB channel and averaged over the
  channels, with the same padding and clamping details as `tf.image.ssim_multiscale`, so the
  two agree (tests/test_metrics.py checks it).
- VMAF is libvmaf's built-in `vmaf_v0.6.1` model, run by the ffmpeg that imageio-ffmpeg ships
  (no model file, no download), on YUV 4:2:0 planes.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

Planes = tuple  # (y, u, v) uint8 arrays: [T, H, W], [T, ceil(H/2), ceil(W/2)] twice.

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
YUV_WEIGHTS = (6.0, 1.0, 1.0)
VMAF_MODEL = "version=vmaf_v0.6.1"
PEAK = 255.0


class MetricError(ValueError):
    """Inputs a metric cannot be computed on (shape, dtype, size); the message is one line."""


# --------------------------------------------------------------------------------------------
# PSNR


def _check_pair(ref: np.ndarray, dist: np.ndarray, what: str) -> None:
    if ref.dtype != np.uint8 or dist.dtype != np.uint8:
        raise MetricError(f"{what}: frames must be uint8, got {ref.dtype} and {dist.dtype}")
    if ref.shape != dist.shape:
        raise MetricError(f"{what}: shapes differ, reference {ref.shape} vs decoded {dist.shape}")
    if ref.ndim < 2 or ref.shape[0] == 0:
        raise MetricError(f"{what}: expected a non-empty [T, ...] array, got shape {ref.shape}")


def mse_per_frame(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Mean squared error of each frame, float64 [T]; inputs uint8 [T, ...] of equal shape."""
    _check_pair(ref, dist, "mse")
    diff = ref.astype(np.float64) - dist.astype(np.float64)
    return np.mean(np.square(diff).reshape(ref.shape[0], -1), axis=1)


def psnr_from_mse(mse: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """10 log10(peak^2 / MSE), +inf where MSE is 0."""
    mse = np.asarray(mse, np.float64)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10.0 * np.log10(peak * peak / np.maximum(mse, 1e-300)), np.inf)


def psnr_rgb(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in RGB (the paper's PSNR): MSE over all pixels and the three channels.

    ref, dist: uint8 [T, H, W, 3]. Returns float64 [T], dB.
    """
    if ref.ndim != 4 or ref.shape[-1] != 3:
        raise MetricError(f"psnr_rgb: expected uint8 [T, H, W, 3], got shape {ref.shape}")
    return psnr_from_mse(mse_per_frame(ref, dist))


def _check_planes(planes: Sequence[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(planes) != 3:
        raise MetricError(f"{what}: expected (y, u, v) planes, got {len(planes)} arrays")
    y, u, v = (np.asarray(p) for p in planes)
    if y.ndim != 3:
        raise MetricError(f"{what}: the Y plane must be [T, H, W], got shape {y.shape}")
    t, h, w = y.shape
    chroma = (t, (h + 1) // 2, (w + 1) // 2)
    if u.shape != chroma or v.shape != chroma:
        raise MetricError(f"{what}: 4:2:0 chroma planes must be {chroma}, got {u.shape} and {v.shape}")
    return y, u, v


@dataclass(frozen=True)
class YuvPsnr:
    """Per-frame PSNR of each plane and their 6:1:1 weighted mean; float64 [T] each, dB."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    weighted: np.ndarray


def psnr_yuv420(ref: Planes, dist: Planes) -> YuvPsnr:
    """Per-frame PSNR of each plane of a YUV 4:2:0 clip and (6 PSNR_Y + PSNR_U + PSNR_V) / 8."""
    ry, ru, rv = _check_planes(ref, "psnr_yuv420 reference")
    dy, du, dv = _check_planes(dist, "psnr_yuv420 decoded")
    per_plane = [psnr_from_mse(mse_per_frame(r, d)) for r, d in ((ry, dy), (ru, du), (rv, dv))]
    wy, wu, wv = YUV_WEIGHTS
    weighted = (wy * per_plane[0] + wu * per_plane[1] + wv * per_plane[2]) / (wy + wu + wv)
    return YuvPsnr(*per_plane, weighted=weighted)


# --------------------------------------------------------------------------------------------
# MS-SSIM


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' Gaussian filtering over the two leading axes of x [H, W, ...]."""
    half = len(window) // 2
    y = ndimage.correlate1d(x, window, axis=0, mode="constant")
    y = ndimage.correlate1d(y, window, axis=1, mode="constant")
    return y[half : x.shape[0] - half, half : x.shape[1] - half]


def _ssim_and_cs(x: np.ndarray, y: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean SSIM and mean contrast-structure term per channel of x, y [H, W, C] (float64)."""
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    cov_xy = _filter_valid(x * y, window) - mu_x * mu_y
    var_sum = _filter_valid(x * x + y * y, window) - (mu_x**2 + mu_y**2)
    cs = (2.0 * cov_xy + c2) / (var_sum + c2)
    return np.mean(luminance * cs, axis=(0, 1)), np.mean(cs, axis=(0, 1))


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling after a symmetric pad of odd dimensions (as tf.image.ssim_multiscale)."""
    pad = [(0, x.shape[0] % 2), (0, x.shape[1] % 2)] + [(0, 0)] * (x.ndim - 2)
    if any(p[1] for p in pad):
        x = np.pad(x, pad, mode="symmetric")
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x.reshape(h, 2, w, 2, *x.shape[2:]).mean(axis=(1, 3))


def min_ms_ssim_size() -> int:
    """Smallest height/width MS-SSIM accepts: the coarsest scale must still hold one window."""
    return SSIM_WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1) - (2 ** (len(MS_SSIM_WEIGHTS) - 1) - 1)


def ms_ssim_frame(ref: np.ndarray, dist: np.ndarray) -> float:
    """MS-SSIM of one image pair, uint8 [H, W, C] (or [H, W]); the mean over channels."""
    if ref.ndim == 2:
        ref, dist = ref[..., None], dist[..., None]
    x, y = ref.astype(np.float64), dist.astype(np.float64)
    window = _gaussian_window()
    factors = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        if scale > 0:
            x, y = _downsample(x), _downsample(y)
        if min(x.shape[:2]) < SSIM_WINDOW:
            raise MetricError(
                f"ms_ssim: image {ref.shape[0]}x{ref.shape[1]} is too small for 5 scales "
                f"(needs at least {min_ms_ssim_size()} px per side)"
            )
        ssim, cs = _ssim_and_cs(x, y, window)
        factors.append(np.maximum(cs, 0.0))
    factors[-1] = np.maximum(ssim, 0.0)  # the coarsest scale contributes its full SSIM.
    per_channel = np.prod(np.stack(factors) ** np.asarray(MS_SSIM_WEIGHTS)[:, None], axis=0)
    return float(np.mean(per_channel))


def ms_ssim(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-frame MS-SSIM of uint8 clips [T, H, W, C] (RGB in the paper). Returns float64 [T]."""
    _check_pair(ref, dist, "ms_ssim")
    if ref.ndim != 4:
        raise MetricError(f"ms_ssim: expected uint8 [T, H, W, C], got shape {ref.shape}")
    return np.array([ms_ssim_frame(r, d) for r, d in zip(ref, dist)], np.float64)


# --------------------------------------------------------------------------------------------
# VMAF (libvmaf through ffmpeg)


def ffmpeg_exe() -> str:
    """The ffmpeg binary that imageio-ffmpeg ships (libx264, libx265, libsvtav1, libvmaf)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_yuv420_raw(path: os.PathLike, planes: Planes) -> None:
    """Write planes as a headerless yuv420p file (frame after frame, Y then U then V)."""
    y, u, v = _check_planes(planes, "write_yuv420_raw")
    with open(path, "wb") as f:
        for t in range(y.shape[0]):
            f.write(np.ascontiguousarray(y[t], np.uint8).tobytes())
            f.write(np.ascontiguousarray(u[t], np.uint8).tobytes())
            f.write(np.ascontiguousarray(v[t], np.uint8).tobytes())


def _raw_input(path: pathlib.Path, width: int, height: int) -> list[str]:
    return ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-r", "25", "-i", str(path)]


def vmaf(ref: Planes, dist: Planes, threads: int | None = None) -> np.ndarray:
    """Per-frame VMAF (libvmaf, built-in vmaf_v0.6.1) of decoded planes against the reference.

    Runs ffmpeg's libvmaf filter on two temporary raw yuv420p files. Returns float64 [T].
    """
    ry, _, _ = _check_planes(ref, "vmaf reference")
    dy, _, _ = _check_planes(dist, "vmaf decoded")
    if ry.shape != dy.shape:
        raise MetricError(f"vmaf: shapes differ, reference {ry.shape} vs decoded {dy.shape}")
    frames, height, width = ry.shape
    threads = threads or min(os.cpu_count() or 1, 4)
    with tempfile.TemporaryDirectory(prefix="elfvc_vmaf_") as tmp:
        tmp = pathlib.Path(tmp)
        write_yuv420_raw(tmp / "ref.yuv", ref)
        write_yuv420_raw(tmp / "dist.yuv", dist)
        log = tmp / "vmaf.json"
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
        cmd += _raw_input(tmp / "dist.yuv", width, height) + _raw_input(tmp / "ref.yuv", width, height)
        # libvmaf's first input is the distorted clip, the second the reference.
        cmd += ["-lavfi", f"[0:v][1:v]libvmaf=model={VMAF_MODEL}:log_fmt=json:log_path={log}:n_threads={threads}"]
        cmd += ["-f", "null", "-"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not log.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise MetricError(f"vmaf: ffmpeg libvmaf failed (exit {proc.returncode}): {last}")
        report = json.loads(log.read_text())
    scores = np.array([f["metrics"]["vmaf"] for f in report["frames"]], np.float64)
    if scores.shape != (frames,):
        raise MetricError(f"vmaf: libvmaf scored {scores.shape[0]} frames, expected {frames}")
    return scores


# --------------------------------------------------------------------------------------------
# Block edges


def block_edge_ratio(frames: np.ndarray, block: int = 16) -> np.ndarray:
    """How much stronger luma steps are across a `block`-pixel grid than inside it, per frame.

    Along each axis, the mean absolute difference between adjacent pixels (luma, the mean of R, G
    and B) that straddle a grid line (columns, then rows, at multiples of `block`; the grid starts
    at the top-left pixel, as the codec's latent and motion blocks do) over the same mean for the
    pairs inside a block; the mean of the two axes' ratios (an axis with no steps at all counts
    1). A picture with no grid structure scores about 1 (i.i.d.
    pixel noise: the steps across and inside have one distribution); visible block edges score
    well above 1; a picture flat inside every block (but not uniform) scores +inf. Compare a
    decoded clip's score with its source's.

    frames: uint8 [T, H, W, 3] with H and W at least 2 * block. Returns float64 [T].
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise MetricError(f"block_edge_ratio: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if not (isinstance(block, int) and block >= 2):
        raise MetricError(f"block_edge_ratio: block must be an integer >= 2, got {block!r}")
    if min(frames.shape[1:3]) < 2 * block:
        raise MetricError(f"block_edge_ratio: frames {frames.shape[2]}x{frames.shape[1]} are smaller than two {block}-pixel blocks")
    luma = frames.astype(np.float64).mean(axis=-1)  # [T, H, W]
    ratios = []
    for diffs in (np.abs(np.diff(luma, axis=2)), np.abs(np.diff(luma, axis=1)).transpose(0, 2, 1)):
        on_grid = (np.arange(diffs.shape[2]) + 1) % block == 0  # the pair (j, j + 1) straddles a grid line
        across = diffs[:, :, on_grid].mean(axis=(1, 2))
        inside = diffs[:, :, ~on_grid].mean(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.where(inside > 0, across / np.maximum(inside, 1e-300), np.where(across > 0, np.inf, 1.0)))
    return (ratios[0] + ratios[1]) / 2.0


# --------------------------------------------------------------------------------------------
# All metrics of one decoded clip


@dataclass(frozen=True)
class Quality:
    """Sequence scores of one decoded clip (means of the per-frame values)."""

    psnr_rgb: float
    psnr_yuv: float  # 6:1:1 weighted
    psnr_y: float
    ms_ssim: float  # RGB
    vmaf: float | None  # None when not requested

    def as_dict(self) -> dict[str, float | None]:
        return {
            "psnr_rgb": self.psnr_rgb,
            "psnr_yuv": self.psnr_yuv,
            "psnr_y": self.psnr_y,
            "ms_ssim": self.ms_ssim,
            "vmaf": self.vmaf,
        }


def _mean(values: np.ndarray) -> float:
    value = float(np.mean(values))
    return value if math.isfinite(value) else float("inf")


def evaluate(
    ref_rgb: np.ndarray,
    dist_rgb: np.ndarray,
    ref_yuv: Planes,
    dist_yuv: Planes,
    with_vmaf: bool = True,
) -> Quality:
    """All metrics of a decoded clip against its source, in both colour spaces.

    The RGB pair feeds PSNR-RGB and MS-SSIM; the YUV 4:2:0 pair feeds the YUV PSNR and VMAF.
    Callers convert between the two with runtime.video_io's single conversion pair.
    """
    yuv = psnr_yuv420(ref_yuv, dist_yuv)
    return Quality(
        psnr_rgb=_mean(psnr_rgb(ref_rgb, dist_rgb)),
        psnr_yuv=_mean(yuv.weighted),
        psnr_y=_mean(yuv.y),
        ms_ssim=_mean(ms_ssim(ref_rgb, dist_rgb)),
        vmaf=_mean(vmaf(ref_yuv, dist_yuv)) if with_vmaf else None,
    )
