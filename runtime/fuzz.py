"""Structure-aware fuzzing of the stream decoder (docs/HOSTILE_STREAMS.md).

    python -m runtime.fuzz --streams=100000 --seed=1 --out=out/fuzz/report.json [--resume]
    python -m runtime.fuzz --replay=123,456 --seed=1 --out=...    (re-run single streams, verbose)

Mutated stream i is a pure function of (--seed, i, the base streams): the parent process only
hands out index ranges, and any finding can be replayed from its index. Base streams are a few
tiny clips coded with the untrained `small` model of the test suite (runtime.bundle
`untrained_bundle`, seed 0), so each decode costs milliseconds of network time.

Mutators (`MUTATORS`; the structure-aware ones rewrite the stream from its parsed form and
recompute every CRC, so they reach past the CRC checks):

    header_field    one header field (size, rate, frame count, GOP, channel groups, tile,
                    version, model id byte) set to a boundary or random value
    resize          a new picture size (tiny to absurd), every frame rebuilt with the substream
                    count that size needs (empty, recycled or random substreams): the 323-byte
                    "4096x4096" attack (docs/HOSTILE_STREAMS.md §1) and its relatives
    layout          new channel groups / tile, substream counts rebuilt to match
    substream_count substreams dropped, duplicated or inserted in one frame
    substream_split the boundary between range code and escape list (or between two
                    substreams) moved, the total kept
    frame_type      a frame's type set to I, P or an unknown value
    level           a frame's level set to a special float (NaN, inf, -0, denormal, edges)
    payload         byte edits / fills in one substream's range code
    escapes         one substream's escape list replaced by crafted varints (wrong count,
                    huge values, 5-byte varints, long runs)
    frames          frames dropped, duplicated, swapped or appended, frame count fixed or not
    splice          a frame replaced by a frame of another base stream (another geometry)
    stacked         two to four of the above in sequence
    crc_fixed_bytes random byte edits anywhere, then every CRC recomputed where the
                    structure still parses (reaches the length varints and fixed fields)
    bytes / truncate / insert   raw edits without CRC repair (the CRCs must stop them)

Each stream is written to a file and run through `runtime.stream.inspect` and `decode_video` in
a worker process under an address-space cap (`resource.setrlimit(RLIMIT_AS)`), which decodes
streams in batches and reports one JSON line per stream. The parent records:

    ok          decoded (frames handed to the sink)
    error       a clean `CodecError` with a one-line message
    wrapped     a `CodecError` made by the decoder's catch-all from another exception (a check
                the code lacks; reported with the inner exception) -- a finding
    exception   any other exception (a traceback) -- a finding
    multiline   a CodecError message over one line -- a finding
    crash       the worker died by a signal (or exit status) inside the stream -- a finding
    hang        no answer within --timeout_s -- a finding

and per stream the peak RSS (VmHWM, reset before every stream through /proc/self/clear_refs, so
it is the larger of the RSS the stream started with, `mb0`, and the stream's own peak: memory
freed by an earlier stream may stay in the process).
A crash or hang restarts the worker at the next stream. Results go to OUT.jsonl (one line per
stream; `--resume` skips the indices already there) and the summary to OUT (JSON).
"""

from __future__ import annotations

from model import clikit  # first: quiets TensorFlow's C++ log

import json
import math
import os
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

PROG = "python -m runtime.fuzz"
MAGIC = b"\x8bELFVC\r\n"
_HEADER = struct.Struct("<16sIIIIIHBH")
#: Header fields (name, struct format width in bits) after magic + version.
HEADER_FIELDS = (("width", 32), ("height", 32), ("fps_num", 32), ("fps_den", 32), ("frame_count", 32),
                 ("gop", 16), ("channel_groups", 8), ("tile", 16))  # fmt: skip
#: The picture-size limit the fuzz workers decode under: every resized stream up to 512x512
#: decodes for real (cheap), larger ones meet the limit's refusal (the default, 8K, is checked
#: by tests/test_hostile_streams.py; decoding 8K pictures 100,000 times is not a fuzz run).
FUZZ_MAX_PIXELS = 512 * 512
OUTCOMES = ("ok", "error", "wrapped", "exception", "multiline", "crash", "hang")
FINDINGS = ("wrapped", "exception", "multiline", "crash", "hang")


# -- a parsed stream that can hold inconsistent values -----------------------------------------
@dataclass
class Frame:
    frame_type: int
    level_raw: bytes  # 4 bytes, float32 little-endian (any bit pattern)
    substreams: List[Tuple[bytes, bytes]]  # (range code, escapes)
    count: Optional[int] = None  # the substream count field; None: len(substreams)


@dataclass
class Stream:
    version: int
    model_id: bytes
    fields: Dict[str, int]
    frames: List[Frame] = field(default_factory=list)
    trailing: bytes = b""

    def copy(self) -> "Stream":
        return Stream(self.version, self.model_id, dict(self.fields),
                      [Frame(f.frame_type, f.level_raw, list(f.substreams), f.count) for f in self.frames],
                      self.trailing)  # fmt: skip


