"""Integer hyper synthesis (model/integer_hyper.py): exactness, bounds, fidelity to the float D1.

Uses the default bundle (an untrained small model when none is shipped): exactness and bounds
do not depend on training.
"""

import dataclasses

import numpy as np
import pytest

from model import integer_hyper as ih
from model.bundle import compute_model_id, untrained_bundle
from runtime.entropy_coding import scale_index


@pytest.fixture(scope="module")
def bundle():
    return untrained_bundle()  # fixed weights: independent of the shipped model


def random_inputs(bundle, seed, height=3, width=5, spread=40):
    rng = np.random.default_rng(seed)
    z = rng.integers(-spread, spread + 1, (2, height, width, bundle.config.hyper_latent_channels)).astype(np.float32)
    levels = np.array([0.0, 2.75], np.float32)
    embedding = bundle.model.embed(levels).numpy()
    return z, ih.quantize_embedding(embedding)


@pytest.mark.parametrize(
    "block", ["flow", pytest.param("iframe", marks=pytest.mark.slow), pytest.param("residue", marks=pytest.mark.slow)]
)
def test_tf_function_equals_numpy_reference_bit_exactly(bundle, block):
    """(Same code for every block; the default suite traces one, the slow suite all three.)"""
    net = bundle.integer_hyper[block]
    fn = ih.tf_function(net, bundle.config.embedding_width, bundle.config.hyper_latent_channels)
    for seed, spread in [(0, 3), (1, 40), (2, 5000)]:  # the last exceeds the clip bound Z
        z, e = random_inputs(bundle, seed, spread=spread)
        out = fn(z, e)
        mean, acc = net.reference(z, e)
        assert out["mean"].shape == (2, 12, 20, bundle.config.latent_channels)
        np.testing.assert_array_equal(out["scale_accumulator"].numpy(), acc.astype(np.float32))
        np.testing.assert_array_equal(out["mean"].numpy(), mean)
        # Outputs are integers (accumulators) and integer multiples of 2^-s (means).
        assert np.array_equal(acc, np.round(acc)) and np.abs(acc).max() < ih.EXACT_LIMIT
        steps = 2.0 ** -net.params.shift[: net.latent_channels].astype(np.float64)
        units = mean.astype(np.float64) / steps
        np.testing.assert_array_equal(units, np.round(units))


def test_bounds_are_checked(bundle):
    net = bundle.integer_hyper["iframe"]
    net.check()
    kernel = net.up1.kernel.copy()
    kernel[0, 0, 0, 0] = 40000  # a deliberately huge weight
    with pytest.raises(ih.IntegerBoundError, match="exceeds"):
        dataclasses.replace(net, up1=dataclasses.replace(net.up1, kernel=kernel)).check()
    kernel = np.full_like(net.up2.kernel, ih.WEIGHT_MAX)  # legal weights, but their sum overflows 2^24
    with pytest.raises(ih.IntegerBoundError, match="2\\^24"):
        dataclasses.replace(net, up2=dataclasses.replace(net.up2, kernel=kernel)).check()


def test_calibration_sees_the_hyper_latents_clipped_as_the_network_does(bundle):
    """Hyper latents far beyond the clip bound Z (a barely trained model's) calibrate the same
    network as the same latents clipped to +-Z, and it passes the 2^24 bound (it did not: the
    unclipped activations set hidden steps whose rounding offsets alone exceeded it)."""
    layer = bundle.model.flow.codelayer.hyper_synthesis
    scale = bundle.model.flow.codelayer.hyper_scale().numpy()
    z, _ = random_inputs(bundle, 3, spread=40)
    z[0, 1, 2, :5] = 3e9  # wild outliers, as from 4 training steps
    embedding = bundle.model.embed(np.array([0.0, 2.75], np.float32)).numpy()
    wild = ih.convert(layer, scale, [(z, embedding)], bundle.config.embedding_width)
    assert wild.hyper_latent_max == ih.HYPER_LATENT_LIMIT
    clipped = np.clip(z, -ih.HYPER_LATENT_LIMIT, ih.HYPER_LATENT_LIMIT)
    tame = ih.convert(layer, scale, [(clipped, embedding)], bundle.config.embedding_width)
    assert wild.to_arrays("b").keys() == tame.to_arrays("b").keys()
    for key, value in wild.to_arrays("b").items():
        np.testing.assert_array_equal(value, tame.to_arrays("b")[key])
    wild.check()


