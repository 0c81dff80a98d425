"""benchmarks/schema.py, plot.py and bench_rd.py: the shared R-D schema, BD tables, App. I
merging, the CLIs' error handling, and one tiny end-to-end comparison against x264."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest

from benchmarks import bench_rd, plot
from benchmarks.schema import METRICS, RDPoint, RDReport, SchemaError, merged_curve
from conftest import bikes_path

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)


def _pt(codec, bpp, psnr, clip="c", model="", setting=None):
    # 80 frames of 100x100 at 25 fps: bytes = bpp * 1e5, whole for the rates used here.
    nbytes = int(round(bpp * 100 * 100 * 80 / 8))
    return RDPoint.make(codec, clip, setting or f"s{bpp}", bpp, nbytes, 80, 100, 100, 25.0,
                        {"psnr_rgb": psnr, "ms_ssim": 1 - 1 / psnr}, model=model)  # fmt: skip


def test_point_derives_bpp_and_kbps_from_bytes():
    p = RDPoint.make("x264", "clip", "crf=23", 23, 1000, 10, 64, 32, 25.0, {"psnr_rgb": 30.0})
    assert p.bpp == pytest.approx(8000 / (10 * 64 * 32))
    assert p.kbps == pytest.approx(8.0 / (10 / 25.0))  # 8000 bits over 0.4 s
    assert set(p.metrics) == set(METRICS) and p.metrics["vmaf"] is None
    with pytest.raises(SchemaError, match="unknown metrics"):
        RDPoint.make("x264", "clip", "crf=23", 23, 1000, 10, 64, 32, 25.0, {"psnr": 30.0})
    with pytest.raises(SchemaError, match="must be positive"):
        RDPoint.make("x264", "clip", "crf=23", 23, 0, 10, 64, 32, 25.0, {})


def test_report_round_trips_through_strict_json(tmp_path):
    points = (_pt("x264", 0.1, 30.0), _pt("elfvc", 0.1, math.inf))
    report = RDReport(points=points, meta={"note": "x"})
    path = tmp_path / "r.json"
    report.save(path)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data["schema"] == "elfvc-rd/1"
    back = RDReport.load(path)
    assert back.points[0] == points[0]
    assert back.points[1].metrics["psnr_rgb"] is None  # +inf is stored as null
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(SchemaError, match="not an R-D results file"):
        RDReport.load(tmp_path / "bad.json")


def test_bd_entries_on_a_hand_case():
    """elfvc = x264 at half the rate on clip a, at the same rate on clip b: -50 %, 0 %, mean -25 %."""
    rates, psnr = [0.05, 0.1, 0.2, 0.4], [30.0, 33.1, 35.9, 38.3]
    points = []
    for r, q in zip(rates, psnr):
        points += [_pt("x264", r, q, "a"), _pt("elfvc", r / 2, q, "a"), _pt("x264", r, q, "b"), _pt("elfvc", r, q, "b")]
    entries = {(b.clip, b.metric): b for b in bench_rd.bd_entries(RDReport(points=tuple(points)), [("elfvc", "x264")], "cubic")}
    assert entries[("a", "psnr_rgb")].value == pytest.approx(-50.0, abs=1e-9)
    assert entries[("b", "psnr_rgb")].value == pytest.approx(0.0, abs=1e-9)
    assert entries[("mean", "psnr_rgb")].value == pytest.approx(-25.0, abs=1e-9)
    assert ("a", "vmaf") not in entries  # not measured: no entry
    table = plot.bd_markdown(RDReport(points=tuple(points), bd=tuple(entries.values())))
    assert "-50.0%" in table and "**mean**" in table


def test_bd_entries_explain_curves_that_do_not_overlap():
    points = [_pt("x264", r, q) for r, q in [(0.1, 30), (0.2, 33)]]
    points += [_pt("elfvc", r, q) for r, q in [(0.1, 8), (0.2, 9)]]
    entries = bench_rd.bd_entries(RDReport(points=tuple(points)), [("elfvc", "x264")], "cubic")
    clip = [b for b in entries if b.clip == "c" and b.metric == "psnr_rgb"][0]
    assert clip.value is None and "do not overlap" in clip.note
    mean = [b for b in entries if b.clip == "mean" and b.metric == "psnr_rgb"][0]
    assert mean.value is None


def test_several_models_merge_by_upper_convex_hull():
    """App. I: two models' points; the merged curve is the hull (see test_bdrate's hand case)."""
    a = [_pt("elfvc", r, q, model="low") for r, q in [(0.1, 30), (0.2, 34), (0.4, 36), (0.8, 37)]]
    b = [_pt("elfvc", r, q, model="high") for r, q in [(0.2, 33), (0.4, 37), (0.8, 40), (1.6, 41)]]
    report = RDReport(points=tuple(a + b))
    merged = merged_curve(report, "elfvc", "c", "psnr_rgb")
    assert [(p.bpp, p.metric("psnr_rgb"), p.model) for p in merged] == [
        (0.1, 30, "low"), (0.2, 34, "low"), (0.4, 37, "high"), (0.8, 40, "high"), (1.6, 41, "high")]  # fmt: skip
    # One model alone keeps all its points, even a non-convex one.
    single = RDReport(points=tuple(_pt("elfvc", r, q) for r, q in [(0.1, 30), (0.2, 31), (0.4, 36)]))
    assert len(merged_curve(single, "elfvc", "c", "psnr_rgb")) == 3


def test_plot_cli_writes_pngs(tmp_path, capsys):
    points = [_pt(c, r, q) for c in ("x264", "elfvc") for r, q in [(0.1, 30), (0.2, 33), (0.4, 35)]]
    RDReport(points=tuple(points)).save(tmp_path / "r.json")
    assert plot.main(["plot", f"--results={tmp_path / 'r.json'}"]) == 0
    png = tmp_path / "rd_c.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.main(["plot", f"--results={tmp_path / 'missing.json'}"]) == 1
    assert plot.main(["plot"]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "--results is required" in err


def test_bench_rd_cli_rejects_bad_input(tmp_path, capsys):
    assert bench_rd.main(["bench_rd"]) == 1
    assert bench_rd.main(["bench_rd", f"--clips={tmp_path / 'none.y4m'}", f"--out_dir={tmp_path}"]) == 1
    clip = str(bikes_path())
    assert bench_rd.main(["bench_rd", f"--clips={clip}", "--levels=a,b", f"--out_dir={tmp_path}"]) == 1
    assert bench_rd.main(["bench_rd", f"--clips={clip}", "--anchors=x266", f"--out_dir={tmp_path}"]) == 1
    assert bench_rd.main(["bench_rd", "--no_such_flag"]) == 2
    assert bench_rd.main(["bench_rd", f"--clips={clip}", "--models=nosuch", f"--out_dir={tmp_path}"]) == 1
    # Shipped names resolve (the docs' `--models=base`): the duplicate is what is refused.
    assert bench_rd.main(["bench_rd", f"--clips={clip}", "--models=small,small", f"--out_dir={tmp_path}"]) == 1
    assert bench_rd.main(["bench_rd", f"--clips={clip}", "--p_level_offset=inf", f"--out_dir={tmp_path}"]) == 1
    # x264 clamps a CRF above 51 to 51: a label must not name a file another label names.
    assert bench_rd.main(["bench_rd", f"--clips={clip}", "--x264_crf=40,99", f"--out_dir={tmp_path}"]) == 1
    (tmp_path / "file").write_text("mine")  # an --out_dir that is a file: refused before any coding
    assert bench_rd.main(["bench_rd", f"--clips={clip}", f"--out_dir={tmp_path / 'file'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 10 and all(line.startswith("bench_rd: error: ") for line in err)
    assert err[8] == "bench_rd: error: --x264_crf values must lie in [0, 51], got 40,99"
    assert err[9] == f"bench_rd: error: --out_dir: cannot create {tmp_path / 'file'} (File exists)"
    assert (tmp_path / "file").read_text() == "mine"
    assert err[7] == "bench_rd: error: --p_level_offset must be a finite number or a comma list of at most 64 of them, got inf"
    assert "unknown anchor 'x266'" in err[3]
    assert "nosuch does not exist, nor is it a shipped model's name (shipped: base, small)" in err[5]
    assert err[6] == "bench_rd: error: --models: labels must be unique"
    assert not (tmp_path / "results.json").exists()


def test_tiny_end_to_end_against_x264(tmp_path, capsys, monkeypatch, bikes_frames):
    """3 frames of bikes.mp4 (a 320x192 crop written as y4m): this codec at 2 levels vs x264 at 2 CRFs (18 and 45: wide
    enough to bracket the trained model's quality in every metric), through real files.

    With the shipped (trained) model the curves overlap and the BD-rate must be finite; the
    untrained fallback model codes at about 6 dB, where no x264 setting reaches, and the
    report must then say exactly that instead of inventing a number. This codec runs with the
    encoder-side motion refinement and the R-D frame-type choice (both reach the encoder and are
    recorded in the report's meta), and so does a P-frame level offset.
    """
    from fractions import Fraction

    import runtime.stream
    from runtime.video_io import write_video

    clip = tmp_path / "bikes.y4m"
    write_video(clip, bikes_frames[:3, 40:232, 160:480], Fraction(25))

    encode_video, seen = runtime.stream.encode_video, []

    def spy(*args, **kwargs):
        seen.append((kwargs["rd_frame_type"], kwargs["motion_refinement"] is not None, kwargs["controller"].p_offsets))
        return encode_video(*args, **kwargs)

    monkeypatch.setattr(runtime.stream, "encode_video", spy)
    out = tmp_path / "rd"
    argv = ["bench_rd", f"--clips={clip}", "--max_frames=3", "--levels=1,6", "--anchors=x264",
            "--x264_crf=18,45", f"--out_dir={out}", "--motion_refine", "--rd_frame_type", "--p_level_offset=-0.5"]  # fmt: skip
    assert bench_rd.main(argv) == 0, capsys.readouterr().err
    assert seen == [(True, True, (-0.5,))] * 2
    report = RDReport.load(out / "results.json")
    assert report.meta["motion_refine"] is True and report.meta["rd_frame_type"] is True
    assert report.meta["p_level_offset"] == [-0.5]  # the flag's, over the card's pattern (base's card GOP 16 brings P-frames)
    assert sorted((p.codec, p.setting) for p in report.points) == [
        ("elfvc", "level=1"), ("elfvc", "level=6"), ("x264", "crf=18"), ("x264", "crf=45")]  # fmt: skip
    for p in report.points:
        assert p.frames == 3 and (p.width, p.height) == (320, 192) and p.bytes > 0
        assert p.bpp == pytest.approx(8 * p.bytes / (3 * 320 * 192))
        assert all(p.metrics[m] is not None and np.isfinite(p.metrics[m]) for m in METRICS), p
        assert 0 < p.metrics["ms_ssim"] <= 1 and 0 <= p.metrics["vmaf"] <= 100
        # this codec's frame types as coded (GOP 16: an I-frame, then P-frames or R-D I-frames)
        assert (len(p.frame_types) == 3 and p.frame_types[0] == "I" and set(p.frame_types) <= {"I", "P"}
                if p.codec == "elfvc" else p.frame_types == ""), p
    x264 = sorted(report.curve("x264", "bikes"), key=lambda p: p.param)
    assert x264[0].bpp > x264[1].bpp and x264[0].metrics["psnr_rgb"] > x264[1].metrics["psnr_rgb"]
    bd = {(b.clip, b.metric): b for b in report.bd if b.anchor == "x264"}
    assert set(bd) == {(c, m) for c in ("bikes", "mean") for m in METRICS}
    if report.meta["trained"]:
        assert all(b.value is not None and np.isfinite(b.value) for b in bd.values())
    else:
        assert "do not overlap" in bd[("bikes", "psnr_rgb")].note
        assert "UNTRAINED" in (out / "results.md").read_text()
    assert (out / "rd_bikes.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == ["rd_bikes.png", "results.json", "results.md"]


def test_scene_cuts_are_the_iframes_the_gop_did_not_schedule():
    cuts = bench_rd._scene_cuts
    assert cuts("IPPPIPPP", 4) == [] and cuts("IIII", 1) == [] and cuts("", 16) == []
    assert cuts("IPPIPPPI", 4) == [3]  # the cut at 3 restarts the GOP: 7 = 3 + 4 is scheduled
    assert cuts("IPPIPIPP", 4) == [3, 5]
    assert cuts("IPPIPPPIP", 0) == [3, 7]  # GOP 0: only the first frame is scheduled
    # points saved before frame_types existed still load (the field defaults to "")
    data = RDReport(points=(_pt("elfvc", 0.1, 30.0),)).to_json()
    del data["points"][0]["frame_types"]
    assert RDReport.from_json(data).points[0].frame_types == ""


def test_anchors_are_also_compared_with_each_other():
    assert bench_rd.bd_pairs(["x264", "x265", "svtav1"]) == [
        ("elfvc", "x264"), ("elfvc", "x265"), ("elfvc", "svtav1"), ("x265", "x264"), ("svtav1", "x264")]  # fmt: skip


def _nal_types(data: bytes, hevc: bool) -> set:
    """NAL unit types of an Annex-B stream (start codes 00 00 01)."""
    types, i = set(), data.find(b"\x00\x00\x01")
    while i >= 0:
        header = data[i + 3]
        types.add((header >> 1) & 0x3F if hevc else header & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


@pytest.mark.parametrize("name, sei", [("x264", {6}), ("x265", {39, 40})])
def test_anchor_streams_hold_only_what_their_decoder_reads(tmp_path, bikes_frames, name, sei):
    """x264 and x265 write their name, version and options as SEI messages (614 / ~2,300 bytes a
    stream): dropped, as no decoder needs them; the decoded frames are the same as with them."""
    from fractions import Fraction

    from benchmarks import anchors
    from runtime.video_io import write_video

    (tmp_path / "in").mkdir()
    clip = tmp_path / "in" / "bikes.y4m"
    write_video(clip, bikes_frames[:2, 40:104, 160:256], Fraction(25))
    source = anchors.prepare_source(clip, tmp_path)
    anchor = anchors.get_anchor(name)
    run = anchors.run_anchor(anchor, 30, source, tmp_path)
    data = run.stream.read_bytes()
    assert not _nal_types(data, name == "x265") & sei
    plain = tmp_path / f"with_sei{anchor.suffix}"
    cmd = anchors.encode_command(anchor, 30, source, plain)
    cut = cmd.index("-bsf:v")
    subprocess.run(cmd[:cut] + cmd[cut + 2 :], check=True)
    assert _nal_types(plain.read_bytes(), name == "x265") & sei and plain.stat().st_size > len(data) + 500
    with_sei = anchors.decode_yuv420(plain, source.width, source.height)
    for a, b in zip(run.decoded, with_sei):
        np.testing.assert_array_equal(a, b)
