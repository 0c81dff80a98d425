"""One subgraph (export/subgraphs.py) -> an ONNX model, via tf2onnx at opset 17.

What this module adds on top of a plain `tf2onnx.convert.from_function`:

- Names. ONNX inputs carry the subgraph's input names; outputs carry its output names, except
  where an output shares a name with an input (flow_synthesis takes `state` and returns the
  next `state`): ONNX values are single-assignment, so such an output becomes `<name>_out`.
  `onnx_output_name` is the one place this rule lives; the manifest records the mapping.
- Dimensions. Dynamic batch, height and width, named after the padded frame: `batch`,
  `height`, `width` for pixel tensors and `height_div16`, ... for tensors at stride 16, so a
  reader (and TensorRT's parser) sees which dynamic sizes are equal.
- Symmetric padding. The scale-space warp blurs with `tf.pad(..., "SYMMETRIC")`. tf2onnx
  lowers it to reflect-padding a zero-bordered copy and cutting the extra rows out with
  `Compress`, an operator TensorRT's ONNX parser does not implement. `_symmetric_pad` emits
  the same values with `Gather` (reversed edge rows) and `Concat` instead.
"""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Sequence

import numpy as np
import onnx
import tensorflow as tf

OPSET = 17

#: Dim-param names for tensors at stride 1 relative to the padded frame.
BATCH, HEIGHT, WIDTH = "batch", "height", "width"


def onnx_output_name(output: str, input_names: Sequence[str]) -> str:
    """The ONNX name of subgraph output `output` (suffixed when an input has the same name)."""
    return f"{output}_out" if output in input_names else output


def dim_names(stride: int):
    """(height, width) dim-param names of a tensor at `stride` relative to the padded frame."""
    if stride == 1:
        return HEIGHT, WIDTH
    return f"{HEIGHT}_div{stride}", f"{WIDTH}_div{stride}"


def _symmetric_pad(ctx, node, name, args):
    """tf2onnx handler for MirrorPad: SYMMETRIC with constant pads as Gather + Concat.

    Symmetric padding by p rows before and q after along an axis of size n appends rows
    [p-1, ..., 0] in front and [n-1, ..., n-q] behind (the edge row is repeated, unlike
    REFLECT). Anything else goes to tf2onnx's own Pad handler.
    """
    from tf2onnx import utils
    from tf2onnx.onnx_opset.nn import Pad

    mode = node.get_attr_value("mode")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode.upper() != "SYMMETRIC" or not node.inputs[1].is_const():
        return Pad.version_11(ctx, node)
    pads = np.asarray(node.inputs[1].get_tensor_value(as_list=False), np.int64)  # [rank, 2]
    axes = [a for a in range(pads.shape[0]) if pads[a].any()]
    if not axes:
        node.type = "Identity"
        ctx.replace_inputs(node, [node.input[0]])
        return None
    value = node.input[0]
    for i, axis in enumerate(axes):
        before, after = (int(p) for p in pads[axis])
        parts = []
        if before:
            index = ctx.make_const(utils.make_name(f"{name}_front"), np.arange(before - 1, -1, -1, dtype=np.int64))
            parts.append(ctx.make_node("Gather", [value, index.output[0]], attr={"axis": axis}).output[0])
        parts.append(value)
        if after:
            shape = ctx.make_node("Shape", [value]).output[0]
            pick = ctx.make_const(utils.make_name(f"{name}_axis"), np.array([axis], np.int64))
            size = ctx.make_node("Gather", [shape, pick.output[0]], attr={"axis": 0}).output[0]
            offsets = ctx.make_const(utils.make_name(f"{name}_back"), np.arange(1, after + 1, dtype=np.int64))
            index = ctx.make_node("Sub", [size, offsets.output[0]]).output[0]
            parts.append(ctx.make_node("Gather", [value, index], attr={"axis": axis}).output[0])
        if i + 1 < len(axes):
            value = ctx.make_node("Concat", parts, attr={"axis": axis}).output[0]
        else:  # the last concatenation becomes the MirrorPad node itself, keeping its output name.
            node.type = "Concat"  # MirrorPad's own attributes are not in Concat's schema: dropped.
            node.set_attr("axis", axis)
            ctx.replace_inputs(node, parts)
    return None


def _rename_dims(model: onnx.ModelProto, strides: Mapping[str, int]) -> None:
    """Gives every graph input/output dim a readable dim_param (batch, height_div16, ...)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_value:
            continue
        dims[0].dim_param = BATCH
        if len(dims) == 4 and value.name in strides:
            for dim, label in zip(dims[1:3], dim_names(strides[value.name])):
                dim.dim_param = label


def convert(
    function,
    input_signature: Sequence[tf.TensorSpec],
    output_names: Sequence[str],
    strides: Mapping[str, int],
    opset: int = OPSET,
) -> onnx.ModelProto:
    """Converts one subgraph function to ONNX.

    Args:
      function: tf.function taking the inputs of `input_signature` positionally and returning
        a dict {output name: tensor} (export/subgraphs.py's convention).
      input_signature: named float32 TensorSpecs with dynamic batch, height and width.
      output_names: the subgraph's output names, in the order to emit them.
      strides: spatial stride of each ONNX input/output name (for dim naming); 0 = no spatial dims.
      opset: ONNX opset.
    Returns:
      The checked ONNX model; inputs and outputs named as `onnx_output_name` says.
    """
    import tf2onnx

    inputs = [spec.name for spec in input_signature]
    renamed: Dict[str, str] = {out: onnx_output_name(out, inputs) for out in output_names}

    @tf.function(input_signature=list(input_signature), autograph=False)
    def named(*args):
        result = function(*args)
        missing = sorted(set(output_names) - set(result))
        if missing:
            raise ValueError(f"subgraph function returned no {missing}")
        return {renamed[out]: tf.identity(result[out], name=renamed[out]) for out in output_names}

    # Freeze first, then convert the graph: tf2onnx.convert.from_function would treat tensors the
    # function captured (the integer hyper synthesis' constant weights) as extra graph inputs.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = named.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    keys = sorted(concrete.structured_outputs)  # tf.nest's flattening order of a dict = outputs' order
    if len(keys) != len(frozen.outputs) or len(frozen.inputs) != len(input_signature):
        raise ValueError(f"frozen function has {len(frozen.inputs)} inputs / {len(frozen.outputs)} outputs")
    rename = {tensor.name: spec.name for tensor, spec in zip(frozen.inputs, input_signature)}
    rename.update({tensor.name: key for key, tensor in zip(keys, frozen.outputs)})
    # tf2onnx logs every rewriter it tries at WARNING; only errors matter here.
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    # tf2onnx (1.17) freezes the graph again through TF1 APIs; their deprecation notices are
    # about its code, not the user's.
    from tensorflow.python.util import deprecation

    with deprecation.silence():
        model, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(add_shapes=True),
            name="elfvc_subgraph",
            input_names=[tensor.name for tensor in frozen.inputs],
            output_names=[tensor.name for tensor in frozen.outputs],
            opset=opset,
            custom_op_handlers={"MirrorPad": (_symmetric_pad, [])},
            tensors_to_rename=rename,
        )
    order = {renamed[out]: i for i, out in enumerate(output_names)}
    outputs = sorted(model.graph.output, key=lambda v: order[v.name])
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    _rename_dims(model, strides)
    onnx.checker.check_model(model)
    return model
