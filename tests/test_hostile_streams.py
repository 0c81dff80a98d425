"""Hostile streams and inputs (docs/HOSTILE_STREAMS.md): what a stream with valid CRCs
and a consistent structure, or an input file with a lying header, can make the codec allocate.

- crafted streams: the 323-byte "4096x4096" stream and its 20000x20000 sibling (which
  crashed the decoder with SIGSEGV before the limit), the 8K edge, the limit raised;
- the CLI: one error line, exit 1, nothing written, `info` still describes such a stream;
- encoder inputs: y4m / PNG / video headers claiming absurd sizes, mixed PNG sizes, a y4m
  whose data does not match its header, all refused before a frame is read;
- the structure-aware fuzzer (runtime/fuzz.py): a few hundred of its streams in-process, every
  finding of the 100,000-stream run kept as a regression case (`FUZZ_FINDINGS`), and the full
  run as a slow test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from runtime import bitstream as bs
from runtime import cli, fuzz, limits
from runtime import video_io as vio
from runtime.codec import Decoder
from runtime.entropy_coding import SubstreamLayout
from runtime.stream import decode_video, encode_video
from runtime.types import CodecError, FrameType

REPO = Path(__file__).resolve().parents[1]


def crafted_stream(model_id: bytes, width: int, height: int, *, frames: int = 1, tile: int = 32, groups: int = 1,
                   latent: int = 32, hyper: int = 16) -> bytes:  # fmt: skip
    """A stream with valid CRCs and a consistent structure claiming `width` x `height`: an
    I-frame (then P-frames) with exactly the substreams that size needs, all empty (the range
    decoder reads zeros past the end, so every one decodes)."""
    per_layer = fuzz.Geometry(latent, hyper).per_layer(width, height, groups, tile)
    header = bs.StreamHeader(model_id, width, height, 25, 1, frames, 16, groups, tile)
    units = [
        bs.write_frame(bs.FrameUnit(FrameType(t), 3.0, tuple([bs.Substream(b"", b"")] * per_layer * (1 + t))))
        for t in [0] + [1] * (frames - 1)
    ]
    return bs.write_stream_header(header) + b"".join(units)


@pytest.fixture(scope="module")
def codec(untrained_codec):
    return untrained_codec


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Crafted streams: the original findings, reproduced, and the limit.


def test_the_crafted_streams_are_valid_and_tiny(codec):
    bundle, _ = codec
    for (width, height), size, count in (((4096, 4096), 323, 64 + 64), ((20000, 20000), 6467, 1600 + 1600)):
        data = crafted_stream(bundle.model_id, width, height)
        assert len(data) == size
        reader = bs.Reader(data)
        header = bs.read_stream_header(reader)  # CRCs and structure are valid
        unit = bs.read_frame(reader)
        assert (header.width, header.height) == (width, height) and reader.at_end()
        assert len(unit.substreams) == count  # what the decoder expects for that size


def test_absurd_stream_is_refused_before_allocating(tmp_path, codec):
    """20000x20000 ran the decoder into SIGSEGV (under a 12 GB address-space cap: 8.6 GB and 70 s,
    then TF's ResourceExhausted); now it is one line, at once."""
    bundle, backend = codec
    path = write(tmp_path, "huge.elfvc", crafted_stream(bundle.model_id, 20000, 20000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(CodecError) as excinfo:
        decode_video(path, lambda frame: None, backend, bundle)
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB
    message = one_line_error(excinfo)
    assert "20000x20000" in message and "exceeds the limit of 35,651,584 pixels" in message
    assert "250.9 GB" in message and "--max_pixels" in message


def test_limit_raised_still_refuses_what_memory_cannot_hold(tmp_path, codec, monkeypatch):
    bundle, backend = codec
    path = write(tmp_path, "huge.elfvc", crafted_stream(bundle.model_id, 20000, 20000))
    monkeypatch.setattr(limits, "physical_memory_bytes", lambda: 64 << 30)
    with pytest.raises(CodecError) as excinfo:
        decode_video(path, lambda frame: None, backend, bundle, max_pixels=20032 * 20032)
    assert "needs about 250.9 GB of memory to decode, this machine has 68.7 GB" in one_line_error(excinfo)


def test_the_default_limit_covers_8k():
    assert limits.MAX_PIXELS == 8192 * 4352
    for width, height in ((7680, 4320), (8192, 4320), (8192, 4352), (4352, 8192), (65536, 512)):
        limits.check_picture_size(width, height, memory=False)
    for width, height in ((8192, 4353), (8193, 4352), (65536, 544), (65536, 65536), (20000, 20000)):
        with pytest.raises(CodecError, match="exceeds the limit"):
            limits.check_picture_size(width, height, memory=False)
    # The memory figure of the limit, for the default model's widths (base): 640 bytes per padded
    # pixel and 2 GiB (benchmarks/decoder_memory.py measured every peak below it).
    from model.config import get_config

    base = get_config("base")
    assert limits.bytes_per_pixel() == limits.bytes_per_pixel(base) == 640
    assert 24.9e9 < limits.decoder_memory_bytes(8192, 4352) < 25.0e9
    for bad in (0, -1, 1.5, True, "8K"):
        with pytest.raises(CodecError, match="max_pixels"):
            limits.check_picture_size(64, 64, bad)


def test_small_crafted_stream_decodes_and_the_limit_applies(tmp_path, codec):
    bundle, backend = codec
    path = write(tmp_path, "small.elfvc", crafted_stream(bundle.model_id, 100, 80, frames=2))
    frames = []
    decode_video(path, frames.append, backend, bundle)
    assert [f.shape for f in frames] == [(80, 100, 3)] * 2
    with pytest.raises(CodecError, match=r"100x80, padded 128x128 \(16,384 pixels\) exceeds the limit of 16,383 pixels"):
        decode_video(path, frames.append, backend, bundle, max_pixels=16383)
    with pytest.raises(CodecError, match="exceeds the limit"):
        Decoder(bundle, backend, 100, 80, SubstreamLayout(), max_pixels=16383)


def test_thin_pictures_count_their_padding(tmp_path, codec):
    """Fuzz finding (seed 1, streams 348, 2538, 7736; `resize`): a 1x65536 stream is 65,536
    pixels but pads to 64x65536 and took 3.07 GB and 26 s to decode under a 262,144-pixel
    limit. The limit counts padded pixels."""
    bundle, backend = codec
    path = write(tmp_path, "thin.elfvc", crafted_stream(bundle.model_id, 1, 65536))
    with pytest.raises(CodecError) as excinfo:
        decode_video(path, lambda frame: None, backend, bundle, max_pixels=512 * 512)
    assert "1x65536, padded 64x65536 (4,194,304 pixels) exceeds the limit of 262,144" in one_line_error(excinfo)


def test_substream_layouts_count_without_building_lists():
    layout = SubstreamLayout(255, 4)
    start = time.perf_counter()
    assert layout.count((272, 512, 128), hyper=False) == 68 * 128 * 128
    assert layout.count((68, 128, 64), hyper=True) == 68 * 128 * 64
    assert time.perf_counter() - start < 0.01
    for shape, hyper in (((5, 7, 3), False), ((3, 2, 40), True)):
        assert SubstreamLayout(2, 4).count(shape, hyper) == len(SubstreamLayout(2, 4).slices(shape, hyper))


# --------------------------------------------------------------------------------------------
# The command line.


def run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["elfvc", *args])
    return code, out.getvalue(), err.getvalue()


def test_cli_decode_refuses_an_absurd_stream_in_one_line(tmp_path, codec):
    bundle, _ = codec
    path = write(tmp_path, "huge.elfvc", crafted_stream(bundle.model_id, 20000, 20000))
    before = sorted(os.listdir(tmp_path))
    code, _, err = run_cli(["decode", str(path), str(tmp_path / "out.y4m")])
    assert code == 1 and err.count("\n") == 1 and err.startswith("elfvc: error: ")
    assert "exceeds the limit of 35,651,584 pixels" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before
    code, _, err = run_cli(["decode", str(path), str(tmp_path / "out.y4m"), "--max_pixels=0"])
    assert code == 2 and "max_pixels" in err
    code, out, _ = run_cli(["info", str(path)])  # describing it allocates nothing
    assert code == 0 and "20000x20000" in out
    assert run_cli(["info", str(path), "--max_pixels=5"])[0] == 2


def test_cli_max_pixels_is_passed_to_the_decoder(tmp_path, codec, monkeypatch):
    """--max_pixels reaches decode_video (the model is swapped for the test bundle)."""
    bundle, backend = codec
    path = write(tmp_path, "small.elfvc", crafted_stream(bundle.model_id, 100, 80))
    monkeypatch.setattr(cli, "load_model", lambda fv, command: bundle)
    monkeypatch.setattr(cli, "open_backend", lambda fv, b: contextlib.nullcontext(backend))
    code, _, err = run_cli(["decode", str(path), str(tmp_path / "a.y4m"), "--max_pixels=16383"])
    assert code == 1 and "exceeds the limit of 16,383 pixels" in err
    code, out, err = run_cli(["decode", str(path), str(tmp_path / "b.y4m"), "--max_pixels=16384"])
    assert code == 0 and "decoded 1 frame (100x80" in out, err


# --------------------------------------------------------------------------------------------
# Encoder inputs.


def y4m(width: int, height: int, payload: bytes) -> bytes:
    return f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode() + payload


def frame_bytes(width: int, height: int) -> int:
    return width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)


def test_y4m_header_claiming_an_absurd_size(tmp_path):
    path = write(tmp_path, "huge.y4m", y4m(100000, 100000, b"FRAME\n" + bytes(100)))
    with pytest.raises(CodecError) as excinfo:
        vio.open_video(path)
    assert "100000x100000, padded 100032x100032" in one_line_error(excinfo)
    # Within the limit, but the data is 100 bytes: refused at open, before any frame is read.
    path = write(tmp_path, "lying.y4m", y4m(8000, 4000, b"FRAME\n" + bytes(100)))
    with pytest.raises(CodecError, match=r"frame 0 is truncated \(100 of 48000000 bytes: the file ends inside it, or its header's 8000x4000 does not"):
        vio.open_video(path)


def test_y4m_frame_count_that_does_not_match_the_data(tmp_path):
    w, h = 32, 16
    one = b"FRAME\n" + bytes(frame_bytes(w, h))
    path = write(tmp_path, "cut.y4m", y4m(w, h, one * 2 + one[:-7]))
    with vio.open_video(path) as reader:
        assert reader.info.num_frames is None  # not a whole number of frames
        frames = []
        with pytest.raises(CodecError, match="frame 2 is truncated"):
            for frame in reader:
                frames.append(frame)
    assert len(frames) == 2
    path = write(tmp_path, "params.y4m", y4m(w, h, b"FRAME Ip\n" + one[6:] + one))
    with vio.open_video(path) as reader:  # frame headers with parameters count exactly
        assert reader.info.num_frames == 2 and len(list(reader)) == 2
    path = write(tmp_path, "junk.y4m", y4m(w, h, one + b"JUNK\n" + bytes(10)))
    with vio.open_video(path) as reader:
        assert reader.info.num_frames is None
        with pytest.raises(CodecError, match="frame 1: bad y4m frame header"):
            list(reader)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (valid CRCs) with a one-row IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 7)) + chunk(b"IEND", b"")


