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
    # ... and its finer quantization width puts more latent channels above half a step.
    assert 0 <= rows[0]["active_channels"] < rows[1]["active_channels"] <= rows[1]["latent_channels"] == 128, rows
    assert "channels in use:" in r.stdout


@pytest.fixture
def synthetic(tmp_path):
    """A folder with one 64x64 PNG (the bad-input paths need no real photo)."""
    folder = tmp_path / "synthetic"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "x.png")
    return folder


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--images=/nonexistent"], "no such folder"),
        (["--levels=9"], "levels are 0..7"),
        (["--scales=0,1"], "positive"),
        (["--scales=a"], "comma list"),
        (["--limit=-1"], "--limit"),
        (["--out=/nonexistent/c.json"], "no such folder"),
    ],
)
def test_bad_input_is_one_line(synthetic, capsys, argv, message):
    base = [f"--model={BASE}", f"--images={synthetic}"]
    status = ceiling.main(base + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and message in err[0], err


def test_a_folder_without_images_or_config(tmp_path, capsys):
    assert ceiling.main([f"--model={BASE}", f"--images={tmp_path}"]) == 1
    assert "no images" in capsys.readouterr().err
    assert ceiling.main([f"--model={tmp_path}", f"--images={tmp_path}"]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_scale_one_is_the_mirrors_forward_pass(images, tmp_path):
    """code_image at the model's own step is IFrameCodec.forward in rounding mode, bit for bit:
    the tool measures the codec the trainer trains, not a copy of it."""
    script = f"""
import json, numpy as np, torch
from gpu_train import ceiling, net
from gpu_train.weights import load_npz
model = net.ELFVC(json.load(open("{BASE}/config.json"))).eval()
load_npz(model, "{BASE}/weights.npz")
images, _ = ceiling.load_images("{images}", 1)
for level in (0.0, 3.5, 7.0):
    y, bits = ceiling.code_image(model, images[0], level, 1.0)
    x = torch.from_numpy(images[0]).permute(2, 0, 1)[None]
    lv = torch.tensor([level])
    with torch.no_grad():
        ref, _, code = model.iframe(x, lv, model.embed(lv), "round")
    assert np.array_equal(y, ref[0].permute(1, 2, 0).numpy()) and bits == float(code.bits[0]), level
print("ok")
"""
    r = run_torch(["-c", script])
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
