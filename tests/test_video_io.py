"""Video readers and writers, and the RGB <-> YUV 4:2:0 pair (runtime/video_io.py)."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from runtime import video_io as vio
from runtime.types import CodecError


@pytest.fixture(scope="module")
def crop(bikes_frames):
    """An odd-size crop (131x99) of bikes.mp4's first 4 frames."""
    return np.ascontiguousarray(bikes_frames[:4, 3:102, 5:136])


def leftovers(folder, keep=()):
    """Names in `folder` other than `keep`: temporaries a writer forgot."""
    return sorted(set(os.listdir(folder)) - set(keep))


# --------------------------------------------------------------------------------------------
# Colour conversion.


def test_bt601_limited_range_textbook_values():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # One 2x2 block per colour, so each chroma sample sees a single colour.
    frame = np.repeat(np.repeat(colours, 2, axis=0), 2, axis=1)
    y, u, v = vio.rgb_to_yuv420(frame)
    # BT.601: black (16,128,128), white (235,128,128), red (81,90,240), green (145,54,34),
    # blue (41,240,110).
    assert y[0, ::2].tolist() == [16, 235, 81, 145, 41]
    assert u[0].tolist() == [128, 128, 90, 54, 240]
    assert v[0].tolist() == [128, 128, 240, 34, 110]


def test_round_trip_of_flat_colours_is_within_quantization():
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (64, 3), dtype=np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (64, 5, 7, 3))  # odd size, batched
    back = vio.yuv420_to_rgb(vio.rgb_to_yuv420(frames))
    assert back.shape == frames.shape
    # Half an 8-bit step in Y, Cb and Cr is at most 0.58 + 0.80 + ... < 2 in any RGB channel.
    assert np.abs(back.astype(int) - frames).max() <= 2


