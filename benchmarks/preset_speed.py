"""Encode speed of the encoder presets (runtime/presets.py) on one clip, in one process.

    python -m benchmarks.preset_speed --clip=CLIP [--model=DIR] [--presets=medium,slow] [--frames=16]
        [--veryslow_frames=4] [--gop=16] [--level=4] [--warmup=2] [--out_dir=DIR]

Reads the clip's first `warmup + frames` frames once (a video file or a PNG folder, as `elfvc
encode` reads), then for each preset encodes the first `warmup` of them to a real .elfvc file
(graph tracing and the first-call costs excluded from the timing), then the next `frames`
(veryslow: `--veryslow_frames`, it runs ~40x slower) to another, timed with the file's writing
included: FPS = frames / seconds. The rate control is what `elfvc encode --level=L` does: a
constant level, P-frames at the model card's offsets. Prints one line per preset with the
stream's bpp (its real size), the encoder's mean PSNR-RGB (`n/a` where the preset reconstructs
nothing: `fast` at GOP 1) and the FPS, and with --out_dir keeps the streams there and writes
the table as speed.json. What scripts/presets.sh and scripts/presets_gop16.sh time
(docs/BENCHMARKS.md, "Encoder presets"). A speed figure is a ratio between the presets of one run.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

from model import clikit  # first: quiets TensorFlow's C++ log

from absl import flags

from runtime.presets import PRESETS

PROG = "preset_speed"
FLAGS = flags.FlagValues()
flags.DEFINE_string("clip", None, "Video to encode (y4m, mp4, ...).", flag_values=FLAGS)
clikit.define_model(FLAGS)
clikit.define_backend(FLAGS)
flags.DEFINE_list("presets", list(PRESETS), "Presets to time, in this order.", flag_values=FLAGS)
clikit.define_frames(FLAGS, 16, "Frames timed per preset (after the warm-up).")
flags.DEFINE_integer("veryslow_frames", None, "Frames timed for veryslow (default: --frames).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("warmup", 2, "Frames encoded first per preset, untimed.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("gop", None, "I-frame interval (default: the model card's; 0: one I-frame).", lower_bound=0,
                     flag_values=FLAGS)
clikit.define_level(FLAGS, 4.0)
clikit.define_out_dir(FLAGS, None, "Keep the streams here and write speed.json (default: nothing kept).")


def time_presets(clip, presets, frames: int, veryslow_frames: int, warmup: int, level: float, gop=None,
                 model=None, backend_name: str = "tf", out_dir=None) -> list:
    """One row per preset: {preset, frames, width, height, gop, level, bpp, bytes, psnr_rgb, fps}."""
    from model.bundle import default_bundle, load_bundle
    from runtime import video_io
    from runtime.backends import get_backend
    from runtime.ratecontrol import make_controller
    from runtime.stream import encode_video
    from runtime.types import CodecError

    longest = max(veryslow_frames if p == "veryslow" else frames for p in presets)
    clip_frames, info = video_io.read_video(clip, warmup + longest)  # before the model: a bad clip fails fast
    if len(clip_frames) < warmup + longest:
        raise CodecError(f"{clip} has {len(clip_frames)} frames; the timing needs {warmup + longest} "
                         f"({warmup} warm-up + {longest})")
    bundle = load_bundle(model) if model else default_bundle()
    gop = bundle.coding_gop if gop is None else gop
    if gop != 1 and warmup < 2:  # an I-frame alone would leave the P-frame networks' tracing in the timing
        raise ValueError(f"--warmup {warmup}: with P-frames (GOP {gop}) the warm-up needs 2 frames or more, an I and a P")
    controller = dict(max_level=bundle.config.max_level, level=level, p_level_offset=bundle.p_level_offset)
    make_controller(**controller)  # a level outside the model's range: ValueError before any coding
    rows = []
    with tempfile.TemporaryDirectory(prefix="preset_speed") as tmp, get_backend(backend_name, bundle) as backend:
        folder = pathlib.Path(out_dir or tmp)
        for preset in presets:
            n = veryslow_frames if preset == "veryslow" else frames
            kw = dict(fps=info.fps, gop=gop, backend=backend, bundle=bundle, preset=preset)
            encode_video(clip_frames[:warmup], pathlib.Path(tmp) / "warmup.elfvc", controller=make_controller(**controller), **kw)
            start = time.perf_counter()
            summary = encode_video(clip_frames[warmup:warmup + n], folder / f"{pathlib.Path(clip).stem}_{preset}.elfvc",
                                   controller=make_controller(**controller), **kw)
            seconds = time.perf_counter() - start
            rows.append(dict(preset=preset, frames=n, width=summary.width, height=summary.height, gop=gop, level=level,
                             bpp=summary.bpp, bytes=summary.total_bytes, psnr_rgb=summary.mean_psnr, fps=n / seconds))
    return rows


def format_row(row: dict) -> str:
    psnr = "n/a" if row["psnr_rgb"] is None else f"{row['psnr_rgb']:.2f} dB"
    return (f"{row['preset']}: {row['frames']} frames {row['width']}x{row['height']}, GOP {row['gop']}, level "
            f"{row['level']:g}: {row['bpp']:.4f} bpp, {psnr}, encode {row['fps']:.2f} fps")


def main(argv) -> int:
    from runtime.types import CodecError

    return clikit.run(PROG, _main, argv, failures=(CodecError, ValueError, OSError), tracebacks=True)


def _main(argv) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    if not FLAGS.clip:
        raise clikit.UsageError("--clip is required")
    unknown = [p for p in FLAGS.presets if p not in PRESETS]
    if unknown or not FLAGS.presets:
        raise clikit.UsageError(f"--presets takes a comma list of {', '.join(PRESETS)}; got {','.join(FLAGS.presets) or 'nothing'}")
    if FLAGS.out_dir:
        os.makedirs(FLAGS.out_dir, exist_ok=True)
    rows = time_presets(FLAGS.clip, FLAGS.presets, FLAGS.frames, FLAGS.veryslow_frames or FLAGS.frames, FLAGS.warmup,
                        FLAGS.level, FLAGS.gop, FLAGS.model, FLAGS.backend, FLAGS.out_dir)
    for row in rows:
        print(format_row(row), flush=True)
    if FLAGS.out_dir:
        target = pathlib.Path(FLAGS.out_dir) / "speed.json"
        tmp = target.with_name(f"speed.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
