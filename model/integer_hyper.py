"""Integer hyper synthesis D1: entropy parameters that every backend computes bit-identically.

The range decoder needs exactly the scale index and mean the encoder used (App. A: q0 is coded
with (mu0, sigma0) = D1(q1)). A float D1 evaluated by TF on one side and ONNX Runtime or
TensorRT on the other differs by ~1e-6 now and then, enough to move a scale across a table
boundary and desynchronize the decoder. Following Ballé, Johnston & Minnen 2019 ("Integer
networks for data compression with latent-variable models"), the trained D1 (model/transforms.py
`HyperSynthesis`) is converted into an integer network that is still evaluated in float32, but
only ever on integers:

    z  = clip(z_hat, -Z, Z)                    integers (q1 symbols)
    e  = round(255 * embedding)                integers, computed on the host from the level
    h1 = clip(floor((conv3x3([z, e]; W1) + b1) * 2^-s1), 0, A)                  (ReLU)
    h2 = d2s(clip(floor((conv3x3(h1; W2) + b2) * 2^-s2), 0, A))                 (ReLU)
    h3 = d2s(clip(floor((conv3x3(h2; W3) + b3) * 2^-s3), 0, A))                 (ReLU)
    acc = conv3x3(h3; W4) + b4 ;  mu = acc[:C] * 2^-s_mu ;  sigma accumulator = acc[C:]

W, b are integers, s per output channel integers (power-of-two scales, so a backend that folds
a scale into the weights changes nothing), the rounding offset 2^(s-1) lives in b, and floor is
unambiguous on every backend (round-half-even vs half-away is not). For every output channel,
sum |W| * max|input| + |b| < 2^24 (checked at conversion, `IntegerBoundError` otherwise): every
partial sum of every accumulation is then an integer exactly representable in float32, so the
sum is exact in any order, on any backend, and under any reassociation. |W| <= 2047 and
inputs <= 2047 in magnitude also keep products exact under TF32 (10-bit mantissa inputs). The
convolutions are written as 9 shifted slices + one matrix multiply, so no backend can pick a
Winograd or FFT algorithm (whose transforms are not exact).

The scale index never leaves integers either: sigma = softplus(acc * 2^-s) / Q_w falls in table
bin k iff acc >= T_k, with integer thresholds T_k = ceil(softplus^-1(m_k * Q_w) * 2^s) computed
on the host in float64 from the range coder's bin boundaries m_k (model/npmath.py).

The steps of the activations are calibrated on real activations (`calibrate`); the result is
pinned in the bundle (`integer_hyper.npz`) and hashed into the model identity, so encoder and
decoder use the same network whatever machine they run on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from model.npmath import scale_boundaries, scale_index

#: Largest hidden activation (8-bit activations).
ACTIVATION_MAX = 255
#: Largest |integer weight|: 11 bits keeps products exact even in TF32.
WEIGHT_MAX = 2047
#: The level embedding (entries in [0, 1]) enters as round(EMBEDDING_UNIT * e).
EMBEDDING_UNIT = 255
#: Largest |z_hat| fed to the network (the q1 symbols themselves are coded unclipped).
HYPER_LATENT_LIMIT = 2047
#: Every accumulation stays strictly below this: float32 represents all integers up to 2^24.
EXACT_LIMIT = 2**24
#: Hidden activation ranges are calibrated to this multiple of the largest value seen, so content
#: busier than the calibration frames rarely saturates the 8-bit range (measured in docs/DESIGN.md).
CALIBRATION_HEADROOM = 1.5
#: Block names, in the order the bundle stores them.
BLOCKS = ("iframe", "flow", "residue")


class IntegerBoundError(ValueError):
    """The integer network could overflow float32's exact integer range."""


