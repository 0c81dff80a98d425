"""The encoder-side choice of the quantized block motion (runtime/motion_refine.py).

Pure numpy for the pieces and the choice itself (a synthetic decoder whose per-block error is
known), then the codec with an untrained motion-search model: the stream still decodes bit for
bit, only the two motion channels move, and only to the other lattice neighbour.
"""

import math

import numpy as np
import pytest

from runtime import motion_refine as mr
from runtime.entropy_coding import SYMBOL_LIMIT

BLOCK = mr.BLOCK


# -- pieces ----------------------------------------------------------------------------------
def test_other_neighbour_is_the_lattice_point_across_the_value():
    rng = np.random.default_rng(0)
    scaled = rng.normal(0, 3, size=(5, 7, 2))
    scaled[0, 0] = (2.0, -3.0)  # exact lattice points: rounding is the floor, the other one is above
    rounded = np.round(scaled).astype(np.int32)
    other = mr.other_neighbour(scaled, rounded)
    assert other.dtype == np.int32
    assert np.all(other != rounded)
    assert np.all(np.abs(other - scaled) <= 1.0)
    pair = np.sort(np.stack([rounded, other]), axis=0)
    np.testing.assert_array_equal(pair[0], np.floor(scaled))
    np.testing.assert_array_equal(pair[1], np.floor(scaled) + 1)
    np.testing.assert_array_equal(other[0, 0], (3, -2))


def test_other_neighbour_stays_inside_the_symbol_limit():
    scaled = np.array([[[SYMBOL_LIMIT + 0.2, -SYMBOL_LIMIT - 0.7]]])
    rounded = np.clip(np.round(scaled), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int32)
    assert np.all(np.abs(mr.other_neighbour(scaled, rounded)) <= SYMBOL_LIMIT)


def test_combinations_are_the_four_corners_rounding_first():
    rounded = np.array([[[1, 2]]], np.int32)
    other = np.array([[[0, 3]]], np.int32)
    corners = mr.combinations(rounded, other)
    assert [tuple(c[0, 0]) for c in corners] == [(1, 2), (1, 3), (0, 2), (0, 3)]
    np.testing.assert_array_equal(rounded, [[[1, 2]]])  # inputs untouched


def test_pick_per_block_takes_each_blocks_least_cost_and_ties_to_rounding():
    candidates = [np.full((2, 2, 2), k, np.int32) for k in range(3)]
    costs = np.array([[[1.0, 5.0], [2.0, 2.0]], [[0.5, 5.0], [2.0, 1.0]], [[0.7, 4.0], [2.0, 3.0]]])
    picked = mr.pick_per_block(costs, candidates)
    np.testing.assert_array_equal(picked[..., 0], [[1, 2], [0, 1]])  # [1, 0]: a three-way tie -> rounding


def test_block_sse_is_eq1_distortion_times_pixels():
    rng = np.random.default_rng(1)
    target, prediction = rng.random((2, 1, 2 * BLOCK, 3 * BLOCK, 3))
    sse = mr.block_sse(target, prediction)
    assert sse.shape == (2, 3)
    for r in range(2):
        for c in range(3):
            window = np.s_[0, r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK]
            expected = np.mean((target[window] - prediction[window]) ** 2) * BLOCK * BLOCK
            assert sse[r, c] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="multiple of the 16-pixel block"):
        mr.block_sse(target[:, :17], prediction[:, :17])


def test_motion_bits_are_the_models_codelength():
    from runtime.entropy_coding import estimated_bits

    rng = np.random.default_rng(2)
    symbols = rng.integers(-4, 5, size=(3, 4, 2)).astype(np.int32)
    indices = rng.integers(0, 20, size=(3, 4, 2)).astype(np.int32)
    bits = mr.motion_bits(symbols, indices)
    assert bits.shape == (3, 4) and np.all(bits > 0)
    assert bits.sum() == pytest.approx(estimated_bits(symbols, indices), rel=1e-12)


def test_lambda_follows_the_training_table_geometrically():
    options = mr.MotionRefinement(lambda_range=(0.6, 0.0011))
    assert options.rd_lambda(0.0, 7.0) == pytest.approx(0.6)
    assert options.rd_lambda(7.0, 7.0) == pytest.approx(0.0011)
    assert options.rd_lambda(3.5, 7.0) == pytest.approx(math.sqrt(0.6 * 0.0011))
    assert mr.MotionRefinement(lambda_scale=2.0).rd_lambda(2.5, 7.0) == pytest.approx(2 * options.rd_lambda(2.5, 7.0))
    for bad in ({"lambda_range": (0.0, 0.1)}, {"lambda_range": (math.inf, 0.1)}, {"lambda_range": (0.1,)},
                {"lambda_range": "ab"}, {"lambda_range": "12"}, {"lambda_scale": -1.0}, {"lambda_scale": math.nan}):  # fmt: skip
        with pytest.raises(ValueError, match="motion refinement"):
            mr.MotionRefinement(**bad)


