"""The scale-space warp (model/warp.py, §2 after the paper's reference [2]) lowered to ONNX
GridSample, replacing tf2onnx's literal translation in exported subgraphs.

Why: model/warp.py samples with gathers so that it runs and exports anywhere. tf2onnx turns it
into ~400 small NHWC nodes (GatherND per corner and level, and multiplies broadcasting a
[B, H, W, 1] weight over 3 channels), which ONNX Runtime's CPU kernels run 2-3x slower than
TensorFlow runs the original, and which TensorRT would run as hundreds of tiny layers. The
same function is one GridSample over the stacked scale-space volume:

    previous [B, H, W, 3] --NCHW--> blur at sigma_k (same kernels, same symmetric padding)
        -> volume [B, 3 K, H, W]
    flow [B, H, W, 3] -> grid = ((x + dx) * 2 / (W - 1) - 1, (y + dy) * 2 / (H - 1) - 1)
        GridSample(volume, grid, bilinear, border, align_corners=1)    (edge-clamped, as TF)
        -> [B, K, 3, H, W] * hat weights w_k(sigma) [B, K, 1, H, W] -> sum over k -> NHWC

Coordinates stay float32 (TensorRT pins these layers to FP32, export/tensorrt_build.py).
With align_corners=1 GridSample maps the normalized coordinate back to (x + dx) in pixels; the
round trip costs about W * 2^-24 px, ~1e-4 px at 1920 wide, far below what is visible.
The exporter's parity check compares the result with TensorFlow's gather-based warp.
"""

from __future__ import annotations

from typing import Iterable, List, Set

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model.npmath import gaussian_kernel_1d, scale_space_sigmas


