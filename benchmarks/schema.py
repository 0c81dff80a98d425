"""One JSON schema for every codec's R-D results (this codec and the x264 / x265 / SVT-AV1
anchors alike), read back by one plotting path (benchmarks/plot.py).

A results file is

    {"schema": "elfvc-rd/1",
     "meta": {...how it was made: commands, versions, BD method...},
     "points": [RDPoint, ...],
     "bd": [BDEntry, ...]}

Non-finite numbers (a lossless PSNR of +inf, say) are written as null, so the file is strict
JSON that any reader accepts.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

SCHEMA = "elfvc-rd/1"
#: Quality metrics every point carries (runtime.metrics.Quality's fields), higher is better.
METRICS = ("psnr_rgb", "psnr_yuv", "psnr_y", "ms_ssim", "vmaf")
ELFVC = "elfvc"


class SchemaError(ValueError):
    """A results file that does not follow the schema; the message is one line."""


def _finite(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class RDPoint:
    """One encode of one clip by one codec at one setting, measured on its decoded frames.

    bytes: size of the file the codec wrote. bpp = 8 bytes / (frames * width * height);
    kbps = 8 bytes / 1000 / (frames / fps). metrics: METRICS -> mean over frames (None when
    not measured). encode_s / decode_s: wall-clock seconds of the whole clip (informative only;
    bench_fps.py measures speed properly).
    """

    codec: str  # "elfvc" | "x264" | "x265" | "svtav1"
    clip: str  # clip name (file stem)
    setting: str  # human-readable knob, e.g. "level=3.5", "crf=28", "qp=40"
    param: float  # the knob's numeric value
    bytes: int
    frames: int
    width: int
    height: int
    fps: float
    bpp: float
    kbps: float
    metrics: Mapping[str, Optional[float]]
    encode_s: float = 0.0
    decode_s: float = 0.0
    model: str = ""  # elfvc: which model made it (config / checkpoint); anchors: encoder version
    frame_types: str = ""  # elfvc: each frame's type as coded ("IPPP...": scene cuts show); anchors: ""

    @classmethod
    def make(
        cls,
        codec: str,
        clip: str,
        setting: str,
        param: float,
        nbytes: int,
        frames: int,
        width: int,
        height: int,
        fps: float,
        metrics: Mapping[str, Optional[float]],
        encode_s: float = 0.0,
        decode_s: float = 0.0,
        model: str = "",
        frame_types: str = "",
    ) -> "RDPoint":
        """Derives bpp and kbps from the byte count, so every codec computes them alike."""
        if frames <= 0 or width <= 0 or height <= 0 or fps <= 0 or nbytes <= 0:
            raise SchemaError(f"{codec}/{clip}/{setting}: bytes, frames, size and fps must be positive")
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise SchemaError(f"{codec}/{clip}/{setting}: unknown metrics {sorted(unknown)}")
        bits = 8.0 * nbytes
        return cls(
            codec=codec,
            clip=clip,
            setting=setting,
            param=float(param),
            bytes=int(nbytes),
            frames=int(frames),
            width=int(width),
            height=int(height),
            fps=float(fps),
            bpp=bits / (frames * width * height),
            kbps=bits / 1000.0 / (frames / fps),
            metrics={m: _finite(metrics.get(m)) for m in METRICS},
            encode_s=float(encode_s),
            decode_s=float(decode_s),
            model=model,
            frame_types=str(frame_types),
        )

    def metric(self, name: str) -> Optional[float]:
        return self.metrics.get(name)


@dataclass(frozen=True)
class BDEntry:
    """BD-rate (percent; negative: this codec needs less rate) of `test` against `anchor` on
    one clip (or "mean": the average of the per-clip values) under one metric. value is None
    when it could not be computed, and `note` then says why."""

    test: str
    anchor: str
    clip: str
    metric: str
    value: Optional[float]
    note: str = ""


@dataclass(frozen=True)
class RDReport:
    points: tuple[RDPoint, ...]
    bd: tuple[BDEntry, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "meta": dict(self.meta),
            "points": [asdict(p) | {"metrics": dict(p.metrics)} for p in self.points],
            "bd": [asdict(b) | {"value": _finite(b.value)} for b in self.bd],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RDReport":
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise SchemaError(f"not an R-D results file of schema {SCHEMA}")
        try:
            points = tuple(RDPoint(**{**p, "metrics": dict(p["metrics"])}) for p in data["points"])
            bd = tuple(BDEntry(**b) for b in data.get("bd", ()))
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaError(f"malformed R-D results: {err}") from None
        return cls(points=points, bd=bd, meta=dict(data.get("meta", {})))

    def save(self, path: os.PathLike) -> None:
        """Writes to a temporary name beside `path`, then renames: never a half-written file."""
        path = pathlib.Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        tmp.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: os.PathLike) -> "RDReport":
        try:
            data = json.loads(pathlib.Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:  # a binary file: UnicodeDecodeError
            raise SchemaError(f"cannot read {path}: {err}") from None
        return cls.from_json(data)

    def codecs(self) -> list[str]:
        return sorted({p.codec for p in self.points}, key=lambda c: (c != ELFVC, c))

    def clips(self) -> list[str]:
        return sorted({p.clip for p in self.points})

    def curve(self, codec: str, clip: str) -> list[RDPoint]:
        """The points of one codec on one clip, by increasing rate."""
        return sorted((p for p in self.points if p.codec == codec and p.clip == clip), key=lambda p: p.bpp)


def merged_curve(report: RDReport, codec: str, clip: str, metric: str) -> list[RDPoint]:
    """A codec's R-D curve on one clip under one metric, by increasing rate.

    Points of several models of one codec (distinct `model` fields) merge by App. I's upper
    convex hull of (bpp, metric); a single model's points are all kept, as for the anchors,
    so that one model's curve is never flattered by dropping its weak points. Points without
    the metric are left out.
    """
    from benchmarks.bdrate import upper_convex_hull

    pts = [p for p in report.curve(codec, clip) if p.metric(metric) is not None]
    if len({p.model for p in pts}) <= 1:
        return pts
    keep = upper_convex_hull([(p.bpp, p.metric(metric)) for p in pts])
    return [pts[i] for i in keep]


def bd_entry(test: str, anchor: str, clip: str, metric: str, ours, theirs, method: str) -> BDEntry:
    """BD-rate of the points `ours` against `theirs` under `metric`; the error in the entry if none."""
    from benchmarks.bdrate import BDError, bd_rate

    try:
        value = bd_rate([p.bpp for p in theirs], [p.metric(metric) for p in theirs],
                        [p.bpp for p in ours], [p.metric(metric) for p in ours], method)  # fmt: skip
    except BDError as err:
        return BDEntry(test, anchor, clip, metric, None, str(err))
    return BDEntry(test, anchor, clip, metric, value)


def mean_entry(test: str, anchor: str, metric: str, values) -> BDEntry:
    """The "mean" row over clips' BD-rates: their average, or none when a clip has none."""
    if all(v is not None for v in values):
        return BDEntry(test, anchor, "mean", metric, sum(values) / len(values))
    return BDEntry(test, anchor, "mean", metric, None, "not every clip has a BD-rate")
