"""Fuzzing the decoder: mutated and truncated streams end in CodecError or a decode, never in
another exception, a crash or a hang.

Two mutators: raw byte edits / truncations / insertions (mostly stopped by the CRCs and the
structural checks), and payload edits with the frame CRC recomputed, which push garbage through
the range decoder, the escape lists and the networks. The default suite runs a few hundred
derandomized examples; `-m slow` runs thousands.
"""

import signal
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import bitstream as bs
from runtime.stream import decode_video, encode_video
from runtime.types import CodecError

HANG_SECONDS = 60


class Constant:
    def select_level(self, index, frame_type, num_pixels, trial):
        return 3.0

    def update(self, index, frame_type, result):
        pass


@pytest.fixture(scope="module")
def setup(bikes_frames, untrained_codec):
    bundle, backend = untrained_codec
    folder = Path(tempfile.mkdtemp(prefix="elfvc-fuzz-"))
    path = folder / "base.elfvc"
    frames = list(bikes_frames[:2, 60:110, 200:270])  # 70x50: padded to 128x64
    encode_video(frames, path, fps=25, gop=16, controller=Constant(), backend=backend, bundle=bundle, scenecut=0)
    data = path.read_bytes()
    # Frame spans and where each frame's payload starts (after its fixed part and lengths).
    reader = bs.Reader(data)
    bs.read_stream_header(reader)
    spans = []
    for index in range(2):
        start = reader.position
        unit = bs.read_frame(reader, index)
        lengths = sum(len(bs.write_varint(len(s.data))) + len(bs.write_varint(len(s.escapes))) for s in unit.substreams)
        spans.append((start, start + 8 + lengths, reader.position))
    return bundle, backend, folder, data, spans


def decode_or_codec_error(setup, data: bytes, name: str) -> None:
    bundle, backend, folder, *_ = setup
    path = folder / name
    path.write_bytes(data)

    def hang(signum, frame):
        raise TimeoutError(f"decoder still running after {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_SECONDS)
    try:
        decode_video(path, lambda frame: None, backend, bundle)
    except CodecError as err:
        assert str(err) and "\n" not in str(err)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def byte_mutations(data_size):
    edit = st.tuples(st.integers(0, data_size - 1), st.integers(0, 255))
    return st.tuples(
        st.lists(edit, min_size=0, max_size=8),
        st.one_of(st.none(), st.integers(0, data_size)),  # truncation
        st.one_of(st.none(), st.tuples(st.integers(0, data_size), st.binary(min_size=1, max_size=16))),  # insertion
    )


def apply_byte_mutation(data: bytes, mutation) -> bytes:
    edits, cut, insertion = mutation
    raw = bytearray(data)
    for position, value in edits:
        raw[position] = value
    if insertion is not None:
        position, extra = insertion
        raw[position:position] = extra
    if cut is not None:
        raw = raw[:cut]
    return bytes(raw)


def apply_payload_mutation(data: bytes, spans, mutation) -> bytes:
    """Edits frame payload bytes (or the level / type) and recomputes that frame's CRC."""
    frame, edits = mutation
    start, payload_start, end = spans[frame % len(spans)]
    raw = bytearray(data)
    for position, value in edits:
        raw[payload_start + position % (end - 4 - payload_start)] = value
    if edits and edits[0][1] % 7 == 0:  # now and then the frame type or level too
        raw[start + 1 + edits[0][0] % 5] = edits[0][1]
    raw[end - 4 : end] = struct.pack("<I", zlib.crc32(bytes(raw[start : end - 4])))
    return bytes(raw)


PAYLOAD_MUTATIONS = st.tuples(
    st.integers(0, 1), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=12)
)
FUZZ_SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def test_base_stream_decodes(setup):
    """The unmutated stream the fuzzers start from decodes: every frame, no error (a decoder that
    rejected valid streams would make every fuzz test pass trivially)."""
    bundle, backend, folder, data = setup[:4]
    path = folder / "base-copy.elfvc"
    path.write_bytes(data)
    frames = []
    summary = decode_video(path, frames.append, backend, bundle)
    assert len(frames) == summary.num_frames == 2 and frames[0].shape == (50, 70, 3)


def _byte_fuzz(setup, examples):
    data = setup[3]

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(byte_mutations(len(data)))
    def run(mutation):
        decode_or_codec_error(setup, apply_byte_mutation(data, mutation), "bytes.elfvc")

    run()


def _payload_fuzz(setup, examples):
    data, spans = setup[3], setup[4]

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(PAYLOAD_MUTATIONS)
    def run(mutation):
        decode_or_codec_error(setup, apply_payload_mutation(data, spans, mutation), "payload.elfvc")

    run()


def test_fuzz_bytes(setup):
    _byte_fuzz(setup, 300)


def test_fuzz_payload_with_valid_crc(setup):
    _payload_fuzz(setup, 60)


@pytest.mark.slow
def test_fuzz_bytes_thousands(setup):
    _byte_fuzz(setup, 4000)


@pytest.mark.slow
def test_fuzz_payload_with_valid_crc_thousands(setup):
    _payload_fuzz(setup, 1500)
