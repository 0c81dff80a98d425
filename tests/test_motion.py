"""The encoder-side block motion search and the decoder's block-motion path (model/motion.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from model.config import get_config
from model.elfvc import ELFVC, ReferenceState
from model.entropy import QuantMode
from model.level import level_embedding
from model.motion import block_motion_search, level_penalty, upsample_blocks


def _window(base, top, left, size=64):
    return base[:, top : top + size, left : left + size]


@pytest.fixture(scope="module")
def base():
    return np.random.default_rng(0).random((2, 112, 112, 3)).astype(np.float32)


@pytest.mark.parametrize("dx, dy", [(3, -2), (0, 0), (-4, 4), (1, 0)])
def test_search_finds_a_global_shift_in_every_block(base, dx, dy):
    # target(p) = base(p + 24 + s) = reference(p + s): the warp's convention, x_comp(p) = ref(p + f).
    reference = _window(base, 24, 24)
    target = _window(base, 24 + dy, 24 + dx)
    found = block_motion_search(target, reference, radius=4).numpy()
    assert found.shape == (2, 4, 4, 2)
    np.testing.assert_array_equal(found[..., 0], dx)
    np.testing.assert_array_equal(found[..., 1], dy)


def test_search_is_per_block(base):
    reference = _window(base, 24, 24)
    target = np.array(reference)
    target[:, 16:32, 32:48] = base[:, 24 + 16 - 3 : 24 + 32 - 3, 24 + 32 + 2 : 24 + 48 + 2]  # one block moved
    found = block_motion_search(target, reference, radius=4).numpy()
    assert tuple(found[0, 1, 2]) == (2.0, -3.0)
    moved = np.zeros(found.shape[:3], bool)
    moved[:, 1, 2] = True
    assert np.all(found[~moved] == 0.0)


def test_flat_areas_get_the_zero_vector():
    flat = np.full((1, 64, 64, 3), 0.4, np.float32)
    np.testing.assert_array_equal(block_motion_search(flat, flat + 0.01, radius=3).numpy(), 0.0)


def test_search_stays_in_range(base):
    # A shift beyond the radius cannot be found; whatever wins lies within it.
    reference = _window(base, 24, 24)
    target = _window(base, 24, 24 + 7)
    found = block_motion_search(target, reference, radius=2).numpy()
    assert np.abs(found).max() <= 2


def test_search_rejects_a_bad_radius_or_penalty(base):
    with pytest.raises(ValueError, match="radius"):
        block_motion_search(base[:, :64, :64], base[:, :64, :64], radius=0)
    with pytest.raises(ValueError, match="penalty"):
        block_motion_search(base[:, :64, :64], base[:, :64, :64], radius=2, penalty=-0.1)


def test_the_penalty_trades_match_for_vector_length(base):
    # Noise: the true shift matches exactly and any other costs a mean |luma difference| near 0.2,
    # far above 0.002 per pixel of length; a penalty of 1 per pixel makes every vector but zero lose.
    reference = _window(base, 24, 24)
    target = _window(base, 24 + 1, 24 - 2)
    np.testing.assert_array_equal(block_motion_search(target, reference, radius=3, penalty=0.002).numpy()[..., 0], -2.0)
    np.testing.assert_array_equal(block_motion_search(target, reference, radius=3, penalty=1.0).numpy(), 0.0)


def test_per_example_penalties_act_like_separate_searches(base):
    # Example 0 gets a penalty that keeps the true shift, example 1 one that forces zero vectors:
    # the [B] form must give each example exactly what a search at its own number gives.
    reference = _window(base, 24, 24)
    target = _window(base, 24 + 1, 24 - 2)
    both = block_motion_search(target, reference, radius=3, penalty=tf.constant([0.002, 1.0])).numpy()
    np.testing.assert_array_equal(both[0], block_motion_search(target, reference, radius=3, penalty=0.002).numpy()[0])
    np.testing.assert_array_equal(both[1], block_motion_search(target, reference, radius=3, penalty=1.0).numpy()[1])
    assert both[0, ..., 0].min() == -2.0 and np.all(both[1] == 0.0)


def test_level_penalty_is_geometric_from_level_zero_to_the_top():
    config = get_config("small", motion_search_radius=8, motion_search_penalty=0.04, motion_search_penalty_top=0.01)
    levels = np.array([0.0, 3.5, 7.0, 1.25], np.float32)
    got = level_penalty(config, level_embedding(levels, config.num_levels, config.embedding_dim)).numpy()
    np.testing.assert_allclose(got, 0.04 * (0.25 ** (levels / 7.0)), rtol=1e-5)
    np.testing.assert_allclose(got[[0, 2]], [0.04, 0.01], rtol=1e-6)
    # No top penalty: the constant, as a number (the search then builds the same graph as before).
    assert level_penalty(get_config("small", motion_search_penalty=0.03), None) == 0.03


def test_upsample_blocks_is_nearest_per_16x16_block():
    field = np.random.default_rng(1).normal(size=(2, 3, 5, 2)).astype(np.float32)
    expected = np.repeat(np.repeat(field, 16, axis=1), 16, axis=2)
    np.testing.assert_array_equal(upsample_blocks(tf.constant(field)).numpy(), expected)


def test_bilinear_block_motion_interpolates_between_block_centres():
    """Half-pixel centres: pixel p of a block row reads block coordinate (p + 0.5) / 16 - 0.5, so a
    field linear in the block index stays linear between block centres (slope 1/16 per pixel) and
    is held at the first / last block's value over the outer half blocks; a constant field stays
    constant; the block-constant mode is the default."""
    field = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1) * np.ones((1, 3, 1, 2), np.float32)
    up = upsample_blocks(tf.constant(field), "bilinear").numpy()
    assert up.shape == (1, 48, 64, 2)
    coordinate = np.clip((np.arange(64) + 0.5) / 16 - 0.5, 0, 3)
    np.testing.assert_allclose(up[0, 20, :, 0], coordinate, atol=1e-6)
    np.testing.assert_allclose(up[0, :, 37, 1], np.full(48, coordinate[37]), atol=1e-6)
    np.testing.assert_allclose(upsample_blocks(tf.fill([2, 3, 5, 2], 2.5), "bilinear").numpy(), 2.5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown mode"):
        upsample_blocks(tf.constant(field), "cubic")
    assert get_config("small").block_motion_upsample == "nearest"
    with pytest.raises(ValueError, match="block_motion_upsample must be one of nearest, bilinear"):
        get_config("small", block_motion_upsample="cubic")


def test_config_checks_the_search_fields():
    from model.motion import MOTION_PENALTY

    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="motion_search_radius"):
            get_config("small", motion_search_radius=bad)
    with pytest.raises(ValueError, match="motion_search_penalty"):
        get_config("small", motion_search_penalty=-0.01)
    for first, top in ((0.0, 0.01), (0.01, 0.0), (0.01, -1.0)):
        with pytest.raises(ValueError, match="motion_search_penalty_top"):
            get_config("small", motion_search_penalty=first, motion_search_penalty_top=top)
    with pytest.raises(ValueError, match="more than one level"):
        get_config("small", motion_search_penalty_top=0.01, single_level=True)
    with pytest.raises(ValueError, match="embedding_dim > 1"):
        get_config("small", motion_search_penalty_top=0.01, embedding_dim=1)
    assert get_config("small").motion_search_penalty_top is None
    assert get_config("small").motion_search_radius == 0  # the paper's flow block by default
    assert get_config("small").motion_search_penalty == MOTION_PENALTY


def test_pframe_flow_follows_the_searched_motion_within_half_a_quantization_step(base):
    """Untrained heads start at zero (f_bar = 0, delta = 0), so the decoded flow is the block-motion
    path alone: the searched shift, dequantized on the flow codelayer's grid, so within Q_w / 2."""
    config = get_config("small", motion_search_radius=4)
    model = ELFVC(config).build_weights()
    reference = tf.constant(_window(base, 24, 24))
    target = tf.constant(_window(base, 24 + 3, 24 - 2))
    refs = ReferenceState(
        previous=reference, previous2=reference, flow=tf.zeros_like(reference),
        state=tf.zeros([2, 16, 16, config.state_channels]),
    )
    level = tf.constant([1.0, 6.0])
    out, _ = model.pframe_step(target, level, refs, QuantMode.ROUND)
    flow = out.flow.numpy()
    half_step = model.flow.quant_width(level).numpy()[:, :2].max() / 2
    assert np.abs(flow[..., 0] - (-2.0)).max() <= half_step + 1e-5
    assert np.abs(flow[..., 1] - 3.0).max() <= half_step + 1e-5
    np.testing.assert_array_equal(flow[..., 2], 0.0)
    # Without the search the same untrained model moves nothing.
    plain = ELFVC(dataclasses.replace(config, motion_search_radius=0)).build_weights()
    for a, b in zip(plain.variables, model.variables):
        a.assign(b)
    out, _ = plain.pframe_step(target, level, refs, QuantMode.ROUND)
    np.testing.assert_array_equal(out.flow.numpy(), 0.0)


def test_the_motion_search_changes_the_model_id_only_when_on():
    from model.bundle import identity_config

    assert "motion_search_radius" not in identity_config(get_config("small"))
    assert identity_config(get_config("small", motion_search_radius=8))["motion_search_radius"] == 8
    assert "motion_search_penalty_top" not in identity_config(get_config("small", motion_search_radius=8))
    scheduled = get_config("small", motion_search_radius=8, motion_search_penalty_top=0.01)
    assert identity_config(scheduled)["motion_search_penalty_top"] == 0.01


def test_a_checkpoint_without_the_search_warm_starts_a_model_with_it(tmp_path):
    from model.checkpoints import export_model, warm_start

    plain_config = get_config("small")
    plain = ELFVC(plain_config).build_weights()
    export_model(plain, plain_config, {}, tmp_path / "plain")
    config = dataclasses.replace(plain_config, motion_search_radius=6)
    model = ELFVC(config).build_weights()
    warm_start(model, tmp_path / "plain", "all", config)
    for a, b in zip(plain.variables, model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