@dataclass(frozen=True)
class IntegerConv:
    """One 3x3 'same' convolution on integers: acc = conv(x; kernel) + bias; out = acc * 2^-shift."""

    kernel: np.ndarray  # int64 [3, 3, C_in, C_out]
    bias: np.ndarray  # int64 [C_out]; includes the rounding offset 2^(shift-1) of hidden layers
    shift: np.ndarray  # int64 [C_out]
    input_max: np.ndarray  # int64 [C_in]: the largest |input| the layer can receive per channel
    depth_to_space: bool = False

    def accumulator_bound(self) -> np.ndarray:
        """[C_out] worst-case |partial sum| of any accumulation order."""
        weighted = np.abs(self.kernel) * self.input_max[None, None, :, None]
        return weighted.sum(axis=(0, 1, 2)) + np.abs(self.bias)

    def check(self, name: str) -> None:
        if np.abs(self.kernel).max(initial=0) > WEIGHT_MAX:
            raise IntegerBoundError(f"{name}: integer weight {np.abs(self.kernel).max()} exceeds {WEIGHT_MAX}")
        bound = self.accumulator_bound()
        if bound.max(initial=0) >= EXACT_LIMIT:
            j = int(np.argmax(bound))
            raise IntegerBoundError(
                f"{name}: channel {j} can accumulate {int(bound[j])} >= 2^24; float32 sums would not be exact"
            )