def test_png_folders_with_lying_or_mixed_sizes(tmp_path, monkeypatch):
    from PIL import Image

    loads = []
    original = vio.PngFolderReader._load
    monkeypatch.setattr(vio.PngFolderReader, "_load", staticmethod(lambda f: loads.append(f) or original(f)))
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "0001.png").write_bytes(png_header_only(9000, 9000))  # under PIL's own bomb limit
    with pytest.raises(CodecError, match=r"9000x9000, padded 9024x9024 \(81,432,576 pixels\) exceeds the limit"):
        vio.open_video(huge)
    (huge / "0001.png").write_bytes(png_header_only(100000, 100000))  # over it: still one line
    with pytest.raises(CodecError) as excinfo:
        vio.open_video(huge, max_pixels=10**11)
    assert "cannot read" in one_line_error(excinfo)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, size in enumerate([(40, 30), (40, 30), (41, 30)]):
        Image.new("RGB", size, (k * 60, 0, 0)).save(mixed / f"f{k}.png")
    with pytest.raises(CodecError, match=r"f2.png is 41x30, the first frame is 40x30"):
        vio.open_video(mixed)
    assert loads == []  # nothing decoded: the sizes come from the PNG headers


def test_video_over_the_limit_is_refused_from_ffmpegs_header(tmp_path):
    path = tmp_path / "clip.mkv"
    frames = np.zeros((2, 48, 64, 3), np.uint8)
    vio.write_video(path, frames, Fraction(25))
    with pytest.raises(CodecError) as excinfo:
        vio.open_video(path, max_pixels=64 * 64 - 1)
    assert "64x48, padded 64x64 (4,096 pixels) exceeds the limit of 4,095 pixels" in one_line_error(excinfo)
    with vio.open_video(path, max_pixels=64 * 64) as reader:
        assert len(list(reader)) == 2


