"""The ELF-VC container format, version 1 (documented in docs/BITSTREAM.md).

    stream  = header frame*
    header  = magic(8) version(u16) model_id(16) width(u32) height(u32) fps_num(u32) fps_den(u32)
              frame_count(u32) gop(u16) channel_groups(u8) tile(u16) crc32(u32)
    frame   = marker 'F'(1) type(u8) level(f32) substream_count(u16)
              (data_length, escape_length)(varint, varint) * substream_count
              payload crc32(u32)                       crc32 covers marker .. payload

All integers little-endian. Pure `write_*` (value -> bytes) and `read_*` (reader -> value)
functions; every malformed input raises `CodecError` with one line naming the problem.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, List, Tuple

from runtime.entropy_coding import Substream
from runtime.types import CodecError, FrameType

MAGIC = b"\x8bELFVC\r\n"
FORMAT_VERSION = 1
MODEL_ID_BYTES = 16
FRAME_MARKER = b"F"
MAX_DIMENSION = 1 << 16
MAX_SUBSTREAMS = (1 << 16) - 1
_VARINT_MAX_BYTES = 5  # lengths < 2^35

_HEADER = struct.Struct("<16sIIIIIHBH")  # after magic + version
_FRAME_FIXED = struct.Struct("<cBfH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class StreamHeader:
    model_id: bytes  # 16 bytes, runtime.bundle.ModelBundle.model_id
    width: int  # frame size before padding
    height: int
    fps_num: int  # frame rate fps_num / fps_den
    fps_den: int
    frame_count: int
    gop: int  # intra period in frames (0: only the first frame is an I-frame)
    channel_groups: int  # substream layout (runtime.entropy_coding.SubstreamLayout)
    tile: int

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den

    def validate(self) -> "StreamHeader":
        if len(self.model_id) != MODEL_ID_BYTES:
            raise CodecError(f"bad header: model identity must be {MODEL_ID_BYTES} bytes")
        if not (1 <= self.width <= MAX_DIMENSION and 1 <= self.height <= MAX_DIMENSION):
            raise CodecError(f"bad header: frame size {self.width}x{self.height} outside 1..{MAX_DIMENSION}")
        if self.fps_num < 1 or self.fps_den < 1:
            raise CodecError(f"bad header: frame rate {self.fps_num}/{self.fps_den}")
        if not 1 <= self.channel_groups <= 255:
            raise CodecError(f"bad header: {self.channel_groups} channel groups")
        if not (4 <= self.tile <= 4096 and self.tile % 4 == 0):
            raise CodecError(f"bad header: tile size {self.tile} (a multiple of 4 in [4, 4096])")
        if not (0 <= self.frame_count < 1 << 32 and 0 <= self.gop < 1 << 16):
            raise CodecError("bad header: frame count or GOP out of range")
        return self


@dataclass(frozen=True)
class FrameUnit:
    """One coded frame: type, level and its substreams (layout order, see runtime/codec.py)."""

    frame_type: FrameType
    level: float  # a float32 value
    substreams: Tuple[Substream, ...]
    size: int = field(default=0, compare=False)  # bytes of the unit in the stream (set by read_frame)

    @property
    def payload_bytes(self) -> int:
        return sum(s.size for s in self.substreams)


# -- reading helpers ----------------------------------------------------------------------------
class Reader:
    """Exact reads from a binary file object or bytes; a short read is a truncated stream."""

    def __init__(self, source):
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        self._f: BinaryIO = source
        start = source.tell()
        source.seek(0, io.SEEK_END)
        self.size = source.tell()
        source.seek(start)
        self.position = start

    @property
    def remaining(self) -> int:
        return self.size - self.position

    def read(self, count: int, what: str) -> bytes:
        if count > self.remaining:
            raise CodecError(f"truncated stream: {what} needs {count} bytes, {self.remaining} left")
        data = self._f.read(count)
        if len(data) != count:
            raise CodecError(f"truncated stream: {what} needs {count} bytes, got {len(data)}")
        self.position += count
        return data

    def read_at_most(self, count: int) -> bytes:
        data = self._f.read(min(count, self.remaining))
        self.position += len(data)
        return data

    def at_end(self) -> bool:
        return self.remaining == 0


def write_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint of a negative value")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(reader: Reader, what: str) -> Tuple[int, bytes]:
    """-> (value, the raw bytes read)."""
    value, raw = 0, bytearray()
    for shift in range(0, 7 * _VARINT_MAX_BYTES, 7):
        byte = reader.read(1, what)[0]
        raw.append(byte)
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, bytes(raw)
    raise CodecError(f"corrupt stream: {what} is longer than {_VARINT_MAX_BYTES} bytes")


# -- stream header ---------------------------------------------------------------------------------
def write_stream_header(header: StreamHeader) -> bytes:
    header.validate()
    body = MAGIC + _U16.pack(FORMAT_VERSION) + _HEADER.pack(
        header.model_id,
        header.width,
        header.height,
        header.fps_num,
        header.fps_den,
        header.frame_count,
        header.gop,
        header.channel_groups,
        header.tile,
    )
    return body + _U32.pack(zlib.crc32(body))


def header_size() -> int:
    return len(MAGIC) + _U16.size + _HEADER.size + _U32.size


def read_stream_header(reader: Reader) -> StreamHeader:
    if reader.size == 0:
        raise CodecError("empty file: not an ELF-VC stream")
    magic = reader.read_at_most(len(MAGIC))
    if magic != MAGIC[: len(magic)] or len(magic) < len(MAGIC):
        if magic == MAGIC[: len(magic)]:
            raise CodecError("truncated stream: the file ends inside the magic number")
        raise CodecError("not an ELF-VC stream (bad magic number)")
    (version,) = _U16.unpack(reader.read(_U16.size, "format version"))
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported format version {version} (this decoder reads version {FORMAT_VERSION})")
    raw = reader.read(_HEADER.size, "stream header")
    (crc,) = _U32.unpack(reader.read(_U32.size, "stream header CRC"))
    if zlib.crc32(MAGIC + _U16.pack(version) + raw) != crc:
        raise CodecError("corrupt stream header (CRC mismatch)")
    header = StreamHeader(*_HEADER.unpack(raw)).validate()
    if header.frame_count == 0:  # the encoder writes the count last (0 until then): an encode that did not finish
        raise CodecError("corrupt stream: the header announces 0 frames (an unfinished encode)")
    return header


# -- frames ------------------------------------------------------------------------------------------
def write_frame(unit: FrameUnit) -> bytes:
    if len(unit.substreams) > MAX_SUBSTREAMS:
        raise ValueError(f"{len(unit.substreams)} substreams; the format allows {MAX_SUBSTREAMS}")
    level = struct.unpack("<f", struct.pack("<f", unit.level))[0]
    if not math.isfinite(level):
        raise ValueError(f"level {unit.level} is not finite")
    parts = [_FRAME_FIXED.pack(FRAME_MARKER, int(unit.frame_type), level, len(unit.substreams))]
    for s in unit.substreams:
        parts.append(write_varint(len(s.data)))
        parts.append(write_varint(len(s.escapes)))
    for s in unit.substreams:
        parts.append(s.data)
        parts.append(s.escapes)
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def read_frame(reader: Reader, index: int = 0) -> FrameUnit:
    where = f"frame {index}"
    start = reader.position
    fixed = reader.read(_FRAME_FIXED.size, f"{where} header")
    marker, frame_type, level, count = _FRAME_FIXED.unpack(fixed)
    if marker != FRAME_MARKER:
        raise CodecError(f"corrupt stream: {where} does not start with a frame marker")
    raw = [fixed]
    lengths: List[Tuple[int, int]] = []
    for _ in range(count):
        data_length, raw_a = read_varint(reader, f"{where} substream length")
        escape_length, raw_b = read_varint(reader, f"{where} substream length")
        raw += [raw_a, raw_b]
        lengths.append((data_length, escape_length))
    total = sum(a + b for a, b in lengths)
    if total + _U32.size > reader.remaining:
        raise CodecError(f"truncated stream: {where} needs {total + _U32.size} more bytes, {reader.remaining} left")
    payload = reader.read(total, f"{where} payload")
    (crc,) = _U32.unpack(reader.read(_U32.size, f"{where} CRC"))
    if zlib.crc32(payload, zlib.crc32(b"".join(raw))) != crc:
        raise CodecError(f"corrupt stream: {where} CRC mismatch")
    # Checked after the CRC: a wrong value here means the encoder wrote it.
    try:
        frame_type = FrameType(frame_type)
    except ValueError:
        raise CodecError(f"corrupt stream: {where} has unknown frame type {frame_type}") from None
    if not (math.isfinite(level) and level >= 0):  # the top depends on the model: the decoder checks it
        raise CodecError(f"corrupt stream: {where} has level {level:g}, not a finite number >= 0")
    substreams, offset = [], 0
    for data_length, escape_length in lengths:
        data = payload[offset : offset + data_length]
        offset += data_length
        escapes = payload[offset : offset + escape_length]
        offset += escape_length
        substreams.append(Substream(data, escapes))
    return FrameUnit(frame_type, float(level), tuple(substreams), size=reader.position - start)
