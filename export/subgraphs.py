"""The subgraphs the runtime chains and the exporter cuts out (Figure 2, App. A).

One table, `SUBGRAPHS`, names every network the codec runs, with its named inputs and outputs.
The TF backend calls these functions directly; `export/export_trt.py` writes each one as a
SavedModel signature, an ONNX file and a TensorRT engine; the ONNX and TensorRT backends feed
them by these names. All tensors are float32 NHWC with dynamic batch, height and width
(height and width multiples of 64 for image inputs).

    I-frame:  iframe_analysis -> iframe_hyper_analysis -> [range coder] -> iframe_hyper_synthesis
              -> [range coder] -> iframe_synthesis
    P-frame:  predictor -> flow_analysis -> flow_hyper_analysis -> flow_hyper_synthesis
              -> flow_synthesis (includes the scale-space warp) -> residue_analysis
              -> residue_hyper_analysis -> residue_hyper_synthesis -> residue_synthesis

`*_analysis` subgraphs run only in the encoder; everything else runs on both sides.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import tensorflow as tf

from model import warp
from model.config import ModelConfig
from model.elfvc import ELFVC

IMAGE, FEATURE = "image", "feature"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    channels: str  # a ModelConfig attribute name, or a literal int as a string.
    stride: int  # spatial downsampling relative to the (padded) frame; 0 = no spatial dims.

    def shape(self, config: ModelConfig):
        channels = int(self.channels) if self.channels.isdigit() else getattr(config, self.channels)
        if self.channels == "embedding_width":
            channels = config.embedding_width
        if self.stride == 0:
            return [None, channels]
        return [None, None, None, channels]


@dataclass(frozen=True)
class Subgraph:
    name: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[str, ...]
    encoder_only: bool
    hyper_synthesis: bool = False  # FP32 in TensorRT: its outputs index the range coder's tables.


_EMB = TensorSpec("embedding", "embedding_width", 0)
_STATE = TensorSpec("state", "state_channels", 4)


def _img(name):
    return TensorSpec(name, "3", 1)


_LATENT = TensorSpec("latent", "latent_channels", 16)
_HYPER = TensorSpec("hyper_latent", "hyper_latent_channels", 64)

SUBGRAPHS: Dict[str, Subgraph] = {
    g.name: g
    for g in [
        Subgraph("iframe_analysis", (_img("image"), _EMB), ("latent",), True),
        Subgraph("iframe_hyper_analysis", (_LATENT, _EMB), ("hyper_latent",), True),
        Subgraph("iframe_hyper_synthesis", (_HYPER, _EMB), ("mean", "scale"), False, True),
        Subgraph("iframe_synthesis", (_LATENT, _EMB), ("reconstruction", "state"), False),
        Subgraph(
            "predictor",
            (_img("previous_flow"), _img("previous2"), _img("previous"), _EMB),
            ("predicted_flow",),
            False,
        ),
        Subgraph(
            "flow_analysis",
            (_img("target"), _img("previous"), _img("predicted_flow"), _STATE, _EMB),
            ("latent",),
            True,
        ),
        Subgraph("flow_hyper_analysis", (_LATENT, _EMB), ("hyper_latent",), True),
        Subgraph("flow_hyper_synthesis", (_HYPER, _EMB), ("mean", "scale"), False, True),
        Subgraph(
            "flow_synthesis",
            (_LATENT, _img("previous"), _img("predicted_flow"), _STATE, _EMB),
            ("flow", "mask", "flow_delta", "compensated", "state"),
            False,
        ),
        Subgraph(
            "residue_analysis",
            (_img("residual"), _img("compensated"), _STATE, _EMB),
            ("latent",),
            True,
        ),
        Subgraph("residue_hyper_analysis", (_LATENT, _EMB), ("hyper_latent",), True),
        Subgraph("residue_hyper_synthesis", (_HYPER, _EMB), ("mean", "scale"), False, True),
        Subgraph(
            "residue_synthesis",
            (_LATENT, _img("compensated"), _STATE, _EMB),
            ("reconstruction", "residue", "state"),
            False,
        ),
    ]
}


def subgraph_names(model: ELFVC) -> list:
    """Subgraphs this model has (no predictor in the no-predictor ablation)."""
    return [n for n in SUBGRAPHS if n != "predictor" or model.predictor is not None]


def _python_functions(model: ELFVC) -> Dict[str, Callable]:
    """The model pieces behind each subgraph, as plain functions of tensors."""
    m = model

    def hyper_synthesis(block):
        return lambda hyper_latent, embedding: block.codelayer.hyper_synthesis(hyper_latent, embedding)

    def hyper_analysis(block):
        return lambda latent, embedding: block.codelayer.hyper_analysis(latent, embedding)

    return {
        "iframe_analysis": lambda image, embedding: m.iframe.encode_latent(image, embedding),
        "iframe_hyper_analysis": hyper_analysis(m.iframe),
        "iframe_hyper_synthesis": hyper_synthesis(m.iframe),
        "iframe_synthesis": lambda latent, embedding: m.iframe.decode(latent, embedding),
        "predictor": lambda previous_flow, previous2, previous, embedding: m.predictor(
            previous_flow, previous2, previous, embedding
        ),
        "flow_analysis": lambda target, previous, predicted_flow, state, embedding: m.flow.encode_latent(
            target, previous, predicted_flow, state, embedding
        ),
        "flow_hyper_analysis": hyper_analysis(m.flow),
        "flow_hyper_synthesis": hyper_synthesis(m.flow),
        "flow_synthesis": lambda latent, previous, predicted_flow, state, embedding: m.flow.decode(
            latent, previous, predicted_flow, state, embedding
        ),
        "residue_analysis": lambda residual, compensated, state, embedding: m.residue.encode_latent(
            residual, compensated, state, embedding
        ),
        "residue_hyper_analysis": hyper_analysis(m.residue),
        "residue_hyper_synthesis": hyper_synthesis(m.residue),
        "residue_synthesis": lambda latent, compensated, state, embedding: m.residue.decode(
            latent, compensated, state, embedding
        ),
    }


def input_signature(model: ELFVC, name: str):
    return [tf.TensorSpec(spec.shape(model.config), tf.float32, name=spec.name) for spec in SUBGRAPHS[name].inputs]


def subgraph_functions(model: ELFVC, sliced_blur: bool = False) -> Dict[str, tf.types.experimental.GenericFunction]:
    """name -> tf.function(**named inputs) -> dict of named outputs, with dynamic shapes.

    `sliced_blur`: trace the warp's blurs as model.warp.sliced_blur's sums of slices (faster to
    run on the CPU, slower to trace and to convert; the TF backend's choice) instead of depthwise
    convolutions (the exporter's)."""
    python = _python_functions(model)
    def make(fn, graph):
        def run(*args):
            with (warp.sliced_blur() if sliced_blur else contextlib.nullcontext()):
                result = fn(*args)
            result = result if isinstance(result, (tuple, list)) else (result,)
            return {out: tf.identity(t, name=out) for out, t in zip(graph.outputs, result)}

        # Its own code object per subgraph: TensorFlow counts traces per code object, and 13
        # closures sharing one read as "retracing" (a false warning printed by every export).
        run.__code__ = run.__code__.replace(co_name=graph.name, co_qualname=graph.name)
        return run

    return {
        name: tf.function(
            make(python[name], SUBGRAPHS[name]), input_signature=input_signature(model, name), autograph=False
        )
        for name in subgraph_names(model)
    }


# -- the coding graph: integer hyper syntheses (model/integer_hyper.py) -----------------------------
_QEMB = TensorSpec("quantized_embedding", "embedding_width", 0)

#: What the codec runs: SUBGRAPHS with each *_hyper_synthesis replaced by its integer network,
#: which takes z_hat and the host-quantized embedding round(255 e) and returns the exact mean and
#: the integer sigma accumulator the range coder's scale index is read from.
CODING_SUBGRAPHS: Dict[str, Subgraph] = {
    name: (
        Subgraph(name, (_HYPER, _QEMB), ("mean", "scale_accumulator"), False, True)
        if graph.hyper_synthesis
        else graph
    )
    for name, graph in SUBGRAPHS.items()
}


def coding_subgraph_functions(bundle_or_model, sliced_blur: bool = False) -> Dict[str, tf.types.experimental.GenericFunction]:
    """`subgraph_functions` with the three *_hyper_synthesis entries replaced by the integer
    networks of model/integer_hyper.py (a bundle's pinned ones, or for a bare model ones
    calibrated now on model.bundle.calibration_frames())."""
    model = getattr(bundle_or_model, "model", bundle_or_model)
    integer_hyper = getattr(bundle_or_model, "integer_hyper", None)
    if integer_hyper is None:
        from model.bundle import calibrate

        integer_hyper = calibrate(model)
    from model.integer_hyper import tf_function

    functions = subgraph_functions(model, sliced_blur)
    for block in ("iframe", "flow", "residue"):
        functions[f"{block}_hyper_synthesis"] = tf_function(
            integer_hyper[block], model.config.embedding_width, model.config.hyper_latent_channels
        )
    return functions
