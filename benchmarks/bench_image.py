"""Image R-D benchmark of this codec's I-frame path against JPEG, x264, x265 and SVT-AV1 intra.

Each image (Kodak's kodim01..24 by default) is coded by this codec as a one-frame stream (one
I-frame) at each level through the real runtime path: runtime.stream encodes a real .elfvc file,
which is decoded back (bench_rd.ElfCodec). The runtime pads a frame to a multiple of 64 by edge
replication and crops the reconstruction back; the benchmark checks the decoded image has the
original's size and measures it unpadded. bpp = 8 * file bytes / (W * H) of the original.

Anchors, each over a quality sweep, sizes from what they really wrote:

- jpeg    Pillow (libjpeg), baseline, 4:2:0 (subsampling=2), quality Q; the .jpg file's size.
          It codes the RGB image itself (its own full-range YCbCr inside).
- x264    ffmpeg -preset medium -c:v libx264 -crf R -x264-params keyint=1 -bsf:v filter_units=remove_types=6 -f h264
- x265    ffmpeg -preset medium -c:v libx265 -crf R -x265-params keyint=1:log-level=error
          -bsf:v filter_units=remove_types=39|40 -f hevc
          (both without their SEI messages, which no decoder needs: benchmarks/anchors.py)
- svtav1  ffmpeg -c:v libsvtav1 -crf R -svtav1-params avif=1 -f obu (SVT-AV1's still-picture
          mode, the library's default preset; a raw OBU stream: ffmpeg's avif muxer works too
          and adds only the HEIF container, ~300 bytes)

The three video anchors code the image's 8-bit 4:2:0 planes from runtime.video_io's single
RGB -> YUV 4:2:0 conversion (BT.601 limited range, what bench_rd gives every codec), written as
a one-frame y4m, and their decoded planes come back through its inverse. All metrics are measured
against the ORIGINAL RGB image (PSNR-RGB and MS-SSIM, runtime.metrics; PSNR-YUV against its 4:2:0
planes), so the video anchors' RGB scores include the 4:2:0 round-trip loss: the JSON's
meta.yuv420_roundtrip gives that loss without any compression, per image and averaged.

Results: one JSON (benchmarks/schema.py). Every image is a clip of its own (its stem, frames = 1);
the set is one more clip (--name, "kodak" by default) whose points average the images' points of
one codec setting in the usual Kodak way: mean bpp and mean PSNR / MS-SSIM over the images
(bytes = their sum, frames = the number of images). BD-rate (benchmarks/bdrate.py) of this codec
against each anchor, and of each anchor against the first, on the set's averaged curve (and per
image, with their mean, in the JSON), an R-D plot rd_<name>.png (benchmarks/plot.py) and
results.md.

    python -m benchmarks.bench_image --out_dir=out/image
    python -m benchmarks.bench_image --model=runs/base_s1846 --out_dir=out/image_base
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

from model import clikit  # first: quiets TensorFlow's C++ log

import numpy as np
from absl import flags

from benchmarks import anchors as anchors_lib
from benchmarks.bdrate import METHODS
from benchmarks.bench_rd import KNOB_RANGES as VIDEO_KNOB_RANGES
from benchmarks.bench_rd import BenchError, ElfCodec, ModelSpec, bd_entries, bd_pairs
from benchmarks.plot import bd_markdown, plot_rd, points_markdown
from benchmarks.schema import ELFVC, METRICS, BDEntry, RDPoint, RDReport, bd_entry
from runtime import metrics as metrics_lib
from runtime.presets import DEFAULT_PRESET, PRESETS
from runtime.types import CodecError
from runtime.video_io import Y4mWriter, Yuv420, rgb_to_yuv420, yuv420_to_rgb

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "eval" / "images"
DEFAULT_NAME = "kodak"
DEFAULT_LEVELS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
IMAGE_SUFFIXES = (".png", ".ppm", ".pnm", ".bmp", ".tif", ".tiff")
#: The fps written into the one-frame y4m and streams (meaningless for an image; kbps is then
#: kilobits per image / the set's images).
IMAGE_FPS = Fraction(1)

ANCHOR_NAMES = ("jpeg", "x264", "x265", "svtav1")
#: Default sweeps, high rate to low rate, wide enough to reach down to this codec's qualities.
DEFAULT_SWEEPS = {
    "jpeg": (90, 70, 50, 30, 15, 8, 4, 2),
    "x264": (22, 27, 32, 37, 42, 47, 51),
    "x265": (22, 27, 32, 37, 42, 47, 51),
    "svtav1": (20, 28, 36, 44, 52, 58, 63),
}
KNOB_RANGES = {"jpeg": (1, 100), **VIDEO_KNOB_RANGES}
SWEEP_FLAGS = {"jpeg": "jpeg_quality", "x264": "x264_crf", "x265": "x265_crf", "svtav1": "svtav1_crf"}


class UsageError(BenchError):
    """Flags that ask for something impossible (exit status 2)."""


# --------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class Image:
    name: str  # file stem: the clip name of its points
    path: pathlib.Path
    rgb: np.ndarray  # uint8 [H, W, 3]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def _natural_key(path: pathlib.Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def list_images(spec: Optional[str], limit: Optional[int]) -> list[pathlib.Path]:
    """The image files of --images (a folder, or a comma list of files), first `limit` of them."""
    if spec is None:
        if not DEFAULT_IMAGES.is_dir():
            raise UsageError(f"the default images ({DEFAULT_IMAGES}) are missing; give --images=FOLDER or a comma list")
        entries = [DEFAULT_IMAGES]
    else:
        entries = [pathlib.Path(s.strip()) for s in spec.split(",") if s.strip()]
        if not entries:
            raise UsageError("--images is empty")
    paths: list[pathlib.Path] = []
    for entry in entries:
        if entry.is_dir():
            found = sorted((p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key)
            if not found:
                raise UsageError(f"{entry}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            paths += found
        elif entry.is_file():
            paths.append(entry)
        else:
            raise UsageError(f"{entry}: no such file or folder")
    if limit is not None:
        paths = paths[:limit]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise UsageError("two images share a name; image names (file stems) must be unique")
    return paths


def load_image(path: pathlib.Path, video_anchors: bool) -> Image:
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise BenchError(f"{path}: cannot read the image ({err})") from None
    h, w = rgb.shape[:2]
    need = metrics_lib.min_ms_ssim_size()
    if min(h, w) < need:
        raise BenchError(f"{path}: {w}x{h} is too small for MS-SSIM (needs at least {need} px per side)")
    if video_anchors and (h % 2 or w % 2):
        raise BenchError(f"{path}: {w}x{h} has an odd side, which x264 / x265 / SVT-AV1 cannot code in 4:2:0; crop it")
    return Image(path.stem, path, np.ascontiguousarray(rgb))


# --------------------------------------------------------------------------------------------
# Anchors


@dataclass(frozen=True)
class IntraAnchor(anchors_lib.Anchor):
    """A video anchor coding one frame as a still image (the rest of benchmarks/anchors.py's
    machinery: its encode command, raw-stream decode and file sizes)."""

    def encoder_args(self, value: float | str) -> list[str]:
        v = value if isinstance(value, str) else int(round(value))
        if self.name == "x264":
            return ["-preset", "medium", "-codec:v", "libx264", "-crf", str(v), "-x264-params", "keyint=1",
                    *anchors_lib.DROP_SEI["x264"]]  # fmt: skip
        if self.name == "x265":
            return ["-preset", "medium", "-codec:v", "libx265", "-crf", str(v), "-x265-params", "keyint=1:log-level=error",
                    *anchors_lib.DROP_SEI["x265"]]  # fmt: skip
        if self.name == "svtav1":
            return ["-codec:v", "libsvtav1", "-crf", str(v), "-svtav1-params", "avif=1"]
        raise anchors_lib.AnchorError(f"unknown anchor {self.name!r}")


INTRA_ANCHORS = {
    "x264": IntraAnchor("x264", "crf", DEFAULT_SWEEPS["x264"], ".264", "h264"),
    "x265": IntraAnchor("x265", "crf", DEFAULT_SWEEPS["x265"], ".265", "hevc"),
    "svtav1": IntraAnchor("svtav1", "crf", DEFAULT_SWEEPS["svtav1"], ".obu", "obu"),
}


def jpeg_command() -> str:
    return "PIL.Image.save(DST.jpg, 'JPEG', quality=Q, subsampling=2)  # 4:2:0, baseline, no optimize"


def run_jpeg(image: Image, quality: float, workdir: pathlib.Path):
    """Pillow JPEG at one quality: (path, bytes, decoded uint8 [H, W, 3], encode s, decode s)."""
    from PIL import Image as PILImage

    q = int(round(quality))
    out = workdir / f"{image.name}.jpeg.q{q}.jpg"
    start = time.perf_counter()
    PILImage.fromarray(image.rgb).save(out, "JPEG", quality=q, subsampling=2)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    with PILImage.open(out) as im:
        decoded = np.asarray(im.convert("RGB"), np.uint8)
    decode_s = time.perf_counter() - start
    if decoded.shape != image.rgb.shape:
        raise BenchError(f"jpeg q={q} on {image.name}: decoded {decoded.shape}, expected {image.rgb.shape}")
    return out, out.stat().st_size, decoded, encode_s, decode_s


def video_source(image: Image, workdir: pathlib.Path) -> anchors_lib.Source:
    """The image as a one-frame 8-bit 4:2:0 y4m (runtime.video_io's conversion) and its planes."""
    path = workdir / f"{image.name}.y4m"
    with Y4mWriter(path, image.width, image.height, IMAGE_FPS) as writer:
        writer.write(image.rgb)
    planes = anchors_lib.decode_yuv420(path, image.width, image.height)
    expected = rgb_to_yuv420(image.rgb[None])
    if not all(np.array_equal(a, b) for a, b in zip(planes, expected)):
        raise BenchError(f"{image.name}: the y4m ffmpeg reads back differs from runtime.video_io's planes")
    return anchors_lib.Source(name=image.name, path=path, planes=planes, fps=IMAGE_FPS)


def _versions() -> dict:
    from PIL import __version__ as pillow_version, features

    out = {"pillow": pillow_version, "libjpeg": features.version("jpg"),
           "libjpeg_turbo": features.version("libjpeg_turbo")}  # fmt: skip
    try:
        proc = subprocess.run([metrics_lib.ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True)
        out["ffmpeg"] = (proc.stdout.splitlines() or ["?"])[0]
    except OSError as err:
        out["ffmpeg"] = f"unavailable ({err})"
    return out


# --------------------------------------------------------------------------------------------
# The benchmark


@dataclass(frozen=True)
class ImageConfig:
    images: tuple[pathlib.Path, ...]
    out_dir: pathlib.Path
    name: str = DEFAULT_NAME
    model: Optional[str] = None  # a checkpoint folder; None: the shipped default model
    levels: tuple[float, ...] = DEFAULT_LEVELS
    anchors: tuple[str, ...] = ANCHOR_NAMES
    sweeps: dict = dataclasses.field(default_factory=dict)  # anchor -> knob values
    backend: str = "tf"
    with_vmaf: bool = False
    bd_method: str = "cubic"
    keep_streams: bool = False
    preset: str = "medium"  # the encoder preset (runtime/presets.py)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure(image: Image, ref_yuv: Yuv420, decoded_rgb: np.ndarray, decoded_yuv: Optional[Yuv420], with_vmaf: bool):
    """runtime.metrics on one decoded image, against the original RGB (and its 4:2:0 planes)."""
    if decoded_rgb.shape != image.rgb.shape:
        raise BenchError(f"{image.name}: decoded {decoded_rgb.shape}, expected {image.rgb.shape}")
    if decoded_yuv is None:
        decoded_yuv = rgb_to_yuv420(decoded_rgb[None])
    return metrics_lib.evaluate(image.rgb[None], decoded_rgb[None], ref_yuv, decoded_yuv, with_vmaf)


def _image_point(codec, image: Image, setting, param, nbytes, quality, encode_s, decode_s, model="") -> RDPoint:
    return RDPoint.make(codec, image.name, setting, param, nbytes, 1, image.width, image.height, float(IMAGE_FPS),
                        quality.as_dict(), encode_s, decode_s, model)  # fmt: skip


def average_points(points: Sequence[RDPoint], name: str) -> list[RDPoint]:
    """The set's curve: per (codec, setting), the mean over images of bpp and of every metric
    (None when any image lacks it); bytes and times are sums, frames the number of images."""
    groups: dict[tuple[str, str, str], list[RDPoint]] = {}
    for p in points:
        groups.setdefault((p.codec, p.setting, p.model), []).append(p)
    out = []
    for (codec, setting, model), pts in groups.items():
        metrics = {}
        for m in METRICS:
            values = [p.metric(m) for p in pts]
            metrics[m] = None if any(v is None for v in values) else float(np.mean(values))
        first = pts[0]
        point = RDPoint.make(codec, name, setting, first.param, sum(p.bytes for p in pts), len(pts), first.width,
                             first.height, float(IMAGE_FPS), metrics, sum(p.encode_s for p in pts),
                             sum(p.decode_s for p in pts), model)  # fmt: skip
        # The Kodak convention: the mean of the images' bpp (the same as total bits over total
        # pixels when every image has as many pixels, as Kodak's 768x512 and 512x768 do).
        out.append(dataclasses.replace(point, bpp=float(np.mean([p.bpp for p in pts]))))
    return out


def set_bd_entries(report: RDReport, name: str, pairs, method: str) -> list[BDEntry]:
    """BD-rate of each pair on the set's averaged curve, every metric measured."""
    entries = []
    for test, anchor in pairs:
        ours, theirs = report.curve(test, name), report.curve(anchor, name)
        for metric in METRICS:
            a = [p for p in theirs if p.metric(metric) is not None]
            t = [p for p in ours if p.metric(metric) is not None]
            if not a or not t:
                continue
            entries.append(bd_entry(test, anchor, name, metric, t, a, method))
    return entries


def run_benchmark(cfg: ImageConfig) -> RDReport:
    """Runs every codec on every image; returns the report (not yet written)."""
    if cfg.bd_method not in METHODS:
        raise UsageError(f"unknown BD method {cfg.bd_method!r}; choose one of {', '.join(METHODS)}")
    video_anchors = [INTRA_ANCHORS[a] for a in cfg.anchors if a != "jpeg"]
    images = [load_image(p, bool(video_anchors)) for p in cfg.images]
    if cfg.name in {im.name for im in images} or cfg.name == "mean":
        raise UsageError(f"--name={cfg.name} clashes with an image name (or 'mean'); choose another")
    spec = ModelSpec("default" if cfg.model is None else pathlib.Path(cfg.model).name, cfg.model)
    codec = ElfCodec(spec, cfg.backend, gop=1, preset=cfg.preset)
    points: list[RDPoint] = []
    roundtrip: dict[str, dict] = {}
    start_all = time.perf_counter()
    try:
        bad = [lv for lv in cfg.levels if not 0 <= lv <= codec.max_level]
        if bad:
            raise UsageError(f"levels {[f'{b:g}' for b in bad]} are outside the model's range [0, {codec.max_level:g}]")
        _log(f"model {codec.describe()}")
        for note in codec.bundle.notes:
            _log(f"  note: {note}")
        streams = cfg.out_dir / "streams"
        if cfg.keep_streams:
            streams.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="elfvc_image_", dir=cfg.out_dir) as tmp:
            work = pathlib.Path(tmp)
            for index, image in enumerate(images):
                ref_yuv = rgb_to_yuv420(image.rgb[None])
                back = yuv420_to_rgb(ref_yuv)[0]
                roundtrip[image.name] = {
                    "psnr_rgb": float(metrics_lib.psnr_rgb(image.rgb[None], back[None])[0]),
                    "ms_ssim": float(metrics_lib.ms_ssim(image.rgb[None], back[None])[0]),
                }
                _log(f"[{index + 1}/{len(images)}] {image.name} {image.width}x{image.height}: 4:2:0 round trip "
                     f"{roundtrip[image.name]['psnr_rgb']:.2f} dB, MS-SSIM {roundtrip[image.name]['ms_ssim']:.4f}")  # fmt: skip
                folder = streams if cfg.keep_streams else work
                for level in cfg.levels:
                    stream = folder / f"{image.name}.{spec.label}.l{level:g}.elfvc"
                    run = codec.run(image.rgb[None], IMAGE_FPS, level, stream)
                    quality = _measure(image, ref_yuv, run.decoded[0], None, cfg.with_vmaf)
                    points.append(_image_point(ELFVC, image, f"level={level:g}", level, run.nbytes, quality,
                                               run.encode_s, run.decode_s, codec.describe()))  # fmt: skip
                    _log(f"  elfvc level {level:g}: {points[-1].bpp:.4f} bpp, PSNR {quality.psnr_rgb:.2f} dB, "
                         f"MS-SSIM {quality.ms_ssim:.4f}")  # fmt: skip
                source = video_source(image, work) if video_anchors else None
                for name in cfg.anchors:
                    for value in cfg.sweeps.get(name, DEFAULT_SWEEPS[name]):
                        if name == "jpeg":
                            path, nbytes, decoded, enc_s, dec_s = run_jpeg(image, value, work)
                            quality = _measure(image, ref_yuv, decoded, None, cfg.with_vmaf)
                            setting = f"q={int(round(value))}"
                        else:
                            anchor = INTRA_ANCHORS[name]
                            run = anchors_lib.run_anchor(anchor, value, source, work)
                            path, nbytes, enc_s, dec_s = run.stream, run.nbytes, run.encode_s, run.decode_s
                            quality = _measure(image, ref_yuv, yuv420_to_rgb(run.decoded)[0], run.decoded, cfg.with_vmaf)
                            setting = anchor.setting(value)
                        points.append(_image_point(name, image, setting, value, nbytes, quality, enc_s, dec_s))
                        if cfg.keep_streams:
                            shutil.copy(path, streams / path.name)
                        path.unlink(missing_ok=True)
                        _log(f"  {name} {setting}: {points[-1].bpp:.4f} bpp, PSNR {quality.psnr_rgb:.2f} dB, "
                             f"MS-SSIM {quality.ms_ssim:.4f}")  # fmt: skip
                if source is not None:
                    source.path.unlink(missing_ok=True)
    finally:
        codec.close()
    set_points = average_points(points, cfg.name)
    report = RDReport(points=tuple(points) + tuple(set_points))
    pairs = bd_pairs(list(cfg.anchors)) if cfg.anchors else []
    bd = set_bd_entries(report, cfg.name, pairs, cfg.bd_method)
    per_image = RDReport(points=tuple(points))
    bd += bd_entries(per_image, pairs, cfg.bd_method)  # per image, and "mean": their average
    rt_psnr = [r["psnr_rgb"] for r in roundtrip.values()]
    rt_ssim = [r["ms_ssim"] for r in roundtrip.values()]
    meta = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": "image (bench_image.py): each image coded alone; this codec as one I-frame",
        "preset": cfg.preset,
        "set": {
            "name": cfg.name,
            "images": [im.name for im in images],
            "folder_or_files": sorted({str(p.parent) for p in cfg.images}),
            "averaging": (f"clip '{cfg.name}': per codec setting, bpp = mean of the images' bpp and every metric the "
                          "mean of the images' values (the Kodak convention); bytes = their sum, frames = the number "
                          "of images; fps is a placeholder 1, so kbps is kilobits per image"),
        },  # fmt: skip
        "models": [codec.describe()],
        "model_notes": list(codec.bundle.notes),
        "trained": codec.trained,
        "backend": cfg.backend,
        "levels": list(cfg.levels),
        "elfvc_path": ("runtime.stream.encode_video of a one-frame stream (an I-frame; ConstantLevel) to a real .elfvc "
                       "file, decoded back by runtime.stream.decode_video; the runtime pads to a multiple of 64 (edge) "
                       "and crops, metrics on the unpadded decoded image; bpp from the whole file (stream header "
                       "included)"),
        "bd_method": cfg.bd_method,
        "bd_rate_axis": f"bpp (file bytes); BD on clip '{cfg.name}' is on the averaged curve; per-image BD and their "
                        "'mean' also listed",
        "anchors": {
            name: {
                "command": jpeg_command() if name == "jpeg" else INTRA_ANCHORS[name].command_template(),
                "sweep": list(cfg.sweeps.get(name, DEFAULT_SWEEPS[name])),
                "input": ("the original RGB image (libjpeg converts to full-range YCbCr 4:2:0 itself)" if name == "jpeg"
                          else "runtime.video_io.rgb_to_yuv420 planes (BT.601 limited range, 4:2:0) in a one-frame y4m"),
            }
            for name in cfg.anchors
        },  # fmt: skip
        "colour_note": ("This codec codes the RGB image; x264 / x265 / SVT-AV1 code its 4:2:0 planes and are measured "
                        "in RGB after runtime.video_io.yuv420_to_rgb, against the original RGB, so their PSNR-RGB and "
                        "MS-SSIM include the 4:2:0 conversion loss (yuv420_roundtrip: that loss with no compression). "
                        "PSNR-YUV/Y compare everyone's 4:2:0 planes with the original's."),
        "yuv420_roundtrip": {
            "what": "RGB -> rgb_to_yuv420 -> yuv420_to_rgb, no compression, against the original RGB",
            "psnr_rgb_mean": float(np.mean(rt_psnr)) if rt_psnr else None,
            "psnr_rgb_min": float(np.min(rt_psnr)) if rt_psnr else None,
            "ms_ssim_mean": float(np.mean(rt_ssim)) if rt_ssim else None,
            "per_image": roundtrip,
        },
        "vmaf_model": metrics_lib.VMAF_MODEL if cfg.with_vmaf else None,
        "versions": _versions(),
        "seconds": round(time.perf_counter() - start_all, 1),
    }
    return RDReport(points=report.points, bd=tuple(bd), meta=meta)


