"""gpu_train/ceiling.py: the I-frame codec's quantized vs unquantized reconstructions.

The measurement runs in the torch environment (a subprocess, as tests/test_gpu_train.py does);
the bad-input paths are refused before torch is imported, so they run here in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from gpu_train import ceiling
from test_gpu_train import run_torch

KODIM = REPO.parent / "shared" / "data" / "eval" / "images" / "kodim01.png"
BASE = REPO / "runtime" / "checkpoints" / "base"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """One real photo crop, 200x150 (center-cropped to 192x128 by the tool)."""
    if not KODIM.is_file():
        pytest.skip(f"{KODIM} is missing (../shared/data, see its README)")
    folder = tmp_path_factory.mktemp("images")
    with Image.open(KODIM) as im:
        im.convert("RGB").crop((300, 200, 500, 350)).save(folder / "crop.png")
    return folder


def test_finer_quantization_costs_bits_and_converges_to_unquantized(images, tmp_path):
    out = tmp_path / "ceiling.json"
    r = run_torch(["-m", "gpu_train.ceiling", f"--model={BASE}", f"--images={images}", "--levels=0,7",
                   "--scales=1,0.25,0.001", f"--out={out}"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "crop.png" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["level"] for row in rows] == [0.0, 7.0]
    for row in rows:
        bpp = [s["bpp"] for s in row["scales"]]
        # A finer quantization step codes the same latents in more bits.
        assert bpp[0] < bpp[1] < bpp[2], bpp
        # At 1/1000 of the step the rounding error is negligible: the unquantized path (latents
        # straight into the synthesis) is the same transform pair.
        assert row["scales"][2]["psnr"] == pytest.approx(row["unquantized_psnr"], abs=0.05)
        assert all(np.isfinite(s["psnr"]) and s["psnr"] > 10 for s in row["scales"])
    # The top level spends more than level 0 at the model's own step.
    assert rows[1]["scales"][0]["bpp"] > rows[0]["scales"][0]["bpp"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--images=/nonexistent"], "no such folder"),
        (["--levels=9"], "levels are 0..7"),
        (["--scales=0,1"], "positive"),
        (["--scales=a"], "comma list"),
        (["--limit=-1"], "--limit"),
    ],
)
def test_bad_input_is_one_line(images, capsys, argv, message):
    base = [f"--model={BASE}", f"--images={images}"]
    status = ceiling.main(base + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and message in err[0], err


def test_a_folder_without_images_or_config(tmp_path, capsys):
    assert ceiling.main([f"--model={BASE}", f"--images={tmp_path}"]) == 1
    assert "no images" in capsys.readouterr().err
    assert ceiling.main([f"--model={tmp_path}", f"--images={tmp_path}"]) == 1
    assert "no config.json" in capsys.readouterr().err