def test_cli_encode_refuses_an_absurd_input_before_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "load_model", lambda fv, command: pytest.fail("the model must not load"))
    path = write(tmp_path, "huge.y4m", y4m(70000, 60000, b"FRAME\n"))
    code, _, err = run_cli(["encode", str(path), str(tmp_path / "x.elfvc")])
    assert code == 1 and err.count("\n") == 1 and "70000x60000" in err and "exceeds the limit" in err
    w, h = 32, 16
    path = write(tmp_path, "small.y4m", y4m(w, h, b"FRAME\n" + bytes(frame_bytes(w, h))))
    code, _, err = run_cli(["encode", str(path), str(tmp_path / "x.elfvc"), "--max_pixels=4095"])
    assert code == 1 and "32x16, padded 64x64 (4,096 pixels) exceeds the limit of 4,095 pixels" in err
    assert not (tmp_path / "x.elfvc").exists()


def test_encode_video_refuses_frames_over_the_limit(tmp_path, codec):
    bundle, backend = codec
    with pytest.raises(CodecError, match="exceeds the limit of 100 pixels"):
        encode_video([np.zeros((16, 16, 3), np.uint8)], tmp_path / "x.elfvc", fps=25, controller=None,
                     backend=backend, bundle=bundle, max_pixels=100)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# The fuzzer: a slice of its streams in the default suite, its findings as regression cases.

