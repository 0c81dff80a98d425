"""The `elfvc` command line, in-process through `runtime.cli.main(argv)`, on a real clip (an
odd-size crop of bikes.mp4 written as y4m) with the shipped `small` model standing in for the
default (the mechanics are the same for every model, and small traces fastest).

Every failure must be exactly one `elfvc: error: ...` line on stderr, a non-zero exit, and no
file left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from fractions import Fraction

import numpy as np
import pytest

from runtime import cli
from runtime import video_io as vio
from runtime.types import CodecError
from runtime.progress import Progress

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)

W, H = 130, 98  # odd size: pads to 192x128 inside the codec, cropped back on decode.


@pytest.fixture(scope="module", autouse=True)
def small_as_default():
    from model import bundle

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bundle, "default_bundle", lambda: bundle.shipped_bundle("small"))
        yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, bikes_frames):
    """A folder holding clip.y4m: 3 frames of bikes.mp4 cropped to 130x98."""
    folder = tmp_path_factory.mktemp("cli")
    crop = np.ascontiguousarray(bikes_frames[:3, 40 : 40 + H, 200 : 200 + W])
    vio.write_video(folder / "clip.y4m", crop, Fraction(25))
    return folder


@pytest.fixture(scope="module")
def stream(workdir):
    """clip.y4m encoded at a constant level with GOP 2 (I P I)."""
    code, out, err = run_cli_raw(["encode", str(workdir / "clip.y4m"), str(workdir / "clip.elfvc"), "--level=3.5", "--gop=2"])
    assert code == 0, err
    return workdir / "clip.elfvc", out


def run_cli_raw(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["elfvc", *args])
    return code, out.getvalue(), err.getvalue()


def fails(args, code, message, folder=None):
    """Runs a command that must fail: exit `code`, one error line matching `message`, and (when
    `folder` is given) no new file in it."""
    before = sorted(os.listdir(folder)) if folder else None
    status, out, err = run_cli_raw(args)
    errors = [line for line in err.splitlines() if line.startswith("elfvc: error:")]
    assert status == code, err
    assert len(errors) == 1 and re.search(message, errors[0]), err
    assert "Traceback" not in err
    if folder:
        assert sorted(os.listdir(folder)) == before
    return errors[0]


def summary_psnr(line):
    return float(re.search(r"PSNR (\d+\.\d+) dB", line).group(1))


# --------------------------------------------------------------------------------------------
# Command line and input errors (no model needed: inputs and flags are checked first).


def test_usage_and_command_line_errors(tmp_path):
    code, out, _ = run_cli_raw(["--help"])
    assert code == 0 and "encode IN OUT" in out and "--max_bpp_p" in out
    assert run_cli_raw([])[0] == 2
    fails(["transcode", "a", "b"], 2, "unknown command 'transcode'")
    fails(["info", "a.elfvc", "--level=3"], 2, "info does not take --level")
    fails(["encode", "only-one"], 2, "encode takes IN OUT")
    fails(["encode", "a", "b", "--gop=-1"], 2, "gop")
    fails(["encode", "a", "b", "--scenecut=-1"], 2, "scenecut")
    fails(["visualize", "a", "b.png", "--scenecut=1"], 2, "visualize does not take --scenecut")
    fails(["decode", "a", "b", "--no-such-flag"], 2, "no-such-flag")
    fails(["decode", "a", "b", "--backend=cuda"], 2, "unknown backend 'cuda'; valid backends: tf, onnx, tensorrt")


def test_bad_inputs_and_outputs(tmp_path, workdir):
    clip = str(workdir / "clip.y4m")
    out = str(tmp_path / "out.elfvc")
    fails(["encode", str(tmp_path / "missing.mp4"), out], 1, "no such file", tmp_path)
    empty = tmp_path / "empty.y4m"
    empty.write_bytes(b"YUV4MPEG2 W64 H64 F25:1 C420jpeg\n")
    fails(["encode", str(empty), out], 1, "no video frames", tmp_path)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 20)
    fails(["encode", str(junk), out], 1, "cannot read", tmp_path)
    fails(["encode", clip, clip, "--overwrite"], 1, "the output is the input", workdir)
    fails(["encode", clip, str(tmp_path / "out.mp4")], 2, "not a .mp4", tmp_path)
    fails(["encode", clip, str(tmp_path / "out.webm")], 2, "not a .webm", tmp_path)  # every tool would take it for one
    fails(["encode", clip, out, "--min_psnr=0"], 2, r"--min_psnr must be a positive, finite number of dB, got 0", tmp_path)
    fails(["encode", clip, out, "--scenecut=nan"], 2, r"--scenecut must be a finite number >= 0 \(0: off\), got nan", tmp_path)
    fails(["encode", clip, out, "--target_kbps=1e308"], 2, "target bitrate 1e\\+308 kbit/s is beyond any stream", tmp_path)
    fails(["encode", clip, out, "--level=3", "--target_kbps=100"], 2, "not both", tmp_path)
    fails(["encode", clip, out, "--max_bpp_p=-1"], 2, "positive", tmp_path)
    existing = tmp_path / "exists.elfvc"
    existing.write_bytes(b"keep me")
    fails(["encode", clip, str(existing)], 1, "exists .*--overwrite", tmp_path)
    assert existing.read_bytes() == b"keep me"
    fails(["decode", str(tmp_path / "missing.elfvc"), str(tmp_path / "o.y4m")], 1, "no such file", tmp_path)
    fails(["decode", clip, str(tmp_path / "o.gif")], 1, "unknown output type", tmp_path)


def test_the_machines_errors_are_one_line_not_internal(tmp_path, workdir, monkeypatch):
    """A folder the user cannot write in is said before any work; a full disk mid-job is the
    machine's error, named with its file, not an "internal error"."""
    import errno

    import runtime.stream

    clip = str(workdir / "clip.y4m")
    with monkeypatch.context() as mp:  # (the suite may run as root, whom os.access never refuses)
        mp.setattr(vio.os, "access", lambda path, mode: False)
        fails(["encode", clip, str(tmp_path / "o.elfvc")], 1, rf"cannot write in folder {tmp_path} \(permission denied\)", tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.elfvc"))

    monkeypatch.setattr(runtime.stream, "encode_video", disk_full)
    line = fails(["encode", clip, str(tmp_path / "o.elfvc"), "--level=1"], 1, "No space left on device", tmp_path)
    assert line == f"elfvc: error: {tmp_path / 'o.elfvc'}: No space left on device"


def test_models_lists_the_shipped_models_and_names_resolve(tmp_path, workdir):
    from model.bundle import DEFAULT_DIR

    code, out, err = run_cli_raw(["models"])
    assert code == 0, err
    heads = [line for line in out.splitlines() if not line.startswith(" ")]
    assert heads[0].startswith(f"{DEFAULT_DIR.name} (default): config ") and len(heads) >= 2
    assert any(re.match(r"small( \(default\))?: config small, 2\.0M parameters, GOP 16, model id [0-9a-f]{32}$", h)
               for h in heads), heads
    assert "rate range:" in out and "speed:" in out
    # base's card: GOP and P-frame offsets (every 4th P-frame better)
    assert re.search(r", GOP 16, P-frames -1.5,-1.5,-1.5,-0.5 levels from the I-frames \(cycled over each GOP's "
                     r"P-frames\), model id [0-9a-f]{32}$", heads[0]), heads[0]
    fails(["models", "x"], 2, "models takes no arguments, got 1 argument ", tmp_path)
    fails(["encode", str(workdir / "clip.y4m"), str(tmp_path / "o.elfvc"), "--model=no-such-model"], 1,
          r"no-such-model does not exist, nor is it a shipped model's name \(shipped: .*small", tmp_path)


def test_each_shipped_card_records_its_model_id_and_a_wrong_model_names_the_right_one(stream):
    """The cards' model ids are the folders' (small's here, the default's in test_level_sweep.py,
    where it is loaded anyway), so a stream decoded with the wrong model says which shipped model
    reads it."""
    from model.bundle import read_card, resolve_model, shipped_bundle, untrained_bundle
    from runtime.stream import decode_video

    assert read_card(resolve_model("small"))["model_id"] == shipped_bundle("small").model_id.hex()
    with pytest.raises(CodecError, match="wrong model: .*; the shipped model 'small' has it: --model small$"):
        decode_video(stream[0], lambda frame: None, None, untrained_bundle())


def test_a_negative_level_is_a_usage_error_naming_the_range(tmp_path, workdir):
    for bad in ("-1", "inf", "nan"):
        line = fails(["encode", str(workdir / "clip.y4m"), str(tmp_path / "o.elfvc"), f"--level={bad}"], 2,
                     rf"--level must be a number from 0 to the model's top level \(7 for the shipped models\), got {bad}", tmp_path)
        assert "e+308" not in line
    fails(["encode", str(workdir / "clip.y4m"), str(tmp_path / "o.elfvc"), "--max_bpp_i=-1"], 2,
          r"--max_bpp_i must be a positive number of bits per pixel, got -1", tmp_path)
    fails(["encode", str(workdir / "clip.y4m"), str(tmp_path / "o.elfvc"), "--fps=1e9"], 2,
          r"--fps must be from 1/60 to 1000 frames per second, got 1e9", tmp_path)
    fails(["plot_rc", "-", str(tmp_path / "x.png")], 2, r"'-' is standard input or output for encode's IN and OUT, decode's")
    code, out, _ = run_cli_raw(["--version"])
    assert code == 0 and re.fullmatch(r"elfvc \S+, bitstream format version \d+\n", out)
    fails(["encode", str(workdir / "clip.y4m"), str(tmp_path / "o.elfvc"), "--level=9"], 2, r"outside the model's range \[0, 7\]", tmp_path)


def test_presets_are_in_the_help_with_their_cost_and_benefit(tmp_path, workdir):
    code, out, _ = run_cli_raw(["encode", "--help"])
    assert code == 0
    for name, words in (("fast", "faster|speed"), ("medium", "default"), ("slow", "fewer bits"),
                        ("veryslow", "fewer bits")):
        assert re.search(rf"{name}: [^\n]{{0,100}}({words})", out), (name, out)
    fails(["encode", str(workdir / "clip.y4m"), str(tmp_path / "o.elfvc"), "--preset=turbo"], 2, "preset", tmp_path)
    fails(["decode", str(tmp_path / "x.elfvc"), str(tmp_path / "x.y4m"), "--preset=slow"], 2, "decode does not take --preset", tmp_path)


def test_the_model_cards_gop_applies_unless_gop_is_given(monkeypatch):
    from types import SimpleNamespace

    from model import bundle

    card = SimpleNamespace(notes=(), gop=1, source="runtime/checkpoints/x", trained=True,
                           config=SimpleNamespace(motion_search_radius=0))
    monkeypatch.setattr(bundle, "load_bundle", lambda path: card)
    for command, argv, gop, noted in (("encode", ["--model=x"], 1, True), ("encode", ["--model=x", "--gop=16"], 16, False),
                                      ("plot_rc", ["--model=x", "--gop=4"], 4, False), ("plot_rc", ["--model=x"], 1, True),
                                      ("decode", ["--model=x"], 16, False), ("visualize", ["--model=x"], 16, False)):  # fmt: skip
        fv = cli.define_flags()
        fv(["elfvc", *argv])
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            cli.load_model(fv, command)
        # decode and visualize take no --gop (a stream carries its own): no note for them
        assert fv.gop == gop and ("model card recommends" in err.getvalue()) == noted, (command, argv, err.getvalue())


def test_p_level_offset_codes_p_frames_at_their_level_and_refuses_other_rate_control(tmp_path, workdir):
    clip, out = str(workdir / "clip.y4m"), tmp_path / "o.elfvc"
    code, _, err = run_cli_raw(["encode", clip, str(out), "--level=3.5", "--gop=3", "--p_level_offset=-1"])
    assert code == 0, err
    code, text, err = run_cli_raw(["info", str(out)])
    assert code == 0, err
    rows = re.findall(r"^\s*(\d+)\s+([IP])\s+(\d+\.\d+)", text, re.M)
    assert [(t, float(lv)) for _, t, lv in rows] == [("I", 3.5), ("P", 2.5), ("P", 2.5)], text
    fails(["encode", clip, str(tmp_path / "x.elfvc"), "--p_level_offset=-1", "--target_kbps=100"], 2,
          "--p_level_offset applies to a constant level", tmp_path)
    fails(["encode", clip, str(tmp_path / "x.elfvc"), "--p_level_offset=nan"], 2, "--p_level_offset must be a finite", tmp_path)
    fails(["plot_rc", clip, str(tmp_path / "x.png"), "--p_level_offset=inf"], 2, "--p_level_offset must be a finite", tmp_path)
    fails(["encode", clip, str(tmp_path / "x.elfvc"), "--p_level_offset=-1,,0"], 2, "--p_level_offset must be a finite number "
          "or a comma list", tmp_path)
    fails(["decode", str(out), str(tmp_path / "x.y4m"), "--p_level_offset=1"], 2, "decode does not take --p_level_offset", tmp_path)


def test_encode_codes_p_frames_at_the_model_cards_offset(tmp_path, workdir, monkeypatch):
    import dataclasses

    from model import bundle

    small = bundle.shipped_bundle("small")
    monkeypatch.setattr(bundle, "default_bundle", lambda: dataclasses.replace(small, card={**small.card, "p_level_offset": -1.5}))
    out = tmp_path / "o.elfvc"
    code, _, err = run_cli_raw(["encode", str(workdir / "clip.y4m"), str(out), "--level=1", "--gop=3"])
    assert code == 0, err
    assert "P-frames 1.5 levels below the I-frames" in err and "--p_level_offset=0 turns it off" in err, err
    code, text, err = run_cli_raw(["info", str(out)])
    rows = re.findall(r"^\s*(\d+)\s+([IP])\s+(\d+\.\d+)", text, re.M)
    assert [(t, float(lv)) for _, t, lv in rows] == [("I", 1.0), ("P", 0.0), ("P", 0.0)], text  # clipped at 0


def test_a_p_level_offset_pattern_cycles_over_each_gops_p_frames(tmp_path, workdir, bikes_frames, monkeypatch):
    """--p_level_offset=a,b: the k-th P-frame after an I-frame at level + entry (k-1) mod 2,
    restarting at every I-frame (GOP 3 over 6 frames: I P P I P P; counted from frame 0 instead, frames
    4 and 5 would swap levels); a card's pattern is noted, and so is one longer than a GOP's P-frames."""
    import dataclasses

    from model import bundle

    clip, out = str(tmp_path / "six.y4m"), tmp_path / "o.elfvc"
    vio.write_video(clip, np.ascontiguousarray(bikes_frames[:6, 40 : 40 + H, 200 : 200 + W]), Fraction(25))
    code, _, err = run_cli_raw(["encode", clip, str(out), "--level=3.5", "--gop=3", "--scenecut=0",
                                "--p_level_offset=-1.5,-0.5"])  # fmt: skip
    assert code == 0, err
    code, text, err = run_cli_raw(["info", str(out)])
    rows = re.findall(r"^\s*(\d+)\s+([IP])\s+(\d+\.\d+)", text, re.M)
    assert [(t, float(lv)) for _, t, lv in rows] == [("I", 3.5), ("P", 2.0), ("P", 3.0), ("I", 3.5), ("P", 2.0), ("P", 3.0)], text
    assert "never used" not in err
    code, _, err = run_cli_raw(["encode", clip, str(tmp_path / "l.elfvc"), "--level=3.5", "--gop=2", "--p_level_offset=-1.5,-0.5"])
    assert code == 0 and "the P-frame level pattern has 2 entries, but a GOP of 2 has 1 P-frame" in err, err
    small = bundle.shipped_bundle("small")
    monkeypatch.setattr(bundle, "default_bundle", lambda: dataclasses.replace(small, card={**small.card, "p_level_offset": [-1, 0]}))
    code, _, err = run_cli_raw(["encode", str(workdir / "clip.y4m"), str(tmp_path / "c.elfvc"), "--level=2", "--gop=3"])
    assert code == 0, err
    assert "P-frames at levels -1,0 from the I-frames, cycled over each GOP's P-frames" in err, err


def test_the_model_cards_p_level_offset_applies_to_a_constant_level_unless_overridden():
    from types import SimpleNamespace

    from model.bundle import DEFAULT_DIR, ModelBundle, read_card

    read = ModelBundle.p_level_offset.fget
    cards = ({"p_level_offset": -1}, {"p_level_offset": 0.5}, {}, {"p_level_offset": [-1.5, 0]})
    assert [read(SimpleNamespace(card=c)) for c in cards] == [(-1.0,), (0.5,), (0.0,), (-1.5, 0.0)]
    bad = (True, "x", "-1", float("nan"), None, [], [-1, "x"], [-1.0, float("inf")], [-1.0] * 65)
    assert [read(SimpleNamespace(card={"p_level_offset": v})) for v in bad] == [(0.0,)] * len(bad)
    assert read(SimpleNamespace(card=read_card(DEFAULT_DIR))) == (-1.5, -1.5, -1.5, -0.5)  # the shipped card's (docs/BENCHMARKS.md)

    def p_level(argv, card=(-1.0,)):
        fv = cli.define_flags()
        fv(["elfvc", *argv])
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli.controller_from_flags(fv, 7.0, Fraction(25), SimpleNamespace(p_level_offset=card, source="m"))
        primary = getattr(rc, "primary", rc)
        offset = getattr(primary, "p_offsets", None)
        return offset, "model card recommends" in err.getvalue()

    assert p_level(["--level=3"]) == ((-1.0,), True)
    assert p_level([]) == ((-1.0,), True)  # the default level is a constant one
    assert p_level(["--max_bpp_p=0.1"]) == ((0.0,), False)  # caps alone keep their meaning (the highest level that fits)
    assert p_level(["--max_bpp_p=0.1", "--p_level_offset=-1"]) == ((-1.0,), False)  # unless asked
    assert p_level(["--level=3", "--min_psnr=30"]) == ((-1.0,), True)  # a level raised to a floor: the level's offset
    assert p_level(["--level=3", "--gop=0"]) == ((-1.0,), True)  # one I-frame, then only P-frames
    assert p_level(["--level=3", "--p_level_offset=0"]) == ((0.0,), False)  # the flag wins
    assert p_level(["--level=3", "--p_level_offset=0.5"]) == ((0.5,), False)
    assert p_level(["--level=3", "--p_level_offset=-1.5, 0"]) == ((-1.5, 0.0), False)  # a pattern
    assert p_level(["--level=3"], card=(-1.25, -0.25)) == ((-1.25, -0.25), True)  # the card's pattern
    assert p_level(["--level=3", "--gop=1"]) == ((-1.0,), False)  # no P-frames: nothing to say
    assert p_level(["--target_kbps=100"]) == (None, False)  # not a constant level: the card's offset does not apply
    assert p_level(["--min_psnr=30"]) == (None, False)
    assert p_level(["--level=3"], card=(0.0,)) == ((0.0,), False)


def test_progress_bar_draws_only_when_enabled():
    stream = io.StringIO()
    with Progress("encode", 4, enabled=True, stream=stream, interval=0) as bar:
        for _ in range(4):
            bar.update(note="level 3.5")
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "4/4 frames" in text and "[####################]" in text and "level 3.5" in text
    quiet = io.StringIO()
    with Progress("encode", 4, stream=quiet) as bar:  # StringIO is not a terminal
        bar.update()
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------------------------
# Real coding.


def test_encode_info_decode_round_trip(tmp_path, workdir, stream):
    path, encode_out = stream
    assert re.search(r"encoded 3 frames \(130x98, 25 fps\) -> .*: \d+\.\d{4} bpp, \d+\.\d kbps, PSNR \d+\.\d\d dB, "
                     r"\d+\.\d\d fps", encode_out)  # fmt: skip

    from model.fileio import umask

    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask()  # the umask's mode, not mkstemp's 0600
    code, info_out, _ = run_cli_raw(["info", str(path)])
    assert code == 0
    rows = [line.split() for line in info_out.splitlines() if re.match(r"\s+\d+ +[IP] ", line)]
    assert [row[1] for row in rows] == ["I", "P", "I"]
    assert all(float(row[2]) == 3.5 for row in rows)
    assert sum(int(row[3]) for row in rows) < path.stat().st_size

    # Decoding reproduces the encoder's reconstructions: the PSNR against the source is the same.
    png = tmp_path / "frames"
    code, decode_out, err = run_cli_raw(["decode", str(path), str(png), "--reference", str(workdir / "clip.y4m")])
    assert code == 0, err
    assert summary_psnr(decode_out) == summary_psnr(encode_out)
    frames, info = vio.read_video(png)
    assert frames.shape == (3, H, W, 3)

    y4m = tmp_path / "out.y4m"
    assert run_cli_raw(["decode", str(path), str(y4m)])[0] == 0
    again, info = vio.read_video(y4m)
    assert again.shape == (3, H, W, 3) and info.fps == 25
    # The y4m holds exactly the 4:2:0 conversion of the decoded frames.
    np.testing.assert_array_equal(again, vio.yuv420_to_rgb(vio.rgb_to_yuv420(frames)))
    fails(["decode", str(path), str(y4m)], 1, "exists", tmp_path)


def test_motion_refine_streams_decode_to_what_the_encoder_measured(tmp_path, workdir):
    """--motion_refine changes only the encoder's choices: a plain decoder reproduces its frames
    (the same PSNR against the source), and decode refuses the flag rather than ignore it."""
    out = tmp_path / "refined.elfvc"
    code, encode_out, err = run_cli_raw(["encode", str(workdir / "clip.y4m"), str(out), "--level=2.5", "--motion_refine"])
    assert code == 0, err
    code, decode_out, err = run_cli_raw(["decode", str(out), str(tmp_path / "refined.y4m"),
                                         "--reference", str(workdir / "clip.y4m")])  # fmt: skip
    assert code == 0, err
    assert summary_psnr(decode_out) == summary_psnr(encode_out)
    fails(["decode", str(out), str(tmp_path / "x.y4m"), "--motion_refine"], 2, "decode does not take --motion_refine", tmp_path)


def test_scenecut_flag_turns_a_cut_into_an_iframe(tmp_path, bikes_frames):
    """A cut from bikes to flat grey after 3 frames, --gop=4: --scenecut=0 keeps the fixed pattern;
    a low threshold makes the cut an I-frame and restarts the GOP there."""
    crop = np.ascontiguousarray(bikes_frames[:3, 40 : 40 + H, 200 : 200 + W])
    clip = np.concatenate([crop, np.full_like(crop, 128)])
    vio.write_video(tmp_path / "cut.y4m", clip, Fraction(25))
    for scenecut, pattern in (("0", "IPPPIP"), ("0.05", "IPPIPP")):
        out = tmp_path / f"cut{scenecut}.elfvc"
        code, _, err = run_cli_raw(["encode", str(tmp_path / "cut.y4m"), str(out), "--gop=4", f"--scenecut={scenecut}"])
        assert code == 0, err
        info = run_cli_raw(["info", str(out)])[1]
        assert "".join(line.split()[1] for line in info.splitlines() if re.match(r"\s+\d+ +[IP] ", line)) == pattern


def test_encode_an_mp4_directly(tmp_path):
    from conftest import bikes_path

    out = tmp_path / "bikes.elfvc"
    code, text, err = run_cli_raw(["encode", str(bikes_path()), str(out), "--frames=2", "--level=2.25"])
    assert code == 0, err
    assert re.search(r"encoded 2 frames \(640x272, 25 fps\)", text)
    code, info_out, _ = run_cli_raw(["info", str(out)])
    assert "640x272, 25 fps" in info_out and " 2.2500 " in info_out


def test_damaged_streams_leave_no_output(tmp_path, workdir, stream):
    path, _ = stream
    data = path.read_bytes()
    truncated = tmp_path / "truncated.elfvc"
    truncated.write_bytes(data[: len(data) - 40])
    fails(["decode", str(truncated), str(tmp_path / "a.y4m")], 1, "truncat", tmp_path)
    fails(["info", str(truncated)], 1, "truncat", tmp_path)
    fails(["decode", str(workdir / "clip.y4m"), str(tmp_path / "b.y4m")], 1, ".", tmp_path)


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_sigterm_stops_a_job_like_ctrl_c_leaving_nothing(tmp_path, workdir, stream, monkeypatch, command):
    """kill / timeout / a job scheduler's SIGTERM mid-job: exit 143, one line, no partial output."""
    import signal

    from runtime import codec

    name = "encode_frame" if command == "encode" else "decode_frame"
    original = getattr(codec.Encoder if command == "encode" else codec.Decoder, name)

    def then_terminated(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode: mid-job
        return result

    monkeypatch.setattr(codec.Encoder if command == "encode" else codec.Decoder, name, then_terminated)
    source = workdir / "clip.y4m" if command == "encode" else stream[0]
    out = tmp_path / ("x.elfvc" if command == "encode" else "x.y4m")
    fails([command, str(source), str(out), "--level=2"][: 4 if command == "encode" else 3], 143, "^elfvc: error: terminated$",
          tmp_path)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored after the job


def test_y4m_pipes_in_and_out_code_as_files_do(tmp_path, workdir, stream, monkeypatch):
    """`ffmpeg ... -f yuv4mpegpipe - | elfvc encode - OUT` and `elfvc decode IN - | ffplay -`: the
    same stream and the same y4m bytes as through files; the summary goes to stderr."""
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((workdir / "clip.y4m").read_bytes())))
    code, out, err = run_cli_raw(["encode", "-", str(tmp_path / "piped.elfvc"), "--level=3.5", "--gop=2"])
    assert code == 0 and "encoded 3 frames" in out, err
    assert (tmp_path / "piped.elfvc").read_bytes() == stream[0].read_bytes()  # the fixture's, from the file
    raw, err = io.BytesIO(), io.StringIO()
    stdout = io.TextIOWrapper(raw, write_through=True)  # kept: collecting it would close `raw`
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(err):
        code = cli.main(["elfvc", "decode", str(stream[0]), "-"])
    assert code == 0 and "decoded 3 frames" in err.getvalue(), err.getvalue()
    assert run_cli_raw(["decode", str(stream[0]), str(tmp_path / "file.y4m")])[0] == 0
    assert raw.getvalue() == (tmp_path / "file.y4m").read_bytes()
    # The stream itself to standard output (`elfvc encode - - < in.y4m > out.elfvc`).
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((workdir / "clip.y4m").read_bytes())))
    raw, err = io.BytesIO(), io.StringIO()
    stdout = io.TextIOWrapper(raw, write_through=True)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(err):
        code = cli.main(["elfvc", "encode", "-", "-", "--level=3.5", "--gop=2"])
    assert code == 0 and "encoded 3 frames" in err.getvalue() and "-> -:" in err.getvalue(), err.getvalue()
    assert raw.getvalue() == stream[0].read_bytes()
    # And read back from standard input (`... | elfvc decode - OUT`, `elfvc info -`).
    for command in (["decode", "-", str(tmp_path / "piped.y4m")], ["info", "-"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stream[0].read_bytes())))
        code, out, err = run_cli_raw(command)
        assert code == 0, err
    assert (tmp_path / "piped.y4m").read_bytes() == (tmp_path / "file.y4m").read_bytes()
    assert "3 frames" in out and out.startswith(f"file      <stdin> ({stream[0].stat().st_size} bytes)"), out


