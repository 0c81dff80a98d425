"""The standard codecs the paper compares against (App. H), run through the ffmpeg that
imageio-ffmpeg ships, plus the source-clip preparation every codec in bench_rd.py shares.

App. H's commands and what they become here (ffmpeg 9.0, SVT-AV1 4.2):

    H.264  ffmpeg -i SRC -preset medium -codec:v libx264 -crf R -x264-params bframes=0 DST
           -> the same, written as a raw Annex-B stream (-f h264, DST.264).
    H.265  ffmpeg -i SRC -preset medium -codec:v libx265 -crf R -x265-params bframes=0 DST
           -> the same (x265's log silenced with log-level=error), raw stream (-f hevc, DST.265).
    AV1    SvtAv1EncApp -i SRC -b DST --rc 0 -q R --hierarchical-levels 0 --lookahead 0
           (SVT-AV1 v0.8.5, I/P-only per SVT-AV1 issue 973)
           -> ffmpeg -i SRC -c:v libsvtav1 -svtav1-params
              rc=0:qp=R:aq-mode=0:pred-struct=1:hierarchical-levels=0:lookahead=0  (-f obu)
              rc=0 with qp and aq-mode=0 is SVT-AV1 4.x's constant-QP mode, the meaning of
              v0.8.5's `--rc 0 -q` (with aq-mode 2, its default, `rc=0` is CRF instead; App. H
              does not say whether v0.8.5's adaptive quantization was on); pred-struct=1 is the
              low-delay structure (I and P frames only, which v0.8.5 needed the issue-973
              patch for; the encoder log confirms "pred struct: low delay", mini-GOP 1);
              hierarchical-levels=0 and lookahead=0 as in App. H (SVT 4.x warns that TPL is
              off in low delay). The preset is the library default (8), as App. H set none.

Nothing else is constrained (App. H: "We do not constrain the codecs in any way apart from
disabling B-frames"): key-frame interval, threads and tuning are the encoders' defaults. Sizes
are those of the raw elementary streams the encoders wrote (no container overhead), less the
SEI messages x264 and x265 write (ffmpeg's filter_units bitstream filter removes NAL types 6,
and 39 and 40): their encoder name, version and every option, 614 bytes a stream for x264 and
about 2.3 kB for x265, which no decoder needs (the decoded frames are bit-identical without them,
tests/test_bench_rd.py) and which were a fifth of x264's and half of x265's smallest files on
street. Every byte an anchor keeps is one its decoder reads, as for ELF-VC's stream.
"""

from __future__ import annotations

import pathlib
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np

from runtime.metrics import ffmpeg_exe
from runtime.video_io import Yuv420, open_video


#: ffmpeg output options that drop the SEI NAL units (H.264 type 6; HEVC prefix 39, suffix 40):
#: the encoder's informational messages, not needed to decode (module docstring).
DROP_SEI = {
    "x264": ["-bsf:v", "filter_units=remove_types=6"],
    "x265": ["-bsf:v", "filter_units=remove_types=39|40"],
}


class AnchorError(RuntimeError):
    """An anchor encoder or decoder failed; the message is one line."""


@dataclass(frozen=True)
class Anchor:
    """One standard codec: its rate knob, its default sweep and its App. H arguments."""

    name: str
    knob: str  # "crf" or "qp"
    sweep: tuple[float, ...]  # default knob values, from high rate to low rate
    suffix: str  # file suffix of the raw stream
    muxer: str  # ffmpeg muxer of the raw stream

    def encoder_args(self, value: float | str) -> list[str]:
        """ffmpeg output options of App. H (or their current equivalent) at one knob value (a
        string is used as is: `command_template` passes a placeholder)."""
        v = value if isinstance(value, str) else int(round(value))
        if self.name == "x264":
            return ["-preset", "medium", "-codec:v", "libx264", "-crf", str(v), "-x264-params", "bframes=0", *DROP_SEI["x264"]]
        if self.name == "x265":
            return ["-preset", "medium", "-codec:v", "libx265", "-crf", str(v),
                    "-x265-params", "bframes=0:log-level=error", *DROP_SEI["x265"]]  # fmt: skip
        if self.name == "svtav1":
            params = f"rc=0:qp={v}:aq-mode=0:pred-struct=1:hierarchical-levels=0:lookahead=0"
            return ["-codec:v", "libsvtav1", "-svtav1-params", params]
        raise AnchorError(f"unknown anchor {self.name!r}")

    def command_template(self) -> str:
        """The encode command with SRC, DST and the knob value R as placeholders."""
        return " ".join(["ffmpeg", "-i", "SRC.y4m", *self.encoder_args("R"), "-f", self.muxer, f"DST{self.suffix}"])

    def setting(self, value: float) -> str:
        return f"{self.knob}={int(round(value))}"


