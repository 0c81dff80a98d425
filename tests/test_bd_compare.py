"""benchmarks/bd_compare.py: BD-rate between saved runs, every model its own curve, curves joined
across files, and its errors (codes nothing, no TensorFlow)."""

from __future__ import annotations

import pytest

from benchmarks import bd_compare
from benchmarks.schema import RDPoint, RDReport

RATES, PSNR = [0.05, 0.1, 0.2, 0.4], [30.0, 33.1, 35.9, 38.3]


def _pt(codec, bpp, psnr, clip, model=""):
    # 80 frames of 100x100 at 25 fps: bytes = bpp * 1e5, whole for the rates used here.
    return RDPoint.make(codec, clip, f"s{bpp}", bpp, int(round(bpp * 1e5)), 80, 100, 100, 25.0,
                        {"psnr_rgb": psnr, "ms_ssim": 1 - 1 / psnr}, model=model)  # fmt: skip


def _save(path, points):
    RDReport(points=tuple(points)).save(path)
    return str(path)


def _curve(codec, scale, clip, model=""):
    return [_pt(codec, r * scale, q, clip, model) for r, q in zip(RATES, PSNR)]


@pytest.fixture()
def runs(tmp_path):
    """old: model s1 at the anchor's rates on clips a and b, plus x264; new: model s2 at half
    s1's rate on a and at s1's on b, plus the same x264 run."""
    x264 = _curve("x264", 1.0, "a") + _curve("x264", 1.0, "b")
    old = _save(tmp_path / "old.json", x264 + _curve("elfvc", 1.0, "a", "s1: runs/x (base)") + _curve("elfvc", 1.0, "b", "s1: runs/x (base)"))
    new = _save(tmp_path / "new.json", x264 + _curve("elfvc", 0.5, "a", "s2: runs/y (base)") + _curve("elfvc", 1.0, "b", "s2: runs/y (base)"))
    return old, new


def _table(out: str, title: str) -> dict:
    """{curve: [cells]} of the table whose heading starts with `title`."""
    block = out.split(title, 1)[1].split("\n\n")[1]
    return {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in block.splitlines()[2:]}


def test_models_stay_separate_curves_across_files(runs, capsys):
    assert bd_compare.main(["bd_compare", *runs, "--reference=s1"]) == 0
    psnr = _table(capsys.readouterr().out, "BD-rate against s1, PSNR RGB")
    assert psnr["s2"] == ["-50.0%", "+0.0%", "-25.0%"]  # clips a, b, then their mean
    assert psnr["x264"] == ["+0.0%", "+0.0%", "+0.0%"]  # the anchor held by both files joins once


def test_default_reference_is_x264_and_curves_filter(runs, capsys):
    assert bd_compare.main(["bd_compare", *runs, "--curves=s2", "--metrics=psnr_rgb"]) == 0
    out = capsys.readouterr().out
    assert "MS-SSIM" not in out
    assert _table(out, "BD-rate against x264, PSNR RGB") == {"s2": ["-50.0%", "+0.0%", "-25.0%"]}


def test_a_curve_that_differs_between_files_needs_labels(tmp_path, capsys):
    a = _save(tmp_path / "a.json", _curve("x264", 1.0, "c") + _curve("elfvc", 1.0, "c", "default: m (base)"))
    b = _save(tmp_path / "b.json", _curve("x264", 1.0, "c") + _curve("elfvc", 0.5, "c", "default: m2 (base)"))
    assert bd_compare.main(["bd_compare", a, b]) == 1
    err = capsys.readouterr().err
    assert "curve default on c differs" in err and err.count("\n") == 1
    assert bd_compare.main(["bd_compare", f"old={a}", f"new={b}", "--reference=old/default", "--metrics=psnr_rgb"]) == 0
    assert _table(capsys.readouterr().out, "BD-rate against old/default")["new/default"] == ["-50.0%", "-50.0%"]


