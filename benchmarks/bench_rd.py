"""R-D benchmark: this codec over a sweep of levels against x264, x265 and SVT-AV1 [Sec. 4.2-4.3,
App. H, App. I].

For each clip: the clip becomes one 8-bit 4:2:0 source (benchmarks/anchors.py). This codec
encodes its RGB frames (runtime.video_io's conversion, what `elfvc encode` reads from a y4m) at
each level through runtime.stream into a real .elfvc file, then decodes that file; each anchor
encodes the y4m at each CRF / QP and ffmpeg decodes what it wrote. Sizes are the files' sizes;
metrics (runtime.metrics) are measured on the decoded frames against the same source: PSNR and
MS-SSIM in RGB, PSNR (6:1:1) and VMAF in YUV 4:2:0. Everything lands in one JSON schema
(benchmarks/schema.py) that the one plotting path (benchmarks/plot.py) reads.

BD-rate (benchmarks/bdrate.py, cubic fit of ln rate against quality by default) of this codec
against each anchor, per clip and as the mean over clips, for every metric. With several
models (--models), their points merge by App. I's upper convex hull under each metric.

    python -m benchmarks.bench_rd --clips=../shared/data/eval/video/street_320x180_21f.y4m \\
        --out_dir=out/rd

writes out/rd/results.json, out/rd/results.md and out/rd/rd_<clip>.png.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from model import clikit  # first: quiets TensorFlow's C++ log

import numpy as np
from absl import flags

from benchmarks import anchors as anchors_lib
from benchmarks.bdrate import METHODS
from benchmarks.plot import bd_markdown, plot_rd, points_markdown
from benchmarks.schema import ELFVC, METRICS, BDEntry, RDPoint, RDReport, bd_entry, mean_entry, merged_curve
from model.level_offsets import format_level_offsets, level_offsets_json, parse_level_offsets
from runtime import metrics as metrics_lib
from runtime.presets import DEFAULT_PRESET, PRESETS
from runtime.types import CodecError
from runtime.video_io import rgb_to_yuv420, yuv420_to_rgb

DEFAULT_LEVELS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)


class BenchError(RuntimeError):
    """A benchmark that cannot run as asked; the message is one line."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of this codec: a label and a checkpoint folder (None: the default model)."""

    label: str
    path: Optional[str] = None


@dataclass(frozen=True)
class RDConfig:
    clips: tuple[pathlib.Path, ...]
    out_dir: pathlib.Path
    levels: tuple[float, ...] = DEFAULT_LEVELS
    models: tuple[ModelSpec, ...] = (ModelSpec("default"),)
    anchors: tuple[str, ...] = ("x264", "x265", "svtav1")
    sweeps: dict = dataclasses.field(default_factory=dict)  # anchor -> knob values
    max_frames: Optional[int] = None
    gop: Optional[int] = None  # None: each model's card GOP (runtime/checkpoints/*/model_card.json), else 16
    backend: str = "tf"
    with_vmaf: bool = True
    bd_method: str = "cubic"
    keep_streams: bool = False
    motion_refine: bool = False  # this codec's encoder-side motion choice (runtime/motion_refine.py)
    preset: str = "medium"  # this codec's encoder preset (runtime/presets.py)
    rd_frame_type: Optional[bool] = None  # each P-frame also tried as an I-frame (None: the preset's)
    p_level_offset: Optional[tuple] = None  # P-frames at level + this, or a pattern (None: each model's card, else 0)


# --------------------------------------------------------------------------------------------
# This codec


@dataclass(frozen=True)
class ElfRun:
    level: float
    nbytes: int
    decoded: np.ndarray  # uint8 [T, H, W, 3]
    encode_s: float
    decode_s: float
    frame_types: str = ""  # "IPPP...": as coded (the scene-cut check may start a GOP early)