def serialize(stream: Stream) -> bytes:
    """Header + frames with every CRC computed (whatever the values)."""
    from runtime.bitstream import write_varint

    values = [stream.fields[name] & ((1 << bits) - 1) for name, bits in HEADER_FIELDS]
    body = MAGIC + struct.pack("<H", stream.version & 0xFFFF) + _HEADER.pack(stream.model_id, *values)
    parts = [body, struct.pack("<I", zlib.crc32(body))]
    for frame in stream.frames:
        count = len(frame.substreams) if frame.count is None else frame.count
        unit = [b"F", bytes([frame.frame_type & 0xFF]), frame.level_raw, struct.pack("<H", count & 0xFFFF)]
        for data, escapes in frame.substreams:
            unit += [write_varint(len(data)), write_varint(len(escapes))]
        for data, escapes in frame.substreams:
            unit += [data, escapes]
        raw = b"".join(unit)
        parts += [raw, struct.pack("<I", zlib.crc32(raw))]
    parts.append(stream.trailing)
    return b"".join(parts)


def parse(data: bytes) -> Stream:
    """A well-formed stream (a base stream) -> Stream."""
    from runtime import bitstream as bs

    reader = bs.Reader(data)
    header = bs.read_stream_header(reader)
    fields = {name: getattr(header, name) for name, _ in HEADER_FIELDS}
    frames = []
    for index in range(header.frame_count):
        unit = bs.read_frame(reader, index)
        frames.append(Frame(int(unit.frame_type), struct.pack("<f", unit.level),
                            [(s.data, s.escapes) for s in unit.substreams]))  # fmt: skip
    return Stream(bs.FORMAT_VERSION, header.model_id, fields, frames)


def fix_crcs(data: bytes) -> bytes:
    """Recomputes the header CRC and each frame's CRC as far as the structure parses."""
    raw = bytearray(data)
    if len(raw) < 55:
        return bytes(raw)
    raw[51:55] = struct.pack("<I", zlib.crc32(bytes(raw[:51])))
    count = struct.unpack_from("<I", raw, 42)[0]
    position = 55
    for _ in range(min(count, 64)):
        start = position
        if position + 8 > len(raw):
            break
        substreams = struct.unpack_from("<H", raw, position + 6)[0]
        position += 8
        total = 0
        try:
            for _ in range(2 * substreams):
                value, shift = 0, 0
                while True:
                    byte = raw[position]
                    position += 1
                    value |= (byte & 0x7F) << shift
                    shift += 7
                    if byte < 0x80 or shift >= 35:
                        break
                total += value
        except IndexError:
            break
        end = position + total
        if end + 4 > len(raw):
            break
        raw[end : end + 4] = struct.pack("<I", zlib.crc32(bytes(raw[start:end])))
        position = end + 4
    return bytes(raw)


# -- geometry: how many substreams a picture needs ---------------------------------------------
@dataclass(frozen=True)
class Geometry:
    latent_channels: int
    hyper_latent_channels: int

    def per_layer(self, width: int, height: int, channel_groups: int, tile: int) -> int:
        if width < 1 or height < 1 or channel_groups < 1 or tile < 4 or tile % 4:
            return 1
        ph, pw = height + (-height % 64), width + (-width % 64)

        def count(h, w, c, t):
            return -(-h // t) * -(-w // t) * min(channel_groups, c)

        return count(ph // 64, pw // 64, self.hyper_latent_channels, tile // 4) + count(
            ph // 16, pw // 16, self.latent_channels, tile
        )

    def substreams(self, stream: Stream, frame_type: int) -> int:
        f = stream.fields
        n = self.per_layer(f["width"], f["height"], f["channel_groups"], f["tile"])
        return n * (2 if frame_type == 1 else 1)


# -- mutators ------------------------------------------------------------------------------------
_INTERESTING = (0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 31, 32, 63, 64, 65, 127, 128, 255, 256, 511, 512, 4095, 4096,
                4097, 8192, 4352, 20000, 32767, 32768, 65535, 65536, 65537, (1 << 31) - 1, 1 << 31, (1 << 32) - 1)


def _value(rng: random.Random, old: int, bits: int) -> int:
    choice = rng.random()
    if choice < 0.6:
        value = rng.choice(_INTERESTING)
    elif choice < 0.8:
        value = old + rng.choice((-2, -1, 1, 2)) * rng.choice((1, 1, 4, 64))
    else:
        value = rng.getrandbits(bits) >> rng.randrange(bits)
    return value & ((1 << bits) - 1)


def _float_raw(rng: random.Random, max_level: float) -> bytes:
    specials = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-45, -5e-45, 1e-38, max_level,
                max_level + 1e-6, math.nextafter(max_level, math.inf), -1e-7, 3.4e38, -3.4e38, 0.5, max_level / 2,
                rng.uniform(-1, max_level + 1)]  # fmt: skip
    if rng.random() < 0.15:
        return rng.getrandbits(32).to_bytes(4, "little")
    if rng.random() < 0.05:
        return b"\x7f\xc0\x00\x01"[::-1]  # a signalling-NaN-ish payload
    return struct.pack("<f", rng.choice(specials))


