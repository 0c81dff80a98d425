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


def ffmpeg(*args):
    subprocess.run([vio.ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


def test_ffmpeg_reader_reads_each_frame_once(tmp_path, crop):
    """A variable-rate file is not made constant-rate by repeated frames (4 frames, not ~29),
    and an animated PNG's 100,000 "fps" time base is refused (ffmpeg repeated its 2 frames
    without end at that rate) unless --fps gives the rate; then its 2 frames, once."""
    src = tmp_path / "src.y4m"
    vio.write_video(src, crop, Fraction(25))
    vfr = tmp_path / "vfr.mkv"
    ffmpeg("-i", src, "-vf", "setpts=N*N*0.1/TB", "-fps_mode", "vfr", "-c:v", "ffv1", vfr)
    frames, _ = vio.read_video(vfr)
    assert len(frames) == 4

    from PIL import Image

    apng = tmp_path / "anim.png"
    Image.fromarray(crop[0]).save(apng, save_all=True, append_images=[Image.fromarray(crop[1])], duration=40, loop=0)
    with pytest.raises(CodecError, match=r"states a frame rate of 100000 fps, outside 1/60\.\.1000; give the real one \(--fps\)"):
        vio.open_video(apng)
    frames, info = vio.read_video(apng, fps=Fraction(25))
    np.testing.assert_array_equal(frames, crop[:2])
    with pytest.raises(CodecError, match="frame rate must be from 1/60 to 1000"):
        vio.open_video(src, fps=Fraction(5000))


def test_ffmpeg_reader_refuses_what_it_would_change_unasked(tmp_path, crop):
    """A picture size that changes within a file (ffmpeg scaled the rest to the first size),
    interlaced video (refused from a y4m already) and a file whose only picture is cover art."""
    src = tmp_path / "src.y4m"
    vio.write_video(src, crop[:, :96, :130], Fraction(25))  # x264 codes even sizes (interlaced: heights of 4n)
    a, b = tmp_path / "a.ts", tmp_path / "b.ts"
    ffmpeg("-i", src, "-frames:v", "2", "-c:v", "libx264", "-f", "mpegts", a)
    ffmpeg("-i", src, "-frames:v", "2", "-vf", "scale=64:48", "-c:v", "libx264", "-f", "mpegts", b)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    with pytest.raises(CodecError, match="picture size changes within the file, from 130x96 to 64x48"):
        list(vio.open_video(joined))
    interlaced = tmp_path / "il.mp4"
    ffmpeg("-i", src, "-c:v", "libx264", "-flags", "+ilme+ildct", "-x264opts", "tff=1", interlaced)
    with pytest.raises(CodecError, match=r"interlaced video \(top first\) is not supported; deinterlace it first"):
        vio.open_video(interlaced)
    cover = tmp_path / "song.m4a"
    picture = tmp_path / "cover.png"
    vio.write_video(tmp_path / "cover", crop[:1], Fraction(25))
    (tmp_path / "cover" / "000001.png").rename(picture)
    ffmpeg("-f", "lavfi", "-i", "sine=d=0.3", "-i", picture, "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "mjpeg",
           "-disposition:v", "attached_pic", cover)
    with pytest.raises(CodecError, match="has no video stream"):
        vio.open_video(cover)


def test_a_size_change_is_found_among_other_changes_and_rotation_is_no_change(tmp_path):
    """ffmpeg's log names every change of the decoded pictures' parameters: a size change is
    refused however many other lines come with it (a pixel-format change before it), and a
    format change alone in a rotated video (decoded 128x96, read 96x128) is none."""
    parts = []
    for name, size, fmt in (("a", "64x48", "yuv444p"), ("b", "64x48", "yuv420p"), ("c", "32x24", "yuv420p")):
        parts.append(tmp_path / f"{name}.ts")
        ffmpeg("-f", "lavfi", "-i", f"testsrc=s={size}:d=0.12:r=25", "-pix_fmt", fmt, "-c:v", "libx264", "-f", "mpegts", parts[-1])
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with pytest.raises(CodecError, match="picture size changes within the file, from 64x48 to 32x24"):
        list(vio.open_video(joined))
    two = tmp_path / "two.ts"
    two.write_bytes(b"".join(p.read_bytes() for p in parts[:2]))
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", two, "-c", "copy", rotated)
    frames, info = vio.read_video(rotated)
    assert (info.width, info.height) == (48, 64) and frames.shape == (6, 64, 48, 3)


def test_ffmpeg_errors_name_the_error_line_or_the_exit_status():
    tagged = b"[info] Input #0, mov\n[h264 @ 0x1] [error] Invalid NAL unit size\n[info] frame=    5 fps=0\n"
    assert vio._ffmpeg_problem(tagged, "exit 1") == "Invalid NAL unit size"
    killed = b"[info] Input #0, mov\n[info]   handler_name : VideoHandler\n"
    assert vio._ffmpeg_problem(killed, "ffmpeg exited with status 137") == "ffmpeg exited with status 137"
    assert vio._ffmpeg_problem(b"[mov @ 0x2] moov atom not found\n", "exit 1") == "moov atom not found"  # -v error


def test_of_several_video_streams_the_largest_is_read_and_named(tmp_path, crop, bikes_frames):
    small, big = tmp_path / "small.y4m", tmp_path / "big.y4m"
    vio.write_video(small, crop[:1], Fraction(25))
    vio.write_video(big, bikes_frames[:3], Fraction(25))
    both = tmp_path / "both.mkv"
    ffmpeg("-i", small, "-i", big, "-map", "0:v", "-map", "1:v", "-c:v", "ffv1", both)
    with vio.open_video(both) as reader:
        assert (reader.info.width, reader.info.height) == bikes_frames.shape[2:0:-1]
        assert any("has 2 video streams; coding #0:1, the largest" in n for n in reader.notes), reader.notes
        assert len(list(reader)) == 3
    programs = tmp_path / "programs.ts"  # one stream in two programs: listed twice, one stream
    ffmpeg("-i", big, "-map", "0:v", "-c:v", "libx264", "-program", "title=A:st=0", "-program", "title=B:st=0",
           "-f", "mpegts", programs)
    with vio.open_video(programs) as reader:
        assert reader.notes == () and reader.info.width == bikes_frames.shape[2], reader.notes


def test_non_square_pixels_are_noted(tmp_path, crop):
    src = tmp_path / "src.y4m"
    vio.write_video(src, crop[:1, :96, :130], Fraction(25))  # x264 codes even sizes
    assert b" A0:0 " in src.read_bytes()[:80]  # what the stream keeps: no aspect ratio (unknown), not 1:1
    with vio.open_video(src) as reader:
        assert reader.notes == ()
    sar = tmp_path / "sar.y4m"
    sar.write_bytes(src.read_bytes().replace(b" A0:0 ", b" A16:11 ", 1))
    mp4 = tmp_path / "sar.mp4"
    ffmpeg("-i", src, "-vf", "setsar=2/1", "-c:v", "libx264", mp4)
    for path, ratio in ((sar, "16:11"), (mp4, "2:1")):
        with vio.open_video(path) as reader:
            assert [n for n in reader.notes if f"non-square pixels (aspect ratio {ratio})" in n], reader.notes


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


def test_png_folder_takes_16_bit_grey_and_refuses_an_animated_png(tmp_path, crop):
    from PIL import Image

    folder = tmp_path / "grey"
    folder.mkdir()
    grey = np.arange(0, 65536, 257 * 5, dtype=np.uint16).reshape(4, 13)  # 0, 1285, ... 65535: exact 8-bit values
    Image.fromarray(grey).save(folder / "a.png")
    with Image.open(folder / "a.png") as image:
        assert image.mode in ("I", "I;16")  # 16-bit grey, as Pillow opens it
    frames, _ = vio.read_video(folder)
    np.testing.assert_array_equal(frames[0], np.repeat((grey // 257).astype(np.uint8)[..., None], 3, axis=2))
    Image.fromarray(grey).save(folder / "a.png", transparency=1285)  # tRNS: the value 1285 is transparent
    with pytest.raises(CodecError, match="has transparent pixels"):
        vio.read_video(folder)
    Image.fromarray(crop[0]).save(folder / "a.png", save_all=True, append_images=[Image.fromarray(crop[1])])
    with pytest.raises(CodecError, match=r"an animated PNG \(2 frames\) in a folder of frames; give it alone"):
        vio.read_video(folder)


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


def test_a_stated_rate_outside_what_a_stream_takes_needs_fps(tmp_path):
    path = tmp_path / "fast.y4m"
    path.write_bytes(y4m_header("W4 H2 F1000000:1 Ip C420jpeg") + b"FRAME\n" + bytes(12))
    with pytest.raises(CodecError, match="states a frame rate of 1000000 fps, outside"):
        vio.open_video(path)
    assert vio.open_video(path, fps=Fraction(30)).info.fps == 30


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
    path.write_bytes(y4m_header("W6 H2 F25:1 Ip C420jpeg") + frame * 3)  # a header wider than its frames
    with pytest.raises(CodecError, match="frame 1: bad y4m frame header .no FRAME where frame 0 of the header's 6x2 ends"):
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


def test_a_trailing_slash_names_a_folder_of_pngs_whatever_its_name(tmp_path, crop):
    out = f"{tmp_path / 'frames.v1'}/"
    assert vio.output_kind(out) == "png" and vio.output_kind(tmp_path / "frames") == "png"
    assert vio.write_video(out, crop[:2], Fraction(25)) == 2
    assert sorted(os.listdir(tmp_path / "frames.v1")) == ["000001.png", "000002.png"]
    with pytest.raises(CodecError, match="exists"):
        vio.write_video(out, crop[:1], Fraction(25))
    assert vio.write_video(out, crop[:1], Fraction(25), overwrite=True) == 1  # a folder of decoded frames: replaced
    assert sorted(os.listdir(tmp_path / "frames.v1")) == ["000001.png"]
    with pytest.raises(CodecError, match="unknown output type '.v1'"):
        vio.output_kind(tmp_path / "frames.v1")  # without the slash: a file of an unknown type


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
