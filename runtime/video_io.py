"""Video in and out for the codec: readers that yield uint8 RGB frames, writers that never leave
a half-written file, and the codebase's one RGB <-> YUV 4:2:0 conversion pair.

The model codes RGB (the paper measures PSNR and MS-SSIM in RGB, Sec. 4.2); real video lives in
YUV 4:2:0. Everything that crosses between the two goes through `rgb_to_yuv420` /
`yuv420_to_rgb` below (the y4m reader and writer, and runtime/metrics.py's YUV PSNR).

Colour conversion (ITU-R BT.601, limited "TV" range: ffmpeg's default for yuv420p):

    Y  = 16  + ( 65.481 R + 128.553 G +  24.966 B) / 255        R, G, B in [0, 255]
    Cb = 128 + (-37.797 R -  74.203 G + 112.000 B) / 255
    Cr = 128 + (112.000 R -  93.786 G -  18.214 B) / 255

Chroma siting is *centred* (JPEG / MPEG-1 style, the y4m tag `C420jpeg`, which is what ffmpeg
writes for yuv420p): the chroma sample (i, j) sits at luma position (2i + 1/2, 2j + 1/2), in
the middle of its 2x2 luma block. Downsampling is the 2x2 box mean (the exact average for that
siting); upsampling is the matching separable bilinear ("triangle") filter: output luma
positions 2i and 2i + 1 take 3/4 of chroma sample i and 1/4 of sample i - 1 or i + 1. Odd sizes
replicate the last row / column; chroma planes are ceil(H/2) x ceil(W/2). ffmpeg's own
conversions use the same matrix and range but other chroma filters (swscale downsamples with
its bicubic scaler and, on its fast path, upsamples by replicating each chroma sample over its
2x2 block), so frames ffmpeg converts agree with these to within a few levels on natural video
(mean absolute difference about 0.02 on bikes.mp4), not bit for bit: convert with this pair,
never with ffmpeg, wherever two sides must agree (references and decoded frames, metrics).
y4m files tagged
`C420mpeg2` / `C420paldv` (other sitings of the same 4:2:0 sampling) are read as if centred:
a quarter-chroma-sample shift, stated here rather than resampled.

Readers (`open_video`): YUV4MPEG2 (recognised by its magic, any extension), a folder of PNGs
(natural sort order, all the same size) and anything else ffmpeg reads (mp4, mkv, avi, ...,
through imageio-ffmpeg's bundled binary). Writers (`open_writer`, chosen by the output name):
`.y4m`; a folder of PNGs (a name without a suffix); lossless video through ffmpeg (`.mkv` /
`.avi`: FFV1 in RGB; `.mp4` / `.mov`: libx264rgb at QP 0). Writers write to a temporary name
beside the output and rename on success; `check_output` refuses to overwrite an input, and an
existing output unless asked to. Every problem is a `CodecError` with a one-line message.

Hostile inputs (docs/HOSTILE_STREAMS.md): every reader refuses a picture over `max_pixels`
(runtime/limits.py, the decoder's limit: 8K by default) from its header, before reading a frame;
a y4m file's frame structure is checked against its size up front (a header whose W x H does not
match the data is an error before anything is decoded); a PNG folder's sizes are all read from
the PNG headers up front (mixed sizes are an error before the first frame is decoded).
"""

from __future__ import annotations

import itertools
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from runtime.limits import MAX_PIXELS, check_max_pixels, check_picture_size
from runtime.types import CodecError

PathLike = Union[str, os.PathLike]

Y4M_MAGIC = b"YUV4MPEG2 "
#: y4m chroma tags that mean 8-bit 4:2:0 (they differ only in chroma siting, see above).
Y4M_420_TAGS = ("420jpeg", "420paldv", "420mpeg2", "420")
#: Frame rate of a PNG folder when the caller gives none (ffmpeg's image2 default).
DEFAULT_PNG_FPS = Fraction(25)
#: The frame rates a stream takes: a frame a minute (time-lapse) to high-speed footage. A file
#: stating another (an animated PNG's 100,000 "fps" time base, a y4m's F1000000:1) needs --fps:
#: at 1e9 fps FFV1/Matroska dropped a frame of the decoded output.
MIN_FPS, MAX_FPS = Fraction(1, 60), Fraction(1000)

# --------------------------------------------------------------------------------------------
# The RGB <-> YUV 4:2:0 pair (BT.601 limited range, centred chroma).

_RGB_TO_YCBCR = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], np.float64
) / 255.0
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


