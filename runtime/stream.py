"""Whole streams: encode a clip to a file, decode a file, describe a file (runtime/bitstream.py).

    encode_video(frames, out) : header | frame unit per frame      (temporary name, then rename)
    decode_video(in, sink)    : every frame through the decoder, to `sink(frame uint8 [H, W, 3])`
    inspect(in)               : header + per-frame type, level, bytes, substreams (no decoding)

Frame types follow the GOP: frame i is an I-frame when i % gop == 0 (gop 0: only frame 0).
"""

from __future__ import annotations

import itertools
import math
import os
import pathlib
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

from runtime.bitstream import (
    FORMAT_VERSION,
    MAX_SUBSTREAMS,
    Reader,
    StreamHeader,
    read_frame,
    read_stream_header,
    write_stream_header,
)
from runtime.codec import Decoder, EncodedFrame, Encoder
from runtime.entropy_coding import SubstreamLayout
from runtime.limits import MAX_PIXELS, check_picture_size
from runtime.motion_refine import MotionRefinement
from model.fileio import as_umask_allows
from runtime.types import CodecError, FrameType, RateController, TrialResult, scheduled_intra


@dataclass(frozen=True)
class FrameRecord:
    """One coded frame of an encode."""

    index: int
    frame_type: FrameType
    level: float
    bits: int  # frame unit size in bits, headers included
    estimated_bits: float  # the model's estimate with the coded scales
    psnr: Optional[float]  # RGB PSNR of the reconstruction, dB (None: the `fast` preset did not reconstruct)


@dataclass(frozen=True)
class EncodeSummary:
    path: str
    width: int
    height: int
    fps: Fraction
    frames: Tuple[FrameRecord, ...]
    total_bytes: int  # the whole file
    seconds: float

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def bpp(self) -> float:
        return 8 * self.total_bytes / (self.num_frames * self.width * self.height)

    @property
    def kbps(self) -> float:
        return 8 * self.total_bytes / self.num_frames * float(self.fps) / 1000.0

    @property
    def mean_psnr(self) -> Optional[float]:
        """Mean over the frames' PSNRs; None when the encoder did not reconstruct (`fast`)."""
        values = [f.psnr for f in self.frames if f.psnr is not None]
        return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class DecodeSummary:
    path: str
    width: int
    height: int
    fps: Fraction
    num_frames: int
    total_bytes: int
    seconds: float


@dataclass(frozen=True)
class FrameInfo:
    frame_type: FrameType
    level: float
    num_bytes: int  # frame unit, headers included
    substreams: Tuple[int, ...]  # bytes of each substream (range code + escapes)


@dataclass(frozen=True)
class StreamInfo:
    version: int
    model_id: str  # hex
    width: int
    height: int
    fps: Fraction
    num_frames: int
    gop: int
    channel_groups: int
    tile: int
    frames: Tuple[FrameInfo, ...]


_END = object()  # encode_video's marker for an input with no frames


