"""The subgraph cut reproduces the model's own GOP forward pass exactly (hard rounding)."""

import numpy as np
import pytest
import tensorflow as tf

from model.config import get_config
from model.elfvc import ELFVC
from model.entropy import QuantMode
from export.subgraphs import SUBGRAPHS, subgraph_functions
from conftest import perturb_heads


@pytest.mark.parametrize("pframe_quant_width", [False, True])
def test_chained_subgraphs_match_forward_gop(pframe_quant_width):
    tf.random.set_seed(0)
    config = get_config("small", pframe_quant_width=pframe_quant_width, quant_width_first=3.0, quant_width_last=0.5)
    model = ELFVC(config).build_weights()
    perturb_heads(model)
    fns = subgraph_functions(model)
    assert set(fns) == set(SUBGRAPHS)
    frames = tf.random.stateless_uniform([1, 3, 64, 128, 3], seed=[1, 1])
    level = tf.constant([2.5])
    emb = model.embed(level)
    ref = model.forward_gop(frames, 2.5, QuantMode.ROUND)
    moved = np.abs(ref.reconstructions.numpy()[:, 1:] - ref.reconstructions.numpy()[:, :-1]).max()
    assert moved > 1e-2, f"the P-frames should not be copies of their references ({moved})"

    def code(prefix, latent, qw):
        z_hat = tf.round(fns[f"{prefix}_hyper_analysis"](latent, emb)["hyper_latent"])
        params = fns[f"{prefix}_hyper_synthesis"](z_hat, emb)
        mean = params["mean"]
        return mean + qw * tf.round((latent - mean) / qw)

    qw = model.iframe.quant_width(level)[:, None, None, :]
    flow_qw = model.flow.quant_width(level)[:, None, None, :]
    residue_qw = model.residue.quant_width(level)[:, None, None, :]
    # Level 2.5 of 0..7 lies between rows 2 and 3 of the geometric 3 -> 0.5 spread.
    expected = 3.0 * (0.5 / 3.0) ** (2.5 / 7)
    np.testing.assert_allclose(qw.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(flow_qw.numpy(), expected if pframe_quant_width else 1.0, rtol=1e-5)
    latent = fns["iframe_analysis"](frames[:, 0], emb)["latent"]
    out = fns["iframe_synthesis"](code("iframe", latent, qw), emb)
    prev2 = prev = out["reconstruction"]
    state, flow = out["state"], tf.zeros_like(prev)
    recons = [prev]
    for t in (1, 2):
        target = frames[:, t]
        pred = fns["predictor"](flow, prev2, prev, emb)["predicted_flow"]
        y = fns["flow_analysis"](target, prev, pred, state, emb)["latent"]
        f = fns["flow_synthesis"](code("flow", y, flow_qw), prev, pred, state, emb)
        y = fns["residue_analysis"](target - f["compensated"], f["compensated"], f["state"], emb)["latent"]
        r = fns["residue_synthesis"](code("residue", y, residue_qw), f["compensated"], f["state"], emb)
        prev2, prev, state, flow = prev, r["reconstruction"], r["state"], f["flow"]
        recons.append(prev)
    np.testing.assert_allclose(tf.stack(recons, 1).numpy(), ref.reconstructions.numpy(), atol=1e-5)