def _random_substream(rng: random.Random, pool: Sequence[Tuple[bytes, bytes]]) -> Tuple[bytes, bytes]:
    r = rng.random()
    if r < 0.4 or not pool:
        return (b"", b"")
    if r < 0.8:
        return rng.choice(pool)
    return (rng.randbytes(rng.choice((1, 2, 8, 64))), rng.randbytes(rng.choice((0, 0, 1, 4))))


def _rebuild(rng: random.Random, s: Stream, geometry: Geometry) -> None:
    """Every frame gets the substream count the header's geometry needs for its type."""
    pool = [sub for f in s.frames for sub in f.substreams]
    mode = rng.random()
    for frame in s.frames:
        need = min(geometry.substreams(s, frame.frame_type), 70000)
        if mode < 0.5:
            frame.substreams = [(b"", b"")] * need
        else:
            frame.substreams = [_random_substream(rng, pool) for _ in range(need)]
        frame.count = None


def m_header_field(rng, s: Stream, ctx) -> None:
    what = rng.random()
    if what < 0.05:
        s.version = rng.choice((0, 2, 0xFFFF))
    elif what < 0.1:
        mid = bytearray(s.model_id)
        mid[rng.randrange(16)] ^= 1 << rng.randrange(8)
        s.model_id = bytes(mid)
    else:
        name, bits = rng.choice(HEADER_FIELDS)
        s.fields[name] = _value(rng, s.fields[name], bits)


def m_resize(rng, s: Stream, ctx) -> None:
    r = rng.random()
    limit_side = int(math.isqrt(ctx["max_pixels"]))
    if r < 0.6:
        w, h = rng.randint(1, 300), rng.randint(1, 300)
    elif r < 0.8:
        w, h = rng.choice([(limit_side, limit_side), (limit_side + 1, limit_side), (ctx["max_pixels"], 1),
                           (ctx["max_pixels"] + 1, 1), (limit_side * 2, limit_side // 2 + 1)])  # fmt: skip
    else:
        w, h = rng.choice([(4096, 4096), (20000, 20000), (8192, 4352), (8192, 4353), (65536, 65536), (65536, 1),
                           (1, 65536), (65537, 1), (7680, 4320), (1 << 31, 1)])  # fmt: skip
    s.fields["width"], s.fields["height"] = w, h
    if rng.random() < 0.3:
        s.fields["tile"] = rng.choice((4, 32, 4096))
    _rebuild(rng, s, ctx["geometry"])


def m_layout(rng, s: Stream, ctx) -> None:
    if rng.random() < 0.7:
        s.fields["channel_groups"] = rng.choice((1, 2, 3, 7, 16, 17, 32, 33, 255, 0))
    if rng.random() < 0.7:
        s.fields["tile"] = rng.choice((4, 8, 12, 32, 64, 4092, 4096, 0, 2, 6, 4100, 65532))
    _rebuild(rng, s, ctx["geometry"])


def _frame(rng, s: Stream) -> Optional[Frame]:
    return rng.choice(s.frames) if s.frames else None


def m_substream_count(rng, s: Stream, ctx) -> None:
    frame = _frame(rng, s)
    if frame is None:
        return
    subs = frame.substreams
    op = rng.random()
    if op < 0.3 and subs:
        del subs[rng.randrange(len(subs))]
    elif op < 0.6:
        position = rng.randrange(len(subs) + 1)
        subs.insert(position, rng.choice(subs) if subs and rng.random() < 0.5 else (b"", b""))
    elif op < 0.8:
        subs.extend([(b"", b"")] * rng.choice((1, 100, 1000, 65535 - len(subs))))
    else:
        frame.count = _value(rng, len(subs), 16)  # a count field that disagrees with the lengths


def m_substream_split(rng, s: Stream, ctx) -> None:
    frame = _frame(rng, s)
    if frame is None or not frame.substreams:
        return
    i = rng.randrange(len(frame.substreams))
    data, escapes = frame.substreams[i]
    joined = data + escapes
    if rng.random() < 0.6 or i + 1 == len(frame.substreams):
        cut = rng.randint(0, len(joined))
        frame.substreams[i] = (joined[:cut], joined[cut:])
    else:
        nd, ne = frame.substreams[i + 1]
        everything = joined + nd + ne
        a, b, c = sorted(rng.randint(0, len(everything)) for _ in range(3))
        frame.substreams[i] = (everything[:a], everything[a:b])
        frame.substreams[i + 1] = (everything[b:c], everything[c:])


def m_frame_type(rng, s: Stream, ctx) -> None:
    frame = _frame(rng, s)
    if frame is not None:
        frame.frame_type = rng.choice((0, 1, 1, 0, 2, 255, rng.randrange(256)))
        if rng.random() < 0.5:  # and the substream count the new type needs
            frame.substreams = (frame.substreams * 2)[: ctx["geometry"].substreams(s, frame.frame_type)]


def m_level(rng, s: Stream, ctx) -> None:
    frame = _frame(rng, s)
    if frame is not None:
        frame.level_raw = _float_raw(rng, ctx["max_level"])


def m_payload(rng, s: Stream, ctx) -> None:
    frame = _frame(rng, s)
    if frame is None or not frame.substreams:
        return
    i = rng.randrange(len(frame.substreams))
    data, escapes = frame.substreams[i]
    raw = bytearray(data)
    op = rng.random()
    if op < 0.5 and raw:
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif op < 0.7:
        raw = bytearray([rng.choice((0, 0xFF))]) * rng.choice((1, 4, 64, 1024, len(raw) or 1))
    elif op < 0.85:
        raw = bytearray(rng.randbytes(rng.choice((1, 3, 16, 200))))
    else:
        raw = raw[: rng.randint(0, len(raw))]
    frame.substreams[i] = (bytes(raw), escapes)


def m_escapes(rng, s: Stream, ctx) -> None:
    frame = _frame(rng, s)
    if frame is None or not frame.substreams:
        return
    i = rng.randrange(len(frame.substreams))
    data, escapes = frame.substreams[i]
    op = rng.random()
    if op < 0.2:
        new = b""
    elif op < 0.4:
        from runtime.bitstream import write_varint

        new = b"".join(write_varint(rng.choice((0, 1, 2, (1 << 21), (1 << 28) - 1, rng.getrandbits(20))))
                       for _ in range(rng.randint(1, 64)))  # fmt: skip
    elif op < 0.55:
        new = b"\xff\xff\xff\xff\x7f"  # a 5-byte varint
    elif op < 0.7:
        new = b"\x80" * rng.randint(1, 9)  # unterminated
    elif op < 0.85:
        new = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 32)))
    else:
        new = escapes + escapes
    frame.substreams[i] = (data, new)