class ElfCodec:
    """This codec for one model and backend: encodes frames to a real file and decodes it."""

    def __init__(self, spec: ModelSpec, backend_name: str, gop: Optional[int], motion_refine: bool = False,
                 preset: str = "medium", rd_frame_type: Optional[bool] = None, p_level_offset: Optional[tuple] = None):
        from runtime.backends import get_backend
        from model.bundle import default_bundle, load_bundle

        self.spec = spec
        self.bundle = load_bundle(spec.path) if spec.path else default_bundle()
        self.backend = get_backend(backend_name, self.bundle)
        self.gop = gop if gop is not None else self.bundle.coding_gop
        self.motion_refine = motion_refine
        self.preset = preset
        self.rd_frame_type = rd_frame_type
        self.p_level_offset = parse_level_offsets(p_level_offset) if p_level_offset is not None else self.bundle.p_level_offset
        self.note = self.bundle.uncarded_note(gop, p_level_offset is not None)

    @property
    def trained(self) -> bool:
        return bool(self.bundle.trained)

    @property
    def max_level(self) -> float:
        return float(self.bundle.config.max_level)

    def describe(self) -> str:
        state = "trained" if self.trained else "UNTRAINED"
        return (f"{self.spec.label}: {self.bundle.source} ({self.bundle.config.name} config, {state}, "
                f"id {self.bundle.model_id_hex[:12]}, GOP {self.gop}"
                + (f", P-frames at level {format_level_offsets(self.p_level_offset, signed=True)}"
                   if any(self.p_level_offset) and self.gop != 1 else "") + ")")

    def run(self, frames: np.ndarray, fps, level: float, stream: pathlib.Path) -> ElfRun:
        from runtime.motion_refine import MotionRefinement
        from runtime.ratecontrol import ConstantLevel
        from runtime.stream import decode_video, encode_video

        start = time.perf_counter()
        summary = encode_video(iter(frames), stream, fps=fps, gop=self.gop, controller=ConstantLevel(level, self.p_level_offset, self.max_level),
                     backend=self.backend, bundle=self.bundle, preset=self.preset, rd_frame_type=self.rd_frame_type,
                     motion_refinement=MotionRefinement() if self.motion_refine else None)  # fmt: skip
        encode_s = time.perf_counter() - start
        decoded: list[np.ndarray] = []
        start = time.perf_counter()
        decode_video(stream, decoded.append, backend=self.backend, bundle=self.bundle)
        decode_s = time.perf_counter() - start
        out = np.stack(decoded)
        if out.shape != frames.shape:
            raise BenchError(f"{stream.name}: decoded {out.shape}, expected {frames.shape}")
        types = "".join(f.frame_type.name for f in summary.frames)
        return ElfRun(level, stream.stat().st_size, out, encode_s, decode_s, types)

    def close(self) -> None:
        self.backend.close()


# --------------------------------------------------------------------------------------------
# The benchmark


def _point(codec, source, setting, param, nbytes, quality, encode_s, decode_s, model, frame_types="") -> RDPoint:
    return RDPoint.make(codec, source.name, setting, param, nbytes, source.frames, source.width, source.height,
                        float(source.fps), quality.as_dict(), encode_s, decode_s, model, frame_types)  # fmt: skip


def _scene_cuts(frame_types: str, gop: int) -> list[int]:
    """Frames coded as I-frames where the GOP schedule had a P-frame (the scene-cut check, or
    `--rd_frame_type`): a GOP restarts at each (runtime.types.scheduled_intra)."""
    from runtime.types import scheduled_intra

    cuts, last = [], None
    for index, kind in enumerate(frame_types):
        if kind == "I":
            if not scheduled_intra(index, last, gop):
                cuts.append(index)
            last = index
    return cuts


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bd_pairs(anchors: Sequence[str]) -> list[tuple[str, str]]:
    """(test, anchor) pairs: this codec against every anchor, and, as a check on the anchors
    themselves, every other anchor against the first (x265 and SVT-AV1 against x264)."""
    return [(ELFVC, a) for a in anchors] + [(b, anchors[0]) for b in anchors[1:]]


def bd_entries(report: RDReport, pairs: Sequence[tuple[str, str]], method: str) -> list[BDEntry]:
    """BD-rate of each (test, anchor) pair, per clip and averaged over clips, for every metric."""
    entries = []
    for test, anchor in pairs:
        for metric in METRICS:
            values = []
            for clip in report.clips():
                ours = merged_curve(report, test, clip, metric)
                theirs = merged_curve(report, anchor, clip, metric)
                if not ours or not theirs:
                    continue
                entries.append(bd_entry(test, anchor, clip, metric, ours, theirs, method))
                values.append(entries[-1].value)  # None where this clip has none
            if values:
                entries.append(mean_entry(test, anchor, metric, values))
    return entries


