"""benchmarks/range_coder_speed.py: symbols drawn at the asked rate, timed through the real coder,
and a rate the layout cannot reach refused instead of timed at another."""

from __future__ import annotations

import re

import numpy as np
import pytest

from benchmarks import range_coder_speed as rcs


def test_drawn_symbols_cost_the_asked_rate():
    for bpp in (0.05, 0.2, 0.8):
        *_, bits = rcs.frame_symbols(32, 32, 352, 288, bpp, np.random.default_rng(0))
        assert bits / (352 * 288) == pytest.approx(bpp, rel=0.02)


def test_a_rate_beyond_the_layout_is_one_line(capsys):
    assert rcs.main(["--config=small", "--size=cif", "--bpp=30", "--threads=1", "--repeats=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m benchmarks.range_coder_speed: error: --bpp 30 is beyond this layout: its largest "
                          "scale codes ") and "\n" not in err, err


def test_a_row_is_timed_and_printed(capsys):
    assert rcs.main(["--config=small", "--size=cif", "--bpp=0.2", "--threads=1", "--repeats=1"]) == 0
    out = capsys.readouterr().out
    assert re.match(r"small cif 0\.(19[5-9]|20[0-5]) bpp, 1 thread\(s\)", out) and "I enc" in out and "P enc" in out, out