def m_frames(rng, s: Stream, ctx) -> None:
    op = rng.random()
    if op < 0.25 and s.frames:
        del s.frames[rng.randrange(len(s.frames))]
    elif op < 0.5 and s.frames:
        f = rng.choice(s.frames)
        s.frames.insert(rng.randrange(len(s.frames) + 1), Frame(f.frame_type, f.level_raw, list(f.substreams), f.count))
    elif op < 0.7 and len(s.frames) > 1:
        i, j = rng.sample(range(len(s.frames)), 2)
        s.frames[i], s.frames[j] = s.frames[j], s.frames[i]
    elif op < 0.85:
        s.trailing = rng.choice((b"F", b"\x00", rng.randbytes(rng.randint(1, 40))))
    else:
        s.frames = s.frames * rng.choice((2, 5))
    if rng.random() < 0.7:
        s.fields["frame_count"] = len(s.frames)


def m_splice(rng, s: Stream, ctx) -> None:
    other = rng.choice(ctx["bases"])
    if not other.frames or not s.frames:
        return
    donor = rng.choice(other.frames)
    s.frames[rng.randrange(len(s.frames))] = Frame(donor.frame_type, donor.level_raw, list(donor.substreams))
    if rng.random() < 0.3:  # the donor's geometry too
        for name in ("width", "height", "channel_groups", "tile"):
            s.fields[name] = other.fields[name]


STRUCTURED = {
    "header_field": m_header_field,
    "resize": m_resize,
    "layout": m_layout,
    "substream_count": m_substream_count,
    "substream_split": m_substream_split,
    "frame_type": m_frame_type,
    "level": m_level,
    "payload": m_payload,
    "escapes": m_escapes,
    "frames": m_frames,
    "splice": m_splice,
}
#: name -> weight of each mutator (stacked / raw ones handled in `mutate`).
MUTATORS = {
    "header_field": 8, "resize": 8, "layout": 6, "substream_count": 6, "substream_split": 6, "frame_type": 5,
    "level": 6, "payload": 14, "escapes": 8, "frames": 6, "splice": 4, "stacked": 10, "crc_fixed_bytes": 7,
    "bytes": 3, "truncate": 2, "insert": 1,
}  # fmt: skip


def mutate(bases: Sequence[Stream], base_bytes: Sequence[bytes], seed: int, index: int, ctx) -> Tuple[str, bytes]:
    """Stream `index` of the run with `seed`: (mutator name, bytes). Deterministic."""
    rng = random.Random(f"elfvc-fuzz/{seed}/{index}")
    which = rng.randrange(len(bases))
    names, weights = zip(*MUTATORS.items())
    name = rng.choices(names, weights)[0]
    ctx = dict(ctx, bases=bases)
    if name in STRUCTURED or name == "stacked":
        s = bases[which].copy()
        steps = [name] if name != "stacked" else rng.choices(list(STRUCTURED), k=rng.randint(2, 4))
        for step in steps:
            STRUCTURED[step](rng, s, ctx)
        return name, serialize(s)
    data = bytearray(base_bytes[which])
    if name == "crc_fixed_bytes":
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256) if rng.random() < 0.7 else data[0] ^ 0xFF
        return name, fix_crcs(bytes(data))
    if name == "bytes":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif name == "truncate":
        del data[rng.randrange(len(data)) :]
    else:  # insert
        position = rng.randrange(len(data) + 1)
        data[position:position] = rng.randbytes(rng.randint(1, 16))
    return name, bytes(data)