@dataclass(frozen=True)
class IntegerHyperSynthesis:
    """The integer D1 of one codelayer, plus the coding index of its q1 scales sigma_1."""

    conv0: IntegerConv
    up1: IntegerConv
    up2: IntegerConv
    params: IntegerConv
    latent_channels: int
    hyper_latent_max: int  # Z
    hyper_scale_index: np.ndarray  # int32 [C_z]: table index of sigma_1 per q1 channel

    @property
    def convs(self) -> Tuple[IntegerConv, ...]:
        return (self.conv0, self.up1, self.up2, self.params)

    def check(self) -> None:
        for name, conv in zip(("conv0", "up1", "up2", "params"), self.convs):
            conv.check(name)

    # -- host-side pieces shared by encoder and decoder --------------------------------------
    def scale_thresholds(self, quant_width) -> np.ndarray:
        """int64 [C, SCALE_COUNT - 1]: sigma / Q_w falls in table bin >= k+1 iff acc >= T[:, k].

        quant_width: [C] Q_w per channel (float64; ones for P-frame codelayers without a Q_w).
        """
        steps = 2.0 ** -self.params.shift[self.latent_channels :].astype(np.float64)  # [C]
        sigma = scale_boundaries()[None, :] * np.asarray(quant_width, np.float64)[:, None]  # [C, K-1]
        raw = sigma + np.log(-np.expm1(-sigma))  # softplus^-1, stable for large sigma
        return np.ceil(raw / steps[:, None]).astype(np.int64)

    def accumulator_scale_index(self, accumulator: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """Integer sigma accumulators [..., C] -> int32 table indices [..., C]."""
        acc = np.asarray(accumulator)
        out = np.empty(acc.shape, np.int32)
        for j in range(acc.shape[-1]):
            out[..., j] = np.searchsorted(thresholds[j], acc[..., j], side="right")
        return out

    # -- the numpy reference ---------------------------------------------------------------------
    def reference(self, hyper_latent: np.ndarray, quantized_embedding: np.ndarray):
        """int64 evaluation -> (mean float32 [B, h, w, C], scale accumulator int64 [B, h, w, C])."""
        z = np.clip(np.asarray(hyper_latent, np.int64), -self.hyper_latent_max, self.hyper_latent_max)
        e = np.asarray(quantized_embedding, np.int64)
        level_map = np.broadcast_to(e[:, None, None, :], z.shape[:3] + (e.shape[-1],))
        h = np.concatenate([z, level_map], axis=-1)
        for conv in (self.conv0, self.up1, self.up2):
            acc = _conv_int64(h, conv.kernel) + conv.bias
            h = np.clip(_shift_floor(acc, conv.shift), 0, ACTIVATION_MAX)
            if conv.depth_to_space:
                h = _depth_to_space(h, 2)
        acc = _conv_int64(h, self.params.kernel) + self.params.bias
        c = self.latent_channels
        mean = (acc[..., :c].astype(np.float64) * 2.0 ** -self.params.shift[:c].astype(np.float64)).astype(np.float32)
        return mean, acc[..., c:]

    # -- serialization ------------------------------------------------------------------------------
    def to_arrays(self, prefix: str) -> Dict[str, np.ndarray]:
        out = {}
        for name, conv in zip(("conv0", "up1", "up2", "params"), self.convs):
            for part in ("kernel", "bias", "shift", "input_max"):
                out[f"{prefix}/{name}/{part}"] = np.asarray(getattr(conv, part), np.int64)
        out[f"{prefix}/latent_channels"] = np.asarray(self.latent_channels, np.int64)
        out[f"{prefix}/hyper_latent_max"] = np.asarray(self.hyper_latent_max, np.int64)
        out[f"{prefix}/hyper_scale_index"] = np.asarray(self.hyper_scale_index, np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "IntegerHyperSynthesis":
        convs = [
            IntegerConv(
                *(np.asarray(arrays[f"{prefix}/{name}/{part}"], np.int64) for part in ("kernel", "bias", "shift", "input_max")),
                depth_to_space=name in ("up1", "up2"),
            )
            for name in ("conv0", "up1", "up2", "params")
        ]
        net = cls(
            *convs,
            latent_channels=int(arrays[f"{prefix}/latent_channels"]),
            hyper_latent_max=int(arrays[f"{prefix}/hyper_latent_max"]),
            hyper_scale_index=np.asarray(arrays[f"{prefix}/hyper_scale_index"], np.int32),
        )
        net.check()
        return net


# -- integer helpers (numpy reference) ------------------------------------------------------------
def _im2col(x: np.ndarray) -> np.ndarray:
    """[B, H, W, C] -> [B, H, W, 9 C], 3x3 'same' zero padding, (dy, dx, c) order."""
    _, height, width, _ = x.shape
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    return np.concatenate(
        [padded[:, dy : dy + height, dx : dx + width, :] for dy in range(3) for dx in range(3)], axis=-1
    )


def _conv_int64(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    cols = _im2col(x)
    return cols @ kernel.reshape(-1, kernel.shape[-1])


def _shift_floor(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """floor(acc * 2^-shift) per channel, in integers."""
    right = np.maximum(shift, 0)
    left = np.maximum(-shift, 0)
    return (acc >> right) << left


def _depth_to_space(x: np.ndarray, block: int) -> np.ndarray:
    """TF's NHWC depth_to_space (DCR): channel (dy * block + dx) * C + c."""
    b, h, w, c = x.shape
    out_c = c // (block * block)
    x = x.reshape(b, h, w, block, block, out_c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, out_c)


def quantize_embedding(embedding) -> np.ndarray:
    """Level embedding [B, E] in [0, 1] -> float32 integers round(255 e) (host side, float64)."""
    return np.floor(np.asarray(embedding, np.float64) * EMBEDDING_UNIT + 0.5).astype(np.float32)


# -- the TF function (what the TF backend runs and the exporter exports) ------------------------
def tf_function(net: IntegerHyperSynthesis, embedding_width: int, hyper_latent_channels: int):
    """tf.function(hyper_latent [B, h, w, C_z], quantized_embedding [B, E]) -> {mean, scale_accumulator}."""
    import tensorflow as tf

    def constants(conv: IntegerConv):
        # numpy here, tf.constant inside the traced function: graph constants, not captured
        # eager tensors (which exporters such as tf2onnx would turn into extra inputs).
        kernel = conv.kernel.reshape(-1, conv.kernel.shape[-1]).astype(np.float32)
        bias = conv.bias.astype(np.float32)
        multiplier = (2.0 ** -conv.shift.astype(np.float64)).astype(np.float32)
        return kernel, bias, multiplier

    layers = [constants(conv) for conv in net.convs]
    c = net.latent_channels
    limit = float(net.hyper_latent_max)

    def conv3x3(x, kernel, bias):
        # 9 shifted slices + one matmul: exact on integers whatever the backend's GEMM order.
        shape = tf.shape(x)
        padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        size = tf.concat([[-1], shape[1:3], [-1]], 0)
        cols = tf.concat([tf.slice(padded, [0, dy, dx, 0], size) for dy in range(3) for dx in range(3)], axis=-1)
        flat = tf.reshape(cols, [-1, kernel.shape[0]])
        acc = tf.matmul(flat, tf.constant(kernel)) + tf.constant(bias)
        return tf.reshape(acc, tf.concat([shape[:3], [kernel.shape[1]]], 0))

    def run(hyper_latent, quantized_embedding):
        z = tf.clip_by_value(hyper_latent, -limit, limit)
        shape = tf.shape(z)
        level_map = tf.tile(quantized_embedding[:, None, None, :], [1, shape[1], shape[2], 1])
        h = tf.concat([z, level_map], axis=-1)
        for conv, (kernel, bias, multiplier) in zip(net.convs[:3], layers[:3]):
            h = tf.clip_by_value(tf.floor(conv3x3(h, kernel, bias) * tf.constant(multiplier)), 0.0, float(ACTIVATION_MAX))
            if conv.depth_to_space:
                h = tf.nn.depth_to_space(h, 2)
        kernel, bias, multiplier = layers[3]
        acc = conv3x3(h, kernel, bias)
        mean = acc[..., :c] * tf.constant(multiplier[:c])
        return {
            "mean": tf.identity(mean, name="mean"),
            "scale_accumulator": tf.identity(acc[..., c:], name="scale_accumulator"),
        }

    signature = [
        tf.TensorSpec([None, None, None, hyper_latent_channels], tf.float32, name="hyper_latent"),
        tf.TensorSpec([None, embedding_width], tf.float32, name="quantized_embedding"),
    ]
    return tf.function(run, input_signature=signature, autograph=False)


# -- conversion -------------------------------------------------------------------------------------
@dataclass
class _FloatD1:
    """A trained HyperSynthesis' weights in float64: [(kernel [3,3,Cin,Cout], bias [Cout])] x 4."""

    layers: List[Tuple[np.ndarray, np.ndarray]]
    latent_channels: int

    @classmethod
    def of(cls, layer) -> "_FloatD1":
        convs = (layer.conv0, layer.up1, layer.up2, layer.out)
        return cls(
            [(c.kernel.numpy().astype(np.float64), c.bias.numpy().astype(np.float64)) for c in convs],
            layer.latent_channels,
        )

    def activations(self, z: np.ndarray, embedding: np.ndarray) -> List[np.ndarray]:
        """Float64 ReLU outputs of the three hidden layers (after depth-to-space)."""
        level_map = np.broadcast_to(embedding[:, None, None, :], z.shape[:3] + (embedding.shape[-1],))
        h = np.concatenate([z, level_map], axis=-1)
        out = []
        for i, (kernel, bias) in enumerate(self.layers[:3]):
            h = np.maximum(_im2col(h) @ kernel.reshape(-1, kernel.shape[-1]) + bias, 0.0)
            if i > 0:
                h = _depth_to_space(h, 2)
            out.append(h)
        return out


def _quantize_conv(
    kernel: np.ndarray,
    bias: np.ndarray,
    input_step: np.ndarray,
    input_max: np.ndarray,
    output_step: Optional[np.ndarray],
    hidden: bool,
    depth_to_space: bool,
) -> IntegerConv:
    """Integerizes one float conv whose integer inputs u_i represent x_i = u_i * input_step_i.

    Hidden layers: acc_j * c_j approximates the float pre-activation and the output integer
    represents h_j = out_j * output_step_j, with c_j = output_step_j * 2^-shift_j. Output layer
    (output_step None): c_j = 2^-shift_j, a power of two.
    c_j is chosen as small as the weight range and the 2^24 bound allow (the finer c_j, the
    finer the integer weights).
    """
    scaled = kernel * input_step[None, None, :, None]  # float weight per unit of integer input
    c_weights = np.abs(scaled).max(axis=(0, 1, 2)) / (WEIGHT_MAX + 0.5)
    c_bound = ((np.abs(scaled) * input_max[None, None, :, None]).sum(axis=(0, 1, 2)) + np.abs(bias)) / (EXACT_LIMIT / 2)
    c_min = np.maximum(np.maximum(c_weights, c_bound), 1e-30)
    if output_step is not None:
        shift = np.floor(np.log2(output_step / c_min)).astype(np.int64)
        step = output_step * 2.0 ** -shift.astype(np.float64)
    else:
        shift = np.floor(-np.log2(c_min)).astype(np.int64)
        step = 2.0 ** -shift.astype(np.float64)
    int_kernel = np.round(scaled / step[None, None, None, :]).astype(np.int64)
    int_bias = np.round(bias / step).astype(np.int64)
    if hidden:
        int_bias = int_bias + np.where(shift >= 1, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    return IntegerConv(int_kernel, int_bias, shift, input_max.astype(np.int64), depth_to_space)


def convert(
    hyper_synthesis,
    hyper_scale: np.ndarray,
    calibration: Sequence[Tuple[np.ndarray, np.ndarray]],
    embedding_width: int,
    headroom: float = CALIBRATION_HEADROOM,
) -> IntegerHyperSynthesis:
    """Converts a trained model/transforms.py HyperSynthesis layer into an integer network.

    Args:
      hyper_synthesis: the Keras layer (conv0, up1, up2, out).
      hyper_scale: [C_z] sigma_1 of the codelayer (float).
      calibration: (z_hat [B, h, w, C_z] integers, embedding [B, E] floats) pairs of real
        activations (z_hat from the hyper analysis of real frames at several levels).
      embedding_width: E.
      headroom: hidden activation ranges = headroom x the calibration maxima.
    """
    float_net = _FloatD1.of(hyper_synthesis)
    if not calibration:
        raise ValueError("integer hyper synthesis: no calibration data")
    z_max = max([1.0] + [float(np.abs(np.round(np.asarray(z, np.float64))).max(initial=0)) for z, _ in calibration])
    z_limit = int(min(HYPER_LATENT_LIMIT, max(8, math.ceil(2 * z_max))))
    hidden_max = None
    for z, embedding in calibration:
        # The activations the integer network will see: z clipped to +-Z as in `reference`. (A
        # barely trained model's hyper latents can exceed Z by orders of magnitude; calibrating on
        # them unclipped gave hidden steps whose rounding offsets alone broke the 2^24 bound.)
        z = np.clip(np.round(np.asarray(z, np.float64)), -z_limit, z_limit)
        e = quantize_embedding(embedding).astype(np.float64) / EMBEDDING_UNIT
        acts = float_net.activations(z, e)
        maxima = [a.reshape(-1, a.shape[-1]).max(axis=0) for a in acts]
        hidden_max = maxima if hidden_max is None else [np.maximum(a, b) for a, b in zip(hidden_max, maxima)]
    cz = hyper_scale.shape[0]
    in_step = np.concatenate([np.ones(cz), np.full(embedding_width, 1.0 / EMBEDDING_UNIT)])
    in_max = np.concatenate([np.full(cz, z_limit), np.full(embedding_width, EMBEDDING_UNIT)])
    convs = []
    for i, (kernel, bias) in enumerate(float_net.layers[:3]):
        post = hidden_max[i] * headroom
        # Dead channels in calibration still get a sane step: a small fraction of the layer's range.
        post = np.maximum(post, 1e-3 * max(float(post.max()), 1e-6))
        step = post / ACTIVATION_MAX
        if i > 0:  # depth-to-space: pre-d2s channel (dy*2 + dx) * C + c becomes post channel c.
            step = np.tile(step, 4)
        convs.append(_quantize_conv(kernel, bias, in_step, in_max, step, hidden=True, depth_to_space=i > 0))
        in_step = post / ACTIVATION_MAX
        in_max = np.full(kernel.shape[-1] // (4 if i > 0 else 1), ACTIVATION_MAX)
    kernel, bias = float_net.layers[3]
    convs.append(_quantize_conv(kernel, bias, in_step, in_max, None, hidden=False, depth_to_space=False))
    net = IntegerHyperSynthesis(
        *convs,
        latent_channels=float_net.latent_channels,
        hyper_latent_max=z_limit,
        hyper_scale_index=scale_index(np.asarray(hyper_scale, np.float64)),
    )
    net.check()
    return net