def test_latent_search_lambda_is_the_same_schedule():
    """Both encoder-side searches weigh rate with one schedule (model.npmath.ScaledLambda): the
    latent search's lambda equals motion refinement's for the same range and scale, and a bad
    range is refused with the search's name."""
    from runtime.latent_opt import LatentOptimization

    for level in (0.0, 2.5, 7.0):
        for card in (None, (0.2, 0.001)):
            assert LatentOptimization(steps=1, lambda_scale=1.5).rd_lambda(level, 7.0, card) == pytest.approx(
                mr.MotionRefinement(lambda_scale=1.5).rd_lambda(level, 7.0, card))
    assert LatentOptimization(lambda_range=(0.3, 0.003)).rd_lambda(7.0, 7.0, (0.2, 0.001)) == pytest.approx(0.003)
    with pytest.raises(ValueError, match="latent optimization lambda range"):
        LatentOptimization(lambda_range=(0.3, -1.0))


# -- the choice, on a decoder whose errors are known ---------------------------------------
def _synthetic_decoder(best, coupling=0.0):
    """A decoder of a 2x3-block frame whose target is black: block (r, c)'s prediction error per
    pixel is sum_channels (k - best[r, c])^2 over the two motion symbols (so the block's SSE is
    that times 256), plus `coupling` for each left or right neighbour whose symbols differ from the
    block's: a stand-in for the delta net, which sees neighbouring latents. A corner candidate gives
    every block the same choice, so the coupling shows only once the blocks choose differently."""
    target = np.zeros((1, 2 * BLOCK, 3 * BLOCK, 3))
    calls = []

    def decode(symbols):
        calls.append(symbols.copy())
        motion = symbols[..., :2]
        error = np.sum((motion - best) ** 2, axis=-1).astype(np.float64)
        differs = np.any(motion[:, 1:] != motion[:, :-1], axis=-1)  # [2, 2]: between columns c and c + 1
        error[:, 1:] += coupling * differs
        error[:, :-1] += coupling * differs
        pixels = np.sqrt(np.repeat(np.repeat(error, BLOCK, 0), BLOCK, 1))
        return {"compensated": np.repeat(pixels[None, ..., None], 3, axis=-1), "marker": len(calls)}

    return target, decode, calls


def test_refine_moves_a_block_to_the_neighbour_that_predicts_better():
    # The search wants (v - mu) / Q_w = 0.4 (rounds to 0), but the picture is best at k = 1 in one
    # block; every other block is best where it rounds.
    scaled = np.full((2, 3, 3), 0.4)
    best = np.zeros((2, 3, 2))
    best[1, 2] = (1, 1)
    symbols = np.round(scaled).astype(np.int32)
    symbols[..., 2] = 7  # a non-motion channel: never touched
    indices = np.full(symbols.shape, 10, np.int32)
    target, decode, calls = _synthetic_decoder(best)
    result = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=0.0)
    assert len(calls) == 5  # the four corners, then the combined choice
    assert result.changed_blocks == 1
    np.testing.assert_array_equal(result.symbols[1, 2], (1, 1, 7))
    np.testing.assert_array_equal(np.delete(result.symbols.reshape(6, 3), 5, axis=0)[:, :2], 0)
    np.testing.assert_array_equal(result.symbols[..., 2], 7)
    assert result.cost < result.rounded_cost
    assert result.flow["marker"] == 5  # the decoded output belongs to the chosen symbols
    np.testing.assert_array_equal(symbols[1, 2], (0, 0, 7))  # input untouched


def test_refine_weighs_bits_against_distortion():
    """One block predicts 256 SSE better (error 1 -> 0 per pixel) at k_x = 1 than at its rounding 0:
    it moves when lambda times the extra bits is below that, and stays when above."""
    scaled = np.full((2, 3, 2), 0.4)
    best = np.zeros((2, 3, 2))
    best[1, 2] = (1, 0)
    symbols = np.round(scaled).astype(np.int32)
    indices = np.zeros(symbols.shape, np.int32)  # the narrowest scale: a 1 costs many bits
    one, zero = (mr.motion_bits(np.array([[[k, 0]]]), indices[:1, :1])[0, 0] for k in (1, 0))
    extra_bits, saved = one - zero, float(BLOCK * BLOCK)
    assert extra_bits > 1
    target, decode, _ = _synthetic_decoder(best)
    cheap = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=0.5 * saved / extra_bits)
    dear = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=2.0 * saved / extra_bits)
    assert cheap.changed_blocks == 1
    np.testing.assert_array_equal(cheap.symbols[1, 2], (1, 0))
    assert dear.changed_blocks == 0 and dear.cost == dear.rounded_cost
    np.testing.assert_array_equal(dear.symbols, symbols)