# -- base streams ---------------------------------------------------------------------------------
def make_bases(bundle, backend) -> List[bytes]:
    """Three tiny streams coded with `bundle`: 70x50 I+P (512-px tiles, the default layout before
    session 17), 130x70 I P I with 3
    channel groups and 4-cell tiles (many substreams), 64x64 one I-frame at the top level."""
    import tempfile

    import numpy as np

    from runtime.entropy_coding import SubstreamLayout
    from runtime.stream import encode_video

    class Constant:
        def __init__(self, level):
            self.level = level

        def select_level(self, index, frame_type, num_pixels, trial):
            return self.level

        def update(self, index, frame_type, result):
            pass

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:160]
    scene = np.stack([(xx * 1.5) % 256, (yy * 2.0) % 256, ((xx + yy) * 0.7) % 256], -1)
    scene = (scene + rng.integers(0, 20, scene.shape)).clip(0, 255).astype(np.uint8)
    specs = [
        ((50, 70), 2, 16, SubstreamLayout(1, 32), 3.0),
        ((70, 130), 3, 2, SubstreamLayout(3, 4), 1.5),
        ((64, 64), 1, 16, SubstreamLayout(1, 32), float(bundle.config.max_level)),
    ]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, ((h, w), count, gop, layout, level) in enumerate(specs):
            frames = [np.roll(scene, 3 * t, axis=1)[:h, :w] for t in range(count)]
            path = os.path.join(tmp, f"base{k}.elfvc")
            encode_video(frames, path, fps=25, gop=gop, controller=Constant(level), backend=backend, bundle=bundle,
                         layout=layout, scenecut=0)  # fmt: skip
            with open(path, "rb") as f:
                out.append(f.read())
    return out


# -- the worker ------------------------------------------------------------------------------------
def _status_mb(key: str) -> float:
    """A /proc/self/status memory line (VmHWM: peak, VmRSS: now) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set since it started or since `reset_peak`, MiB (Linux)."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """This process's resident set now, MiB (Linux)."""
    return _status_mb("VmRSS")