def test_decoding_to_pngs_says_the_frame_rate_they_do_not_keep(tmp_path, workdir):
    stream = tmp_path / "s.elfvc"
    assert run_cli_raw(["encode", str(workdir / "clip.y4m"), str(stream), "--frames=1", "--fps=30000/1001", "--level=0"])[0] == 0
    code, _, err = run_cli_raw(["decode", str(stream), str(tmp_path / "frames")])
    assert code == 0 and "note: a folder of PNGs keeps no frame rate; the stream's is 30000/1001 fps" in err, err
    code, _, err = run_cli_raw(["decode", str(stream), str(tmp_path / "clip.y4m")])
    assert code == 0 and "frame rate" not in err, err  # a y4m keeps it


def test_encode_fails_cleanly_on_a_truncated_input(tmp_path, workdir):
    broken = tmp_path / "broken.y4m"
    data = (workdir / "clip.y4m").read_bytes()
    broken.write_bytes(data[: len(data) - 1000])  # the third frame is cut short
    # Said before any coding (the y4m's frame headers are walked when it is opened), with the way out.
    import runtime.stream

    def no_coding(*args, **kwargs):
        raise AssertionError("coded frames of a file known to be truncated")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.stream, "encode_video", no_coding)
        fails(["encode", str(broken), str(tmp_path / "x.elfvc"), "--level=2"], 1,
              r"frame 2 is truncated .* the file ends inside it.*; --frames 2 codes the whole frames before it", tmp_path)
    # --frames 2 never reads the broken third frame.
    code, text, err = run_cli_raw(["encode", str(broken), str(tmp_path / "x.elfvc"), "--level=2", "--frames=2"])
    assert code == 0 and "encoded 2 frames" in text, err


