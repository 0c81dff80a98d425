"""Bitstream units (runtime/bitstream.py): round trips and one clear CodecError per malformation."""

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from runtime import bitstream as bs
from runtime.entropy_coding import Substream
from runtime.types import CodecError, FrameType

HEADER = bs.StreamHeader(
    model_id=bytes(range(16)), width=130, height=98, fps_num=30000, fps_den=1001,
    frame_count=3, gop=16, channel_groups=2, tile=32,
)  # fmt: skip


def unit(seed=0, count=5, frame_type=FrameType.P, level=2.3):
    rng = np.random.default_rng(seed)
    subs = tuple(
        Substream(rng.bytes(int(rng.integers(0, 300))), rng.bytes(int(rng.integers(0, 3)))) for _ in range(count)
    )
    return bs.FrameUnit(frame_type, level, subs)


def stream_bytes(frames=(unit(0), unit(1)), header=HEADER):
    return bs.write_stream_header(dataclasses.replace(header, frame_count=len(frames))) + b"".join(
        bs.write_frame(f) for f in frames
    )


def fix_frame_crc(frame: bytes) -> bytes:
    return frame[:-4] + struct.pack("<I", zlib.crc32(frame[:-4]))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**21 - 1, 2**32, 2**35 - 1])
def test_varint_round_trip(value):
    raw = bs.write_varint(value)
    assert bs.read_varint(bs.Reader(raw), "x") == (value, raw)


def test_varint_too_long():
    with pytest.raises(CodecError, match="longer than"):
        bs.read_varint(bs.Reader(b"\xff" * 6), "x")


def test_header_round_trip():
    raw = bs.write_stream_header(HEADER)
    assert len(raw) == bs.header_size()
    reader = bs.Reader(raw)
    assert bs.read_stream_header(reader) == HEADER and reader.at_end()
    assert HEADER.fps == pytest.approx(29.97, abs=1e-3)


@pytest.mark.parametrize("seed,count,frame_type", [(0, 0, FrameType.I), (1, 4, FrameType.I), (2, 16, FrameType.P)])
def test_frame_round_trip(seed, count, frame_type):
    frame = unit(seed, count, frame_type, level=1.7)
    raw = bs.write_frame(frame)
    reader = bs.Reader(raw)
    back = bs.read_frame(reader)
    assert reader.at_end() and back.size == len(raw)
    assert back.frame_type is frame_type and back.substreams == frame.substreams
    assert back.level == float(np.float32(1.7))  # the level is a float32, exactly


def test_empty_and_not_a_stream():
    with pytest.raises(CodecError, match="empty file"):
        bs.read_stream_header(bs.Reader(b""))
    with pytest.raises(CodecError, match="bad magic"):
        bs.read_stream_header(bs.Reader(b"\x89PNG\r\n\x1a\n" + b"\0" * 100))
    with pytest.raises(CodecError, match="truncated"):
        bs.read_stream_header(bs.Reader(bs.MAGIC[:5]))


def test_unsupported_version():
    raw = bytearray(bs.write_stream_header(HEADER))
    raw[len(bs.MAGIC)] = 9
    with pytest.raises(CodecError, match="unsupported format version 9"):
        bs.read_stream_header(bs.Reader(bytes(raw)))


def test_header_crc_and_validation():
    raw = bytearray(bs.write_stream_header(HEADER))
    raw[12] ^= 1
    with pytest.raises(CodecError, match="CRC mismatch"):
        bs.read_stream_header(bs.Reader(bytes(raw)))
    for field, value in [("tile", 6), ("width", 0), ("fps_den", 0), ("channel_groups", 0)]:
        with pytest.raises(CodecError, match="bad header"):
            bs.write_stream_header(dataclasses.replace(HEADER, **{field: value}))


def test_every_truncation_is_reported():
    raw = stream_bytes()
    for cut in range(len(raw)):
        reader = bs.Reader(raw[:cut])
        with pytest.raises(CodecError, match="truncated|empty"):
            bs.read_stream_header(reader)
            for index in range(2):
                bs.read_frame(reader, index)


def test_frame_crc_mismatch():
    raw = bytearray(bs.write_frame(unit(3)))
    raw[len(raw) // 2] ^= 0x10
    with pytest.raises(CodecError, match="frame 7 CRC mismatch"):
        bs.read_frame(bs.Reader(bytes(raw)), 7)


def test_frame_fields_checked_after_crc():
    raw = bytearray(bs.write_frame(unit(4)))
    raw[0:1] = b"G"
    with pytest.raises(CodecError, match="frame marker"):
        bs.read_frame(bs.Reader(bytes(raw)))
    raw = bytearray(bs.write_frame(unit(4)))
    raw[1] = 5
    with pytest.raises(CodecError, match="unknown frame type 5"):
        bs.read_frame(bs.Reader(fix_frame_crc(bytes(raw))))
    raw = bytearray(bs.write_frame(unit(4)))
    for bad in (float("nan"), float("inf"), -0.5):
        raw[2:6] = struct.pack("<f", bad)
        with pytest.raises(CodecError, match=f"has level {bad:g}, not a finite number >= 0"):
            bs.read_frame(bs.Reader(fix_frame_crc(bytes(raw))))


def test_oversized_length_is_truncation_not_allocation():
    raw = bs.write_frame(bs.FrameUnit(FrameType.I, 0.0, (Substream(b"ab", b""),)))
    assert raw[8:10] == b"\x02\x00"  # the two lengths follow the 8 fixed bytes
    huge = raw[:8] + bs.write_varint(2**34) + raw[9:]
    with pytest.raises(CodecError, match="truncated stream: frame 0 needs"):
        bs.read_frame(bs.Reader(huge))
