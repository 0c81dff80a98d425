"""Quality and rate against the continuous level (§3.1, App. E): does quality rise monotonically?

    python -m benchmarks.level_sweep --clip=CLIP --step=0.5 [--frames=8] [--model=DIR]

Codes the clip at levels 0, step, 2 step, ..., L-1 through real .elfvc files (a fixed GOP of 16,
no scene-cut I-frames; the default model unless --model), and prints bpp (file size), the mean
RGB PSNR of the decoded frames, the worst frame's PSNR (a P-frame loop that drifts over the GOP
shows here first: the model trains on IPPP, §4.1, and is unrolled to 16 frames), and whether
rate and mean PSNR are monotone in the level. Writes the table, with every frame's PSNR, as JSON
with --out. Exit status
2 for a bad command line, 1 for a clip or model that cannot be used.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

from benchmarks._cli import parse_argv  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_string("clip", None, "Video to code (y4m, mp4, ...).", flag_values=FLAGS)
flags.DEFINE_float("step", 0.5, "Level spacing (fractional levels interpolate, App. E).", flag_values=FLAGS)
flags.DEFINE_integer("frames", 8, "Frames to code (an I-frame then P-frames).", flag_values=FLAGS)
flags.DEFINE_string("model", None, "Model folder (default: the shipped model).", flag_values=FLAGS)
flags.DEFINE_string("backend", "tf", "Backend.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Optional JSON output.", flag_values=FLAGS)


def sweep(clip, step: float, frames_wanted: int, model_dir=None, backend_name="tf") -> list:
    import numpy as np

    from runtime import metrics, video_io
    from runtime.backends import get_backend
    from runtime.bundle import default_bundle, load_bundle
    from runtime.ratecontrol import ConstantLevel
    from runtime.stream import decode_video, encode_video

    if step <= 0:
        raise ValueError(f"--step must be positive, got {step}")
    bundle = load_bundle(model_dir) if model_dir else default_bundle()
    frames, info = video_io.read_video(clip, frames_wanted)
    h, w = frames.shape[1:3]
    levels = list(np.arange(0.0, bundle.config.max_level + 1e-9, step))
    rows = []
    with get_backend(backend_name, bundle) as backend, tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            path = os.path.join(tmp, f"{level:g}.elfvc")
            # scenecut=0: a fixed GOP, so a P-frame loop that drifts shows instead of being cut short.
            encode_video(frames, path, fps=info.fps, gop=16, controller=ConstantLevel(float(level)),
                         backend=backend, bundle=bundle, scenecut=0)
            decoded = []
            decode_video(path, decoded.append, backend, bundle)
            size = os.path.getsize(path)
            psnr = metrics.psnr_rgb(frames, np.stack(decoded))
            rows.append({
                "level": float(level),
                "bpp": 8 * size / (len(frames) * w * h),
                "psnr_rgb": float(np.mean(psnr)),
                "psnr_rgb_worst_frame": float(np.min(psnr)),
                "psnr_rgb_by_frame": [round(float(v), 4) for v in psnr],
            })
    return rows


def monotone(values) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def main(argv) -> int:
    from runtime.types import CodecError

    status = parse_argv(FLAGS, argv)
    if status is not None:
        return status
    if not FLAGS.clip or FLAGS.step <= 0:
        problem = "--clip is required" if not FLAGS.clip else f"--step must be positive, got {FLAGS.step:g}"
        print(f"level_sweep: error: {problem}", file=sys.stderr)
        return 2
    try:
        rows = sweep(FLAGS.clip, FLAGS.step, FLAGS.frames, FLAGS.model, FLAGS.backend)
    except (CodecError, ValueError, OSError) as err:
        print(f"level_sweep: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"{'level':>6} {'bpp':>8} {'PSNR':>7} {'worst':>7}")
    for row in rows:
        print(f"{row['level']:>6.2f} {row['bpp']:>8.4f} {row['psnr_rgb']:>7.2f} {row['psnr_rgb_worst_frame']:>7.2f}")
    print(f"bpp monotone: {monotone([r['bpp'] for r in rows])}; PSNR monotone: {monotone([r['psnr_rgb'] for r in rows])}")
    if FLAGS.out:
        tmp = f"{FLAGS.out}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, FLAGS.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