def test_thresholds_give_the_nearest_table_scale(bundle):
    """acc >= T_k on the host equals quantizing softplus(acc * 2^-s) / Q_w directly."""
    net = bundle.integer_hyper["iframe"]
    c = net.latent_channels
    rng = np.random.default_rng(5)
    quant_width = np.exp(rng.uniform(-1, 1, c))
    acc = rng.integers(-(2**22), 2**22, (50, c))
    raw = acc * 2.0 ** -net.params.shift[c:].astype(np.float64)
    expected = scale_index(np.logaddexp(0.0, raw) / quant_width)
    got = net.accumulator_scale_index(acc, net.scale_thresholds(quant_width))
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def real_hyper_latents(bundle, bikes_frames):
    """block -> [(z_hat, embedding)] from frames the calibration never saw (bikes 4-5, lower-left crop)."""
    from model.entropy import QuantMode

    clip = bikes_frames[4:6, 144:272, 0:256].astype(np.float32) / 255.0
    out = {block: [] for block in ih.BLOCKS}
    for level in (1.0, 5.5):
        gop = bundle.model.forward_gop(clip[None], level, QuantMode.ROUND)
        embedding = bundle.model.embed(np.array([level], np.float32))
        out["iframe"].append((gop.frames[0].code.hyper_symbols.numpy(), embedding))
        out["flow"].append((gop.frames[1].flow_code.hyper_symbols.numpy(), embedding))
        out["residue"].append((gop.frames[1].residue_code.hyper_symbols.numpy(), embedding))
    return out


@pytest.mark.parametrize("block", ih.BLOCKS)
def test_integer_network_approximates_the_float_one(bundle, real_hyper_latents, block):
    """On real hyper latents the integer D1 lands on the float D1's table scale or a neighbour
    everywhere (mostly the same one), and its sigma and mean are close."""
    layer = getattr(bundle.model, block).codelayer.hyper_synthesis
    net = bundle.integer_hyper[block]
    for z, embedding in real_hyper_latents[block]:
        mean_f, sigma_f = (t.numpy().astype(np.float64) for t in layer(z, embedding))
        mean_i, acc = net.reference(z, ih.quantize_embedding(embedding.numpy()))
        sigma_i = np.logaddexp(0.0, acc * 2.0 ** -net.params.shift[net.latent_channels :].astype(np.float64))
        jump = np.abs(scale_index(sigma_i) - scale_index(sigma_f))
        assert jump.max() <= 1 and np.mean(jump == 0) > 0.9
        assert np.median(np.abs(sigma_i / sigma_f - 1)) < 0.01
        assert np.median(np.abs(mean_i - mean_f) / np.maximum(sigma_f, 0.11)) < 0.02


def test_serialization_round_trip_and_identity(bundle):
    arrays = {}
    for block in ih.BLOCKS:
        arrays.update(bundle.integer_hyper[block].to_arrays(block))
    back = {block: ih.IntegerHyperSynthesis.from_arrays(arrays, block) for block in ih.BLOCKS}
    assert compute_model_id(bundle.model, back) == bundle.model_id
    changed = dict(back)
    net = back["flow"]
    changed["flow"] = dataclasses.replace(net, params=dataclasses.replace(net.params, bias=net.params.bias + 1))
    assert compute_model_id(bundle.model, changed) != bundle.model_id


def test_onnx_runtime_evaluates_it_bit_exactly(bundle):
    """The point of the integer network: another backend (tf2onnx -> ONNX Runtime) gives the
    same bits as TF."""
    tf2onnx = pytest.importorskip("tf2onnx", reason="tf2onnx is needed to export the integer network")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported network")
    net = bundle.integer_hyper["flow"]
    fn = ih.tf_function(net, bundle.config.embedding_width, bundle.config.hyper_latent_channels)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in session.get_inputs()) == ["hyper_latent", "quantized_embedding"]
    for seed, spread in [(3, 4), (4, 3000)]:
        z, e = random_inputs(bundle, seed, spread=spread)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"hyper_latent": z, "quantized_embedding": e})))
        mean, acc = net.reference(z, e)
        np.testing.assert_array_equal(got["mean"], mean)
        np.testing.assert_array_equal(got["scale_accumulator"], acc.astype(np.float32))
