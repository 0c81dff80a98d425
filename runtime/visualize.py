"""Pictures of what the codec does: Fig. 5's P-frame intermediates and Fig. 4's bit allocation.

    visualize_pframe:          predicted flow | predictor mask | flow delta | final flow
                               scale-space sigma | residue (x4) | reconstruction | target
    visualize_bit_allocation:  per level: final flow | error (x4) | spatial bits (App. A)

Both run the model's own forward pass with hard rounding (the coding graph's arithmetic, with
the float hyper synthesis), on frames padded to the model's multiple and cropped back. Flows are
drawn as in the paper: hue is the direction, and a fully saturated colour is a motion of 15 px.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np

from model.fileio import as_umask_allows

#: Fig. 5: "a fully saturated color is a flow with a magnitude of 15 pixels".
FLOW_SATURATION_PX = 15.0


def flow_to_rgb(flow: np.ndarray, saturation_px: float = FLOW_SATURATION_PX) -> np.ndarray:
    """[H, W, >=2] (dx, dy) in pixels -> [H, W, 3] float RGB; white is no motion."""
    from matplotlib.colors import hsv_to_rgb

    dx, dy = flow[..., 0], flow[..., 1]
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    saturation = np.clip(np.hypot(dx, dy) / saturation_px, 0.0, 1.0)
    return hsv_to_rgb(np.stack([hue, saturation, np.ones_like(hue)], axis=-1))


def pad_frames(frames: np.ndarray, multiple: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> float [T, H', W', 3] in [0, 1], edge-padded to `multiple`."""
    _, h, w, _ = frames.shape
    padded = np.pad(frames, [(0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0)], mode="edge")
    return padded.astype(np.float32) / 255.0


def _check(frames: np.ndarray, frame_index: int, need_p: bool) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] RGB, got shape {frames.shape}")
    if not 0 <= frame_index < len(frames):
        raise ValueError(f"frame index {frame_index} is outside the clip's {len(frames)} frames")
    if need_p and frame_index < 1:
        raise ValueError("the P-frame view needs frame index >= 1 (frame 0 is the I-frame)")


def _run(model, frames: np.ndarray, level: float, frame_index: int):
    from model.config import FRAME_MULTIPLE

    clip = pad_frames(frames[: frame_index + 1], FRAME_MULTIPLE)
    return model.forward_gop(clip[None], float(level), "round")


def _save_figure(fig, out_path: str) -> None:
    """Writes the PNG through a temporary name in the same folder, renamed on success."""
    folder = os.path.dirname(os.path.abspath(out_path)) or "."
    stem = os.path.splitext(os.path.basename(out_path))[0]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".partial.png", dir=folder)  # video_io's naming
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        as_umask_allows(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _panel_grid(panels, columns: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(panels) + columns - 1) // columns
    h, w = panels[0][1].shape[:2]
    scale = 4.0 / max(h, w)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * w * scale + 1, rows * h * scale + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, image, cmap, *limits) in zip(axes.flat, panels):
        vmin, vmax = limits[0] if limits else (None, None)
        shown = ax.imshow(image, cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
        if cmap is not None:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title, fontsize=10)
    return fig, plt


def visualize_pframe(model, frames: np.ndarray, level: float, frame_index: int, out_path: str) -> dict:
    """Fig. 5 for P-frame `frame_index` of `frames` (uint8 [T, H, W, 3]); returns frame stats."""
    frames = np.asarray(frames)
    _check(frames, frame_index, need_p=True)
    h, w = frames.shape[1:3]
    out = _run(model, frames, level, frame_index)
    p = out.frames[frame_index]
    crop = lambda t: np.asarray(t)[0, :h, :w]  # noqa: E731
    target = frames[frame_index].astype(np.float32) / 255.0
    recon = np.clip(crop(p.reconstruction), 0, 1)
    panels = [
        ("predicted flow", flow_to_rgb(crop(p.predicted_flow)), None),
        ("predictor mask", crop(p.mask).mean(axis=-1), "gray"),
        ("flow delta", flow_to_rgb(crop(p.flow_delta)), None),
        ("final flow", flow_to_rgb(crop(p.flow)), None),
        ("scale-space sigma (px)", np.clip(crop(p.flow)[..., 2], 0, None), "viridis"),
        ("residue x4", np.clip(0.5 + 4 * crop(p.residue), 0, 1), None),
        ("reconstruction", recon, None),
        ("target", target, None),
    ]
    mse = float(np.mean((np.round(recon * 255) - frames[frame_index].astype(np.float32)) ** 2))
    bpp = float(out.bits.numpy()[0, frame_index]) / (h * w)
    psnr = 10 * np.log10(255.0**2 / max(mse, 1e-10))
    fig, plt = _panel_grid(panels, 4, f"P-frame {frame_index}, level {level:g}: {bpp:.4f} bpp (estimated), {psnr:.2f} dB")
    _save_figure(fig, out_path)
    plt.close(fig)
    return {"frame": frame_index, "level": level, "bpp": bpp, "psnr": psnr}


def visualize_bit_allocation(
    model, frames: np.ndarray, levels: Sequence[float], frame_index: int, out_path: str
) -> list:
    """Fig. 4: final flow, error (x4) and spatial bits of one frame at several levels."""
    frames = np.asarray(frames)
    _check(frames, frame_index, need_p=False)
    h, w = frames.shape[1:3]
    panels, stats, bit_maps = [], [], []
    for level in levels:
        out = _run(model, frames, level, frame_index)
        frame = out.frames[frame_index]
        recon = np.clip(np.asarray(frame.reconstruction)[0, :h, :w], 0, 1)
        error = np.abs(recon - frames[frame_index].astype(np.float32) / 255.0).mean(axis=-1)
        # App. A: bits per 16x16 block, spread evenly over its pixels -> bits per pixel.
        bits = np.asarray(out.bit_maps)[0, frame_index]
        bit_maps.append(np.kron(bits, np.ones((16, 16)))[:h, :w] / 256.0)
        bpp = float(out.bits.numpy()[0, frame_index]) / (h * w)
        flow = getattr(frame, "flow", None)
        panels.append((f"level {level:g}: final flow", flow_to_rgb(np.asarray(flow)[0, :h, :w]) if flow is not None else np.ones((h, w, 3)), None))
        panels.append((f"level {level:g}: error x4", np.clip(4 * error, 0, 1), "gray"))
        panels.append((f"level {level:g}: bits/pixel ({bpp:.3f} bpp)", None, "viridis"))
        stats.append({"level": float(level), "bpp": bpp})
    vmax = max(float(b.max()) for b in bit_maps) or 1.0
    for i, bit_map in enumerate(bit_maps):  # one colour scale for every level, as in Fig. 4.
        name = panels[3 * i + 2][0]
        panels[3 * i + 2] = (name, bit_map, "viridis", (0.0, vmax))
    fig, plt = _panel_grid(panels, 3, f"Spatial bit allocation, frame {frame_index}")
    _save_figure(fig, out_path)
    plt.close(fig)
    return stats
