"""benchmarks/flow_probe.py: the flow-path diagnostic runs on real footage and fails cleanly."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import flow_probe
from conftest import bikes_path


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    folder = tmp_path_factory.mktemp("footage")
    (folder / "bikes.mp4").symlink_to(bikes_path())
    return folder


def _last_row(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    row = json.loads(out[-1])
    assert row["step"] == 2 and out[0].startswith("step     2")
    for key in ("warp_psnr", "copy_psnr", "search_psnr", "flow_bpp", "mean_abs_flow_px", "mean_sigma_px"):
        assert math.isfinite(row[key]), key
    return row


@pytest.mark.slow  # ~9 s, most of it decoding bikes.mp4 whole: kept out of the 4-minute default suite
def test_probe_reports_every_column_for_a_free_flow_field(footage, capsys):
    """The probe's loop, windows and report on real footage, optimizing a free flow field (one
    small traced step; the flow network's run is the slow test below). A free field codes no bits."""
    assert flow_probe.main(["flow_probe", f"--data={footage}", "--steps=2", "--batch=2", "--free_flow", "--model=small"]) == 0
    row = _last_row(capsys)
    assert row["flow_bpp"] == 0.0


# Its training step traces twice (Adam's slots are made inside it): slow. Fast: the free-field run
# above (the probe itself) and test_motion.py's test_pframe_flow_follows_the_searched_motion_within_
# half_a_quantization_step (the block path moves the decoded flow).
@pytest.mark.slow
def test_probe_reports_every_column(footage, capsys):
    code = flow_probe.main(["flow_probe", f"--data={footage}", "--steps=2", "--batch=2", "--reinit",
                            "--reference=original", "--quantization=none", "--motion_search_radius=3"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    row = json.loads(out[-1])
    assert row["step"] == 2 and out[0].startswith("step     2")
    for key in ("warp_psnr", "copy_psnr", "search_psnr", "flow_bpp", "mean_abs_flow_px", "mean_sigma_px"):
        assert math.isfinite(row[key]), key
    # With the block path on and nothing quantized, the decoded flow moves pixels from step 1.
    assert row["mean_abs_flow_px"] > 0.0


@pytest.mark.parametrize("argv, status, message", [
    ([], 2, "--data is required"),
    (["--data=x", "--steps=0"], 2, "--steps and --batch"),
    (["--data=x", "--motion_search_radius=-1"], 2, "--motion_search_radius"),
    (["--data=/nonexistent/footage"], 1, "does not exist"),
])
def test_bad_input_is_one_line_and_nonzero(argv, status, message, capsys):
    assert flow_probe.main(["flow_probe", *argv]) == status
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
