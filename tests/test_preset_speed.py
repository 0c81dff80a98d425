"""benchmarks/preset_speed.py through main(argv): real streams timed per preset, and clear errors
for bad command lines and unusable clips."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from benchmarks import preset_speed
from runtime.video_io import write_video
from conftest import bikes_path, read_video_frames

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)


def _clip(tmp_path, count: int):
    clip = tmp_path / "bikes_crop.y4m"
    frames = read_video_frames(bikes_path(), count)[:, 64:128, 64:192]
    write_video(clip, np.ascontiguousarray(frames), Fraction(25))
    return clip


def test_fast_codes_the_same_bits_as_medium_at_gop_1(tmp_path, capsys):
    """All-intra, `fast` skips the encoder's synthesis but writes the same stream as `medium`
    (runtime/presets.py): the timed streams are byte-identical, fast reports no PSNR, and every
    row is in speed.json with its real file size."""
    out = tmp_path / "speed"
    args = ["preset_speed", f"--clip={_clip(tmp_path, 5)}", "--model=small", "--presets=medium,fast", "--frames=3",
            "--gop=1", "--level=3", f"--out_dir={out}"]
    assert preset_speed.main(args) == 0
    rows = json.loads((out / "speed.json").read_text())
    assert [r["preset"] for r in rows] == ["medium", "fast"]
    medium, fast = (out / "bikes_crop_medium.elfvc").read_bytes(), (out / "bikes_crop_fast.elfvc").read_bytes()
    assert medium == fast
    for row in rows:
        assert row["frames"] == 3 and (row["width"], row["height"], row["gop"]) == (128, 64, 1)
        assert row["bytes"] == len(medium) and row["bpp"] == pytest.approx(8 * len(medium) / (3 * 128 * 64))
        assert row["fps"] > 0
    assert 15.0 < rows[0]["psnr_rgb"] < 60.0 and rows[1]["psnr_rgb"] is None
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("medium: 3 frames 128x64, GOP 1, level 3:") and " dB, encode " in printed[0]
    assert printed[1].startswith("fast: ") and "n/a" in printed[1]
    assert sorted(p.name for p in out.iterdir()) == ["bikes_crop_fast.elfvc", "bikes_crop_medium.elfvc", "speed.json"]


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["--no_such_flag"], 2, "no_such_flag"),
        ([], 2, "--clip is required"),
        (["--clip=x.y4m", "--presets=medium,turbo"], 2, "--presets takes a comma list of"),
        (["--clip=x.y4m", "--frames=0"], 2, "frames"),
        (["--clip=x.y4m", "stray"], 2, "unexpected arguments"),
        (["--clip={missing}"], 1, "missing.y4m: no such file or folder"),
        (["--clip={short}", "--model=small", "--frames=4"], 1, "has 3 frames; the timing needs 6"),
        (["--clip={short}", "--model=small", "--frames=1", "--level=9"], 1, "level 9.0 is outside the model's range [0, 7]"),
        (["--clip={short}", "--model=small", "--frames=1", "--warmup=1", "--gop=16"], 1,
         "--warmup 1: with P-frames (GOP 16) the warm-up needs 2 frames or more, an I and a P"),
        (["--clip={short}", "--frames=1", "--level=9"], 1, "level 9.0 is outside the model's range [0, 7]"),  # the default model
    ],
)
def test_bad_input_ends_with_one_line(tmp_path, capsys, args, status, message):
    short = _clip(tmp_path, 3)
    args = [a.format(missing=tmp_path / "missing.y4m", short=short) for a in args]
    assert preset_speed.main(["preset_speed", *args]) == status
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bikes_crop.y4m"]  # nothing written