def run_benchmark(cfg: RDConfig) -> RDReport:
    """Runs every codec on every clip; returns the report (not yet written)."""
    if cfg.bd_method not in METHODS:
        raise BenchError(f"unknown BD method {cfg.bd_method!r}; choose one of {', '.join(METHODS)}")
    anchors = [anchors_lib.get_anchor(a) for a in cfg.anchors]
    points: list[RDPoint] = []
    elf_codecs = [ElfCodec(spec, cfg.backend, cfg.gop, cfg.motion_refine, cfg.preset, cfg.rd_frame_type, cfg.p_level_offset)
                  for spec in cfg.models]
    try:
        for codec in elf_codecs:
            bad = [lv for lv in cfg.levels if not 0 <= lv <= codec.max_level]
            if bad:
                raise BenchError(f"levels {bad} are outside the model's range [0, {codec.max_level:g}]")
            _log(f"model {codec.describe()}")
            if codec.note:
                _log(codec.note)
        streams = cfg.out_dir / "streams"
        if cfg.keep_streams:
            streams.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="elfvc_rd_", dir=cfg.out_dir) as tmp:
            work = pathlib.Path(tmp)
            for clip in cfg.clips:
                source = anchors_lib.prepare_source(clip, work, cfg.max_frames)
                _log(f"{source.name}: {source.frames} frames {source.width}x{source.height} @ {float(source.fps):g} fps")
                ref_rgb = yuv420_to_rgb(source.planes)

                def measure(decoded_rgb, decoded_yuv):
                    return metrics_lib.evaluate(ref_rgb, decoded_rgb, source.planes, decoded_yuv, cfg.with_vmaf)

                for codec in elf_codecs:
                    for level in cfg.levels:
                        folder = streams if cfg.keep_streams else work
                        stream = folder / f"{source.name}.{codec.spec.label}.l{level:g}.elfvc"
                        run = codec.run(ref_rgb, source.fps, level, stream)
                        quality = measure(run.decoded, rgb_to_yuv420(run.decoded))
                        points.append(_point(ELFVC, source, f"level={level:g}", level, run.nbytes, quality,
                                             run.encode_s, run.decode_s, codec.describe(), run.frame_types))  # fmt: skip
                        cuts = _scene_cuts(run.frame_types, codec.gop)
                        _log(f"  elfvc {codec.spec.label} level {level:g}: {points[-1].bpp:.4f} bpp, "
                             f"PSNR {quality.psnr_rgb:.2f} dB" + (f", scene-cut I-frames at {cuts}" if cuts else ""))  # fmt: skip
                for anchor in anchors:
                    for value in cfg.sweeps.get(anchor.name, anchor.sweep):
                        run = anchors_lib.run_anchor(anchor, value, source, work)
                        quality = measure(yuv420_to_rgb(run.decoded), run.decoded)
                        points.append(_point(anchor.name, source, anchor.setting(value), value, run.nbytes, quality,
                                             run.encode_s, run.decode_s, ""))  # fmt: skip
                        if cfg.keep_streams:
                            shutil.copy(run.stream, streams / run.stream.name)
                        _log(f"  {anchor.name} {anchor.setting(value)}: {points[-1].bpp:.4f} bpp, "
                             f"PSNR {quality.psnr_rgb:.2f} dB")  # fmt: skip
        report = RDReport(points=tuple(points))
        meta = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "models": [c.describe() for c in elf_codecs],
            "trained": all(c.trained for c in elf_codecs),
            "backend": cfg.backend,
            "gop": [c.gop for c in elf_codecs],
            "motion_refine": cfg.motion_refine,
            "preset": cfg.preset,
            "rd_frame_type": cfg.rd_frame_type,
            "p_level_offset": [level_offsets_json(c.p_level_offset) if c.gop != 1 else 0.0  # GOP 1: no P-frames
                               for c in elf_codecs],  # a number, or a list for a pattern
            "max_frames": cfg.max_frames,
            "bd_method": cfg.bd_method,
            "bd_rate_axis": "bpp (file bytes); quality: mean of per-frame values",
            "anchors": {a.name: {"command": a.command_template(), "sweep": list(cfg.sweeps.get(a.name, a.sweep))}
                        for a in anchors},  # fmt: skip
            "vmaf_model": metrics_lib.VMAF_MODEL if cfg.with_vmaf else None,
        }
        bd = bd_entries(report, bd_pairs(cfg.anchors), cfg.bd_method) if cfg.anchors else []
        return RDReport(points=report.points, bd=tuple(bd), meta=meta)
    finally:
        for codec in elf_codecs:
            codec.close()