#: Every finding of the fuzz runs (docs/HOSTILE_STREAMS.md): (seed, index, mutator, what it was).
FUZZ_FINDINGS: list = []


@pytest.fixture(scope="module")
def fuzz_bases(codec, tmp_path_factory):
    bundle, backend = codec
    data = fuzz.load_bases(str(tmp_path_factory.mktemp("bases")), bundle, backend)
    ctx = {"geometry": fuzz.Geometry(bundle.config.latent_channels, bundle.config.hyper_latent_channels),
           "max_level": float(bundle.config.max_level), "max_pixels": fuzz.FUZZ_MAX_PIXELS}  # fmt: skip
    return [fuzz.parse(b) for b in data], data, ctx, tmp_path_factory.mktemp("scratch")


def test_fuzz_serializer_round_trips_the_bases(fuzz_bases):
    bases, data, _, _ = fuzz_bases
    assert [fuzz.serialize(b) for b in bases] == list(data)
    assert [fuzz.fix_crcs(d) for d in data] == list(data)


def test_fuzz_classifies_what_is_not_a_clean_error():
    def raised(make):
        try:
            make()
        except Exception as error:  # noqa: BLE001
            return fuzz.classify(error)

    def wrapped():
        try:
            [][1]
        except IndexError as inner:
            raise CodecError("corrupt frame: decoding failed (IndexError)") from inner

    def twice():
        try:
            wrapped()
        except CodecError as inner:
            raise CodecError(f"frame 0: {inner}") from inner

    assert raised(lambda: (_ for _ in ()).throw(CodecError("bad header"))) == ("error", "bad header")
    assert raised(twice)[0] == "wrapped" and raised(twice)[1].startswith("IndexError")
    assert raised(lambda: (_ for _ in ()).throw(CodecError("two\nlines")))[0] == "multiline"
    outcome, message = raised(lambda: {}["x"])
    assert outcome == "exception" and message.startswith("KeyError") and "test_hostile_streams.py" in message