def test_a_clip_without_overlap_says_why(tmp_path, capsys):
    far = [_pt("elfvc", r, q - 20.0, "c", "low: m (base)") for r, q in zip(RATES, PSNR)]  # no common quality range
    path = _save(tmp_path / "r.json", _curve("x264", 1.0, "c") + far)
    assert bd_compare.main(["bd_compare", path, "--metrics=psnr_rgb"]) == 0
    out = capsys.readouterr().out
    assert "| low | n/a* | n/a* |" in out and "\\* low, c: " in out


@pytest.mark.parametrize("args, status, message", [
    ([], 2, "give at least one results.json"),
    (["missing.json"], 1, "missing.json: no such file"),
    (["{old}", "--metrics=psnr"], 2, "--metrics: unknown psnr"),
    (["{old}", "--reference=x265"], 1, "--reference x265: no such curve; the files hold s1, x264"),
    (["{old}", "--curves=s9"], 1, "--curves: no curve s9"),
    (["=x.json"], 2, "a file's label must be non-empty"),
    (["{bad}"], 1, "not an R-D results file"),
    (["{binary}"], 1, "cannot read"),
    (["{old}", "--curves=x264", "--reference=x264"], 1, "--curves names only the reference"),
])  # fmt: skip
def test_bad_input_is_one_line(runs, tmp_path, capsys, args, status, message):
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    args = [a.format(old=runs[0], bad=tmp_path / "bad.json", binary=tmp_path / "binary.json") for a in args]
    assert bd_compare.main(["bd_compare", *args]) == status
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0


def test_a_row_missing_a_clip_or_coded_over_other_frames_has_no_mean(tmp_path, capsys):
    ref = _save(tmp_path / "ref.json", _curve("x264", 1.0, "a") + _curve("x264", 1.0, "b") + _curve("x264", 1.0, "c"))
    short = [RDPoint.make("elfvc", "c", f"s{r}", r, int(round(r * 1e5)), 8, 100, 100, 25.0, {"psnr_rgb": q},
                          model="m: x (base)") for r, q in zip(RATES, PSNR)]  # 8 frames where x264 coded 80
    new = _save(tmp_path / "n=1.json", _curve("elfvc", 0.5, "a", "m: x (base)") + short)  # a "=" in a path
    assert bd_compare.main(["bd_compare", ref, new, "--metrics=psnr_rgb"]) == 0
    out = capsys.readouterr().out
    assert _table(out, "BD-rate against x264")["m"] == ["-50.0%", "n/a*", "n/a*", "n/a*"]  # a, b, c, mean
    assert "\\* m, b: no points on this clip" in out
    assert "\\* m, c: other frames: 8 of 100x100 against x264's 80 of 100x100" in out


def test_a_sets_averaged_curve_has_its_column_and_stays_out_of_the_mean(tmp_path, capsys):
    """bench_image's results: the set's averaged curve ("kodak") is a column of its own, and the
    mean is over the images alone (bench_image's mean of per-image BD-rates)."""
    points = [p for clip in ("i1", "i2", "kodak") for p in _curve("jpeg", 1.0, clip)]
    points += _curve("elfvc", 0.5, "i1", "m: x (base)") + _curve("elfvc", 1.0, "i2", "m: x (base)")
    points += _curve("elfvc", 0.6, "kodak", "m: x (base)")
    path = tmp_path / "image.json"
    RDReport(points=tuple(points), meta={"set": {"name": "kodak"}}).save(path)
    assert bd_compare.main(["bd_compare", str(path), "--reference=jpeg", "--metrics=psnr_rgb"]) == 0
    assert _table(capsys.readouterr().out, "BD-rate against jpeg")["m"] == ["-50.0%", "+0.0%", "-40.0%", "-25.0%"]


def test_a_metric_nobody_measured_says_so(runs, capsys):
    assert bd_compare.main(["bd_compare", runs[0], "--metrics=vmaf"]) == 0
    assert "\\* s1, a: no vmaf values (measured with --novmaf?)" in capsys.readouterr().out