def _subset(report: RDReport, clip: str) -> RDReport:
    return RDReport(points=tuple(p for p in report.points if p.clip == clip),
                    bd=tuple(b for b in report.bd if b.clip == clip), meta=report.meta)  # fmt: skip


def summary_markdown(report: RDReport) -> str:
    """The set's BD-rates, the mean of per-image BD-rates and the set's R-D points."""
    name = report.meta["set"]["name"]
    rt = report.meta.get("yuv420_roundtrip", {})
    trained = report.meta.get("trained", True)
    note = "" if trained else "**The model is UNTRAINED: these numbers say nothing about ELF-VC's quality.**\n\n"
    per_image_mean = RDReport(points=(), bd=tuple(b for b in report.bd if b.clip == "mean"))
    set_report = _subset(report, name)
    lines = [
        note + f"# Image benchmark: {name} ({len(report.meta['set']['images'])} images), {report.meta['models'][0]}",
        "",
        f"## BD-rate on the averaged curve (bpp, {report.meta.get('bd_method')}; negative: fewer bits than the anchor)",
        "",
        bd_markdown(set_report),
        "",
        "## Mean of the per-image BD-rates",
        "",
        bd_markdown(per_image_mean),
        "",
        "## 4:2:0 round trip (no compression)",
        "",
        f"RGB -> YUV 4:2:0 -> RGB through runtime.video_io: mean PSNR-RGB {_fmt(rt.get('psnr_rgb_mean'))} dB "
        f"(min {_fmt(rt.get('psnr_rgb_min'))}), mean MS-SSIM {_fmt(rt.get('ms_ssim_mean'), 5)}. The x264 / x265 / "
        "SVT-AV1 points' RGB metrics include this loss; JPEG's include its own 4:2:0.",
        "",
        f"## R-D points of '{name}' (means over the images)",
        "",
        points_markdown(set_report),
        "",
    ]
    return "\n".join(lines)


