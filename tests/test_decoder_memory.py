"""benchmarks/decoder_memory.py: the measurement behind runtime/limits.py's per-pixel estimate."""

from __future__ import annotations

import pytest

from benchmarks import decoder_memory


def test_sizes_parse_and_bad_ones_are_usage_errors(capsys):
    assert decoder_memory.parse_sizes("1024x512,64X64") == [(1024, 512), (64, 64)]
    for bad, message in (("1024", "is not WIDTHxHEIGHT"), ("0x64", "has a side below 1"), ("axb", "is not")):
        assert decoder_memory.main([f"--sizes={bad}"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_synthetic_frames_move():
    frames = decoder_memory.synthetic_frames(96, 64, 3)
    assert [f.shape for f in frames] == [(64, 96, 3)] * 3
    assert (frames[1] == frames[0]).mean() < 0.5  # a P-frame has motion to code
    assert (frames[1][:, 3:] == frames[0][:, :-3]).all()


@pytest.mark.slow  # ~40 s: encodes, then a fresh TensorFlow process decodes
def test_small_model_decodes_within_its_estimate():
    """The P-frame's peak growth per padded pixel is near the estimate's (which must not be far
    below it: the estimate refuses what would not fit), the I-frame's well below it."""
    r = decoder_memory.measure("small", 512, 512)
    assert r.padded_pixels == 512 * 512 and r.estimate_bytes_per_pixel == 620  # small: 596 + 96 / 4
    assert 0.7 * r.estimate_bytes_per_pixel < r.p_bytes_per_pixel < 1.1 * r.estimate_bytes_per_pixel
    assert r.i_bytes_per_pixel < r.p_bytes_per_pixel
    assert r.peak_gib < r.estimate_gib  # what the decoder checks holds the whole process
