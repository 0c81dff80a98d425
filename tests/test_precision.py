"""bf16 convolutions for the Keras trainer (model.layers.conv_precision, model.train --precision=bf16).

The convolutions of the transforms, heads and predictor compute in bfloat16 with FP32 weights;
the hyperprior codelayers (quantization, rates), everything between the convolutions and every
output stay FP32. A bf16 model with trained weights codes like the FP32 model up to bf16's
rounding (about 3 significant digits per convolution).
"""

import numpy as np
import pytest
import tensorflow as tf

from model import checkpoints as ckpt
from model.codelayer import HyperpriorCodelayer
from model.config import get_config
from model.elfvc import ELFVC
from model.entropy import QuantMode
from model.layers import conv_precision


def _convs(model):
    """(conv layer, inside a hyperprior codelayer?) for every Conv2D of the model."""
    in_codelayer = {
        id(layer) for codelayer in model.submodules if isinstance(codelayer, HyperpriorCodelayer)
        for layer in codelayer.submodules
    }
    return [(layer, id(layer) in in_codelayer) for layer in model.submodules if isinstance(layer, tf.keras.layers.Conv2D)]


@pytest.fixture(scope="module")
def pair():
    """The shipped small model in FP32 and the same weights in a model built under bf16."""
    fp32, config = ckpt.load_exported("runtime/checkpoints/small")
    with conv_precision("bf16"):
        bf16 = ELFVC(config).build_weights()
    bf16.set_weights(fp32.get_weights())
    return fp32, bf16


def test_bf16_convolutions_keep_fp32_weights_and_fp32_codelayers(pair):
    fp32, bf16 = pair
    convs = _convs(bf16)
    assert sum(inside for _, inside in convs) == 3 * 7  # three codelayers, 3 + 4 convolutions each
    for layer, inside in convs:
        assert layer.compute_dtype == ("float32" if inside else "bfloat16"), layer.name
    assert {v.dtype for v in bf16.variables} == {tf.float32, tf.int64}  # the step counter is int64
    assert all(layer.compute_dtype == "float32" for layer, _ in _convs(fp32))
    assert len(bf16.variables) == len(fp32.variables)


def test_bf16_model_codes_like_the_fp32_model(pair, bikes_frames):
    fp32, bf16 = pair
    frames = tf.constant(bikes_frames[None, :3, 64:192, 64:448] / 255.0, tf.float32)
    psnr = lambda out: -10 * np.log10(np.mean((out.reconstructions.numpy() - frames.numpy()) ** 2, axis=(0, 2, 3, 4)))
    gaps, ratios = [], []
    for level in (0.0, 3.5, 7.0):
        a = fp32.forward_gop(frames, level, QuantMode.ROUND)
        b = bf16.forward_gop(frames, level, QuantMode.ROUND)
        assert b.reconstructions.dtype == tf.float32 and b.bits.dtype == tf.float32
        gaps += list(psnr(b) - psnr(a))
        ratios += list(b.bits.numpy().ravel() / a.bits.numpy().ravel())
        # Not the FP32 model by another name: bf16 rounding shows in the reconstructions.
        assert np.abs(b.reconstructions.numpy() - a.reconstructions.numpy()).max() > 1e-4
    # A latent near a rounding boundary may flip (level 0's grid is coarse), so single frames
    # move by up to about half a dB; on average bf16 neither gains nor loses.
    assert np.max(np.abs(gaps)) < 1.0 and abs(np.mean(gaps)) < 0.2, gaps
    assert np.max(np.abs(np.log(ratios))) < 0.1 and abs(np.mean(np.log(ratios))) < 0.03, ratios


def test_every_weight_gets_a_finite_fp32_gradient_under_bf16(pair):
    _, bf16 = pair
    frames = tf.random.stateless_uniform([2, 3, 64, 64, 3], seed=[7, 8])
    with tf.GradientTape() as tape:
        out = bf16.forward_gop(frames, [[0, 3.5, 7], [7, 6, 5]], QuantMode.NOISE, training=True)
        loss = tf.reduce_mean((out.reconstructions - frames) ** 2) + 1e-3 * tf.reduce_mean(out.bits)
    assert loss.dtype == tf.float32
    grads = tape.gradient(loss, bf16.trainable_variables)
    missing = [v.name for v, g in zip(bf16.trainable_variables, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    assert {g.dtype for g in grads} == {tf.float32}
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)


def test_the_scope_applies_at_construction_and_is_restored():
    from model.layers import conv

    with conv_precision("bf16"):
        inner = conv(4)
        with conv_precision("fp32"):
            nested = conv(4)
        after_nested = conv(4)
    outside = conv(4)
    assert [c.compute_dtype for c in (inner, nested, after_nested, outside)] == ["bfloat16", "float32", "bfloat16", "float32"]
    with pytest.raises(RuntimeError), conv_precision("bf16"):
        raise RuntimeError("restored on the way out")
    assert conv(4).compute_dtype == "float32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: fp32, bf16"):
        with conv_precision("fp16"):
            pass
    x = tf.ones([1, 8, 8, 3])
    assert inner(x).dtype == tf.float32 and inner.kernel.dtype == tf.float32