ANCHORS = {
    "x264": Anchor("x264", "crf", (18, 23, 28, 33, 38, 43), ".264", "h264"),
    "x265": Anchor("x265", "crf", (18, 23, 28, 33, 38, 43), ".265", "hevc"),
    "svtav1": Anchor("svtav1", "qp", (20, 28, 36, 44, 52, 60), ".obu", "obu"),
}


def get_anchor(name: str) -> Anchor:
    if name not in ANCHORS:
        raise AnchorError(f"unknown anchor {name!r}; choose from {', '.join(ANCHORS)}")
    return ANCHORS[name]


# --------------------------------------------------------------------------------------------
# Source clips


@dataclass(frozen=True)
class Source:
    """A clip prepared for benchmarking: a y4m that every codec reads, and its planes.

    path: the 8-bit 4:2:0 y4m file (the clip itself, or ffmpeg's conversion of it);
    planes: its frames, y uint8 [T, H, W], u / v [T, ceil(H/2), ceil(W/2)].
    """

    name: str
    path: pathlib.Path
    planes: Yuv420
    fps: Fraction

    @property
    def frames(self) -> int:
        return self.planes.y.shape[0]

    @property
    def height(self) -> int:
        return self.planes.y.shape[1]

    @property
    def width(self) -> int:
        return self.planes.y.shape[2]


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise AnchorError(f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return proc


def decode_yuv420(path: pathlib.Path, width: int, height: int, frames: Optional[int] = None) -> Yuv420:
    """Decodes any video ffmpeg reads to 8-bit 4:2:0 planes (exact for a yuv420p input)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path)]
    if frames is not None:
        cmd += ["-frames:v", str(frames)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    raw = _run(cmd, f"decoding {path.name}").stdout
    cw, ch = (width + 1) // 2, (height + 1) // 2
    luma, chroma = width * height, cw * ch
    frame = luma + 2 * chroma
    if len(raw) == 0 or len(raw) % frame:
        raise AnchorError(f"{path.name}: ffmpeg returned {len(raw)} bytes, not whole {width}x{height} frames")
    data = np.frombuffer(raw, np.uint8).reshape(-1, frame)
    t = data.shape[0]
    return Yuv420(
        y=data[:, :luma].reshape(t, height, width),
        u=data[:, luma : luma + chroma].reshape(t, ch, cw),
        v=data[:, luma + chroma :].reshape(t, ch, cw),
    )


def prepare_source(clip: pathlib.Path, workdir: pathlib.Path, max_frames: Optional[int] = None) -> Source:
    """The clip as an 8-bit 4:2:0 y4m in `workdir` (its first `max_frames` frames), and its planes.

    A y4m input is cut (or copied) by ffmpeg without any conversion; anything else (mp4, ...) is
    decoded to yuv420p once, so every codec, this one included, starts from the same frames.
    """
    clip = pathlib.Path(clip)
    with open_video(clip) as reader:
        info = reader.info
    out = workdir / f"{clip.stem}.y4m"
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-map", "0:v:0"]
    if max_frames is not None:
        cmd += ["-frames:v", str(max_frames)]
    cmd += ["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(out)]
    _run(cmd, f"preparing {clip.name}")
    planes = decode_yuv420(out, info.width, info.height)
    return Source(name=clip.stem, path=out, planes=planes, fps=Fraction(info.fps))


# --------------------------------------------------------------------------------------------
# Encoding and decoding


@dataclass(frozen=True)
class AnchorRun:
    """One anchor encode: the stream it wrote, its decoded planes and wall-clock times."""

    anchor: str
    value: float
    stream: pathlib.Path
    nbytes: int
    decoded: Yuv420
    encode_s: float
    decode_s: float
    command: tuple[str, ...]


def encode_command(anchor: Anchor, value: float, source: Source, out: pathlib.Path) -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(source.path),
            *anchor.encoder_args(value), "-f", anchor.muxer, str(out)]  # fmt: skip


def run_anchor(anchor: Anchor, value: float, source: Source, workdir: pathlib.Path) -> AnchorRun:
    """Encodes `source` with `anchor` at one knob value, then decodes the stream it wrote."""
    out = workdir / f"{source.name}.{anchor.name}.{anchor.knob}{int(round(value))}{anchor.suffix}"
    cmd = encode_command(anchor, value, source, out)
    start = time.perf_counter()
    _run(cmd, f"{anchor.name} {anchor.setting(value)} on {source.name}")
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_yuv420(out, source.width, source.height)
    decode_s = time.perf_counter() - start
    if decoded.y.shape != source.planes.y.shape:
        raise AnchorError(
            f"{anchor.name} {anchor.setting(value)} on {source.name}: decoded {decoded.y.shape[0]} frames "
            f"of {decoded.y.shape[1:]}, expected {source.planes.y.shape}"
        )
    return AnchorRun(anchor.name, value, out, out.stat().st_size, decoded, encode_s, decode_s, tuple(cmd))
