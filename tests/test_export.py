"""export/: subgraphs to ONNX, checked against TensorFlow; the manifest; the CLI; the
CPU-testable parts of the TensorRT builder (precision pinning, profiles, cache keys)."""

import json
import pathlib

import numpy as np
import onnx
import pytest
import tensorflow as tf


from export.exporter import ExportError, ExportOptions, export_bundle, model_id_hex
from export.manifest import ManifestError, read_manifest
from export.onnx_export import convert
from export.ort import create_session
from export.parity import relative_error
from export.tensorrt_build import (
    CIF,
    HD1080,
    EngineKey,
    EngineProfile,
    TensorRTUnavailable,
    fp32_values,
    gpu_slug,
    precision_for,
    require_tensorrt,
)
from export.warp_onnx import _Builder, warp_nodes
from model.warp import scale_space_warp
from export.subgraphs import CODING_SUBGRAPHS, coding_subgraph_functions

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)

#: Operators TensorRT 10's ONNX parser implements (its support matrix), restricted to what an
#: export may reasonably use. Compress, NonZero, Loop, ScatterND etc. would fail or crawl there.
TENSORRT_OPS = {
    "Abs", "Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "DepthToSpace", "Div", "Expand",
    "Equal", "Floor", "Gather", "GatherElements", "GatherND", "Greater", "GridSample", "Identity", "LeakyRelu", "Less",
    "MatMul", "Max", "Min", "Mul", "Not", "Pad", "Range", "ReduceSum", "Relu", "Reshape", "Round", "Shape",
    "Sigmoid", "Slice", "Softplus", "SpaceToDepth", "Split", "Squeeze", "Sub", "Tile", "Transpose", "Unsqueeze",
    "Where", "Gemm",
    # The motion search (model/motion.py) in flow_analysis; all three are in onnx-tensorrt's list.
    "And", "ArgMin", "AveragePool", "ReduceMean",
    # Its per-level penalty (model/motion.py, level_penalty): also in onnx-tensorrt's list.
    "Exp",
}


def _ops(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_every_coding_subgraph_exported_and_within_tolerance(small_export):
    bundle, folder, manifest, _ = small_export
    assert manifest.model_id == bundle.model_id.hex() == model_id_hex(bundle)
    assert manifest.opset == 17 and manifest.tolerance == 1e-4
    assert set(manifest.names()) == set(coding_subgraph_functions(bundle))
    assert read_manifest(folder, manifest.model_id) == manifest  # JSON round trip
    for graph in manifest.subgraphs:
        table = CODING_SUBGRAPHS[graph.name]
        assert [i.name for i in graph.inputs] == [s.name for s in table.inputs]
        assert sorted(o.name for o in graph.outputs) == sorted(table.outputs)
        assert graph.exact == table.hyper_synthesis
        for output, error in graph.max_relative_error.items():
            assert error == 0.0 if graph.exact else error <= 1e-4, (graph.name, output, error)
        model = onnx.load(str(folder / graph.onnx_file))
        assert model.opset_import[0].version == 17
        # Dynamic batch, height and width, named by stride.
        for value in model.graph.input:
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            stride = graph.input(value.name).stride
            assert dims[0] == "batch"
            if stride:
                suffix = "" if stride == 1 else f"_div{stride}"
                assert dims[1:3] == [f"height{suffix}", f"width{suffix}"], (graph.name, value.name, dims)
    # An output that shares an input's name gets a distinct ONNX name.
    flow = manifest.subgraph("flow_synthesis")
    assert {o.name: o.onnx_name for o in flow.outputs}["state"] == "state_out"


def test_exported_ops_are_tensorrt_parsable(small_export):
    bundle, folder, manifest, _ = small_export
    for graph in manifest.subgraphs:
        ops = _ops(folder / graph.onnx_file)
        assert ops <= TENSORRT_OPS, (graph.name, sorted(ops - TENSORRT_OPS))
    flow_ops = _ops(folder / manifest.subgraph("flow_synthesis").onnx_file)
    assert "GridSample" in flow_ops and "GatherND" not in flow_ops
    # The shipped model has the block motion search with a constant penalty (README): this export
    # is the default suite's check of that case, whose own test is slow
    # (test_motion_search_model_exports_within_tolerance[constant-penalty]); a model shipped
    # without the search must unmark it.
    assert bundle.config.motion_search_radius > 0 and bundle.config.motion_search_penalty_top is None
    assert "ArgMin" in _ops(folder / manifest.subgraph("flow_analysis").onnx_file)


def test_symmetric_pad_lowering_is_exact_and_has_no_compress():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="x")], autograph=False)
    def pad(x):
        return {"y": tf.pad(x, [[0, 0], [2, 3], [4, 1], [0, 0]], mode="SYMMETRIC") * 2.0}

    model = convert(pad, pad.input_signature, ["y"], {"x": 1, "y": 1})
    assert "Compress" not in {n.op_type for n in model.graph.node}
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype(np.float32)
    got = create_session(model.SerializeToString(), threads=1).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, pad(x)["y"].numpy())


