"""benchmarks/bench_fps.py: the GOP-16 FPS arithmetic, one real timing of each kind, the table,
and the CLI's errors. Speed itself is recorded by running the benchmark, never asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import types

import numpy as np
import pytest

from benchmarks import bench_fps
from benchmarks.bench_fps import FpsRow, _Samples
from runtime.types import FrameType


def test_gop_fps_and_entropy_share_by_hand():
    """t_I = 1 s, t_P = 0.5 s: a 16-frame GOP takes 1 + 15 * 0.5 = 8.5 s -> 16 / 8.5 FPS; with
    0.1 s / 0.05 s of entropy coding the share is (0.1 + 0.75) / 8.5 = 10 %."""
    samples = _Samples()
    for t_i, e_i in [(0.9, 0.1), (1.0, 0.1), (5.0, 0.1)]:  # medians ignore the outlier
        samples.add(FrameType.I, t_i, e_i)
    for t_p in [0.5, 0.5, 0.4, 0.6]:
        samples.add(FrameType.P, t_p, 0.05)
    fps, share, t_i, t_p = samples.gop_fps()
    assert (t_i, t_p) == (1.0, 0.5)
    assert fps == pytest.approx(16 / 8.5)
    assert share == pytest.approx(0.1)


@pytest.mark.slow  # ~30 s, nearly all of it tf.function tracing of a fresh backend
def test_elfvc_row_on_real_content(bikes_frames):
    from model.bundle import shipped_bundle

    frames = np.ascontiguousarray(bikes_frames[:2, :192, :256])
    row = bench_fps.elfvc_row(shipped_bundle("small"), "tf", "test", frames, level=3.0, warmup=0, repeats=1)
    assert row.note == "" and row.frames == 2 and (row.width, row.height) == (256, 192)
    for value in (row.encode_fps, row.decode_fps, row.bpp, row.encode_i_s, row.encode_p_s):
        assert value is not None and math.isfinite(value) and value > 0
    assert 0 < row.entropy_share_encode < 1 and 0 < row.entropy_share_decode < 1
    assert not row.motion_refine


@pytest.mark.slow  # ~30 s of tracing, as above
def test_elfvc_row_times_the_motion_choice_when_asked(bikes_frames):
    from model.bundle import untrained_bundle
    from runtime.motion_refine import MotionRefinement

    frames = np.ascontiguousarray(bikes_frames[:2, :128, :192])
    bundle = untrained_bundle("small", motion_search_radius=4)
    row = bench_fps.elfvc_row(bundle, "tf", "test", frames, 3.0, 0, 1, MotionRefinement(lambda_scale=0.0))
    assert row.motion_refine and row.note == ""
    assert row.encode_p_s > 0 and row.decode_p_s > 0 and row.bpp > 0


def test_x264_row_on_real_content(bikes_frames, tmp_path):
    from runtime.video_io import write_video

    y4m = tmp_path / "c.y4m"
    write_video(y4m, np.concatenate([bikes_frames[:, :192, :256]] * 2), fps=25)
    x = bench_fps.x264_row(y4m, "test", 256, 192, count=16, repeats=1, work=tmp_path)
    assert x.encode_fps > 0 and x.decode_fps > 0 and 0 < x.bpp < 24
    assert x.frames == 16 and "bframes=0" in x.note


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_a_missing_backend_is_a_row_with_a_note(bikes_frames):
    # The backend fails to load before it looks at the model, so a stand-in bundle will do.
    bundle = types.SimpleNamespace(config=types.SimpleNamespace(name="small"))
    row = bench_fps.elfvc_row(bundle, "tensorrt", "test", bikes_frames[:2, :64, :64], 3.0, 0, 1)
    assert row.encode_fps is None and row.note.startswith("tensorrt unavailable")


def test_markdown_table_gives_ratios_to_x264():
    rows = [
        FpsRow("x264", "", "", "cif", 352, 288, encode_fps=80.0, decode_fps=1000.0, bpp=0.094),
        FpsRow("elfvc", "small", "tf", "cif", 352, 288, encode_fps=4.0, decode_fps=5.0,
               entropy_share_encode=0.04, entropy_share_decode=0.06, bpp=0.2),  # fmt: skip
    ]
    table = bench_fps.fps_markdown(rows)
    line = [ln for ln in table.splitlines() if ln.startswith("| small | tf | cif")][0]
    assert "0.05 / 0.005" in line and "4% / 6%" in line and "71 / 139" in line and "| 80.0 / 1000 | 0.094 |" in line
    meta = {"machine": "x86_64, 2 CPUs", "load_average_1min": {"start": 0.1, "end": 0.3}, "level": 3.0, "frames": 8,
            "warmup": 1, "repeats": 2, "fps_definition": "16-frame GOP"}
    assert bench_fps.fps_markdown(rows, meta).startswith("x86_64, 2 CPUs; load average 0.1 at the start, 0.3 at the end")
    rows.append(FpsRow("elfvc", "small", "tf", "cif", 352, 288, encode_fps=2.0, decode_fps=5.0, motion_refine=True))
    line = [ln for ln in bench_fps.fps_markdown(rows).splitlines() if "R-D motion choice" in ln]
    assert len(line) == 1 and line[0].startswith("| small (R-D motion choice) | tf | cif") and "| 2 |" in line[0]


@pytest.mark.parametrize(
    "flag, message",
    [("--sizes=4k", "--sizes: unknown 4k"), ("--frames=1", "--frames must be at least 2"),
     ("--backends=cuda", "--backends: unknown cuda"), ("--configs=huge", "--configs: unknown huge")],  # fmt: skip
)
def test_cli_rejects_bad_flags(flag, message, tmp_path, capsys):
    assert bench_fps.main(["bench_fps", flag, f"--out_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench_fps: error: ") and message in err[0]
    assert list(tmp_path.iterdir()) == []


def test_gpu_table_combines_gpu_networks_with_this_cpus_range_coder(tmp_path, capsys):
    """--gpu_table: FPS = 16 / (t_I + 15 t_P) with t = the table's GPU network time + the range
    coder's time measured here, for every thread count; rows the table lacks are left out."""
    table = {
        "gpu": "Test GPU", "rows": [
            {"config": "small", "size": "cif", "functions": {
                "i_encode": {"ms": 1.0}, "i_decode": {"ms": 0.5}, "p_encode": {"ms": 3.0}, "p_decode": {"ms": 2.0}}},
            {"config": "paper", "size": "cif", "functions": {"i_encode": {"error": "capture failed"}}},
        ],
    }
    path = tmp_path / "table2.json"
    path.write_text(json.dumps(table))
    assert bench_fps.main(["prog", f"--gpu_table={path}", "--rc_threads=1,2", f"--out_dir={tmp_path / 'o'}"]) == 0
    data = json.loads((tmp_path / "o" / "fps_gpu.json").read_text())
    assert [(r["config"], r["rc_threads"]) for r in data["rows"]] == [("small", 1), ("small", 2)]
    for r in data["rows"]:
        n, c = r["net_ms"], r["rc_ms"]
        assert r["networks_encode_fps"] == pytest.approx(16000 / (1.0 + 15 * 3.0))
        assert r["encode_fps"] == pytest.approx(16000 / (n["i_encode"] + c["encode_i"] + 15 * (n["p_encode"] + c["encode_p"])))
        assert r["decode_fps"] == pytest.approx(16000 / (n["i_decode"] + c["decode_i"] + 15 * (n["p_decode"] + c["decode_p"])))
        assert 0 < r["encode_fps"] < r["networks_encode_fps"]
        assert r["rc_bpp"] == pytest.approx(0.2, rel=0.05)  # the drawn symbols cost what was asked
    assert data["meta"]["networks_on"] == "Test GPU" and "CPUs" in data["meta"]["range_coding_on"]
    assert "Range coding: this CPU" in capsys.readouterr().out
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"rows": []}))
    assert bench_fps.main(["prog", f"--gpu_table={empty}", f"--out_dir={tmp_path / 'e'}"]) == 1
    assert bench_fps.main(["prog", f"--gpu_table={path}", "--rc_threads=0", f"--out_dir={tmp_path / 'e'}"]) == 2