def reset_peak() -> None:
    """Sets the peak resident set to the current one (Linux's /proc/self/clear_refs; a no-op
    where it is missing)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def classify(error: BaseException) -> Tuple[str, str]:
    from runtime.types import CodecError

    message = str(error)
    if isinstance(error, CodecError):
        cause = error.__cause__
        while isinstance(cause, CodecError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if cause is not None and not isinstance(cause, CodecError):
            return "wrapped", f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]}"
        if "\n" in message or not message.strip():
            return "multiline", message[:300]
        return "error", message[:300]
    tb = traceback.extract_tb(error.__traceback__)
    where = "; ".join(f"{os.path.basename(fr.filename)}:{fr.lineno} {fr.name}" for fr in tb[-4:])
    return "exception", f"{type(error).__name__}: {' '.join(message.split())[:300]} [{where}]"


def _setup(threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass
    from runtime.backends import get_backend
    from model.bundle import untrained_bundle

    bundle = untrained_bundle()
    return bundle, get_backend("tf", bundle)


def load_bases(cache: str, bundle, backend) -> List[bytes]:
    """The base streams, made once per model id and kept in `cache` (a folder)."""
    folder = os.path.join(cache, bundle.model_id.hex())
    paths = [os.path.join(folder, f"base{k}.elfvc") for k in range(3)]
    if all(os.path.exists(p) for p in paths):
        out = []
        for p in paths:
            with open(p, "rb") as f:
                out.append(f.read())
        return out
    out = make_bases(bundle, backend)
    os.makedirs(folder, exist_ok=True)
    for p, data in zip(paths, out):
        tmp = f"{p}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    return out


def run_one(path: str, data: bytes, bundle, backend, max_pixels: int) -> Tuple[str, str, int]:
    """Writes `data` to `path`, inspects and decodes it -> (outcome, message, frames decoded)."""
    from runtime.stream import decode_video, inspect

    with open(path, "wb") as f:
        f.write(data)
    frames = [0]

    def sink(frame):
        frames[0] += 1

    try:
        inspect(path)
        decode_video(path, sink, backend, bundle, max_pixels=max_pixels)
    except Exception as error:  # noqa: BLE001 - classifying every outcome is the point
        outcome, message = classify(error)
        return outcome, message, frames[0]
    return "ok", "", frames[0]


def worker(args) -> int:
    """--worker: decodes streams args.first..args.last-1, one JSON line each on stdout."""
    bundle, backend = _setup(args.threads)
    bases_bytes = load_bases(args.cache, bundle, backend)
    bases = [parse(b) for b in bases_bytes]
    ctx = {"geometry": Geometry(bundle.config.latent_channels, bundle.config.hyper_latent_channels),
           "max_level": float(bundle.config.max_level), "max_pixels": args.max_pixels}  # fmt: skip
    path = os.path.join(args.scratch, f"elfvc-fuzz-{os.getpid()}.elfvc")
    crash_at = int(os.environ.get("ELFVC_FUZZ_TEST_CRASH_AT", "-1"))
    hang_at = int(os.environ.get("ELFVC_FUZZ_TEST_HANG_AT", "-1"))
    out = sys.stdout
    out.write(json.dumps({"ready": True, "rss_mb": peak_rss_mb()}) + "\n")
    out.flush()
    try:
        for index in range(args.first, args.last):
            name, data = mutate(bases, bases_bytes, args.seed, index, ctx)
            out.write(json.dumps({"start": index}) + "\n")
            out.flush()
            if index == crash_at:  # the parent's crash and hang handling, tested (tests/test_hostile_streams.py)
                os.kill(os.getpid(), signal.SIGSEGV)
            if index == hang_at:
                time.sleep(1e6)
            reset_peak()
            before = rss_mb()
            start = time.perf_counter()
            outcome, message, frames = run_one(path, data, bundle, backend, args.max_pixels)
            out.write(json.dumps({"i": index, "m": name, "o": outcome, "msg": message, "f": frames, "n": len(data),
                                  "s": round(time.perf_counter() - start, 4), "mb": round(peak_rss_mb(), 1),
                                  "mb0": round(before, 1)}) + "\n")  # fmt: skip
            out.flush()
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return 0


# -- the parent ------------------------------------------------------------------------------------
def _limit_memory(limit_bytes: int):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
        os.setsid()

    return apply


def _log_path(out: str) -> str:
    return out[: -len(".json")] + ".jsonl" if out.endswith(".json") else out + ".jsonl"


class Run:
    """Hands out index ranges to worker processes, restarts them after a crash or hang, and keeps
    the per-stream log and the summary."""

    def __init__(self, args):
        self.args = args
        self.log_path = _log_path(args.out)
        self.done: Dict[int, dict] = {}
        if args.resume and os.path.exists(self.log_path):
            with open(self.log_path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill
                    if record.get("seed") == args.seed:
                        self.done[record["i"]] = record
        self.log = open(self.log_path, "a" if args.resume else "w")
        self.started = time.time()
        self.previous_seconds = 0.0
        if args.resume and os.path.exists(args.out):
            try:
                with open(args.out) as f:
                    self.previous_seconds = json.load(f).get("wall_seconds", 0.0)
            except (OSError, ValueError):
                pass
        self.restarts = 0
        self.lock = threading.Lock()

    def record(self, record: dict) -> None:
        record["seed"] = self.args.seed
        with self.lock:
            self.done[record["i"]] = record
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def _spawn(self, first: int, last: int) -> subprocess.Popen:
        a = self.args
        cmd = [sys.executable, "-m", "runtime.fuzz", "--worker", f"--first={first}", f"--last={last}", f"--seed={a.seed}",
               f"--max_pixels={a.max_pixels}", f"--cache={a.cache}", f"--scratch={a.scratch}", f"--threads={a.threads}"]  # fmt: skip
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                preexec_fn=_limit_memory(int(a.memory_gb * (1 << 30))), cwd=os.getcwd())  # fmt: skip

    def _is_done(self, index: int) -> bool:
        with self.lock:
            return index in self.done

    def run_range(self, first: int, last: int) -> None:
        """Streams first..last-1 (minus those already done), restarting the worker as needed."""
        todo = [i for i in range(first, last) if not self._is_done(i)]
        while todo:
            lo = todo[0]
            hi = lo + 1
            while hi < last and not self._is_done(hi) and hi - lo < self.args.batch:
                hi += 1
            self._run_worker(lo, hi)
            todo = [i for i in todo if not self._is_done(i)]

    def _run_worker(self, first: int, last: int) -> None:
        proc = self._spawn(first, last)
        buffer, current, deadline = b"", None, time.time() + self.args.startup_s
        stderr_tail = b""
        try:
            while True:
                remaining = deadline - time.time()
                ready, _, _ = select.select([proc.stdout, proc.stderr], [], [], max(0.0, min(remaining, 5.0)))
                if proc.stderr in ready:
                    chunk = os.read(proc.stderr.fileno(), 65536)
                    stderr_tail = (stderr_tail + chunk)[-4000:]
                if proc.stdout in ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:  # the worker exited
                        status = proc.wait()
                        if current is not None:
                            self._died(current, status, stderr_tail)
                        elif status != 0 and not any(self._is_done(i) for i in range(first, last)):
                            raise RuntimeError(f"fuzz worker failed to start (status {status}): "
                                               f"{stderr_tail.decode(errors='replace')[-2000:]}")  # fmt: skip
                        return
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        message = json.loads(line)
                        if "start" in message:
                            current = message["start"]
                            deadline = time.time() + self.args.timeout_s
                        elif "i" in message:
                            self.record(message)
                            current = None
                            deadline = time.time() + self.args.timeout_s
                        elif message.get("ready"):
                            deadline = time.time() + self.args.timeout_s
                elif time.time() > deadline:
                    if current is None:
                        raise RuntimeError("fuzz worker did not start in time")
                    self._kill(proc)
                    self.record({"i": current, "m": self._mutator(current), "o": "hang",
                                 "msg": f"no answer within {self.args.timeout_s} s", "mb": None, "s": self.args.timeout_s})  # fmt: skip
                    return
        finally:
            if proc.poll() is None:
                self._kill(proc)
            proc.stdout.close()
            proc.stderr.close()

    def _kill(self, proc) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        self.restarts += 1

    def _died(self, index: int, status: int, stderr_tail: bytes) -> None:
        self.restarts += 1
        how = f"signal {-status} ({signal.Signals(-status).name})" if status < 0 else f"exit status {status}"
        tail = " ".join(stderr_tail.decode(errors="replace").split()[-40:])
        self.record({"i": index, "m": self._mutator(index), "o": "crash", "msg": f"worker died by {how}: {tail}"[:600],
                     "mb": None, "s": None})  # fmt: skip

    def _mutator(self, index: int) -> str:
        rng = random.Random(f"elfvc-fuzz/{self.args.seed}/{index}")
        rng.randrange(3)
        names, weights = zip(*MUTATORS.items())
        return rng.choices(names, weights)[0]

    def summary(self) -> dict:
        with self.lock:  # the worker threads add records meanwhile
            records = [r for r in self.done.values() if self.args.first <= r["i"] < self.args.first + self.args.streams]
        counts = {o: 0 for o in OUTCOMES}
        per_mutator: Dict[str, Dict[str, int]] = {}
        findings, messages = [], {}
        for r in records:
            counts[r["o"]] = counts.get(r["o"], 0) + 1
            per_mutator.setdefault(r["m"], {}).setdefault(r["o"], 0)
            per_mutator[r["m"]][r["o"]] += 1
            if r["o"] in FINDINGS:
                findings.append({k: r.get(k) for k in ("i", "m", "o", "msg", "mb", "s")})
            elif r["o"] == "error":
                key = "".join("#" if c.isdigit() else c for c in r["msg"])[:120]
                messages[key] = messages.get(key, 0) + 1
        accepted = [r for r in records if r["o"] == "ok" and r.get("mb") is not None]
        measured = [r for r in records if r.get("mb") is not None]
        worst_ok = max(accepted, key=lambda r: r["mb"], default=None)
        growth = [r for r in measured if r.get("mb0") is not None]
        worst_growth = max(growth, key=lambda r: r["mb"] - r["mb0"], default=None)
        worst_any = max(measured, key=lambda r: r["mb"], default=None)
        slowest = max((r for r in records if r.get("s") is not None), key=lambda r: r["s"], default=None)
        # Not failures, but what the limit is for: a stream that makes the worker grow by more
        # than --memory_finding_mb, or takes more than --slow_s.
        heavy = [{k: r.get(k) for k in ("i", "m", "o", "mb", "mb0", "s")} for r in growth
                 if r["mb"] - r["mb0"] > self.args.memory_finding_mb]  # fmt: skip
        slow = [{k: r.get(k) for k in ("i", "m", "o", "mb", "s")} for r in records
                if r.get("s") is not None and r["s"] > self.args.slow_s and r["o"] != "hang"]  # fmt: skip
        wall = self.previous_seconds + time.time() - self.started
        return {
            "command": " ".join([PROG] + self.args.argv),
            "seed": self.args.seed,
            "streams_requested": self.args.streams,
            "streams_run": len(records),
            "wall_seconds": round(wall, 1),
            "streams_per_second": round(len(records) / wall, 2) if wall > 0 else None,
            "max_pixels": self.args.max_pixels,
            "memory_cap_gb": self.args.memory_gb,
            "timeout_s": self.args.timeout_s,
            "outcomes": counts,
            "findings_total": sum(counts[o] for o in FINDINGS),
            "findings": findings[:500],
            "per_mutator": dict(sorted(per_mutator.items())),
            "decoded_frames": sum(r.get("f", 0) or 0 for r in records),
            "worst_accepted_stream": worst_ok and {k: worst_ok.get(k) for k in ("i", "m", "mb", "mb0", "s", "n", "f")},
            "largest_rss_growth_in_one_stream": worst_growth and {k: worst_growth.get(k) for k in ("i", "m", "o", "mb", "mb0", "s")},
            "worst_stream_any_outcome": worst_any and {k: worst_any.get(k) for k in ("i", "m", "o", "mb", "s")},
            "slowest_stream": slowest and {k: slowest.get(k) for k in ("i", "m", "o", "s")},
            "memory_outliers": heavy[:100],
            "memory_outliers_total": len(heavy),
            "slow_streams": slow[:100],
            "slow_streams_total": len(slow),
            "baseline_rss_mb": min((r["mb"] for r in measured), default=None),
            "worker_restarts": self.restarts,
            "top_errors": dict(sorted(messages.items(), key=lambda kv: -kv[1])[:40]),
        }

    def write_summary(self) -> dict:
        summary = self.summary()
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, self.args.out)
        return summary


def replay(args) -> int:
    """Runs the given stream indices in this process, printing each outcome (and saving the
    stream bytes next to --out when --save is given)."""
    bundle, backend = _setup(args.threads)
    bases_bytes = load_bases(args.cache, bundle, backend)
    bases = [parse(b) for b in bases_bytes]
    ctx = {"geometry": Geometry(bundle.config.latent_channels, bundle.config.hyper_latent_channels),
           "max_level": float(bundle.config.max_level), "max_pixels": args.max_pixels}  # fmt: skip
    path = os.path.join(args.scratch, f"elfvc-replay-{os.getpid()}.elfvc")
    for index in [int(x) for x in args.replay.split(",") if x]:
        name, data = mutate(bases, bases_bytes, args.seed, index, ctx)
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            with open(os.path.join(args.save, f"seed{args.seed}-{index}-{name}.elfvc"), "wb") as f:
                f.write(data)
        outcome, message, frames = run_one(path, data, bundle, backend, args.max_pixels)
        print(f"{index} {name} {len(data)} bytes: {outcome} ({frames} frames) {message}")
    os.unlink(path) if os.path.exists(path) else None
    return 0


def parse_args(argv: Sequence[str]):
    import argparse

    p = clikit.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=None, help="mutated streams to run (required)")
    p.add_argument("--first", type=int, default=0, help="index of the first stream")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="summary JSON, e.g. out/fuzz/report.json (required; per-stream log: OUT.jsonl)")
    p.add_argument("--resume", action="store_true", help="skip the streams OUT.jsonl already holds (same seed)")
    p.add_argument("--overwrite", action="store_true", help="start afresh over an existing OUT.jsonl")
    p.add_argument("--batch", type=int, default=2000, help="streams per worker process")
    p.add_argument("--workers", type=int, default=1, help="worker processes at once")
    p.add_argument("--threads", type=int, default=1, help="TF threads per worker")
    p.add_argument("--timeout_s", type=float, default=60.0, help="a stream taking longer is a hang")
    p.add_argument("--startup_s", type=float, default=300.0, help="time a worker may take to start")
    p.add_argument("--memory_gb", type=float, default=8.0, help="address-space cap of each worker (RLIMIT_AS)")
    p.add_argument("--max_pixels", type=int, default=FUZZ_MAX_PIXELS, help="the decoder's picture-size limit")
    p.add_argument("--cache", default="out/fuzz/bases", help="folder for the base streams")
    p.add_argument("--scratch", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    p.add_argument("--memory_finding_mb", type=float, default=500.0,
                   help="summary: list streams whose RSS grew by more than this")
    p.add_argument("--slow_s", type=float, default=10.0, help="summary: list streams slower than this")
    p.add_argument("--summary_only", action="store_true", help="rewrite OUT from OUT.jsonl without running")
    p.add_argument("--replay", default=None, help="comma-separated indices: run them here, verbosely")
    p.add_argument("--save", default=None, help="with --replay: a folder to save the streams in")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--last", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(argv)
    if not (args.worker or args.replay is not None):
        # A run names what it does and where it writes: no run starts by accident (a bare
        # `python -m runtime.fuzz`), and none truncates another run's log.
        if args.streams is None or args.out is None:
            p.error("a run needs --streams=N and --out=REPORT.json (or --replay=I,J)")
        if args.streams < 1:
            p.error(f"--streams must be >= 1, got {args.streams}")
        log = _log_path(args.out)
        if os.path.exists(log) and not (args.resume or args.overwrite or args.summary_only):
            p.error(f"{log} exists: --resume continues that run, --overwrite starts afresh")
    return args


def main(args: Optional[Sequence[str]] = None) -> int:
    """`args`: the arguments after the program (default sys.argv[1:], the argparse tools'
    convention). Exit status 1 when the run found anything, 2 for a bad command line."""
    return clikit.run(PROG, _main, list(sys.argv[1:] if args is None else args), tracebacks=True)


def _main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.replay is not None:
        return replay(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.summary_only:
        args.resume = True
        summary = Run(args).write_summary()
        print(json.dumps({k: summary[k] for k in ("streams_run", "wall_seconds", "outcomes", "findings_total")}))
        return 1 if summary["findings_total"] else 0
    run = Run(args)
    last = args.first + args.streams
    chunk = max(1, args.batch)
    starts = list(range(args.first, last, chunk))
    if args.workers <= 1:
        for lo in starts:
            run.run_range(lo, min(lo + chunk, last))
            summary = run.write_summary()
            print(f"{summary['streams_run']} streams, {summary['wall_seconds']:.0f} s, outcomes {summary['outcomes']}",
                  flush=True)  # fmt: skip
    else:
        lock = threading.Lock()
        queue = list(starts)

        failures: List[str] = []

        def loop():
            while True:
                with lock:
                    if not queue or failures:
                        return
                    lo = queue.pop(0)
                try:
                    run.run_range(lo, min(lo + chunk, last))
                except Exception as error:  # noqa: BLE001 - stop every thread, report it below
                    with lock:
                        failures.append(f"streams {lo}..: {type(error).__name__}: {error}")
                    return
                with lock:
                    summary = run.write_summary()
                    print(f"{summary['streams_run']} streams, {summary['wall_seconds']:.0f} s, "
                          f"outcomes {summary['outcomes']}", flush=True)  # fmt: skip

        threads = [threading.Thread(target=loop) for _ in range(args.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            run.write_summary()
            raise RuntimeError(f"the run stopped ({failures[0]}); --resume continues it")
    summary = run.write_summary()
    print(json.dumps({k: summary[k] for k in ("streams_run", "wall_seconds", "outcomes", "findings_total")}))
    return 1 if summary["findings_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