def test_an_anchor_that_differs_between_files_is_refused(tmp_path, capsys):
    a = _save(tmp_path / "a.json", _curve("x264", 1.0, "c"))
    b = _save(tmp_path / "b.json", _curve("x264", 0.9, "c"))
    assert bd_compare.main(["bd_compare", a, b]) == 1
    assert "curve x264 on c differs between" in capsys.readouterr().err


def test_holding_curve_finds_a_model_curve_in_any_earlier_run(tmp_path):
    a = _save(tmp_path / "a.json", _curve("x264", 1.0, "a") + _curve("elfvc", 1.0, "a", "s7: runs/x (base, id 0123456789ab, GOP 16)"))
    b = _save(tmp_path / "b.json", _curve("x264", 1.0, "a") + _curve("elfvc", 1.0, "a", "s7: base (base, id ba9876543210, GOP 16)"))
    missing = tmp_path / "none.json"
    assert bd_compare.holding_curve([missing, a, b], "s7") == a
    assert bd_compare.holding_curve([missing, a, b], "s7", "ba9876543210ffff") == b  # the same step, other weights: passed over
    assert bd_compare.holding_curve([a, b], "s8") == ""
    assert bd_compare.holding_curve([a], "s7", "ffffffffffff") == ""


def _level(bpp, psnr, clip, model, level, types, frames=80):
    return RDPoint.make("elfvc", clip, f"level={level}", level, int(round(bpp * 1e5 * frames / 80)), frames, 100, 100, 25.0,
                        {"psnr_rgb": psnr, "ms_ssim": None}, model=model, frame_types=types)  # fmt: skip


def test_by_setting_compares_shared_levels_with_their_i_frames(tmp_path, capsys):
    # the reference swept levels 0-3; the test coded levels 0 and 2 (and 5, which the reference
    # lacks), level 0 with 10% more bits, 1 dB less and two more I-frames; on clip b other frames.
    ref = _save(tmp_path / "ref.json", [_level(0.01 * (k + 1), 30.0 + k, "a", "s1: x", k, "IPPPIPPP") for k in range(4)]
                + [_level(0.02, 31.0, "b", "s1: x", 0, "IPPP")])  # fmt: skip
    new = _save(tmp_path / "new.json", [_level(0.011, 29.0, "a", "s2: y", 0, "IPIPIPIP"),
                                        _level(0.03, 32.5, "a", "s2: y", 2, "IPPPIPPP"),
                                        _level(0.09, 36.0, "a", "s2: y", 5, "IPPPIPPP"),
                                        _level(0.02, 31.0, "b", "s2: y", 0, "IPPP", frames=40)])  # fmt: skip
    rows = bd_compare.setting_rows(bd_compare.join_curves([("", n, RDReport.load(n)) for n in (ref, new)]), "s1", ["s2"],
                                   ["psnr_rgb", "ms_ssim"])  # fmt: skip
    assert [(r["clip"], r["setting"]) for r in rows] == [("a", "level=0"), ("a", "level=2")]
    assert rows[0]["bpp_change"] == pytest.approx(0.1) and rows[0]["psnr_rgb"] == pytest.approx(-1.0)
    assert (rows[0]["i_frames"], rows[0]["ref_i_frames"]) == (4, 2) and rows[0]["ms_ssim"] is None
    assert rows[1]["bpp_change"] == pytest.approx(0.0) and rows[1]["psnr_rgb"] == pytest.approx(0.5)
    assert bd_compare.main(["bd_compare", ref, new, "--reference=s1", "--by_setting", "--metrics=psnr_rgb"]) == 0
    out = capsys.readouterr().out
    assert "| s2 | a | level=0 | 0.0110 | +10.0% | -1.00 | 4 (2) |" in out and "BD-rate" not in out
    assert bd_compare.main(["bd_compare", ref, new, "--reference=s1", "--curves=s2", "--by_setting"]) == 0
    assert "| s2 | a | level=2 | 0.0300 | +0.0% | +0.50 |  | 2 (2) |" in capsys.readouterr().out