def test_refine_never_loses_to_rounding_on_its_own_cost():
    """Column 0's blocks each predict better at the other neighbour (1, 1) than at their rounding
    (0, 0). Alone they move; when moving them also costs their right neighbours (the coupling), the
    combined choice is worse than rounding, and refine keeps rounding."""
    scaled = np.full((2, 3, 2), 0.45)
    best = np.full((2, 3, 2), 0.45)
    best[:, 0] = 0.55
    symbols = np.round(scaled).astype(np.int32)
    indices = np.full(symbols.shape, 10, np.int32)
    target, decode, _ = _synthetic_decoder(best)
    alone = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=0.0)
    assert alone.changed_blocks == 2 and alone.cost < alone.rounded_cost
    np.testing.assert_array_equal(alone.symbols[:, 0], 1)
    np.testing.assert_array_equal(alone.symbols[:, 1:], 0)
    target, decode, calls = _synthetic_decoder(best, coupling=1.0)
    together = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=0.0)
    assert len(calls) == 5  # the combined choice was decoded, judged and turned down
    assert together.changed_blocks == 0 and together.cost == together.rounded_cost
    np.testing.assert_array_equal(together.symbols, symbols)
    assert together.flow["marker"] == 1  # rounding's decoded output, not the rejected one


def _warping_decoder(previous, base_flow, width, upsample, delta_response=0.0):
    """A decoder that does what the flow decoder does with the two motion channels (their
    dequantized value, upsampled, added to the flow that warps `previous`), plus, when
    `delta_response` is not 0, a stand-in for the delta net's reply: a flow change proportional
    to the motion symbols that the estimate does not know about."""
    from model.npmath import ScaleSpaceVolume, upsample_blocks

    volume = ScaleSpaceVolume(previous[0], 5, 1.0)
    calls = []

    def decode(symbols):
        calls.append(symbols.copy())
        flow = base_flow.copy()
        flow[..., :2] += upsample_blocks(symbols[..., :2] * width * (1.0 + delta_response), upsample)
        return {"flow": flow[None], "compensated": volume.warp(flow)[None]}

    return decode, calls


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_estimated_candidates_choose_as_decoded_ones_when_the_flow_only_moves(upsample):
    """When the decoder's flow moves exactly by the block motion (no delta-net reply), the
    estimate is the decode: the same choice and cost from 2 decodes instead of 5."""
    rng = np.random.default_rng(7)
    h, w = 3, 4
    previous = rng.random((1, h * BLOCK, w * BLOCK, 3)).astype(np.float32)
    true = rng.normal(0, 2.5, size=(h, w, 2))  # each block's real motion, in pixels
    from model.npmath import ScaleSpaceVolume, upsample_blocks

    base_flow = np.zeros((h * BLOCK, w * BLOCK, 3), np.float32)
    target = ScaleSpaceVolume(previous[0], 5, 1.0).warp(np.concatenate(
        [upsample_blocks(true, upsample), np.zeros((h * BLOCK, w * BLOCK, 1))], -1))[None]  # fmt: skip
    width = np.array([2.0, 2.0, 1.0])  # Q_w: a 2-pixel motion step
    scaled = np.concatenate([true / 2.0 + rng.normal(0, 0.3, size=(h, w, 2)), np.zeros((h, w, 1))], -1)
    symbols = np.round(scaled).astype(np.int32)
    indices = np.full(symbols.shape, 20, np.int32)
    decode, calls = _warping_decoder(previous, base_flow, width[:2], upsample)
    exact = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=1e-4)
    assert len(calls) == 4 + (exact.changed_blocks > 0)
    estimate = mr.ShiftedFlowWarp(previous, width[None, None, None], 5, 1.0, upsample)
    decode, calls = _warping_decoder(previous, base_flow, width[:2], upsample)
    estimated = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=1e-4, estimate=estimate)
    assert exact.changed_blocks > 0
    assert len(calls) == 2  # rounding, then the combined choice
    np.testing.assert_array_equal(estimated.symbols, exact.symbols)
    assert estimated.cost == pytest.approx(exact.cost, rel=1e-5)
    assert estimated.cost < estimated.rounded_cost