def test_down_and_up_sampling_agree_on_the_chroma_siting():
    # A linear chroma ramp, upsampled with centred siting and box-averaged back, is unchanged
    # away from the border (the 3/4, 1/4 taps average back to the sample).
    h, w = 9, 11
    u = (100 + 3 * np.arange((w + 1) // 2))[None, :].repeat((h + 1) // 2, 0).astype(np.uint8)
    v = (90 + 4 * np.arange((h + 1) // 2))[:, None].repeat((w + 1) // 2, 1).astype(np.uint8)
    y = np.full((h, w), 120, np.uint8)
    _, u2, v2 = vio.rgb_to_yuv420(vio.yuv420_to_rgb((y, u, v)))
    assert np.abs(u2[:, 1:-1].astype(int) - u[:, 1:-1]).max() <= 1
    assert np.abs(v2[1:-1].astype(int) - v[1:-1]).max() <= 1


def test_reading_y4m_matches_ffmpeg(tmp_path, crop):
    """Our yuv420p -> RGB agrees with ffmpeg's on natural video: the same BT.601 matrix and
    limited range (BT.709 would give a mean difference of 0.66); the chroma upsampling filters
    differ (see the module docstring), hence not bit for bit."""
    path = tmp_path / "clip.y4m"
    vio.write_video(path, crop, Fraction(25))
    ours, _ = vio.read_video(path)
    theirs = np.stack(list(vio.FfmpegReader(path)))
    diff = np.abs(ours.astype(int) - theirs)
    assert diff.max() <= 2 and diff.mean() < 0.05


# --------------------------------------------------------------------------------------------
# Writers and readers round trip.


def test_y4m_file_holds_exactly_the_converted_planes(tmp_path, crop):
    path = tmp_path / "clip.y4m"
    assert vio.write_video(path, crop, Fraction(30000, 1001)) == 4
    data = path.read_bytes()
    header, rest = data.split(b"\n", 1)
    assert header.split()[:4] == [b"YUV4MPEG2", b"W131", b"H99", b"F30000:1001"]
    y, u, v = vio.rgb_to_yuv420(crop[1])
    frame_bytes = 131 * 99 + 2 * 66 * 50
    start = (6 + frame_bytes) * 1 + 6
    assert rest[start : start + frame_bytes] == y.tobytes() + u.tobytes() + v.tobytes()
    reader = vio.open_video(path)
    assert (reader.info.width, reader.info.height, reader.info.num_frames) == (131, 99, 4)
    assert reader.info.fps == Fraction(30000, 1001)
    frames = np.stack(list(reader))
    reader.close()
    np.testing.assert_array_equal(frames[1], vio.yuv420_to_rgb((y, u, v)))


@pytest.mark.parametrize("name", ["clip.mkv", "clip.mp4", "frames"])
def test_lossless_outputs_round_trip_exactly(tmp_path, crop, name):
    path = tmp_path / name
    assert vio.write_video(path, crop, Fraction(30000, 1001)) == 4
    frames, info = vio.read_video(path, fps=None if name != "frames" else Fraction(24))
    np.testing.assert_array_equal(frames, crop)
    assert (info.width, info.height) == (131, 99)
    assert info.fps == (Fraction(30000, 1001) if name != "frames" else Fraction(24))
    assert leftovers(tmp_path) == [name]


def test_ffmpeg_reader_gives_exact_frame_rate_and_stops_early(tmp_path, crop):
    path = tmp_path / "clip.avi"
    vio.write_video(path, crop, Fraction(179, 6))
    frames, info = vio.read_video(path, max_frames=2)
    assert info.fps == Fraction(179, 6) and info.kind == "ffmpeg"
    np.testing.assert_array_equal(frames, crop[:2])


def test_png_folder_natural_order_and_errors(tmp_path, crop):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for index in (1, 2, 10):  # natural order puts 10 last; plain sorting would put it second
        Image.fromarray(crop[min(index, 3)]).save(folder / f"f{index}.png")
    frames, info = vio.read_video(folder)
    assert info.num_frames == 3 and info.fps == vio.DEFAULT_PNG_FPS
    np.testing.assert_array_equal(frames, crop[[1, 2, 3]])

    Image.fromarray(crop[0, :50]).save(folder / "f11.png")
    with pytest.raises(CodecError, match="same size"):
        vio.read_video(folder)
    (folder / "f11.png").unlink()
    rgba = np.dstack([crop[0], np.full(crop.shape[1:3], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "f12.png")
    with pytest.raises(CodecError, match="transparent"):
        vio.read_video(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CodecError, match="no PNG files"):
        vio.open_video(empty)


# --------------------------------------------------------------------------------------------
# Bad inputs: one-line CodecErrors.


def y4m_header(tags="W4 H2 F25:1 Ip C420jpeg"):
    return f"YUV4MPEG2 {tags}\n".encode()


@pytest.mark.parametrize(
    "tags, message",
    [
        ("W4 H2 F25:1 C444", "C444 is not supported"),
        ("W4 H2 F25:1 C420p10", "C420p10 is not supported"),
        ("W4 H2 F25:1 It", "interlaced"),
        ("W4 H2 F25:1 XCOLORRANGE=FULL", "full-range"),
        ("H2 F25:1", "frame size"),
        ("W4 H2", "no frame rate"),
        ("W0 H2 F25:1", "bad frame width"),
    ],
)
def test_y4m_headers_we_refuse(tmp_path, tags, message):
    path = tmp_path / "bad.y4m"
    path.write_bytes(y4m_header(tags) + b"FRAME\n" + bytes(12))
    with pytest.raises(CodecError, match=message):
        vio.open_video(path)


def test_y4m_zero_frames_truncated_and_bad_frame_header(tmp_path):
    frame = b"FRAME\n" + bytes(4 * 2 + 2 * 2 * 1)
    path = tmp_path / "a.y4m"
    path.write_bytes(y4m_header())
    with pytest.raises(CodecError, match="no video frames"):
        vio.open_video(path)
    path.write_bytes(y4m_header() + frame + frame[:-3])
    with pytest.raises(CodecError, match="frame 1 is truncated"):
        list(vio.open_video(path))
    path.write_bytes(y4m_header() + frame + b"FRAMX\n" + frame[6:])
    with pytest.raises(CodecError, match="frame 1: bad y4m frame header"):
        list(vio.open_video(path))


def test_unreadable_inputs(tmp_path):
    with pytest.raises(CodecError, match="no such file"):
        vio.open_video(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(CodecError, match="empty"):
        vio.open_video(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(CodecError, match="cannot read") as err:
        vio.open_video(junk)
    assert "\n" not in str(err.value)
    audio = tmp_path / "audio.wav"
    subprocess.run([vio.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "anullsrc=d=0.2", str(audio)], check=True)
    with pytest.raises(CodecError, match="no video stream"):
        vio.open_video(audio)


# --------------------------------------------------------------------------------------------
# Output safety.


def test_check_output_refuses_input_existing_and_missing_folder(tmp_path):
    src = tmp_path / "in.y4m"
    src.write_bytes(b"x")
    with pytest.raises(CodecError, match="the output is the input"):
        vio.check_output(tmp_path / "." / "in.y4m", overwrite=True, inputs=[src])
    with pytest.raises(CodecError, match="exists"):
        vio.check_output(src)
    assert vio.check_output(src, overwrite=True) == src
    with pytest.raises(CodecError, match="does not exist"):
        vio.check_output(tmp_path / "nope" / "out.y4m")
    with pytest.raises(CodecError, match="unknown output type"):
        vio.output_kind(tmp_path / "out.gif")


def test_overwrite_replaces_only_a_folder_of_decoded_frames(tmp_path, monkeypatch):
    """--overwrite never removes a folder holding anything but decoded frames (the stream being
    decoded, a user's notes), nor a folder where a file goes, nor `.` or `/` themselves."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (1, 2):
        (frames / f"{i:06d}.png").write_bytes(b"png")
    assert vio.check_output(frames, overwrite=True) == frames
    (frames / "clip.elfvc").write_bytes(b"stream")
    with pytest.raises(CodecError, match="holding other files than decoded frames .clip.elfvc.; refusing"):
        vio.check_output(frames, overwrite=True, inputs=[frames / "clip.elfvc"])
    (tmp_path / "dir.y4m").mkdir()
    with pytest.raises(CodecError, match="is a folder; refusing to replace it with a file"):
        vio.check_output(tmp_path / "dir.y4m", overwrite=True)
    monkeypatch.chdir(frames)
    with pytest.raises(CodecError, match="holding other files"):
        vio.check_output(".", overwrite=True)
    with pytest.raises(CodecError, match="the root folder cannot be an output"):
        vio.check_output("/", overwrite=True)
    with pytest.raises(CodecError, match="is a folder"):  # made after the check: still not replaced
        vio.commit(tmp_path / "x.partial.y4m", tmp_path / "dir.y4m")
    assert sorted(p.name for p in frames.iterdir()) == ["000001.png", "000002.png", "clip.elfvc"]


@pytest.mark.parametrize("name", ["out.y4m", "out.mkv", "out"])
def test_failed_write_leaves_nothing_and_keeps_the_old_output(tmp_path, crop, name):
    path = tmp_path / name
    with pytest.raises(RuntimeError):
        with vio.open_writer(path, 131, 99, Fraction(25)) as writer:
            writer.write(crop[0])
            raise RuntimeError("the encoder failed")
    assert leftovers(tmp_path) == []
    # Overwriting: the old output survives a failure, and is replaced on success.
    vio.write_video(path, crop[:1], Fraction(25))
    before = vio.read_video(path)[0]
    with pytest.raises(CodecError, match="expected uint8"):
        with vio.open_writer(path, 131, 99, Fraction(25)) as writer:
            writer.write(crop[1])
            writer.write(crop[1, :50])
    np.testing.assert_array_equal(vio.read_video(path)[0], before)
    vio.write_video(path, crop[2:], Fraction(25), overwrite=True)
    assert len(vio.read_video(path)[0]) == 2
    assert leftovers(tmp_path) == [name]