class _Builder:
    """Collects nodes and initializers with unique names under a prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, value, hint: str = "const") -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Iterable[str], output: str = None, **attrs) -> str:
        output = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=self.name(op_type), **attrs))
        return output


def _symmetric_pad(b: _Builder, x: str, radius: int, axis: int) -> str:
    """tf.pad(..., "SYMMETRIC") by `radius` on both sides of `axis` (Gather + Concat)."""
    front = b.op("Gather", [x, b.const(np.arange(radius - 1, -1, -1, dtype=np.int64))], axis=axis)
    size = b.op("Gather", [b.op("Shape", [x]), b.const(np.array([axis], np.int64))], axis=0)
    back_index = b.op("Sub", [size, b.const(np.arange(1, radius + 1, dtype=np.int64))])
    back = b.op("Gather", [x, back_index], axis=axis)
    return b.op("Concat", [front, x, back], axis=axis)


def _blur(b: _Builder, x: str, sigma: float, channels: int) -> str:
    """model.warp.gaussian_blur on NCHW: symmetric pad, then the separable kernel along x, y."""
    if sigma <= 0.0:
        return x
    kernel = gaussian_kernel_1d(sigma).astype(np.float32)
    radius = (kernel.size - 1) // 2
    padded = _symmetric_pad(b, _symmetric_pad(b, x, radius, 2), radius, 3)
    kx = np.tile(kernel.reshape(1, 1, 1, -1), [channels, 1, 1, 1])
    ky = np.tile(kernel.reshape(1, 1, -1, 1), [channels, 1, 1, 1])
    h = b.op("Conv", [padded, b.const(kx, "blur_x")], group=channels)
    return b.op("Conv", [h, b.const(ky, "blur_y")], group=channels)


def _hat_weight(b: _Builder, sigma: str, sigmas, k: int) -> str:
    """Linear interpolation weight of volume level k at scale `sigma` (model/warp.py's hat)."""
    s = sigmas[k]
    parts = []
    if k > 0:
        lo = sigmas[k - 1]
        parts.append(b.op("Div", [b.op("Sub", [sigma, b.const(np.float32(lo))]), b.const(np.float32(s - lo))]))
    if k + 1 < len(sigmas):
        hi = sigmas[k + 1]
        parts.append(b.op("Div", [b.op("Sub", [b.const(np.float32(hi)), sigma]), b.const(np.float32(hi - s))]))
    weight = parts[0] if len(parts) == 1 else b.op("Min", parts)
    return b.op("Clip", [weight, b.const(np.float32(0.0)), b.const(np.float32(1.0))])


def warp_nodes(b: _Builder, image: str, flow: str, output: str, levels: int, sigma0: float, channels: int = 3):
    """Appends to `b` the nodes computing `output` = scale_space_warp(image, flow) (NHWC)."""
    sigmas = scale_space_sigmas(levels, sigma0)
    x = b.op("Transpose", [image], perm=[0, 3, 1, 2])
    volume = b.op("Concat", [_blur(b, x, s, channels) for s in sigmas], axis=1)  # [B, 3K, H, W]

    shape = b.op("Shape", [image])
    height_int, width_int = (b.op("Gather", [shape, b.const(np.array(axis, np.int64))], axis=0) for axis in (1, 2))
    height, width = (b.op("Cast", [size], to=onnx.TensorProto.FLOAT) for size in (height_int, width_int))
    one, two = b.const(np.float32(1.0)), b.const(np.float32(2.0))
    # Coordinate math on [B, H, W] tensors: ONNX Runtime's CPU elementwise kernels run a tensor
    # with a trailing dimension of 1 (such as [B, H, W, 1]) one element at a time, ~50x slower.
    axis3 = b.const(np.array([3], np.int64))
    dx, dy, dsigma = (
        b.op("Squeeze", [b.op("Slice", [flow, b.const(np.array([c], np.int64)), b.const(np.array([c + 1], np.int64)),
                                        axis3]), axis3])
        for c in range(3)
    )  # each [B, H, W]

    def ramp(size):  # 0, 1, ..., size - 1 as float; integer Range (TensorRT wants float Range constant)
        index = b.op("Range", [b.const(np.int64(0)), size, b.const(np.int64(1))])
        return b.op("Cast", [index], to=onnx.TensorProto.FLOAT)

    grid_x = b.op("Unsqueeze", [ramp(width_int), b.const(np.array([0, 1], np.int64))])  # [1, 1, W]
    grid_y = b.op("Unsqueeze", [ramp(height_int), b.const(np.array([0, 2], np.int64))])  # [1, H, 1]

    def normalized(grid, delta, size):  # pixel coordinate -> [-1, 1] with align_corners=1, [B, H, W, 1]
        scale = b.op("Div", [two, b.op("Sub", [size, one])])
        value = b.op("Sub", [b.op("Mul", [b.op("Add", [grid, delta]), scale]), one])
        return b.op("Unsqueeze", [value, axis3])

    grid = b.op("Concat", [normalized(grid_x, dx, width), normalized(grid_y, dy, height)], axis=3)  # [B, H, W, 2]
    sampled = b.op("GridSample", [volume, grid], mode="bilinear", padding_mode="border", align_corners=1)
    # [B, 3K, H, W] -> [B, K, 3, H, W]: split the channel axis without knowing B, H, W.
    sampled_shape = b.op("Shape", [sampled])
    split_shape = b.op("Concat", [
        b.op("Slice", [sampled_shape, b.const(np.array([0], np.int64)), b.const(np.array([1], np.int64))]),
        b.const(np.array([len(sigmas), channels], np.int64)),
        b.op("Slice", [sampled_shape, b.const(np.array([2], np.int64)), b.const(np.array([4], np.int64))]),
    ], axis=0)
    stacked = b.op("Reshape", [sampled, split_shape])

    sigma = b.op("Clip", [dsigma, b.const(np.float32(0.0)), b.const(np.float32(sigmas[-1]))])  # [B, H, W]
    axis1 = b.const(np.array([1], np.int64))
    weights = b.op("Concat", [b.op("Unsqueeze", [_hat_weight(b, sigma, sigmas, k), axis1]) for k in range(len(sigmas))],
                   axis=1)  # [B, K, H, W]
    weights = b.op("Unsqueeze", [weights, b.const(np.array([2], np.int64))])  # [B, K, 1, H, W]
    blended = b.op("ReduceSum", [b.op("Mul", [stacked, weights]), b.const(np.array([1], np.int64))], keepdims=0)
    return b.op("Transpose", [blended], output, perm=[0, 2, 3, 1])


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def _ancestors(graph, values: Iterable[str]) -> Set[int]:
    """Indices of nodes that `values` depend on."""
    producers = _producers(graph)
    index = {id(node): i for i, node in enumerate(graph.node)}
    seen: Set[int] = set()
    stack = list(values)
    while stack:
        node = producers.get(stack.pop())
        if node is None or index[id(node)] in seen:
            continue
        seen.add(index[id(node)])
        stack.extend(node.input)
    return seen


def replace_warp(
    model: onnx.ModelProto, levels: int, sigma0: float, image: str = "previous", flow: str = "flow",
    output: str = "compensated",
) -> onnx.ModelProto:
    """Replaces the nodes only `output` depends on with the GridSample warp of (image, flow).

    `image` is a graph input and `flow` a graph output of `model` (flow_synthesis); every other
    graph output keeps its nodes. Returns a new, checked model.
    """
    graph = model.graph
    outputs = [o.name for o in graph.output]
    if output not in outputs or flow not in outputs or image not in [i.name for i in graph.input]:
        raise ValueError(f"replace_warp needs input {image!r} and outputs {flow!r}, {output!r}; got {outputs}")
    keep = _ancestors(graph, [o for o in outputs if o != output])
    drop = _ancestors(graph, [output]) - keep
    new = onnx.ModelProto()
    new.CopyFrom(model)
    del new.graph.node[:]
    new.graph.node.extend(node for i, node in enumerate(graph.node) if i not in drop)
    b = _Builder("gridsample_warp")
    warp_nodes(b, image, flow, output, levels, sigma0)
    new.graph.node.extend(b.nodes)
    new.graph.initializer.extend(b.initializers)
    used = {name for node in new.graph.node for name in node.input}
    kept = [init for init in new.graph.initializer if init.name in used]
    del new.graph.initializer[:]
    new.graph.initializer.extend(kept)
    onnx.checker.check_model(new)
    return new