def test_caps_hold_for_every_frame_that_can_meet_them(tmp_path, workdir, stream):
    """--max_bpp_p below what level 3.5 spends: every P-frame fits, or sits at level 0."""
    path, _ = stream
    _, info_out, _ = run_cli_raw(["info", str(path)])
    rows = [line.split() for line in info_out.splitlines() if re.match(r"\s+\d+ +[IP] ", line)]
    cap = 0.8 * float(rows[1][4])
    out = tmp_path / "capped.elfvc"
    code, _, err = run_cli_raw(["encode", str(workdir / "clip.y4m"), str(out), "--max_bpp_p", str(cap), "--gop=0"])
    assert code == 0, err
    _, info_out, _ = run_cli_raw(["info", str(out)])
    rows = [line.split() for line in info_out.splitlines() if re.match(r"\s+\d+ +[IP] ", line)]
    assert [row[1] for row in rows] == ["I", "P", "P"]
    assert float(rows[0][2]) == 7.0  # no I cap: the top level
    for row in rows[1:]:
        assert float(row[4]) <= cap or float(row[2]) == 0.0
    missed = sum(float(row[4]) > cap for row in rows[1:])
    notes = [line for line in err.splitlines() if line.startswith("elfvc: note: --max_bpp_p")]
    assert len(notes) == (1 if missed else 0), err
    # Goals no level meets are said, not passed over in silence (exit 0: the file is whole).
    code, _, err = run_cli_raw(["encode", str(workdir / "clip.y4m"), str(out), "--overwrite", "--max_bpp_i=0.0001",
                                "--min_psnr=99"])
    assert code == 0, err
    assert re.search(r"^elfvc: note: --max_bpp_i 0.0001 not met on 1 of 1 I-frame \(the least of them, at level 0: ", err, re.M), err
    assert re.search(r"^elfvc: note: --min_psnr 99 dB not met on 3 of 3 frames \(a cap or the top level kept them under", err, re.M), err