def _fmt(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_outputs(report: RDReport, out_dir: pathlib.Path, per_image_plots: bool = False) -> list[pathlib.Path]:
    """results.json, results.md and rd_<name>.png (and rd_<image>.png with per_image_plots)."""
    written = [out_dir / "results.json"]
    report.save(written[0])
    md = out_dir / "results.md"
    tmp = md.with_name(f".{md.name}.{os.getpid()}.partial")
    tmp.write_text(summary_markdown(report))
    os.replace(tmp, md)
    written.append(md)
    name = report.meta["set"]["name"]
    written += plot_rd(report if per_image_plots else _subset(report, name), out_dir)
    return written


# --------------------------------------------------------------------------------------------
# Command line

# Own flag registry (not absl's global one): the CLIs of this repository are imported side by
# side in one test process, and several define the same flag names.
PROG = "bench_image"
FLAGS = flags.FlagValues()
flags.DEFINE_string("images", None, f"A folder of images or a comma list of image files (default: Kodak, {DEFAULT_IMAGES}).",
                    flag_values=FLAGS)  # fmt: skip
flags.DEFINE_integer("limit", None, "Use only the first N images.", flag_values=FLAGS)
flags.DEFINE_string("name", None, "Name of the image set (its averaged curve's clip name); default 'kodak' for the "
                    "default images, else the folder's name, else 'images'.", flag_values=FLAGS)  # fmt: skip
clikit.define_model(FLAGS, "A shipped-model folder (config.json + checkpoint); default: the shipped default model.")
flags.DEFINE_enum("preset", DEFAULT_PRESET, list(PRESETS), "This codec's encoder preset (runtime/presets.py).",
                  flag_values=FLAGS)
flags.DEFINE_list("levels", [f"{lv:g}" for lv in DEFAULT_LEVELS], "This codec's levels (continuous).", flag_values=FLAGS)
flags.DEFINE_list("anchors", list(ANCHOR_NAMES), "Anchors: any of jpeg, x264, x265, svtav1 (empty: none).", flag_values=FLAGS)
flags.DEFINE_list("jpeg_quality", None, "JPEG quality sweep (default 90,70,50,30,15,8,4,2).", flag_values=FLAGS)
flags.DEFINE_list("x264_crf", None, "x264 CRF sweep (default 22,27,...,47,51).", flag_values=FLAGS)
flags.DEFINE_list("x265_crf", None, "x265 CRF sweep (default 22,27,...,47,51).", flag_values=FLAGS)
flags.DEFINE_list("svtav1_crf", None, "SVT-AV1 CRF sweep (default 20,28,36,44,52,58,63).", flag_values=FLAGS)
flags.DEFINE_string("out_dir", "out/image", "Output folder (results.json, results.md, rd_<name>.png).", flag_values=FLAGS)
clikit.define_backend(FLAGS, help="This codec's backend: tf, onnx or tensorrt.")
flags.DEFINE_boolean("vmaf", False, "Also measure VMAF (libvmaf through ffmpeg; slow per image).", flag_values=FLAGS)
flags.DEFINE_enum("bd_method", "cubic", list(METHODS), "BD-rate interpolation.", flag_values=FLAGS)
flags.DEFINE_boolean("keep_streams", False, "Keep every codec's file under OUT_DIR/streams.", flag_values=FLAGS)
flags.DEFINE_boolean("per_image_plots", False, "Also write one R-D plot per image.", flag_values=FLAGS)


def _floats(values, what, lo=None, hi=None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise UsageError(f"--{what} must be numbers, got {','.join(values)}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise UsageError(f"--{what} must be a non-empty list of finite numbers")
    if lo is not None and not all(lo <= v <= hi for v in out):
        raise UsageError(f"--{what} values must lie in [{lo}, {hi}], got {','.join(values)}")
    return out


def config_from_flags() -> ImageConfig:
    if FLAGS.limit is not None and FLAGS.limit <= 0:
        raise UsageError("--limit must be positive")
    anchors = tuple(FLAGS.anchors)
    for name in anchors:
        if name not in ANCHOR_NAMES:
            raise UsageError(f"unknown anchor {name!r}; choose from {', '.join(ANCHOR_NAMES)}")
    if len(set(anchors)) != len(anchors):
        raise UsageError("--anchors lists an anchor twice")
    sweeps = {}
    for name, flag in SWEEP_FLAGS.items():
        values = FLAGS[flag].value
        if values is not None:
            sweeps[name] = _floats(values, flag, *KNOB_RANGES[name])
    levels = _floats(FLAGS.levels, "levels")
    if FLAGS.model is not None:
        from model.bundle import resolve_model
        from runtime.types import CodecError

        try:
            resolve_model(FLAGS.model)  # a folder or a shipped model's name
        except CodecError as e:
            raise UsageError(f"--model: {e}") from None
    images = tuple(list_images(FLAGS.images, FLAGS.limit))
    if FLAGS.name is not None:
        name = FLAGS.name
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise UsageError("--name may hold only letters, digits, '_', '.' and '-'")
    elif FLAGS.images is None:
        name = DEFAULT_NAME
    elif "," not in FLAGS.images and pathlib.Path(FLAGS.images).is_dir():
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", pathlib.Path(FLAGS.images).resolve().name) or "images"
    else:
        name = "images"
    out_dir = pathlib.Path(FLAGS.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BenchError(f"--out_dir: cannot create {out_dir} ({err.strerror})") from None
    return ImageConfig(images=images, out_dir=out_dir, name=name, model=FLAGS.model, levels=levels, anchors=anchors,
                       sweeps=sweeps, backend=FLAGS.backend, with_vmaf=FLAGS.vmaf, bd_method=FLAGS.bd_method,
                       keep_streams=FLAGS.keep_streams, preset=FLAGS.preset)  # fmt: skip


def main(argv: Sequence[str]) -> int:
    return clikit.run(PROG, _main, argv, tracebacks=True,
                      failures=(BenchError, anchors_lib.AnchorError, metrics_lib.MetricError, CodecError, ValueError, OSError))


def _main(argv: Sequence[str]) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    try:
        cfg = config_from_flags()
        report = run_benchmark(cfg)
        written = write_outputs(report, cfg.out_dir, FLAGS.per_image_plots)
    except UsageError as err:
        raise clikit.UsageError(err) from None
    if not report.meta.get("trained", True):
        print("NOTE: the model is UNTRAINED: its R-D points say nothing about ELF-VC's quality.")
    print(bd_markdown(_subset(report, report.meta["set"]["name"])))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