def _warp_model():
    b = _Builder("warp")
    warp_nodes(b, "previous", "flow", "compensated", levels=5, sigma0=1.0)
    io = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["batch", "height", "width", 3])
          for n in ("previous", "flow", "compensated")]
    graph = onnx.helper.make_graph(b.nodes, "warp", io[:2], io[2:], b.initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return create_session(model.SerializeToString(), threads=1)


def test_gridsample_warp_matches_the_gather_warp():
    """The ONNX lowering is the same function as model/warp.py, edges and scale clipping
    included; the error is the float32 round trip through normalized coordinates (~W 2^-24 px)."""
    session = _warp_model()
    rng = np.random.default_rng(1)
    for batch, height, width in ((1, 64, 128), (2, 128, 192)):
        image = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
        flow = rng.normal(0.0, 6.0, size=(batch, height, width, 3)).astype(np.float32)
        flow[..., 2] = rng.uniform(-2.0, 12.0, size=(batch, height, width))  # below 0 and beyond 8: clipped
        flow[0, :8, :8, :2] = 500.0  # far outside the frame: edge clamped
        reference = scale_space_warp(image, flow, 5, 1.0).numpy()
        got = session.run(None, {"previous": image, "flow": flow})[0]
        assert relative_error(got, reference) < 1e-4
    # Zero flow is the identity up to that round trip (TF's gather warp returns the image exactly).
    zero = np.zeros((1, 64, 256, 3), np.float32)
    image = rng.uniform(size=(1, 64, 256, 3)).astype(np.float32)
    assert np.abs(session.run(None, {"previous": image, "flow": zero})[0] - image).max() < 256 * 2.0**-24 * 4


def test_relative_error_definition():
    reference = np.array([[0.0, 2.0], [-4.0, 1.0]])
    assert relative_error(reference + np.array([[0.0, 0.0], [0.4, 0.0]]), reference) == pytest.approx(0.1)
    assert relative_error(np.array([1e-3]), np.zeros(1)) == pytest.approx(1e-3)  # absolute on all-zero references
    with pytest.raises(ValueError, match="shape mismatch"):
        relative_error(np.zeros(3), np.zeros(4))


def test_failed_check_leaves_nothing_behind(tmp_path, small_export):
    bundle, _, _, _ = small_export
    functions = coding_subgraph_functions(bundle)

    # A "subgraph" whose ONNX cannot agree with its TF reference (fresh noise on every run, in
    # either runtime): the check must catch it.
    def drifting(latent, embedding):
        value = functions["iframe_hyper_analysis"](latent, embedding)["hyper_latent"]
        return {"hyper_latent": value + tf.random.uniform(tf.shape(value), 0.0, 0.1)}

    drift = tf.function(drifting, input_signature=functions["iframe_hyper_analysis"].input_signature)
    out = tmp_path / "export"
    with pytest.raises(ExportError, match="relative error"):
        export_bundle(bundle, out, ExportOptions(saved_model=False), functions={"iframe_hyper_analysis": drift})
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no leftovers


def test_export_refuses_existing_folder_and_unknown_subgraphs(tmp_path, small_export):
    bundle, _, _, _ = small_export
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(bundle, tmp_path, ExportOptions())
    with pytest.raises(ExportError, match="unknown subgraphs"):
        export_bundle(bundle, tmp_path / "new", ExportOptions(subgraphs=("nope",)))
    with pytest.raises(ValueError, match="multiples of 64"):
        ExportOptions(check_sizes=((64, 100),))


def test_manifest_refuses_other_models_and_garbage(tmp_path, small_export):
    _, folder, manifest, _ = small_export
    with pytest.raises(ManifestError, match="re-export"):
        read_manifest(folder, "0" * 32)
    with pytest.raises(ManifestError, match="no export manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "subgraphs": "x"}')
    with pytest.raises(ManifestError, match="malformed"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ManifestError, match="version"):
        read_manifest(tmp_path)


def test_cli_exports_a_subset_with_saved_model(tmp_path, capsys, small_export):
    from export.export_trt import main

    bundle, _, _, _ = small_export
    out = tmp_path / "x"
    names = "iframe_hyper_analysis,iframe_hyper_synthesis"
    assert main(["export_trt", f"--out_dir={out}", f"--subgraphs={names}", "--check_sizes=128x64", "--tensorrt=off", "--model=small"]) == 0
    assert "wrote" in capsys.readouterr().out
    manifest = read_manifest(out, bundle.model_id.hex())
    assert manifest.names() == names.split(",") and manifest.check_sizes == ((64, 128),)
    loaded = tf.saved_model.load(str(out / "saved_model"))
    z = np.round(np.random.default_rng(2).normal(0, 3, (1, 1, 2, bundle.config.hyper_latent_channels))).astype(np.float32)
    e = np.full((1, bundle.config.embedding_width), 51.0, np.float32)
    got = loaded.signatures["iframe_hyper_synthesis"](hyper_latent=z, quantized_embedding=e)
    want = coding_subgraph_functions(bundle)["iframe_hyper_synthesis"](z, e)
    np.testing.assert_array_equal(got["scale_accumulator"].numpy(), want["scale_accumulator"].numpy())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--subgraphs=x"], "--out_dir is required"),
        (["--out_dir=OUT", "--check_sizes=100x64"], "multiples of 64"),
        (["--out_dir=OUT", "--min_size=1920x1088", "--max_size=384x320"], "min <= opt <= max"),
        (["--out_dir=OUT", "--model=/nonexistent"], "does not exist, nor is it a shipped model's name"),
        (["--out_dir=OUT", "--tensorrt=maybe"], "tensorrt"),
        (["--out_dir=EXISTING"], "exists"),
        (["stray", "--out_dir=OUT"], "unexpected"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, capsys, argv, message):
    from export.export_trt import main

    (tmp_path / "EXISTING").mkdir()
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("EXISTING", str(tmp_path / "EXISTING")) for a in argv]
    assert main(["export_trt"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_tensorrt_on_without_tensorrt_fails_clearly(tmp_path, capsys):
    try:
        require_tensorrt()
    except TensorRTUnavailable:
        pass
    else:
        pytest.skip("TensorRT is installed here: the missing-TensorRT error cannot be observed")
    from export.export_trt import main

    assert main(["export_trt", f"--out_dir={tmp_path / 'x'}", "--tensorrt=on"]) == 1
    err = capsys.readouterr().err.strip()
    assert "TensorRT" in err and "pip install" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


# -- TensorRT builder pieces that need no GPU ------------------------------------------------------
def test_fp32_pinning_covers_the_warp_not_the_trunk(small_export):
    _, folder, manifest, _ = small_export
    model = onnx.load(str(folder / manifest.subgraph("flow_synthesis").onnx_file))
    values, nodes = fp32_values(model, ("previous", "flow"))
    ops = {n.name: n.op_type for n in model.graph.node}
    pinned_ops = {ops[n] for n in nodes}
    assert "compensated" in values and "GridSample" in pinned_ops
    # Every convolution of the decoder trunk stays free to run FP16; only the blur convs of the
    # scale-space volume (downstream of `previous`) are pinned.
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    pinned_convs = [n for n in convs if n.name in nodes]
    assert pinned_convs and all(n.name.startswith("gridsample_warp/") for n in pinned_convs)
    assert len(pinned_convs) < len(convs)
    # Upstream of the flow: the elementwise ops after the flow head, not the head itself.
    assert "Sigmoid" in pinned_ops


def test_engine_profiles_precision_and_cache_keys(small_export):
    _, _, manifest, _ = small_export
    profile = EngineProfile()
    assert profile.min_size == CIF == (320, 384) and profile.max_size == HD1080 == (1088, 1920)
    latent = manifest.subgraph("iframe_synthesis").input("latent")
    embedding = manifest.subgraph("iframe_synthesis").input("embedding")
    low, _, high = profile.shapes(latent)
    assert low == (1, 20, 24, latent.channels) and high == (1, 68, 120, latent.channels)
    assert profile.shapes(embedding)[2] == (1, embedding.channels)
    assert profile.admits(1088, 1920) and not profile.admits(64, 128) and not profile.admits(320, 384, batch=2)
    with pytest.raises(ValueError):
        EngineProfile(min_size=(300, 384))
    assert [precision_for(g) for g in manifest.subgraphs].count("fp32") == 3
    assert all(precision_for(g) == "fp32" for g in manifest.subgraphs if g.hyper_synthesis)
    key = EngineKey(manifest.model_id, "flow_synthesis", "ab", "fp16", profile, "10.7.0", "gpu-sm90")
    changed = [
        EngineKey(manifest.model_id, "flow_synthesis", "ac", "fp16", profile, "10.7.0", "gpu-sm90"),
        EngineKey(manifest.model_id, "flow_synthesis", "ab", "fp16", profile, "10.8.0", "gpu-sm90"),
        EngineKey(manifest.model_id, "flow_synthesis", "ab", "fp16", profile, "10.7.0", "gpu-sm80"),
        EngineKey(manifest.model_id, "flow_synthesis", "ab", "fp16", EngineProfile(max_batch=2), "10.7.0", "gpu-sm90"),
    ]
    assert len({key.path(pathlib.Path("/c"))} | {k.path(pathlib.Path("/c")) for k in changed}) == 5
    assert gpu_slug("NVIDIA H100 80GB HBM3", (9, 0)) == "nvidia-h100-80gb-hbm3-sm90"


@pytest.mark.slow
def test_paper_config_exports_within_tolerance(tmp_path):
    """The full-size model (38M encoder parameters) converts and checks like the small one."""
    from model.bundle import untrained_bundle

    bundle = untrained_bundle("paper")
    names = ("iframe_analysis", "iframe_hyper_synthesis", "flow_synthesis", "residue_synthesis")
    manifest = export_bundle(bundle, tmp_path / "paper", ExportOptions(saved_model=False, subgraphs=names))
    assert manifest.config_name == "paper" and manifest.names() == list(names)
    for graph in manifest.subgraphs:
        for error in graph.max_relative_error.values():
            assert error == 0.0 if graph.exact else error <= 1e-4


@pytest.mark.slow
def test_gather_warp_lowering_also_passes(tmp_path, small_export):
    bundle, _, _, _ = small_export
    manifest = export_bundle(
        bundle, tmp_path / "gather", ExportOptions(saved_model=False, warp="gather", subgraphs=("flow_synthesis",))
    )
    ops = _ops(tmp_path / "gather" / manifest.subgraph("flow_synthesis").onnx_file)
    assert "GridSample" not in ops and "GatherND" in ops and "Compress" not in ops
    assert max(manifest.subgraph("flow_synthesis").max_relative_error.values()) <= 1e-4



@pytest.mark.parametrize(
    "penalty_top, names",
    # The constant penalty is also the shipped model's, whose export covers it by default
    # (test_every_coding_subgraph_exported_and_within_tolerance, test_exported_ops_are_tensorrt_parsable),
    # flow_synthesis's block-motion path included; the per-level penalty changes flow_analysis only.
    [pytest.param(None, ("flow_analysis", "flow_synthesis"), marks=pytest.mark.slow), (0.001, ("flow_analysis",))],
    ids=["constant-penalty", "level-penalty"],
)
def test_motion_search_model_exports_within_tolerance(tmp_path, penalty_top, names):
    """A model with the encoder-side block motion search (model/motion.py) converts and checks like
    the default one, in ops TensorRT parses: the search is in flow_analysis (with a per-level
    penalty read back from the embedding, too), the block-motion path in flow_synthesis."""
    from model.bundle import untrained_bundle

    bundle = untrained_bundle("small", motion_search_radius=3, motion_search_penalty_top=penalty_top)
    manifest = export_bundle(bundle, tmp_path / "motion", ExportOptions(saved_model=False, subgraphs=names))
    for graph in manifest.subgraphs:
        assert max(graph.max_relative_error.values()) <= 1e-4, graph.name
        ops = _ops(tmp_path / "motion" / graph.onnx_file)
        assert ops <= TENSORRT_OPS, (graph.name, sorted(ops - TENSORRT_OPS))
    assert "ArgMin" in _ops(tmp_path / "motion" / manifest.subgraph("flow_analysis").onnx_file)