def test_plot_rc_writes_a_png(tmp_path, workdir):
    out = tmp_path / "rc.png"
    code, text, err = run_cli_raw(["plot_rc", str(workdir / "clip.y4m"), str(out), "--frames=2", "--gop=2"])
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = [line.split("  ")[0] for line in text.splitlines()[:4]]
    assert [n.split()[0] for n in names] == ["constant", "max", "min", "target"]
    assert sorted(os.listdir(tmp_path)) == ["rc.png"]
    fails(["plot_rc", str(workdir / "clip.y4m"), str(tmp_path / "rc.jpg")], 2, "writes a .png", tmp_path)


def test_visualize_writes_fig5_and_fig4_pngs(tmp_path, workdir):
    out = tmp_path / "viz.png"
    code, text, err = run_cli_raw(["visualize", str(workdir / "clip.y4m"), str(out), "--frame=2", "--level=5"])
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["viz.png", "viz_bits.png"]
    for name in ("viz.png", "viz_bits.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "level 0 " in text and "level 7 " in text
    fails(["visualize", str(workdir / "clip.y4m"), str(tmp_path / "v2.png"), "--frame=0"], 2, "frame 0 is the I-frame", tmp_path)
    fails(["visualize", str(workdir / "clip.y4m"), str(tmp_path / "v2.png"), "--frame=9"], 1, "past its end", tmp_path)
    fails(["visualize", str(workdir / "clip.y4m"), str(tmp_path / "v2.png"), "--level=9"], 2, r"--level must lie in \[0, 7\]", tmp_path)


def test_a_broken_backend_is_exit_1_not_a_usage_error(tmp_path, workdir, monkeypatch):
    """Only an unknown --backend name is a command-line mistake (exit 2). A backend that exists but
    refuses to start -- e.g. an ONNX export that fails its manifest hashes (ManifestError, a
    ValueError) -- is a broken installation: exit 1, one line, no output file."""
    import runtime.backends as backends
    from export.manifest import ManifestError

    def broken(name, bundle, **options):
        raise ManifestError("export/onnx/iframe_synthesis.onnx does not match its manifest's SHA-256: the export is damaged")

    monkeypatch.setattr(backends, "get_backend", broken)
    fails(["encode", str(workdir / "clip.y4m"), str(tmp_path / "x.elfvc"), "--backend=onnx"], 1, "the export is damaged$",
          folder=tmp_path)


def test_tile_sets_the_substream_layout_and_refuses_bad_sizes(tmp_path, workdir):
    """--tile (pixels) reaches the stream header and cuts the frames into more substreams; the
    default codes this 130x98 clip as one tile (runtime.entropy_coding.SubstreamLayout.for_frame);
    a size that is not a multiple of 64 pixels is a usage error before anything is written."""
    clip = str(workdir / "clip.y4m")
    counts = {}
    for tile, shown in ((None, "one tile (192 px)"), (64, "64-pixel tiles")):
        out = tmp_path / f"t{tile}.elfvc"
        code, _, err = run_cli_raw(["encode", clip, str(out), "--level=2", "--gop=2", *([f"--tile={tile}"] if tile else [])])
        assert code == 0, err
        code, text, err = run_cli_raw(["info", str(out)])
        assert f"layout    {shown}, 1 channel group per coded layer" in text, text
        counts[tile] = [int(n) for n in re.findall(r"^\s*\d+\s+[IP]\s+\S+\s+\d+\s+\S+\s+(\d+)$", text, re.M)]
        code, _, err = run_cli_raw(["decode", str(out), str(tmp_path / f"t{tile}.y4m")])
        assert code == 0, err
    # I-frame: one codelayer, q1 + q0 substreams; P-frame: two codelayers. 130x98 pads to 192x128:
    # 64-pixel tiles cut q0 (12x8 cells) and q1 (3x2 cells) alike into 3 x 2.
    assert counts == {None: [2, 4, 2], 64: [12, 24, 12]}, counts
    assert (vio.read_video(tmp_path / "tNone.y4m")[0] == vio.read_video(tmp_path / "t64.y4m")[0]).all()
    for bad in ("100", "0", "-64", str(1 << 17)):
        fails(["encode", clip, str(tmp_path / "x.elfvc"), f"--tile={bad}"], 2, r"--tile must be a multiple of 64 in \[64, 65536\]", tmp_path)
    fails(["decode", str(tmp_path / "t64.elfvc"), str(tmp_path / "x.y4m"), "--tile=64"], 2, "decode does not take --tile", tmp_path)


def test_the_default_layout_codes_a_picture_wider_than_512_px_as_one_tile(tmp_path, bikes_frames):
    """A 520x64 strip of bikes: one tile per coded layer by default (two 512-px tiles before
    session 17, and with --tile=512), so the default stream is smaller."""
    clip = tmp_path / "strip.y4m"
    vio.write_video(clip, np.ascontiguousarray(bikes_frames[:2, :64, :520]), Fraction(25))
    sizes, counts = {}, {}
    for tile in (None, 512):
        out = tmp_path / f"s{tile}.elfvc"
        code, _, err = run_cli_raw(["encode", str(clip), str(out), "--level=1", "--gop=2", *([f"--tile={tile}"] if tile else [])])
        assert code == 0, err
        code, text, err = run_cli_raw(["info", str(out)])
        counts[tile] = [int(n) for n in re.findall(r"^\s*\d+\s+[IP]\s+\S+\s+\d+\s+\S+\s+(\d+)$", text, re.M)]
        sizes[tile] = out.stat().st_size
    assert counts == {None: [2, 4], 512: [4, 8]}, counts
    assert sizes[None] < sizes[512], sizes


def test_a_model_without_a_card_is_noted_where_tools_fall_back_on_coding_defaults():
    """level_sweep and bench_rd on a folder made from a run's weights (no model card) code at GOP 16
    with P-frames at the I-frames' level unless told: they say so, naming the flags; a carded
    model, or both flags given, need no note."""
    import dataclasses

    from model import bundle

    small = bundle.shipped_bundle("small")
    bare = dataclasses.replace(small, card={})
    for gop, offset_given in ((None, False), (8, False), (None, True)):
        note = bare.uncarded_note(gop, offset_given)
        assert note and "no model card" in note and "--gop and --p_level_offset" in note, note
        assert f"GOP {gop or 16}" in note and ("the I-frames' level" in note) != offset_given, note
    assert bare.uncarded_note(8, True) is None
    assert bare.uncarded_note(1, False) is None  # all-intra: no P-frames to offset
    assert small.uncarded_note(None, False) is None  # the shipped card says


def test_a_missed_target_says_which_flag_held_it_back():
    """A clip more than 10% off its target names the reason where the flags give one: the
    model's range, caps below the target's budgets, a PSNR floor above them (a review measured
    -20% with --max_bpp_p and +29% with --min_psnr, each noted without a reason)."""
    def notes(argv, stats, total_bits):
        fv = cli.define_flags()
        fv(["elfvc", *argv])
        return cli.unmet_notes(fv, stats, 320 * 180, Fraction(25), total_bits, 7.0)

    mid = [cli.FrameStat(i, "I" if i == 0 else "P", 3.0, 4000, 30.0) for i in range(4)]  # 0.069 bpp: under the cap
    bits_at = lambda kbps: round(kbps * 1000 * 4 / 25)  # noqa: E731 - 4 frames at 25 fps
    assert notes(["--target_kbps=200"], mid, bits_at(200)) == []
    capped = notes(["--target_kbps=200", "--max_bpp_p=0.08"], mid, bits_at(159.2))
    assert capped == ["note: the clip came out at 159.2 kbps against --target_kbps 200: the caps (--max_bpp_i / "
                      "--max_bpp_p) win over the target"], capped
    floored = notes(["--target_kbps=60", "--min_psnr=23.5"], mid, bits_at(77.2))
    assert floored == ["note: the clip came out at 77.2 kbps against --target_kbps 60: the --min_psnr 23.5 dB floor "
                       "raised frames above their budgets"], floored
    bottom = [cli.FrameStat(i, "P", 0.0, 5000, 30.0) for i in range(4)]
    assert notes(["--target_kbps=10"], bottom, bits_at(27.6))[0].endswith("every frame at level 0, the least this model spends on this clip")
    assert notes(["--target_kbps=200"], mid, bits_at(150))[0].endswith("against --target_kbps 200")  # no reason to give
