"""docs/API.md's example runs as written (on a 130x98 crop of bikes.mp4 named clip.y4m; the
shipped `small` model stands in for the default, the code path is the same)."""

from __future__ import annotations

import contextlib
import io
import re
from fractions import Fraction

import pytest

from conftest import REPO

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)


def test_the_api_example_runs_as_written(tmp_path, monkeypatch, bikes_frames):
    from model import bundle as bundle_module
    from runtime.video_io import write_video

    text = (REPO / "docs" / "API.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    write_video(tmp_path / "clip.y4m", bikes_frames[:4, 40:138, 200:330], Fraction(25))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bundle_module, "default_bundle", lambda: bundle_module.shipped_bundle("small"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/API.md", "exec"), {"__name__": "api_example"})
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"\d+ bytes, 4 frames, first P-frame at level \d\.\d+", lines[0]), lines
    assert re.fullmatch(r"I-frame: \d+ bits at level 2.5, \d+ at 3.0, PSNR \d+\.\d\d dB, network \d+\.\d\d s", lines[1]), lines
    assert (tmp_path / "clip.elfvc").stat().st_size > 0