def test_estimated_candidates_never_lose_to_rounding():
    """A decoder whose flow answers the motion symbols twice as strongly as the estimate assumes:
    the estimate misjudges, the combined choice is decoded and judged for real, and the result is
    never worse than rounding on refine's own cost."""
    rng = np.random.default_rng(8)
    h, w = 3, 4
    previous = rng.random((1, h * BLOCK, w * BLOCK, 3)).astype(np.float32)
    base_flow = np.zeros((h * BLOCK, w * BLOCK, 3), np.float32)
    width = np.array([1.5, 1.5])
    estimate = mr.ShiftedFlowWarp(previous, width, 5, 1.0, "bilinear")
    outcomes = []
    for trial in range(4):
        target = rng.random(previous.shape)
        scaled = rng.normal(0, 1.5, size=(h, w, 2))
        symbols = np.round(scaled).astype(np.int32)
        indices = np.full(symbols.shape, 20, np.int32)
        decode, calls = _warping_decoder(previous, base_flow, width, "bilinear", delta_response=1.0)
        result = mr.refine(symbols, scaled, indices, decode, target, rd_lambda=1e-3, estimate=estimate)
        assert result.cost <= result.rounded_cost
        assert len(calls) <= 2
        if result.changed_blocks:
            np.testing.assert_allclose(result.flow["compensated"], decode(result.symbols)["compensated"])
        # "rejected": the combined choice was decoded (2 calls) and lost to rounding, so rounding stands
        outcomes.append("rejected" if len(calls) == 2 and not result.changed_blocks else
                        "accepted" if result.changed_blocks else "rounding")
    # Both branches ran (seed 8: rejected, rejected, accepted, rejected): the misjudged estimate is
    # caught by the real decode, and a good one is kept.
    assert {"rejected", "accepted"} <= set(outcomes), outcomes


# -- in the codec --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def search_model():
    from runtime.backends import get_backend
    from model.bundle import untrained_bundle

    bundle = untrained_bundle("small", motion_search_radius=4)
    return bundle, get_backend("tf", bundle)


def _flow_layers(bundle, backend, frames, refinement):
    from runtime.codec import Encoder
    from runtime.types import FrameType

    layers = []

    def observer(block, latent, layer, ctx):
        if block == "flow":
            layers.append(layer)

    with Encoder(bundle, backend, motion_refinement=refinement, observer=observer) as encoder:
        encoded = [encoder.encode_frame(frames[0], 1.0, FrameType.I)]
        encoded.append(encoder.encode_frame(frames[1], 1.0, FrameType.P))
    return layers[0], encoded


@pytest.mark.parametrize("decode_candidates", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_refined_streams_decode_exactly_and_move_only_the_motion_symbols(tmp_path, search_model, bikes_frames,
                                                                         decode_candidates):  # fmt: skip
    from runtime.ratecontrol import ConstantLevel
    from runtime.stream import decode_video, encode_video

    bundle, backend = search_model
    frames = bikes_frames[:3, 64:192, 160:352]  # 192x128: a 12x8 block grid
    # distortion only: blocks do move
    refinement = mr.MotionRefinement(lambda_scale=0.0, decode_candidates=decode_candidates)
    plain_layer, plain = _flow_layers(bundle, backend, frames, None)
    refined_layer, refined = _flow_layers(bundle, backend, frames, refinement)
    assert refined[0].payload == plain[0].payload  # I-frames are not touched
    moved = np.any(refined_layer.symbols[..., :2] != plain_layer.symbols[..., :2], axis=-1)
    assert moved.any()
    np.testing.assert_array_equal(refined_layer.symbols[..., 2:], plain_layer.symbols[..., 2:])
    np.testing.assert_array_equal(refined_layer.indices, plain_layer.indices)
    assert np.all(np.abs(refined_layer.symbols - plain_layer.symbols) <= 1)

    path = tmp_path / "refined.elfvc"
    summary = encode_video(list(frames), path, fps=25, gop=3, controller=ConstantLevel(1.0), backend=backend,
                           bundle=bundle, scenecut=0, motion_refinement=refinement)  # fmt: skip
    decoded = []
    decode_video(path, decoded.append, backend, bundle)
    with_refinement = [f.psnr for f in summary.frames]
    from runtime.metrics import psnr_rgb

    np.testing.assert_allclose(psnr_rgb(frames, np.stack(decoded)), with_refinement, rtol=0, atol=1e-9)


def test_refinement_is_a_no_op_without_the_motion_search(tmp_path, bikes_frames, untrained_codec):
    from runtime.codec import Encoder

    bundle, backend = untrained_codec
    assert not bundle.config.motion_search_radius
    with Encoder(bundle, backend, motion_refinement=mr.MotionRefinement()) as encoder:
        assert encoder.motion_refinement is None
    with Encoder(bundle, backend, motion_refinement=mr.MotionRefinement(enabled=False)) as encoder:
        assert encoder.motion_refinement is None