def _run(fuzz_bases, codec, seed, index):
    bundle, backend = codec
    bases, data, ctx, scratch = fuzz_bases
    name, stream = fuzz.mutate(bases, data, seed, index, ctx)
    outcome, message, _ = fuzz.run_one(str(scratch / "s.elfvc"), stream, bundle, backend, fuzz.FUZZ_MAX_PIXELS)
    return name, outcome, message


def test_fuzz_slice_in_process(fuzz_bases, codec):
    """120 streams of a seed the background run did not use: clean errors or decodes only (thousands: the
    slow test below)."""
    seen = set()
    for index in range(120):
        name, outcome, message = _run(fuzz_bases, codec, 7, index)
        seen.add(name)
        assert outcome in ("ok", "error"), (index, name, outcome, message)
    assert len(seen) >= 12  # most mutators ran


@pytest.mark.parametrize("seed,index,mutator,what", FUZZ_FINDINGS or [pytest.param(0, 0, "", "", marks=pytest.mark.skip(
    "nothing to replay: the 100,000-stream run (docs/HOSTILE_STREAMS.md) found no crash or hang; a finding goes into FUZZ_FINDINGS"))])
def test_fuzz_findings_stay_fixed(fuzz_bases, codec, seed, index, mutator, what):
    name, outcome, message = _run(fuzz_bases, codec, seed, index)
    assert name == mutator
    assert outcome in ("ok", "error"), (what, outcome, message)


@pytest.mark.slow
def test_fuzz_run_thousands_of_streams(tmp_path):
    """The script itself (subprocess workers, memory cap, report): 3000 streams of seed 11."""
    out = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "runtime.fuzz", "--streams=3000", "--seed=11", f"--out={out}",
                             f"--cache={tmp_path / 'bases'}", "--batch=1500"], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    report = json.loads(out.read_text())
    assert report["streams_run"] == 3000, result.stderr[-2000:]
    assert report["findings_total"] == 0, report["findings"][:5]
    assert result.returncode == 0


@pytest.mark.slow
def test_fuzz_parent_records_crashes_and_hangs(tmp_path):
    """A worker killed by SIGSEGV inside stream 2 and one stuck in stream 4 (test hooks in the
    worker): both recorded as findings, the worker restarted at the next stream each time."""
    out = tmp_path / "report.json"
    env = dict(os.environ, ELFVC_FUZZ_TEST_CRASH_AT="2", ELFVC_FUZZ_TEST_HANG_AT="4")
    result = subprocess.run([sys.executable, "-m", "runtime.fuzz", "--streams=6", "--seed=3", f"--out={out}",
                             f"--cache={tmp_path / 'bases'}", "--timeout_s=5", "--batch=6"],
                            cwd=REPO, capture_output=True, text=True, env=env)  # fmt: skip
    report = json.loads(out.read_text())
    assert result.returncode == 1 and report["streams_run"] == 6, result.stderr[-2000:]
    assert report["outcomes"]["crash"] == 1 and report["outcomes"]["hang"] == 1
    found = {f["o"]: f for f in report["findings"]}
    assert found["crash"]["i"] == 2 and "SIGSEGV" in found["crash"]["msg"]
    assert found["hang"]["i"] == 4 and report["worker_restarts"] == 2
