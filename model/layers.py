"""Backbone pieces: the DM-C block (§3.2), channel normalization (App. C) and resamplers.

    DM-C block (Delayed Merge), one convolution per arrow, all with C channels:

        x --conv--> a1 --(+)--conv--> a2 --(+)--conv--> a3
        |            \\_______________/\\_______________/
        |   concat[a1, a2, a3] --1x1 conv--> C --(+ x)--> out

Several 3x3 convolutions accumulate additively; their activations are concatenated once and
reduced back to C by a 1x1 convolution (gap: the number of convolutions, and the residual).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

layers = tf.keras.layers

#: Training precisions of the convolutions (`conv_precision`); everything else is always FP32.
PRECISIONS = ("fp32", "bf16")
_conv_precision = ["fp32"]


@contextlib.contextmanager
def conv_precision(precision: str):
    """Layers built inside `with conv_precision("bf16"):` compute their convolutions in bfloat16.

    The analogue of the PyTorch mirror's bf16 autocast (gpu_train/train.py --precision=bf16) for
    the Keras trainer (model.train --precision=bf16): each `conv` keeps FP32 weights (Keras's
    mixed_bfloat16 policy: the kernel is read as bf16 inside the convolution), takes its input in
    bf16 and returns FP32, so activations, channel norms, the warp, the losses and checkpoints stay
    FP32 and unchanged. The hyperprior codelayers (quantization and rates) build their
    convolutions under `conv_precision("fp32")` whatever the scope outside. The scope applies when
    a layer is *constructed* (a Keras dtype policy is fixed then); a model built outside any scope
    is FP32, as export and the runtime need.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    _conv_precision.append(precision)
    try:
        yield
    finally:
        _conv_precision.pop()


class _Bf16Conv2D(layers.Conv2D):
    """Conv2D under the mixed_bfloat16 policy whose output is cast back to FP32."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, dtype="mixed_bfloat16", **kwargs)

    def call(self, inputs):
        return tf.cast(super().call(inputs), tf.float32)


def conv(channels: int, kernel: int = 3, stride: int = 1, name=None, activation=None, zero_init: bool = False):
    """3x3 'same' convolution. `zero_init` starts an output head at exactly zero (see codecs.py).

    In FP32 unless built inside `conv_precision("bf16")`."""
    init = dict(kernel_initializer="zeros") if zero_init else {}
    cls = _Bf16Conv2D if _conv_precision[-1] == "bf16" else layers.Conv2D
    return cls(channels, kernel, strides=stride, padding="same", activation=activation, name=name, **init)


class DMBlock(layers.Layer):
    """Delayed Merge block DM-C (§3.2, Figure 6)."""

    def __init__(self, channels: int, num_convs: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.convs = [conv(channels, name=f"conv{i}") for i in range(num_convs)]
        self.merge = conv(channels, kernel=1, name="merge")

    def call(self, x):
        h = x
        activations = []
        for i, layer in enumerate(self.convs):
            a = tf.nn.leaky_relu(layer(h), 0.2)
            h = a if i == 0 else h + a  # additive accumulation
            activations.append(a)
        return x + self.merge(tf.concat(activations, axis=-1))


class Downsample(layers.Layer):
    """2x downsampling by a strided 3x3 convolution."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = conv(channels, stride=2, name="conv")

    def call(self, x):
        return tf.nn.leaky_relu(self.conv(x), 0.2)


class Upsample(layers.Layer):
    """2x upsampling: a 3x3 convolution to 4C followed by depth-to-space (exports as DepthToSpace)."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = conv(4 * channels, name="conv")

    def call(self, x):
        return tf.nn.leaky_relu(tf.nn.depth_to_space(self.conv(x), 2), 0.2)


class TwoScaleDMBlock(layers.Layer):
    """Predictor block (§3.3): DM blocks at the input scale and at half of it, exchanging features."""

    def __init__(self, channels: int, num_convs: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.down = Downsample(channels, name="down")
        self.coarse = DMBlock(channels, num_convs, name="coarse")
        self.up = Upsample(channels, name="up")
        self.fine = DMBlock(channels, num_convs, name="fine")

    def call(self, x):
        coarse = self.coarse(self.down(x))
        return self.fine(x + self.up(coarse))


class ChannelNorm(layers.Layer):
    """Channel normalization with moving averages frozen after `freeze_step` (App. C).

    Normalizes by per-channel moving averages of the input's mean and variance. While training and
    while the shared step counter is below `freeze_step`, the averages are updated from the batch
    (a cumulative average over the first 1 / (1 - momentum) updates, so early steps are not biased
    toward the initial values); from then on they are constants. Unlike batch norm, the output
    never depends on the other elements of the batch through the *current* batch statistics once
    frozen, and gradients never flow through the statistics.
    """

    def __init__(self, step, freeze_step: int = 2000, momentum: float = 0.99, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self._step = step  # a scalar int64 tf.Variable shared with the model: the optimizer step.
        self.freeze_step = freeze_step
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = int(input_shape[-1])
        sync = dict(synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.MEAN)
        self.moving_mean = self.add_weight("moving_mean", [channels], initializer="zeros", trainable=False, **sync)
        self.moving_variance = self.add_weight("moving_variance", [channels], initializer="ones", trainable=False, **sync)
        self.num_updates = self.add_weight("num_updates", [], initializer="zeros", trainable=False, **sync)
        super().build(input_shape)

    def _update(self, x):
        mean, variance = tf.nn.moments(tf.stop_gradient(x), axes=[0, 1, 2])
        n = self.num_updates
        momentum = tf.minimum(self.momentum, n / (n + 1.0))
        self.moving_mean.assign(momentum * self.moving_mean + (1.0 - momentum) * mean)
        self.moving_variance.assign(momentum * self.moving_variance + (1.0 - momentum) * variance)
        self.num_updates.assign_add(1.0)

    def call(self, x, training=False):
        if training:
            should_update = tf.cast(self._step, tf.int64) < self.freeze_step
            if isinstance(should_update, bool) or tf.executing_eagerly():
                if bool(should_update):
                    self._update(x)
            else:
                tf.cond(should_update, lambda: (self._update(x), tf.constant(True))[1], lambda: tf.constant(False))
        mean = tf.cast(self.moving_mean, x.dtype)
        scale = tf.math.rsqrt(tf.cast(self.moving_variance, x.dtype) + self.epsilon)
        return (x - mean) * scale
