"""runtime/measure_codec.py: the size-vs-estimate and where-the-bits-go tables on a real clip with
the shipped model, and clear errors for bad command lines."""

from __future__ import annotations

import re

import numpy as np
import pytest

from runtime import measure_codec
from conftest import bikes_path

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)


@pytest.fixture(scope="module")
def shipped():
    from runtime.backends import get_backend
    from model.bundle import shipped_bundle

    bundle = shipped_bundle("small")
    with get_backend("tf", bundle) as backend:
        yield bundle, backend


def test_parts_add_up_to_the_coded_frames(shipped, bikes_frames):
    """The per-codelayer parts are the same ideal code lengths as the 'tables' column, split by
    codelayer; the payload is within 2% of them (range-coder flush and escapes), and a P-frame
    GOP fills the flow and residue parts while an all-intra one leaves them empty."""
    bundle, backend = shipped
    frames = bikes_frames[:3]
    result = measure_codec.measure(bundle, backend, frames, "bikes", 3.0)
    assert set(result.parts) == set(measure_codec.PARTS)
    assert sum(result.parts.values()) == pytest.approx(sum(result.table_bits), rel=1e-9)
    payload = float(np.sum(result.payload_bits))
    assert abs(payload / sum(result.parts.values()) - 1) < 0.02
    assert result.parts["iframe q0"] > 0 and result.parts["residue q0"] > 0
    intra = measure_codec.measure(bundle, backend, frames, "bikes", 3.0, gop=1)
    assert set(intra.parts) == {"iframe q0", "iframe q1"}
    # The row: the shares of the parts and the container add up to 100%, the bpp to the total.
    row = measure_codec.breakdown_row(result)
    cells = row.strip("|").split("|")
    total_bpp = float(cells[2])
    bpp = [float(c.split("(")[0]) for c in cells[3:]]
    shares = [float(re.search(r"\(([\d.]+)%\)", c).group(1)) for c in cells[3:]]
    assert len(bpp) == len(measure_codec.PARTS) + 1
    assert sum(bpp) == pytest.approx(total_bpp, abs=5e-4 * len(bpp))
    assert sum(shares) == pytest.approx(100.0, abs=0.1 * len(shares))
    assert total_bpp == pytest.approx(np.sum(result.bits) / (frames.shape[1] * frames.shape[2] * len(frames)), abs=1e-4)


def test_main_prints_both_tables(capsys):
    assert measure_codec.main(["measure_codec", f"--videos={bikes_path()}", "--frames=2", "--levels=0"]) == 0
    out = capsys.readouterr().out
    assert "| bikes.mp4 | 0 | 2 |" in out
    assert "Where the bits go" in out and out.count("| bikes.mp4 | 0 |") == 2


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["--no_such_flag"], 2, "no_such_flag"),
        (["--levels=x"], 2, "--levels must be numbers"),
        (["--frames=0"], 2, "--frames must be >= 1, got 0"),
        (["--gop=-1"], 2, "--gop must be >= 0 (0: one I-frame), got -1"),
        (["stray"], 2, "unexpected arguments stray"),
        (["--videos={missing}"], 1, "--videos: {missing}: no such file"),
        (["--videos={bikes}", "--levels=9", "--frames=1"], 2, "--levels: 9 is outside the model's range [0, 7]"),
    ],
)
def test_bad_input_ends_with_one_line(tmp_path, capsys, args, status, message):
    missing = tmp_path / "missing.y4m"
    args = [a.format(missing=missing, bikes=bikes_path()) for a in args]
    assert measure_codec.main(["measure_codec", *args]) == status
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message.format(missing=missing) in err and "\n" not in err and "Traceback" not in err, err
    assert "|" not in captured.out  # refused before the table begins