def _fraction(fps) -> Fraction:
    try:
        value = Fraction(fps).limit_denominator(1 << 20) if not isinstance(fps, Fraction) else fps
    except (TypeError, ValueError):
        raise CodecError(f"frame rate {fps!r} is not a number") from None
    if value <= 0 or value.numerator >= 1 << 32 or value.denominator >= 1 << 32:
        raise CodecError(f"frame rate {fps} is not a positive rate the format can store")
    return value


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def encode_video(
    frames: Iterable[np.ndarray],
    out_path,
    *,
    fps,
    gop: int = 16,
    controller: RateController,
    backend,
    bundle,
    progress: Optional[Callable[[int, EncodedFrame], None]] = None,
    layout: Optional[SubstreamLayout] = None,
    input_path=None,
    scenecut: Optional[float] = None,
    motion_refinement: Optional[MotionRefinement] = None,
    max_pixels: int = MAX_PIXELS,
    preset="medium",
    rd_frame_type: Optional[bool] = None,
) -> EncodeSummary:
    """Encodes uint8 [H, W, 3] frames into `out_path` (written to a temporary name in the same
    folder and renamed on success; nothing is left behind on failure).

    An I-frame starts every GOP of `gop` frames (0: only the first frame). With `scenecut` > 0 a
    P-frame costing more than `scenecut` times the last I-frame is also tried as an I-frame, which
    replaces it if it is no larger and no worse in PSNR; the next GOP then counts from there
    (`gop` is the longest I-frame interval, as x264's keyint). The I-frame alternative is tried at
    the P-frame's level; one that wins is coded at the I-frames' level where the controller gives
    them another (a P-frame level offset). The decoder reads each frame's type from its frame unit.

    `layout` cuts each codelayer into substreams (runtime/entropy_coding.py; in the stream header);
    None: `SubstreamLayout.for_frame` of the first frame's size.

    `progress(index, encoded_frame)` is called after each frame; `input_path` (or an
    `frames.path` attribute) names the source, which is never overwritten. Frames over
    `max_pixels` (runtime/limits.py; the readers of runtime/video_io.py refuse them first) are
    refused before the networks run.

    With `rd_frame_type` every P-frame is also coded as an I-frame at the same level and the one
    with the lower rate-distortion cost (`rd_cost`: the training loss, RGB MSE + lambda(level) x
    bpp, lambda from the model card's range) is kept; it replaces the scene-cut rule.

    `preset` (runtime/presets.py: fast, medium, slow, or a Preset) sets the encoder-side choices;
    an explicit `scenecut` (default: the preset's, else DEFAULT_SCENECUT), `motion_refinement` or
    `rd_frame_type` wins over it. No preset changes what a decoder reads.
    """
    from runtime.presets import default_scenecut, get_preset

    try:
        preset = get_preset(preset)
    except ValueError as e:
        raise CodecError(str(e)) from None
    if scenecut is None:
        scenecut = default_scenecut(preset)
    if motion_refinement is None:
        motion_refinement = preset.motion_refinement()
    if rd_frame_type is None:
        rd_frame_type = preset.rd_frame_type
    rd_lambda = bundle.training_lambda if rd_frame_type else None
    # `fast`: with GOP 1 nothing references a frame, so unless the controller judges frames by
    # their PSNR the encoder need not reconstruct them.
    reconstruct = not (preset.skip_unreferenced_synthesis and gop == 1 and not getattr(controller, "needs_psnr", True))
    out_path = pathlib.Path(out_path)
    source = input_path if input_path is not None else getattr(frames, "path", None)
    if source is not None and _same_file(out_path, pathlib.Path(source)):
        raise CodecError(f"output {out_path} is the input: refusing to overwrite it")
    if out_path.is_dir():  # before any frame is coded
        raise CodecError(f"{out_path} is a folder; an ELF-VC stream is one file")
    if gop < 0 or gop >= 1 << 16:
        raise CodecError(f"GOP {gop} outside [0, 65535]")
    if not (scenecut >= 0 and np.isfinite(scenecut)):
        raise CodecError(f"scene-cut threshold {scenecut} must be a finite number >= 0 (0: off)")
    rate = _fraction(fps)
    start = time.perf_counter()
    frames = iter(frames)
    first = next(frames, _END)  # its size chooses the default substream layout
    shape = first.shape if isinstance(first, np.ndarray) else ()  # anything else is refused below as before
    if layout is None:
        layout = SubstreamLayout.for_frame(shape[1], shape[0]) if len(shape) == 3 else SubstreamLayout()
    if len(shape) == 3 and layout.per_frame(shape[1], shape[0], codelayers=2) > MAX_SUBSTREAMS:
        raise CodecError(f"{16 * layout.tile}-pixel tiles cut a {shape[1]}x{shape[0]} picture into "
                         f"{layout.per_frame(shape[1], shape[0], codelayers=2)} substreams a P-frame; the format allows "
                         f"{MAX_SUBSTREAMS}: use larger tiles")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=f".partial{out_path.suffix}", dir=out_path.parent)
    tmp = pathlib.Path(tmp_name)
    records = []
    try:
        with os.fdopen(fd, "wb") as f, Encoder(bundle, backend, layout, motion_refinement=motion_refinement,
                                                  latent_optimization=preset.latent_optimization()) as encoder:
            header = None
            last_intra = None  # (index, bits) of the last I-frame
            for index, frame in enumerate(itertools.chain(() if first is _END else (first,), frames)):
                frame = np.asarray(frame)
                if header is None:
                    if frame.ndim != 3 or frame.shape[2:] != (3,) or frame.dtype != np.uint8:
                        raise CodecError(f"a frame must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
                    check_picture_size(frame.shape[1], frame.shape[0], max_pixels, what="the input", memory=False)
                    header = StreamHeader(
                        model_id=bundle.model_id,
                        width=frame.shape[1],
                        height=frame.shape[0],
                        fps_num=rate.numerator,
                        fps_den=rate.denominator,
                        frame_count=0,
                        gop=gop,
                        channel_groups=layout.channel_groups,
                        tile=layout.tile,
                    )
                    f.write(write_stream_header(header))
                scheduled = scheduled_intra(index, None if last_intra is None else last_intra[0], gop)
                frame_type = FrameType.I if scheduled else FrameType.P
                intra_bits = None if (scenecut <= 0 or last_intra is None) else scenecut * last_intra[1]
                encoded = _encode_one(encoder, controller, frame, index, frame_type, intra_bits, reconstruct, rd_lambda)
                if encoded.frame_type is FrameType.I:
                    last_intra = (index, encoded.bits)
                f.write(encoded.payload)
                records.append(
                    FrameRecord(index, encoded.frame_type, encoded.level, encoded.bits, encoded.estimated_bits, encoded.psnr)
                )
                if progress is not None:
                    progress(index, encoded)
            if header is None:
                raise CodecError("no frames to encode (the input is empty)")
            f.seek(0)
            f.write(write_stream_header(_replace_count(header, len(records))))
            f.flush()
            os.fsync(f.fileno())
        as_umask_allows(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return EncodeSummary(
        path=str(out_path),
        width=header.width,
        height=header.height,
        fps=rate,
        frames=tuple(records),
        total_bytes=out_path.stat().st_size,
        seconds=time.perf_counter() - start,
    )


def _replace_count(header: StreamHeader, count: int) -> StreamHeader:
    from dataclasses import replace

    return replace(header, frame_count=count)


def rd_cost(bits: int, psnr: float, num_pixels: int, lam: float) -> float:
    """One frame's rate-distortion cost as training weighs it (model/losses.py, D + lambda R): RGB
    MSE on [0, 1] (from the PSNR) plus lambda x bits per pixel."""
    mse = 10.0 ** (-psnr / 10.0) if math.isfinite(psnr) else 0.0
    return mse + lam * bits / num_pixels


def _encode_one(
    encoder: Encoder, controller: RateController, frame, index: int, frame_type: FrameType, scenecut_bits=None,
    reconstruct: bool = True, rd_lambda: Optional[Callable[[float], float]] = None,
) -> EncodedFrame:
    """Asks the controller for a level (it may run trials), codes the frame and commits it. A trial
    at the chosen level is reused instead of coding the frame again. With `rd_lambda` (level ->
    lambda) every P-frame is also coded as an I-frame at the same level and the one of lower
    `rd_cost` is kept; otherwise a P-frame of more than `scenecut_bits` bits is also coded as an
    I-frame, which replaces it only if it is no larger and no worse in PSNR (and better in one of
    the two). Both choices are made at the P-frame's level; an I-frame that wins starts a GOP and
    is coded at the I-frames' level where the controller gives them another (`_at_intra_level`),
    so it may then be larger than the P-frame it replaced."""
    trials = {}

    def trial(level: float) -> TrialResult:
        encoded = encoder.encode_frame(frame, level, frame_type, commit=False, reconstruct=reconstruct)
        trials[encoded.level] = encoded
        return encoded.trial_result()

    num_pixels = int(frame.shape[0] * frame.shape[1])
    level = float(np.float32(controller.select_level(index, frame_type, num_pixels, trial)))
    encoded = trials[level] if level in trials else encoder.encode_frame(frame, level, frame_type, commit=False,
                                                                         reconstruct=reconstruct)
    if frame_type is FrameType.P and rd_lambda is not None:
        intra = encoder.encode_frame(frame, level, FrameType.I, commit=False)
        lam = rd_lambda(level)
        if rd_cost(intra.bits, intra.psnr, num_pixels, lam) < rd_cost(encoded.bits, encoded.psnr, num_pixels, lam):
            encoded = intra
    elif frame_type is FrameType.P and scenecut_bits is not None and encoded.bits > scenecut_bits:
        intra = encoder.encode_frame(frame, level, FrameType.I, commit=False)
        if _dominates(intra, encoded):
            encoded = intra
    if encoded.frame_type is not frame_type:  # a P-frame turned I-frame: it starts a GOP
        encoded = _at_intra_level(encoder, controller, frame, index, num_pixels, encoded, reconstruct)
    encoder.commit(encoded)
    controller.update(index, encoded.frame_type, encoded.trial_result())
    return encoded


def _at_intra_level(encoder: Encoder, controller: RateController, frame, index: int, num_pixels: int,
                    intra: EncodedFrame, reconstruct: bool) -> EncodedFrame:
    """`intra` (an I-frame chosen over a P-frame at the P-frame's level), coded again at the level
    the controller gives I-frames when that differs (runtime/ratecontrol.py's `intra_level`)."""
    from runtime.ratecontrol import intra_level

    trials = {intra.level: intra}

    def trial(level: float) -> TrialResult:
        encoded = encoder.encode_frame(frame, level, FrameType.I, commit=False, reconstruct=reconstruct)
        trials[encoded.level] = encoded
        return encoded.trial_result()

    level = intra_level(controller, index, num_pixels, trial)
    if level is None:
        return intra
    level = float(np.float32(level))
    return trials[level] if level in trials else encoder.encode_frame(frame, level, FrameType.I, commit=False,
                                                                      reconstruct=reconstruct)


def _dominates(a: EncodedFrame, b: EncodedFrame) -> bool:
    """`a` is no larger and no worse than `b` (RGB PSNR), and better in one of the two."""
    return a.bits <= b.bits and a.psnr >= b.psnr and (a.bits < b.bits or a.psnr > b.psnr)


def open_stream(in_path) -> Tuple[Reader, StreamHeader, object]:
    """(reader, header, open file) of a stream whose header has been read and checked; the caller
    closes the file. CodecError (naming the file) for a missing, unreadable or non-stream file."""
    path = pathlib.Path(in_path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CodecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CodecError(f"{path} is a folder, not an ELF-VC stream") from None
    except OSError as e:
        raise CodecError(f"{path}: cannot read ({e.strerror})") from None
    try:
        reader = Reader(f)
        header = read_stream_header(reader)
    except CodecError as e:
        f.close()
        raise CodecError(f"{path}: {e}") from None
    except BaseException:
        f.close()
        raise
    return reader, header, f


def decode_video(in_path, sink: Callable[[np.ndarray], None], backend, bundle, *, max_pixels: int = MAX_PIXELS) -> DecodeSummary:
    """Decodes every frame of `in_path` and hands each (uint8 [H, W, 3]) to `sink`.

    A stream whose padded picture is over `max_pixels` (default 8K, runtime/limits.py)
    or would need more memory than the machine has is refused before anything is allocated.

    CodecError for anything wrong with the stream: not a stream, truncated, corrupted, encoded
    with another model, trailing data. Frames already handed to `sink` stay handed; callers
    writing files write to a temporary name (runtime/video_io.py).
    """
    start = time.perf_counter()
    reader, header, f = open_stream(in_path)
    try:
        if header.model_id != bundle.model_id:
            name = shipped_model_with_id(header.model_id)
            raise CodecError(
                f"{in_path}: wrong model: the stream was encoded with model {header.model_id.hex()}, "
                f"this decoder has {bundle.model_id.hex()}"
                + (f"; the shipped model {name!r} has it: --model {name}" if name else "")
            )
        check_picture_size(header.width, header.height, max_pixels, what=str(in_path), config=bundle.config)
        layout = SubstreamLayout(header.channel_groups, header.tile)
        with Decoder(bundle, backend, header.width, header.height, layout, max_pixels=max_pixels) as decoder:
            units = frame_units(reader, header)
            while True:
                try:  # the stream's own faults name the file (not the sink's: a writer, a reference)
                    index, unit = next(units, (None, None))
                    if unit is None:
                        break
                    try:
                        decoded = decoder.decode_frame(unit)
                    except CodecError as e:
                        raise CodecError(f"frame {index}: {e}") from e
                except CodecError as e:
                    raise CodecError(f"{in_path}: {e}") from None
                sink(decoded.reconstruction)
    finally:
        f.close()
    return DecodeSummary(
        path=str(in_path),
        width=header.width,
        height=header.height,
        fps=Fraction(header.fps_num, header.fps_den),
        num_frames=header.frame_count,
        total_bytes=reader.size,
        seconds=time.perf_counter() - start,
    )


def frame_units(reader: Reader, header: StreamHeader) -> Iterable[Tuple[int, "FrameUnit"]]:
    """(index, unit) of each frame the header announces, with the checks any reader makes without
    the model (docs/BITSTREAM.md, "Errors"): the file holds that many frames and nothing after
    them, the first is an I-frame, and each frame's substream count fits its size and layout
    (exact with one channel group; with more, a model with fewer latent channels than groups
    has fewer, so a range). CodecError otherwise; the decoder checks the rest with the model."""
    one_group = SubstreamLayout(1, header.tile)
    layout = SubstreamLayout(header.channel_groups, header.tile)
    for index in range(header.frame_count):
        if reader.at_end():
            raise CodecError(f"truncated stream: the header announces {header.frame_count} frames, the file holds {index}")
        unit = read_frame(reader, index)
        if index == 0 and unit.frame_type is not FrameType.I:
            raise CodecError("corrupt stream: the first frame is not an I-frame")
        layers = 1 if unit.frame_type is FrameType.I else 2
        low = one_group.per_frame(header.width, header.height, layers)
        high = layout.per_frame(header.width, header.height, layers)
        if not low <= len(unit.substreams) <= high:
            allowed = f"{low}" if low == high else f"{low} to {high}"
            raise CodecError(f"corrupt stream: frame {index} ({unit.frame_type.name}) has {len(unit.substreams)} substreams; "
                             f"its size and layout give {allowed}")
        yield index, unit
    if not reader.at_end():
        raise CodecError(f"corrupt stream: {reader.remaining} bytes after the last of {header.frame_count} frames")


def shipped_model_with_id(model_id: bytes) -> Optional[str]:
    """The name of the shipped model whose card records `model_id` (runtime/checkpoints/*/
    model_card.json, `model_id`), else None: what a wrong-model error can point to."""
    from model.bundle import read_card, shipped_models

    for name, folder in shipped_models():
        try:
            if read_card(folder).get("model_id") == model_id.hex():
                return name
        except CodecError:
            continue
    return None


def inspect(in_path) -> StreamInfo:
    """The header and per-frame facts of a stream, without decoding; CodecError if malformed."""
    reader, header, f = open_stream(in_path)
    frames = []
    try:
        for _, unit in frame_units(reader, header):
            frames.append(FrameInfo(unit.frame_type, unit.level, unit.size, tuple(s.size for s in unit.substreams)))
    except CodecError as e:
        raise CodecError(f"{in_path}: {e}") from None
    finally:
        f.close()
    return StreamInfo(
        version=FORMAT_VERSION,
        model_id=header.model_id.hex(),
        width=header.width,
        height=header.height,
        fps=Fraction(header.fps_num, header.fps_den),
        num_frames=header.frame_count,
        gop=header.gop,
        channel_groups=header.channel_groups,
        tile=header.tile,
        frames=tuple(frames),
    )