def write_outputs(report: RDReport, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """results.json, results.md (BD-rate and point tables) and one R-D PNG per clip."""
    written = [out_dir / "results.json"]
    report.save(written[0])
    md = out_dir / "results.md"
    tmp = md.with_name(f".{md.name}.{os.getpid()}.partial")
    note = "" if report.meta.get("trained", True) else "**The model is UNTRAINED: these numbers say nothing about ELF-VC's quality.**\n\n"
    tmp.write_text(f"{note}## BD-rate of elfvc (bpp, {report.meta.get('bd_method')})\n\n{bd_markdown(report)}\n\n"
                   f"## R-D points\n\n{points_markdown(report)}\n")  # fmt: skip
    os.replace(tmp, md)
    written.append(md)
    written += plot_rd(report, out_dir)
    return written


# --------------------------------------------------------------------------------------------
# Command line

# Own flag registry (not absl's global one): the CLIs of this repository are imported side by
# side in one test process, and several define the same flag names.
PROG = "bench_rd"
FLAGS = flags.FlagValues()
flags.DEFINE_list("clips", None, "Video files (y4m, mp4, ...) to benchmark on.", flag_values=FLAGS)
flags.DEFINE_string("out_dir", "out/rd", "Output folder (results.json, results.md, PNGs).", flag_values=FLAGS)
flags.DEFINE_list("levels", [f"{lv:g}" for lv in DEFAULT_LEVELS], "This codec's levels (continuous).", flag_values=FLAGS)
flags.DEFINE_list("models", [], "Checkpoint folders, as PATH or LABEL=PATH; none: the default model. "
                  "Several models merge by App. I's upper convex hull.", flag_values=FLAGS)  # fmt: skip
flags.DEFINE_list("anchors", ["x264", "x265", "svtav1"], "Standard codecs to compare against.", flag_values=FLAGS)
flags.DEFINE_list("x264_crf", None, "x264 CRF sweep (default 18,23,...,43).", flag_values=FLAGS)
flags.DEFINE_list("x265_crf", None, "x265 CRF sweep (default 18,23,...,43).", flag_values=FLAGS)
flags.DEFINE_list("svtav1_qp", None, "SVT-AV1 QP sweep (default 20,28,...,60).", flag_values=FLAGS)
flags.DEFINE_integer("max_frames", None, "Use only the first N frames of each clip.", flag_values=FLAGS)
flags.DEFINE_integer("gop", None, "This codec's GOP length (an I-frame every N frames; default: each model's "
                     "card GOP, runtime/checkpoints/*/model_card.json, else 16).", flag_values=FLAGS)
clikit.define_backend(FLAGS, help="This codec's backend: tf, onnx or tensorrt.")
flags.DEFINE_boolean("vmaf", True, "Measure VMAF (libvmaf through ffmpeg).", flag_values=FLAGS)
flags.DEFINE_enum("bd_method", "cubic", list(METHODS), "BD-rate interpolation.", flag_values=FLAGS)
flags.DEFINE_enum("preset", DEFAULT_PRESET, list(PRESETS), "This codec's encoder preset (runtime/presets.py).",
                  flag_values=FLAGS)
flags.DEFINE_boolean("motion_refine", False, "This codec's encoder-side rate-distortion choice of the block "
                     "motion (runtime/motion_refine.py).", flag_values=FLAGS)
flags.DEFINE_boolean("rd_frame_type", None, "This codec codes each P-frame as an I-frame too and keeps the one of "
                     "lower MSE + lambda(level) x bpp (default: the preset's, on in veryslow).", flag_values=FLAGS)
flags.DEFINE_string("p_level_offset", None, "This codec's P-frames at level + this, clipped to the model's range; "
                    "a comma list is cycled over each GOP's P-frames (default: each model's card, else 0).", flag_values=FLAGS)
flags.DEFINE_boolean("keep_streams", False, "Keep every codec's stream under OUT_DIR/streams.", flag_values=FLAGS)


#: The anchors' rate knobs' ranges (x264 and x265 clamp a CRF above 51 to 51 silently, so two
#: labels would name one file); bench_image adds JPEG's quality.
KNOB_RANGES = {"x264": (0, 51), "x265": (0, 51), "svtav1": (0, 63)}


def _floats(values, what, lo=None, hi=None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise BenchError(f"--{what} must be numbers, got {','.join(values)}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise BenchError(f"--{what} must be a non-empty list of finite numbers")
    if lo is not None and not all(lo <= v <= hi for v in out):
        raise BenchError(f"--{what} values must lie in [{lo}, {hi}], got {','.join(values)}")
    return out


def config_from_flags() -> RDConfig:
    if not FLAGS.clips:
        raise BenchError("--clips is required")
    clips = tuple(pathlib.Path(c) for c in FLAGS.clips)
    for clip in clips:
        if not clip.exists():
            raise BenchError(f"{clip}: no such file")
    stems = [c.stem for c in clips]
    if len(set(stems)) != len(stems):
        raise BenchError("two clips share a name; clip names (file stems) must be unique")
    models = []
    for entry in FLAGS.models:
        from model.bundle import resolve_model
        from model.errors import CodecError

        label, _, path = entry.rpartition("=") if "=" in entry else (pathlib.Path(entry).name, "", entry)
        try:
            folder = resolve_model(path)  # a folder or a shipped model's name
        except CodecError as e:
            raise BenchError(f"--models: {e}") from None
        models.append(ModelSpec(label, str(folder)))
    if len({m.label for m in models}) != len(models):
        raise BenchError("--models: labels must be unique")
    for name in FLAGS.anchors:
        anchors_lib.get_anchor(name)
    sweeps = {}
    for name, values in (("x264", FLAGS.x264_crf), ("x265", FLAGS.x265_crf), ("svtav1", FLAGS.svtav1_qp)):
        if values is not None:
            sweeps[name] = _floats(values, {"x264": "x264_crf", "x265": "x265_crf", "svtav1": "svtav1_qp"}[name],
                                   *KNOB_RANGES[name])
    if FLAGS.max_frames is not None and FLAGS.max_frames <= 0:
        raise BenchError("--max_frames must be positive")
    if FLAGS.gop is not None and FLAGS.gop <= 0:
        raise BenchError("--gop must be positive")
    p_level_offset = None
    if FLAGS.p_level_offset is not None:
        try:
            p_level_offset = parse_level_offsets(FLAGS.p_level_offset)
        except ValueError as err:
            raise BenchError(f"--p_level_offset {err}") from None
    out_dir = pathlib.Path(FLAGS.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BenchError(f"--out_dir: cannot create {out_dir} ({err.strerror})") from None
    return RDConfig(
        clips=clips, out_dir=out_dir, levels=_floats(FLAGS.levels, "levels"),
        models=tuple(models) or (ModelSpec("default"),), anchors=tuple(FLAGS.anchors), sweeps=sweeps,
        max_frames=FLAGS.max_frames, gop=FLAGS.gop, backend=FLAGS.backend, with_vmaf=FLAGS.vmaf,
        bd_method=FLAGS.bd_method, keep_streams=FLAGS.keep_streams, motion_refine=FLAGS.motion_refine,
        preset=FLAGS.preset, rd_frame_type=FLAGS.rd_frame_type, p_level_offset=p_level_offset,
    )  # fmt: skip


def main(argv: Sequence[str]) -> int:
    return clikit.run(PROG, _main, argv, tracebacks=True,
                      failures=(BenchError, anchors_lib.AnchorError, metrics_lib.MetricError, CodecError, ValueError))


def _main(argv: Sequence[str]) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    cfg = config_from_flags()
    report = run_benchmark(cfg)
    written = write_outputs(report, cfg.out_dir)
    if not report.meta.get("trained", True):
        print("NOTE: the model is UNTRAINED: its R-D points say nothing about ELF-VC's quality.")
    print(bd_markdown(report))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
