"""Range coding (runtime/entropy_coding.py): tables, round trips, escapes, size vs estimate."""

import time

import numpy as np
import pytest

from runtime import entropy_coding as ec
from runtime.types import CodecError


def gaussian_symbols(rng, indices):
    """Symbols drawn from the discretized Gaussian of each index's table scale."""
    return np.round(rng.normal(0.0, ec.scale_table()[indices])).astype(np.int64)


def test_tables_are_the_format_tables():
    tables = ec.coding_tables()  # raises if the digest differs from TABLES_SHA256
    assert tables.lookup.shape[0] == ec.SCALE_COUNT
    for i, freq in enumerate(tables.frequencies):
        assert freq.sum() == 1 << ec.PRECISION and freq.min() >= 1
        assert len(freq) == 2 * tables.tails[i] + 2  # bins -T..T and the escape
    assert np.all(np.diff(tables.tails) >= 0)


def test_scale_index_is_nearest_in_log_domain():
    table = ec.scale_table()
    scales = np.exp(np.random.default_rng(0).uniform(np.log(0.01), np.log(1000), 5000))
    index = ec.scale_index(scales)
    nearest = np.argmin(np.abs(np.log(scales)[:, None] - np.log(table)[None, :]), axis=1)
    np.testing.assert_array_equal(index, nearest)
    assert ec.scale_index([0.0])[0] == 0 and ec.scale_index([1e9])[0] == ec.SCALE_COUNT - 1


def test_round_trip_with_escapes_and_limits():
    rng = np.random.default_rng(1)
    indices = rng.integers(0, ec.SCALE_COUNT, 4000).astype(np.int32)
    symbols = gaussian_symbols(rng, indices)
    far = rng.choice(4000, 60, replace=False)
    symbols[far] = rng.integers(-5000, 5000, 60)
    symbols[:4] = [ec.SYMBOL_LIMIT, -ec.SYMBOL_LIMIT, 3 * ec.SYMBOL_LIMIT, -3 * ec.SYMBOL_LIMIT]
    indices[:4] = 0
    substream = ec.encode_substream(symbols, indices)
    assert substream.escapes  # the far symbols went through the escape list
    decoded = ec.decode_substream(substream, indices)
    np.testing.assert_array_equal(decoded, np.clip(symbols, -ec.SYMBOL_LIMIT, ec.SYMBOL_LIMIT))


@pytest.mark.parametrize("index", [0, 10, 25, 40, 63])
def test_size_matches_estimate_across_scales(index):
    """Symbols that follow the model: coded size within 1% (+ a few flush bytes) of App. A's
    codelength at the table scale."""
    rng = np.random.default_rng(index)
    indices = np.full(20000, index, np.int32)
    symbols = gaussian_symbols(rng, indices)
    size = ec.encode_substream(symbols, indices).size * 8
    estimate = ec.estimated_bits(symbols, indices)
    assert abs(size - estimate) <= 0.01 * estimate + 32, (size, estimate)


def test_escape_list_must_match_the_range_code():
    indices = np.zeros(10, np.int32)
    symbols = np.array([0, 0, 50, 0, -40, 0, 0, 0, 0, 0])  # one varint byte each
    good = ec.encode_substream(symbols, indices)
    assert len(good.escapes) == 2
    for escapes, message in [(good.escapes[:1], "escape values"), (good.escapes + b"\x01", "escape values"),
                             (b"\xff\xff\xff\xff\x7f\x01", "escape value")]:  # fmt: skip
        with pytest.raises(CodecError, match=message):
            ec.decode_substream(ec.Substream(good.data, escapes), indices)
    with pytest.raises(CodecError, match="beyond the limit"):
        ec.decode_substream(ec.Substream(good.data, b"\xff\xff\xff\x7f\x01"), indices)


def test_garbage_decodes_in_bounded_time():
    """Table-only decoding is linear whatever the input (tfc's built-in overflow is not)."""
    rng = np.random.default_rng(2)
    indices = rng.integers(0, ec.SCALE_COUNT, 20000).astype(np.int32)
    for _ in range(20):
        garbage = ec.Substream(rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), b"")
        start = time.perf_counter()
        try:
            ec.decode_substream(garbage, indices)
        except CodecError:
            pass
        assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("shape,hyper", [((17, 23, 32), False), ((5, 6, 16), True), ((1, 1, 3), False)])
def test_layout_partitions_the_tensor(shape, hyper):
    layout = ec.SubstreamLayout(channel_groups=3, tile=8)
    cover = np.zeros(shape, int)
    for part in layout.slices(shape, hyper):
        cover[part] += 1
    np.testing.assert_array_equal(cover, 1)


def test_parallel_equals_serial_and_decodes():
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 40, (19, 33, 24)).astype(np.int32)
    symbols = gaussian_symbols(rng, indices).astype(np.int32)
    layout = ec.SubstreamLayout(channel_groups=4, tile=8)
    serial, parallel = ec.EntropyCoder(layout, workers=1), ec.EntropyCoder(layout, workers=4)
    try:
        a = serial.encode(symbols, indices, hyper=False)
        b = parallel.encode(symbols, indices, hyper=False)
        assert a == b and len(a) == layout.count(symbols.shape, hyper=False) == 3 * 5 * 4
        np.testing.assert_array_equal(parallel.decode(a, indices, hyper=False), symbols)
        with pytest.raises(CodecError, match="substreams"):
            parallel.decode(a[:-1], indices, hyper=False)
    finally:
        serial.close()
        parallel.close()


def test_layout_rejects_bad_parameters():
    with pytest.raises(ValueError, match="multiple of 4"):
        ec.SubstreamLayout(tile=6)
    with pytest.raises(ValueError, match="channel_groups"):
        ec.SubstreamLayout(channel_groups=0)


def test_the_encoders_default_layout_follows_the_picture_size():
    """One tile per codelayer up to 1024 pixels a side (the tile covers the picture padded to 64
    pixels), 512-pixel tiles above: 1080p keeps 12 q0 substreams per codelayer to code in parallel."""
    for (width, height), tile in (((640, 272), 40), ((130, 98), 12), ((16, 16), 4), ((1024, 576), 64),
                                  ((1025, 64), 32), ((1920, 1080), 32), ((64, 2000), 32)):
        layout = ec.SubstreamLayout.for_frame(width, height)
        assert (layout.tile, layout.channel_groups) == (tile, 1), (width, height, layout)
        cells = (-(-height // 64) * 4, -(-width // 64) * 4)  # the 16x grid of the padded picture
        single = max(width, height) <= ec.SINGLE_TILE_MAX_PX
        assert (layout.count((*cells, 8), hyper=False) == 1) == single
        assert (layout.count((cells[0] // 4, cells[1] // 4, 8), hyper=True) == 1) == single
    assert ec.SubstreamLayout.for_frame(1920, 1080).count((68, 120, 8), hyper=False) == 12