class Yuv420(NamedTuple):
    """8-bit 4:2:0 planes: y uint8 [..., H, W]; u, v uint8 [..., ceil(H/2), ceil(W/2)]."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Rounds half up and saturates (in place on the float32 scratch array `x`)."""
    x += 0.5
    np.floor(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _box_down2(plane: np.ndarray) -> np.ndarray:
    """2x2 mean over the last two axes, replicating the last row / column of odd sizes."""
    h, w = plane.shape[-2:]
    if h % 2 or w % 2:
        plane = np.pad(plane, [(0, 0)] * (plane.ndim - 2) + [(0, h % 2), (0, w % 2)], mode="edge")
    total = plane[..., 0::2, 0::2] + plane[..., 1::2, 0::2]
    total += plane[..., 0::2, 1::2]
    total += plane[..., 1::2, 1::2]
    total *= 0.25
    return total


def _triangle_up2(plane: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Doubles `axis` (-1 or -2) with the centred-siting bilinear filter, cropped to `size`:
    output 2i = 3/4 c[i] + 1/4 c[i-1], output 2i+1 = 3/4 c[i] + 1/4 c[i+1] (edges clamped)."""
    n = plane.shape[axis]
    shape = list(plane.shape)
    shape[axis] = 2 * n
    out = np.empty(shape, plane.dtype)

    def at(index):
        key = [slice(None)] * plane.ndim
        key[axis] = index
        return tuple(key)

    even, odd = out[at(slice(0, None, 2))], out[at(slice(1, None, 2))]
    np.multiply(plane, 0.75, out=even)
    np.multiply(plane, 0.75, out=odd)
    even[at(slice(1, None))] += 0.25 * plane[at(slice(None, -1))]
    even[at(slice(0, 1))] += 0.25 * plane[at(slice(0, 1))]
    odd[at(slice(None, -1))] += 0.25 * plane[at(slice(1, None))]
    odd[at(slice(-1, None))] += 0.25 * plane[at(slice(-1, None))]
    return out[at(slice(0, size))]


def _weighted(row: np.ndarray, channels: Sequence[np.ndarray], offset: float) -> np.ndarray:
    """offset + sum_k row[k] * channels[k], in float32, skipping zero weights."""
    total = np.full(channels[0].shape, offset, np.float32)
    for weight, channel in zip(row, channels):
        if abs(weight) > 1e-12:
            total += np.float32(weight) * channel
    return total


def rgb_to_yuv420(rgb: np.ndarray) -> Yuv420:
    """uint8 RGB [..., H, W, 3] -> 4:2:0 planes (BT.601 limited range, centred chroma)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_yuv420: expected uint8 [..., H, W, 3], got {rgb.dtype} {rgb.shape}")
    channels = [rgb[..., k].astype(np.float32) for k in range(3)]
    y = _weighted(_RGB_TO_YCBCR[0], channels, _YCBCR_OFFSET[0])
    # The colour matrix is linear, so averaging R, G, B over each 2x2 block first gives the same
    # chroma as averaging Cb, Cr, at a quarter of the arithmetic.
    small = [_box_down2(c) for c in channels]
    u = _weighted(_RGB_TO_YCBCR[1], small, _YCBCR_OFFSET[1])
    v = _weighted(_RGB_TO_YCBCR[2], small, _YCBCR_OFFSET[2])
    return Yuv420(y=_to_uint8(y), u=_to_uint8(u), v=_to_uint8(v))


def yuv420_to_rgb(planes: Sequence[np.ndarray]) -> np.ndarray:
    """4:2:0 planes (y [..., H, W], u / v [..., ceil(H/2), ceil(W/2)], uint8) -> uint8 RGB
    [..., H, W, 3]; the inverse of `rgb_to_yuv420` up to rounding and chroma subsampling."""
    y, u, v = (np.asarray(p) for p in planes)
    h, w = y.shape[-2:]
    chroma = y.shape[:-2] + ((h + 1) // 2, (w + 1) // 2)
    if y.ndim < 2 or u.shape != chroma or v.shape != chroma:
        raise ValueError(f"yuv420_to_rgb: planes {y.shape}, {u.shape}, {v.shape} are not 4:2:0")
    ycc = [y.astype(np.float32) - np.float32(_YCBCR_OFFSET[0])]
    for plane, offset in ((u, _YCBCR_OFFSET[1]), (v, _YCBCR_OFFSET[2])):
        small = plane.astype(np.float32) - np.float32(offset)
        ycc.append(_triangle_up2(_triangle_up2(small, -2, h), -1, w))
    out = np.empty(y.shape + (3,), np.uint8)
    for k in range(3):
        out[..., k] = _to_uint8(_weighted(_YCBCR_TO_RGB[k], ycc, 0.0))
    return out


# --------------------------------------------------------------------------------------------
# Readers.


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows before decoding: frame size, exact frame rate, and the frame count
    when the container states it (`num_frames`) or an estimate from the duration
    (`approx_frames`, for progress bars only)."""

    path: str
    kind: str  # "y4m" | "png" | "ffmpeg"
    width: int
    height: int
    fps: Fraction
    num_frames: Optional[int] = None
    approx_frames: Optional[int] = None

    @property
    def expected_frames(self) -> Optional[int]:
        return self.num_frames if self.num_frames is not None else self.approx_frames


class VideoReader:
    """A single-pass source of uint8 RGB frames [H, W, 3]; a context manager. Iterating raises
    CodecError for unreadable or truncated data and for inputs with no frame at all."""

    info: VideoInfo
    #: (whole frames before it, one-line message) of a problem found when the file was opened
    #: (a y4m cut short): iterating stops there; None when none is known.
    known_problem: Optional[Tuple[int, str]] = None
    #: One-line notes on what the coded frames do not keep (a pixel aspect ratio, the other video
    #: streams of a file): the CLI prints them, as it opens the input.
    notes: Tuple[str, ...] = ()

    def __iter__(self) -> Iterator[np.ndarray]:
        count = 0
        for frame in self._frames():
            count += 1
            yield frame
        if count == 0:
            raise CodecError(f"{self.info.path}: no video frames")

    def _frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stated_rate(rate: Fraction, path: str, where: str) -> Fraction:
    """The frame rate a file states (`where`: "the y4m header", "ffmpeg"), if a stream can carry
    it; CodecError (asking for --fps) if it states none or one outside MIN_FPS..MAX_FPS."""
    if rate <= 0:
        raise CodecError(f"{path}: {where} states no frame rate; give one (--fps)")
    if not MIN_FPS <= rate <= MAX_FPS:
        raise CodecError(f"{path}: {where} states a frame rate of {_rate_text(rate)} fps, outside {MIN_FPS}..{MAX_FPS}; "
                         "give the real one (--fps)")
    return rate


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.6g}"


def check_rate(fps, what: str = "frame rate", given: Optional[str] = None) -> Fraction:
    """A frame rate given by the caller, as a Fraction; CodecError outside MIN_FPS..MAX_FPS, naming
    it `what` (a flag) and as `given` (the text the user typed)."""
    fps = Fraction(fps)
    if not MIN_FPS <= fps <= MAX_FPS:  # 1e9 fps was taken once, and FFV1/Matroska then dropped a frame
        raise CodecError(f"{what} must be from {MIN_FPS} to {MAX_FPS} frames per second, got {given or _rate_text(fps)}")
    return fps


def _aspect_note(path: str, sar: str) -> Optional[str]:
    """A note when a file states non-square pixels (SAR `num:den`): the stream keeps none."""
    match = re.fullmatch(r"(\d+):(\d+)", sar)
    if not match or int(match.group(1)) == int(match.group(2)) or 0 in (int(match.group(1)), int(match.group(2))):
        return None
    return (f"{path} has non-square pixels (aspect ratio {sar}), which the stream does not keep: decoded frames "
            f"have square pixels (to keep the picture's shape, scale first: ffmpeg -vf scale=iw*sar:ih,setsar=1)")


def _parse_fraction(text: str, what: str, path: str) -> Fraction:
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match:
        raise CodecError(f"{path}: bad {what} {text!r} in the y4m header")
    num, den = int(match.group(1)), int(match.group(2))
    if num == 0 or den == 0:
        return Fraction(0)
    return Fraction(num, den)


class Y4mReader(VideoReader):
    """YUV4MPEG2, 8-bit 4:2:0 progressive only (other chroma formats, bit depths, interlacing
    and full-range files are refused by name)."""

    MAX_HEADER = 4096

    def __init__(self, path: PathLike, fps: Optional[Fraction] = None, max_pixels: int = MAX_PIXELS):
        self._pipe = str(path) == STDIO  # standard input: read as it comes, never seeked
        self.path = "<stdin>" if self._pipe else str(path)
        self._max_pixels = check_max_pixels(max_pixels)
        try:
            self._file = sys.stdin.buffer if self._pipe else open(self.path, "rb")
        except OSError as err:
            raise CodecError(f"cannot open {self.path}: {err.strerror or err}") from None
        try:
            header = self._file.readline(self.MAX_HEADER)
            self.info = self._parse_header(header, fps)
            self._header_len = len(header)
        except BaseException:
            self._file.close()
            raise

    def _parse_header(self, header: bytes, fps: Optional[Fraction]) -> VideoInfo:
        if not header.startswith(Y4M_MAGIC):
            raise CodecError(f"{self.path}: not a YUV4MPEG2 file")
        if not header.endswith(b"\n"):
            raise CodecError(f"{self.path}: the y4m header is truncated or longer than {self.MAX_HEADER} bytes")
        width = height = None
        rate, chroma, interlace, colour_range, aspect = Fraction(0), "420jpeg", "p", "LIMITED", "0:0"
        for token in header[len(Y4M_MAGIC):].decode("ascii", "replace").split():
            tag, value = token[0], token[1:]
            if tag in "WH":
                if not value.isdigit() or int(value) <= 0:
                    raise CodecError(f"{self.path}: bad frame {'width' if tag == 'W' else 'height'} {value!r}")
                width, height = (int(value), height) if tag == "W" else (width, int(value))
            elif tag == "F":
                rate = _parse_fraction(value, "frame rate", self.path)
            elif tag == "C":
                chroma = value
            elif tag == "I":
                interlace = value
            elif tag == "A":
                aspect = value
            elif tag == "X" and value.upper().startswith("COLORRANGE="):
                colour_range = value.split("=", 1)[1].upper()
        if width is None or height is None:
            raise CodecError(f"{self.path}: the y4m header lacks the frame size (W and H tags)")
        check_picture_size(width, height, self._max_pixels, what=self.path, memory=False)
        if chroma not in Y4M_420_TAGS:
            raise CodecError(
                f"{self.path}: y4m chroma format C{chroma} is not supported (only 8-bit 4:2:0: "
                f"{', '.join('C' + c for c in Y4M_420_TAGS)}); convert with ffmpeg -pix_fmt yuv420p"
            )
        if interlace not in ("p", "?"):
            raise CodecError(f"{self.path}: interlaced y4m (I{interlace}) is not supported; deinterlace it first")
        if colour_range == "FULL":
            raise CodecError(f"{self.path}: full-range y4m is not supported (BT.601 limited range only)")
        if fps is None:
            fps = stated_rate(rate, self.path, "the y4m header")
        self.notes = tuple(n for n in [_aspect_note(self.path, aspect)] if n)
        self._frame_bytes = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
        if self._pipe:  # the count is unknown until the pipe ends; a cut frame is found when reached
            self._whole_frames, self._problem = None, None
            return VideoInfo(self.path, "y4m", width, height, fps)
        self._whole_frames, self._problem = self._scan(len(header), width, height)
        if self._whole_frames == 0:
            raise CodecError(self._problem)
        if self._problem is not None:
            self.known_problem = (self._whole_frames, self._problem)
        return VideoInfo(self.path, "y4m", width, height, fps,
                         num_frames=self._whole_frames if self._problem is None else None)  # fmt: skip

    def _scan(self, start: int, width: int, height: int):
        """Walks the frame headers (a seek per frame, no frame data read) -> (whole frames before
        the first problem, the problem's one-line message or None). Iterating stops with that
        message when it reaches the problem, before reading a byte of it (frames before it stay
        readable: `--frames` may never get there)."""
        size = os.fstat(self._file.fileno()).st_size
        if size == start:
            return 0, f"{self.path}: no video frames"
        count, position = 0, start
        try:
            while position < size:
                self._file.seek(position)
                line = self._file.readline(self.MAX_HEADER)
                if not line.startswith(b"FRAME") or not line.endswith(b"\n"):
                    return count, f"{self.path}: frame {count}: bad y4m frame header" + (
                        f" (no FRAME where frame {count - 1} of the header's {width}x{height} ends: the file is damaged, "
                        "or the header's size is not the frames')" if count else "")
                left = size - position - len(line)
                if left < self._frame_bytes:
                    return count, (
                        f"{self.path}: frame {count} is truncated ({left} of {self._frame_bytes} bytes: the file "
                        f"ends inside it, or its header's {width}x{height} does not match the data)"
                    )
                position += len(line) + self._frame_bytes
                count += 1
        finally:
            self._file.seek(start)
        return count, None

    def _frames(self) -> Iterator[np.ndarray]:
        w, h = self.info.width, self.info.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        for index in itertools.count() if self._whole_frames is None else range(self._whole_frames):
            line = self._file.readline(self.MAX_HEADER)
            if not line and self._pipe:
                break  # the pipe's end
            if not line.startswith(b"FRAME") or not line.endswith(b"\n"):
                raise CodecError(f"{self.path}: frame {index}: bad y4m frame header")
            data = self._file.read(self._frame_bytes)
            if len(data) != self._frame_bytes:
                raise CodecError(f"{self.path}: frame {index} is truncated ({len(data)} of {self._frame_bytes} bytes)")
            buf = np.frombuffer(data, np.uint8)
            y = buf[: w * h].reshape(h, w)
            u = buf[w * h : w * h + cw * ch].reshape(ch, cw)
            v = buf[w * h + cw * ch :].reshape(ch, cw)
            yield yuv420_to_rgb((y, u, v))
        if self._problem is not None:
            raise CodecError(self._problem)

    def close(self) -> None:
        if not self._pipe:
            self._file.close()


def one_line(error) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class PngFolderReader(VideoReader):
    """Every *.png in a folder, in natural order (frame2 before frame10), all the same size.
    Grey and palette images become RGB; an alpha channel is accepted only if fully opaque."""

    def __init__(self, path: PathLike, fps: Optional[Fraction] = None, max_pixels: int = MAX_PIXELS):
        self.path = str(path)
        max_pixels = check_max_pixels(max_pixels)
        try:
            names = [n for n in os.listdir(self.path) if n.lower().endswith(".png")]
        except OSError as err:
            raise CodecError(f"cannot read folder {self.path}: {err.strerror or err}") from None
        if not names:
            raise CodecError(f"{self.path}: no PNG files in the folder")
        self._files = [os.path.join(self.path, n) for n in sorted(names, key=_natural_key)]
        # Every size from the PNG headers (no pixel is decoded): the first against the limit,
        # the others against the first.
        width, height = self._size(self._files[0])
        check_picture_size(width, height, max_pixels, what=self._files[0], memory=False)
        for file in self._files[1:]:
            if self._size(file) != (width, height):
                w, h = self._size(file)
                raise CodecError(
                    f"{file} is {w}x{h}, the first frame is {width}x{height}: all PNGs must be the same size"
                )
        self.info = VideoInfo(self.path, "png", width, height, fps or DEFAULT_PNG_FPS, num_frames=len(self._files))

    @staticmethod
    def _size(file: str):
        """(width, height) from a PNG's header, without decoding it."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as image:
                return image.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise CodecError(f"cannot read {file}: {one_line(err)}") from None

    @staticmethod
    def _load(file: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as image:
                if getattr(image, "n_frames", 1) > 1:  # only its first would be read
                    raise CodecError(f"{file}: an animated PNG ({image.n_frames} frames) in a folder of frames; "
                                     "give it alone as the input")
                image.load()
                if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # a PNG's 16-bit grey (Pillow: "I" or "I;16")
                    # to 8 bits, as Pillow reduces 16-bit RGB and ffmpeg any deeper input
                    grey = np.asarray(image).astype(np.int64).clip(0, 65535)
                    if image.info.get("transparency") is not None and (grey == image.info["transparency"]).any():
                        raise CodecError(f"{file}: has transparent pixels; the codec takes opaque RGB")
                    return np.repeat(((grey + 128) // 257).astype(np.uint8)[..., None], 3, axis=2)
                if image.mode == "F":
                    raise CodecError(f"{file}: float PNGs are not supported; use 8-bit RGB")
                if "A" in image.getbands() or "transparency" in image.info:
                    rgba = np.asarray(image.convert("RGBA"))
                    if (rgba[..., 3] != 255).any():
                        raise CodecError(f"{file}: has transparent pixels; the codec takes opaque RGB")
                    return np.ascontiguousarray(rgba[..., :3])
                return np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            if isinstance(err, CodecError):
                raise
            raise CodecError(f"cannot read {file}: {one_line(err)}") from None

    def _frames(self) -> Iterator[np.ndarray]:
        for file in self._files:
            frame = self._load(file)
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise CodecError(
                    f"{file} is {frame.shape[1]}x{frame.shape[0]}, the first frame is "
                    f"{self.info.width}x{self.info.height}: all PNGs must be the same size"
                )
            yield frame


def ffmpeg_exe() -> str:
    """The ffmpeg binary imageio-ffmpeg ships (libx264, libx265, libsvtav1, libvmaf, FFV1)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


#: ffmpeg's log options for the readers: each line tagged with its level ("[error] ..."), no
#: progress lines.
_FFMPEG_LOG = ["-nostats", "-loglevel", "level+info"]


def _ffmpeg_problem(stderr: bytes, fallback: str) -> str:
    """The last error line of ffmpeg's log, without its '[demuxer @ 0x...]' and level prefixes.
    A log tagged by level (_FFMPEG_LOG) without an error line (ffmpeg killed, or crashed): the
    `fallback`, not an info line; an untagged one (`-v error`): its last line."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.search(r"Error opening input files?\b|Exiting with exit code", ln)]
    errors = [ln for ln in lines if re.search(r"\[(error|fatal|panic)\]", ln)]
    tagged = any(re.search(r"\[(info|verbose|warning|error|fatal|panic)\]", ln) for ln in lines)
    chosen = errors or ([] if tagged else lines)
    if not chosen:
        return fallback
    return re.sub(r"^(\[[^\]]*\]\s*)+", "", chosen[-1]) or fallback


#: A video stream line of ffmpeg's log: "Stream #0:1[0x2](und): Video: h264 (High), yuv420p(tv,
#: bt709, top first), 1920x1080 [SAR 1:1 DAR 16:9], ... (default)".
_VIDEO_STREAM = re.compile(rb"Stream #0:(\d+)[^\n]*?: Video: ([^\n]*)")
_SIZE_CHANGE = re.compile(rb"Reconfiguring filter graph because video parameters changed to [^\n]*?, (\d+)x(\d+)")


class FfmpegReader(VideoReader):
    """Anything ffmpeg demuxes and decodes, as rgb24 through a pipe: the file's first video
    stream that is not a picture attached to it (cover art, a thumbnail: `-map 0:V:0`), every
    frame it holds once (`-fps_mode passthrough`: a variable-rate file is not made constant by
    repeating or dropping frames; an animated PNG's frames are not repeated at its time base).

    The exact frame rate (a fraction such as 30000/1001, not ffmpeg's rounded "29.97 fps") comes
    from a one-frame probe to YUV4MPEG2, whose F tag is the rate ffmpeg itself would use. Refused
    by name, as the y4m reader refuses them: interlaced video, a rate outside MIN_FPS..MAX_FPS
    without --fps, and (when reached) a picture size that changes within the file, which ffmpeg
    would otherwise scale to the first size unasked.
    """

    PROBE_TIMEOUT_S = 120

    def __init__(self, path: PathLike, fps: Optional[Fraction] = None, max_pixels: int = MAX_PIXELS):
        self.path = str(path)
        self._max_pixels = check_max_pixels(max_pixels)
        self._map = "0:V:0"
        probe, header = self._probe()
        described = re.split(rb"\n[^\n]*(?:Output #0|Stream mapping:)", probe.stderr)[0]  # the input's streams only
        streams = {}  # by index: a multi-program transport stream lists a stream under each program
        for m in _VIDEO_STREAM.finditer(described):
            streams.setdefault(int(m.group(1)), m.group(2).decode("utf-8", "replace"))
        def decoded_size(line: str) -> Optional[Tuple[int, int]]:  # before any rotation ffmpeg then applies
            size = re.search(r", (\d+)x(\d+)", line)
            return (int(size.group(1)), int(size.group(2))) if size else None

        videos = [(index, line, decoded_size(line)) for index, line in streams.items() if "(attached pic)" not in line]
        notes, coded = [], None
        if videos:
            # Of several, the one of most pixels (the first of those), as ffmpeg itself picks: a
            # thumbnail or preview stream is smaller than the video.
            index, line, coded = max(videos, key=lambda v: ((v[2][0] * v[2][1]) if v[2] else 0, -v[0]))
            if len(videos) > 1:
                notes.append(f"{self.path} has {len(videos)} video streams; coding #0:{index}, the largest (to code "
                             "another: ffmpeg -map 0:N -c copy into a file of its own first)")
            if index != videos[0][0]:
                self._map = f"0:{index}"
                probe, header = self._probe()
            order = re.search(r"\b(top|bottom)( coded)? first\b", line)
            if order:
                raise CodecError(f"{self.path}: interlaced video ({order.group(0)}) is not supported; deinterlace it "
                                 "first (ffmpeg -vf bwdif=mode=send_frame)")
            sar = re.search(r"\[SAR (\d+:\d+)", line)
            notes.insert(0, _aspect_note(self.path, sar.group(1)) if sar else None)
        self.notes = tuple(n for n in notes if n)
        tags = {t[:1]: t[1:] for t in header[len(Y4M_MAGIC):].decode("ascii", "replace").split()}
        width, height = int(tags["W"]), int(tags["H"])
        check_picture_size(width, height, max_pixels, what=self.path, memory=False)
        rate = _parse_fraction(tags.get("F", "0:0"), "frame rate", self.path)
        if fps is None:
            fps = stated_rate(rate, self.path, "ffmpeg")
        approx = None
        match = re.search(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", probe.stderr)
        if match:
            seconds = int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))
            approx = max(1, round(seconds * float(rate or fps))) if seconds > 0 else None
        self.info = VideoInfo(self.path, "ffmpeg", width, height, fps, approx_frames=approx)
        self._coded_size = coded or (width, height)  # what ffmpeg's "video parameters changed" lines compare with
        self._process: Optional[subprocess.Popen] = None

    def _probe(self):
        """One frame of the mapped stream to YUV4MPEG2: (the completed process, its y4m header
        line); CodecError if ffmpeg cannot give one. ffmpeg's own decoder limit (-max_pixels)
        keeps a picture over the limit from ever being decoded (the probe would hold one frame of
        it in memory); its size then comes from ffmpeg's stream line."""
        max_pixels = self._max_pixels
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *_FFMPEG_LOG, "-max_pixels", str(min(max_pixels, (1 << 31) - 1)),
               "-i", self.path, "-map", self._map, "-frames:v", "1", "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "-"]  # fmt: skip
        try:
            probe = subprocess.run(cmd, capture_output=True, timeout=self.PROBE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise CodecError(f"{self.path}: ffmpeg took over {self.PROBE_TIMEOUT_S} s to open it") from None
        header = probe.stdout.split(b"\n", 1)[0]
        if probe.returncode != 0 or not header.startswith(Y4M_MAGIC):
            stated = re.search(rb"Picture size (\d+)x(\d+) exceeds", probe.stderr) or re.search(
                rb"Stream #0:\d+.*?: Video: .*?, (\d+)x(\d+)", probe.stderr
            )
            if stated:
                check_picture_size(int(stated.group(1)), int(stated.group(2)), max_pixels, what=self.path, memory=False)
            if b"matches no streams" in probe.stderr:
                raise CodecError(f"{self.path}: has no video stream")
            raise CodecError(f"cannot read {self.path}: {_ffmpeg_problem(probe.stderr, 'ffmpeg could not decode it')}")
        if b"\nFRAME" not in probe.stdout:
            raise CodecError(f"{self.path}: no video frames")
        return probe, header

    def _frames(self) -> Iterator[np.ndarray]:
        w, h = self.info.width, self.info.height
        size = w * h * 3
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *_FFMPEG_LOG,
               "-max_pixels", str(min(self._max_pixels, (1 << 31) - 1)), "-i", self.path, "-map", self._map,
               "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
        with tempfile.TemporaryFile() as log:
            # The log goes to a file, not a pipe: a chatty ffmpeg can then never block on it.
            self._process = process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
            read, pending = 0, b""  # the log: bytes read, and a line not yet ended
            try:
                index = 0
                while True:
                    data = process.stdout.read(size)
                    new = os.pread(log.fileno(), 1 << 20, read)
                    read += len(new)
                    lines, _, pending = (pending + new).rpartition(b"\n")
                    for changed in _SIZE_CHANGE.finditer(lines):  # written as the first frame of a new size arrives
                        new_size = (int(changed.group(1)), int(changed.group(2)))
                        if new_size != self._coded_size:  # not a change of pixel format or colour alone
                            cw, ch = self._coded_size
                            raise CodecError(
                                f"{self.path}: the picture size changes within the file, from {cw}x{ch} to {new_size[0]}x"
                                f"{new_size[1]}; a stream holds one size: cut the file where it changes, or scale it to "
                                f"one (ffmpeg -vf scale={w}:{h})"
                            )
                    if not data:
                        break
                    if len(data) != size:
                        raise CodecError(f"{self.path}: frame {index} is truncated")
                    yield np.frombuffer(data, np.uint8).reshape(h, w, 3)
                    index += 1
                if process.wait() != 0:
                    log.seek(0)
                    problem = _ffmpeg_problem(log.read(), f"ffmpeg exited with status {process.returncode}")
                    raise CodecError(f"{self.path}: decoding failed at frame {index}: {problem}")
            finally:
                self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()

    def close(self) -> None:
        self._stop()


def open_video(path: PathLike, fps: Optional[Fraction] = None, max_pixels: int = MAX_PIXELS) -> VideoReader:
    """A reader for `path`: a folder of PNGs, a y4m file (by its magic) or anything ffmpeg
    reads. `fps` overrides the stated frame rate (needed for PNG folders, default 25). A picture
    over `max_pixels` (padded to a multiple of 64; runtime/limits.py) is refused from the header."""
    p = pathlib.Path(path)
    if fps is not None:
        fps = check_rate(fps)
    if str(path) == STDIO:
        return Y4mReader(STDIO, fps, max_pixels)  # a pipe carries y4m (ffmpeg ... -f yuv4mpegpipe -)
    if p.is_dir():
        return PngFolderReader(p, fps, max_pixels)
    if not p.exists():
        raise CodecError(f"{path}: no such file or folder")
    try:
        with open(p, "rb") as f:
            magic = f.read(len(Y4M_MAGIC))
    except OSError as err:
        raise CodecError(f"cannot open {path}: {err.strerror or err}") from None
    if not magic:
        raise CodecError(f"{path}: the file is empty")
    if magic == Y4M_MAGIC:
        return Y4mReader(p, fps, max_pixels)
    if p.suffix.lower() == ".y4m":  # named y4m, yet not one: say so rather than pass ffmpeg's guess on
        raise CodecError(f"{path}: not a y4m file (it does not start with {Y4M_MAGIC.decode().strip()})")
    return FfmpegReader(p, fps, max_pixels)


def read_video(path: PathLike, max_frames: Optional[int] = None, fps: Optional[Fraction] = None,
               max_pixels: int = MAX_PIXELS):  # fmt: skip
    """All (or the first `max_frames`) frames of a video: (uint8 [T, H, W, 3], VideoInfo)."""
    frames = []
    with open_video(path, fps, max_pixels) as reader:
        if max_frames is not None and max_frames <= 0:
            raise CodecError(f"max_frames must be positive, got {max_frames}")
        iterator = iter(reader)
        for frame in iterator:
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                iterator.close()
                break
        return np.stack(frames), reader.info


# --------------------------------------------------------------------------------------------
# Writers.

#: Output suffix -> (writer kind, ffmpeg muxer, ffmpeg codec options). No suffix: PNG folder.
_LOSSLESS_VIDEO = {
    ".mkv": ("matroska", ["-c:v", "ffv1", "-level", "3", "-g", "1", "-pix_fmt", "bgr0"]),
    ".avi": ("avi", ["-c:v", "ffv1", "-level", "3", "-g", "1", "-pix_fmt", "bgr0"]),
    ".mp4": ("mp4", ["-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast", "-pix_fmt", "rgb24"]),
    ".mov": ("mov", ["-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast", "-pix_fmt", "rgb24"]),
}
OUTPUT_SUFFIXES = (".y4m",) + tuple(_LOSSLESS_VIDEO)


def output_kind(path: PathLike) -> str:
    """"y4m", "png" (a folder: no suffix) or "video" (lossless through ffmpeg); CodecError for
    anything else."""
    suffix = pathlib.Path(path).suffix.lower()
    if str(path).endswith(("/", os.sep)) or (suffix == "" and str(path) != STDIO):  # a folder, by a slash whatever its name
        return "png"
    if suffix == ".y4m" or str(path) == STDIO:
        return "y4m"
    if suffix in _LOSSLESS_VIDEO:
        return "video"
    raise CodecError(
        f"{path}: unknown output type {suffix!r}: name a .y4m file, a lossless video "
        f"({', '.join(_LOSSLESS_VIDEO)}), or a folder (no suffix) for PNGs"
    )


def _same_path(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


#: The name that means standard input (a y4m pipe) or standard output (y4m).
STDIO = "-"
#: The names of a PNG-folder output's frames (PngFolderWriter).
FRAME_PNG = re.compile(r"\d{6}\.png")


def check_output(path: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike] = ()) -> pathlib.Path:
    """Refuses an output that is one of `inputs`, that exists (unless `overwrite`), or whose
    folder does not exist. With `overwrite`, an existing folder is replaced only where it is a
    folder of decoded frames (000001.png, ... and nothing else) and the output is one (no
    suffix): a folder holding anything else, the input among it maybe, is never removed. Returns
    the output as a Path."""
    if str(path) == STDIO:
        return pathlib.Path(STDIO)  # standard output: nothing on disk to protect
    out = pathlib.Path(path)
    if out.name in ("", ".", ".."):  # `.`, `..`, `/`: the folder itself, by its own name
        out = out.resolve()
        if not out.name:
            raise CodecError(f"{path}: the root folder cannot be an output")
    for src in inputs:
        if _same_path(out, pathlib.Path(src)):
            raise CodecError(f"{path}: the output is the input; refusing to overwrite it")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise CodecError(f"{path} exists (pass --overwrite to replace it)")
        if out.is_dir():
            if out.suffix and not str(path).endswith(("/", os.sep)):
                raise CodecError(f"{path} is a folder; refusing to replace it with a file")
            others = sorted(p.name for p in out.iterdir() if not (FRAME_PNG.fullmatch(p.name) and p.is_file()))
            if others:
                raise CodecError(f"{path} is a folder holding other files than decoded frames ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}); refusing to replace it")
    parent = out.parent if str(out.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise CodecError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):  # said now, not after the coding
        raise CodecError(f"{path}: cannot write in folder {parent} (permission denied)")
    return out


def temp_name(path: pathlib.Path) -> pathlib.Path:
    """A hidden sibling of `path` with the same suffix (so tools that look at names still
    work), unique to this writer."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")


def commit(tmp: pathlib.Path, path: pathlib.Path) -> None:
    """Moves a finished temporary file or folder onto `path` (replacing what is there)."""
    if tmp.is_dir():
        trash = None
        if path.exists():
            trash = temp_name(path)
            os.rename(path, trash)
        os.rename(tmp, path)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink()
    else:
        if path.is_dir():  # check_output refused it; a folder made since is not ours to remove
            raise CodecError(f"{path} is a folder; refusing to replace it with a file")
        os.replace(tmp, path)


def discard(tmp: pathlib.Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


class VideoWriter:
    """Writes uint8 RGB frames [H, W, 3] to a temporary name; `close()` renames it onto the
    output, `abort()` (or leaving the `with` block by an exception) removes it."""

    def __init__(self, path: PathLike, width: int, height: int, fps: Fraction):
        if width <= 0 or height <= 0:
            raise CodecError(f"{path}: bad frame size {width}x{height}")
        self.path = pathlib.Path(path)
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.frames = 0
        self._tmp = temp_name(self.path)
        self._done = False
        self._open()

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            self.abort()
            raise CodecError(
                f"{self.path}: frame {self.frames} is {frame.dtype} {frame.shape}, expected uint8 "
                f"({self.height}, {self.width}, 3)"
            )
        self._write(np.ascontiguousarray(frame))
        self.frames += 1

    def __call__(self, frame: np.ndarray) -> None:
        self.write(frame)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            if self.frames == 0:
                raise CodecError(f"{self.path}: no frames to write")
            self._finish()
        except BaseException:
            self._cleanup()
            discard(self._tmp)
            raise
        commit(self._tmp, self.path)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._cleanup()
            discard(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # Subclass hooks.
    def _open(self) -> None: ...
    def _write(self, frame: np.ndarray) -> None: ...
    def _finish(self) -> None: ...
    def _cleanup(self) -> None: ...


class Y4mWriter(VideoWriter):
    """YUV4MPEG2 4:2:0 (C420jpeg, BT.601 limited range)."""

    def _open(self) -> None:
        self._file = open(self._tmp, "wb")
        self._file.write(self._header())

    def _header(self) -> bytes:
        f = self.fps.limit_denominator(1 << 30)
        return (f"YUV4MPEG2 W{self.width} H{self.height} F{f.numerator}:{f.denominator} Ip A0:0 "
                f"C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED\n").encode()

    def _write(self, frame: np.ndarray) -> None:
        y, u, v = rgb_to_yuv420(frame)
        self._file.write(b"FRAME\n")
        for plane in (y, u, v):
            self._file.write(plane.tobytes())

    def _finish(self) -> None:
        self._file.close()

    def _cleanup(self) -> None:
        self._file.close()


class Y4mStdoutWriter(Y4mWriter):
    """y4m to standard output (`-`: elfvc decode x.elfvc - | ffplay -): written as it comes,
    nothing to rename or remove."""

    def __init__(self, width: int, height: int, fps: Fraction):
        super().__init__(STDIO, width, height, fps)

    def _open(self) -> None:
        self._file = sys.stdout.buffer
        self._file.write(self._header())

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._file.flush()

    abort = close  # what was written is out already


class PngFolderWriter(VideoWriter):
    """A folder of 000001.png, 000002.png, ... (what ffmpeg's image2 muxer names them)."""

    def _open(self) -> None:
        os.mkdir(self._tmp)

    def _write(self, frame: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(frame, "RGB").save(self._tmp / f"{self.frames + 1:06d}.png", compress_level=4)


class FfmpegWriter(VideoWriter):
    """Lossless video through ffmpeg: FFV1 (RGB) in .mkv / .avi, libx264rgb QP 0 in .mp4 / .mov."""

    def _open(self) -> None:
        muxer, codec = _LOSSLESS_VIDEO[self.path.suffix.lower()]
        f = self.fps.limit_denominator(1 << 30)
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{self.width}x{self.height}", "-framerate", f"{f.numerator}/{f.denominator}", "-i", "-",
               *codec, "-f", muxer, str(self._tmp)]  # fmt: skip
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def _problem(self) -> str:
        self._log.seek(0)
        return _ffmpeg_problem(self._log.read(), f"ffmpeg exited with status {self._process.returncode}")

    def _write(self, frame: np.ndarray) -> None:
        try:
            self._process.stdin.write(frame.tobytes())
        except (BrokenPipeError, OSError):
            self._process.wait()
            problem = self._problem()
            self.abort()
            raise CodecError(f"{self.path}: ffmpeg failed: {problem}") from None

    def _finish(self) -> None:
        self._process.stdin.close()
        if self._process.wait() != 0:
            raise CodecError(f"{self.path}: ffmpeg failed: {self._problem()}")
        self._log.close()

    def _cleanup(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        if not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except OSError:
                pass
        self._log.close()


def open_writer(path: PathLike, width: int, height: int, fps: Fraction, kind: Optional[str] = None) -> VideoWriter:
    """The writer `kind` names, else the one `path`'s name asks for (see `output_kind`: pass the
    kind of the name as the user gave it, as a Path drops a folder's trailing slash). Call
    `check_output` first."""
    if str(path) == STDIO:
        return Y4mStdoutWriter(width, height, Fraction(fps))
    kind = kind or output_kind(path)
    cls = {"y4m": Y4mWriter, "png": PngFolderWriter, "video": FfmpegWriter}[kind]
    return cls(pathlib.Path(path), width, height, Fraction(fps))


def write_video(
    path: PathLike, frames: Iterable[np.ndarray], fps: Fraction, *, overwrite: bool = False, inputs: Iterable[PathLike] = ()
) -> int:
    """Writes all `frames` (uint8 [H, W, 3]) to `path` (never one of `inputs`); returns the
    number written."""
    kind = output_kind(path)
    out = check_output(path, overwrite=overwrite, inputs=inputs)
    writer = None
    try:
        for frame in frames:
            if writer is None:
                writer = open_writer(out, frame.shape[1], frame.shape[0], fps, kind)
            writer.write(frame)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise CodecError(f"{path}: no frames to write")
    writer.close()
    return writer.frames
