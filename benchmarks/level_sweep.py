"""Quality and rate against the continuous level (§3.1, App. E): does quality rise monotonically?

    python -m benchmarks.level_sweep --clip=CLIP --step=0.5 [--frames=8] [--model=DIR] [--out=JSON]
    python -m benchmarks.level_sweep --load=B.json --anchor=A.json      # compare two saved sweeps

Codes the clip at levels 0, step, 2 step, ..., L-1 through real .elfvc files (a fixed GOP of 16,
no scene-cut I-frames; the default model unless --model), and prints bpp (file size), the mean
RGB PSNR of the decoded frames, the worst frame's PSNR (a P-frame loop that drifts over the GOP
shows here first: the model trains on IPPP, §4.1, and is unrolled to 16 frames), and whether
rate and mean PSNR are monotone in the level, and the GOP drift (`gop_drift`: how much PSNR
the P-frames lose from a GOP's start to its end, where a GOP has at least 8 frames; the model
trains on short GOPs, so this is what a 16-frame GOP costs). Writes the table, with every frame's PSNR, as JSON
with --out. With --anchor=A.json (an earlier sweep of the same clip, another model, say) it also
prints the BD-rate of this sweep against A in PSNR-RGB (`benchmarks.bdrate.bd_rate`: cubic in
log-rate, over the PSNR range both cover; negative = fewer bits); --load=B.json reads a saved
sweep instead of coding one. Exit status 2 for a bad command line, 1 for a clip, model or
sweep file that cannot be used.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from typing import Optional

from model import clikit  # first: quiets TensorFlow's C++ log

from absl import flags

from model.level_offsets import level_offsets_json, parse_level_offsets
from runtime.presets import DEFAULT_PRESET, PRESETS

PROG = "level_sweep"
FLAGS = flags.FlagValues()
flags.DEFINE_string("clip", None, "Video to code (y4m, mp4, ...).", flag_values=FLAGS)
flags.DEFINE_float("step", 0.5, "Level spacing (fractional levels interpolate, App. E).", flag_values=FLAGS)
clikit.define_frames(FLAGS, 8, "Frames to code (GOP: the model card's, else an I-frame then P-frames).", lower_bound=None)
clikit.define_model(FLAGS)
clikit.define_backend(FLAGS)
flags.DEFINE_string("out", None, "Optional JSON output.", flag_values=FLAGS)
flags.DEFINE_string("anchor", None, "A saved sweep (--out) to report this one's BD-rate against.", flag_values=FLAGS)
flags.DEFINE_string("load", None, "Read this saved sweep instead of coding --clip.", flag_values=FLAGS)
flags.DEFINE_enum("preset", DEFAULT_PRESET, list(PRESETS), "Encoder preset (runtime/presets.py).", flag_values=FLAGS)
flags.DEFINE_integer("gop", None, "I-frame interval (default: the model card's, else 16; 0: one I-frame).", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_bool("motion_refine", False, "Encoder-side rate-distortion choice of the quantized block motion "
                  "(runtime/motion_refine.py).", flag_values=FLAGS)
flags.DEFINE_float("motion_lambda_scale", 1.0, "Scale of the motion refinement's lambda.", flag_values=FLAGS)
flags.DEFINE_string("p_level_offset", None, "P-frames at level + this, clipped to the model's range; a comma list "
                    "is cycled over each GOP's P-frames (default: the model card's, else 0).", flag_values=FLAGS)
flags.DEFINE_bool("rd_frame_type", None, "Code every P-frame as an I-frame too and keep the cheaper in rate + lambda x "
                  "distortion (runtime/stream.py; default: the preset's, on in veryslow).", flag_values=FLAGS)


def sweep(clip, step: float, frames_wanted: int, model_dir=None, backend_name="tf", motion_refinement=None,
          preset="medium", gop=None, rd_frame_type=None, p_level_offset=None) -> list:
    import numpy as np

    from runtime import metrics, video_io
    from runtime.backends import get_backend
    from model.bundle import default_bundle, load_bundle
    from runtime.ratecontrol import ConstantLevel
    from runtime.stream import decode_video, encode_video

    if step <= 0:
        raise ValueError(f"--step must be positive, got {step}")
    bundle = load_bundle(model_dir) if model_dir else default_bundle()
    note = bundle.uncarded_note(gop, p_level_offset is not None)
    if note:
        print(note, file=sys.stderr)
    if gop is None:
        gop = bundle.coding_gop  # the model card's (base: 16)
    p_level_offset = bundle.p_level_offset if p_level_offset is None else parse_level_offsets(p_level_offset)
    frames, info = video_io.read_video(clip, frames_wanted)
    h, w = frames.shape[1:3]
    levels = list(np.arange(0.0, bundle.config.max_level + 1e-9, step))
    rows = []
    with get_backend(backend_name, bundle) as backend, tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            path = os.path.join(tmp, f"{level:g}.elfvc")
            # scenecut=0: a fixed GOP, so a P-frame loop that drifts shows instead of being cut short.
            summary = encode_video(frames, path, fps=info.fps, gop=gop, controller=ConstantLevel(float(level), p_level_offset, bundle.config.max_level),
                                   backend=backend, bundle=bundle, scenecut=0, motion_refinement=motion_refinement,
                                   preset=preset, rd_frame_type=rd_frame_type)
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
                "frame_types": "".join(r.frame_type.name for r in summary.frames),
                "p_level_offset": level_offsets_json(p_level_offset) if gop != 1 else 0.0,
                # What was coded: --anchor compares only sweeps of the same frames.
                "clip": os.path.basename(str(clip)), "frames": len(frames), "width": int(w), "height": int(h),
                "gop": gop, "model": bundle.model_id_hex, "preset": preset,
            })
    return rows


DRIFT_MIN_GOP = 8  # frames: shorter GOPs have too few P-frames for a start and an end
DRIFT_SPAN = 3  # P-frames averaged at each end


def gop_drift(row) -> Optional[float]:
    """Mean RGB PSNR of the first DRIFT_SPAN P-frames of each GOP minus that of its last
    DRIFT_SPAN (dB; positive: quality falls along the GOP), averaged over the GOPs of at least
    DRIFT_MIN_GOP frames (an I-frame and the P-frames up to the next); None if there is none."""
    types, psnr = row.get("frame_types", ""), row.get("psnr_rgb_by_frame", [])
    if len(types) != len(psnr):
        return None
    starts = [i for i, t in enumerate(types) if t == "I"] + [len(types)]
    drifts = []
    for a, b in zip(starts, starts[1:]):
        p_frames = psnr[a + 1 : b]
        if b - a >= DRIFT_MIN_GOP and all(t == "P" for t in types[a + 1 : b]):
            drifts.append(sum(p_frames[:DRIFT_SPAN]) / DRIFT_SPAN - sum(p_frames[-DRIFT_SPAN:]) / DRIFT_SPAN)
    return sum(drifts) / len(drifts) if drifts else None


def monotone(values) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def load_rows(path) -> list:
    """A sweep written by --out: a list of rows with a positive finite bpp and a finite psnr_rgb."""
    import math

    try:
        with open(path) as f:
            rows = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON sweep ({err.msg} at line {err.lineno})") from None
    ok = isinstance(rows, list) and len(rows) >= 2 and all(
        isinstance(r, dict)
        and all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in ("level", "bpp", "psnr_rgb"))
        and r["bpp"] > 0
        for r in rows
    )
    if not ok:
        raise ValueError(f"{path}: not a level sweep (want a list of >= 2 rows with level, bpp > 0 and psnr_rgb)")
    return rows


#: Row fields that name the coded frames: two sweeps are compared only where they agree on them.
SAME_FRAMES = ("clip", "frames", "width", "height")


def bd_rate_against(anchor_rows, rows) -> float:
    """BD-rate (%) of `rows` against `anchor_rows` in PSNR-RGB; ValueError for sweeps of other
    frames (a bedroom sweep against a street one gave -85% without a word)."""
    from benchmarks.bdrate import bd_rate

    ours = {k: rows[0].get(k) for k in SAME_FRAMES}
    theirs = {k: anchor_rows[0].get(k) for k in SAME_FRAMES}
    differ = [k for k in SAME_FRAMES if ours[k] is not None and theirs[k] is not None and ours[k] != theirs[k]]
    if differ:
        describe = lambda d: f"{d['clip']}, {d['frames']} frames of {d['width']}x{d['height']}"  # noqa: E731
        raise ValueError(f"--anchor sweeps other frames ({describe(theirs)}) than this one ({describe(ours)})")

    return bd_rate(
        [r["bpp"] for r in anchor_rows], [r["psnr_rgb"] for r in anchor_rows], [r["bpp"] for r in rows], [r["psnr_rgb"] for r in rows]
    )


def main(argv) -> int:
    from runtime.types import CodecError

    return clikit.run(PROG, _main, argv, failures=(CodecError, ValueError, OSError), tracebacks=True)


def _main(argv) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    problem = None
    if FLAGS.load and FLAGS.clip:
        problem = "give --clip (code a sweep) or --load (read one), not both"
    elif not FLAGS.load and not FLAGS.clip:
        problem = "--clip is required"
    elif FLAGS.step <= 0:
        problem = f"--step must be positive, got {FLAGS.step:g}"
    elif not FLAGS.motion_lambda_scale >= 0:  # NaN too
        problem = f"--motion_lambda_scale must be >= 0, got {FLAGS.motion_lambda_scale:g}"
    elif FLAGS["motion_lambda_scale"].present and not FLAGS.motion_refine:
        problem = "--motion_lambda_scale needs --motion_refine"
    elif FLAGS.p_level_offset is not None:
        try:
            parse_level_offsets(FLAGS.p_level_offset)
        except ValueError as err:
            problem = f"--p_level_offset {err}"
    if problem:
        raise clikit.UsageError(problem)
    anchor = load_rows(FLAGS.anchor) if FLAGS.anchor else None
    refinement = None
    if FLAGS.motion_refine:
        from runtime.motion_refine import MotionRefinement

        refinement = MotionRefinement(lambda_scale=FLAGS.motion_lambda_scale)
    rows = load_rows(FLAGS.load) if FLAGS.load else sweep(
        FLAGS.clip, FLAGS.step, FLAGS.frames, FLAGS.model, FLAGS.backend, refinement, FLAGS.preset, FLAGS.gop,
        FLAGS.rd_frame_type, FLAGS.p_level_offset,
    )
    bd = bd_rate_against(anchor, rows) if anchor else None
    print(f"{'level':>6} {'bpp':>8} {'PSNR':>7} {'worst':>7} {'drift':>6}  frames")
    for row in rows:
        drift = gop_drift(row)
        print(f"{row['level']:>6.2f} {row['bpp']:>8.4f} {row['psnr_rgb']:>7.2f} {row.get('psnr_rgb_worst_frame', float('nan')):>7.2f}"
              f" {'-' if drift is None else f'{drift:.2f}':>6}  {row.get('frame_types', '')}")
    print(f"bpp monotone: {monotone([r['bpp'] for r in rows])}; PSNR monotone: {monotone([r['psnr_rgb'] for r in rows])}")
    if anchor:
        print(f"BD-rate against {FLAGS.anchor} (PSNR-RGB): {bd:+.2f}%")
    if FLAGS.out:
        tmp = f"{FLAGS.out}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, FLAGS.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
