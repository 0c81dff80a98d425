"""The onnx and tensorrt backends against the tf reference (runtime/backends/).

- every subgraph: ONNX Runtime within 1e-4 (relative, export/parity.py) of TF; the integer hyper
  syntheses bit for bit, also on the symbols of real frames (they index the range coder's tables);
- streams cross backends both ways through real files on real frames (bikes.mp4);
- inputs are checked by name, dtype and shape; a foreign or damaged export is refused;
- TensorRT (marked gpu): engines against ONNX Runtime, and streams across all three backends.
"""

import shutil

import numpy as np
import pytest

from export_helpers import onnx_backend

from export.manifest import ManifestError
from export.parity import interpolated_one_hot, relative_error, sample_inputs
from model.entropy import QuantMode
from runtime.backends import get_backend
from model.integer_hyper import quantize_embedding
from runtime.metrics import psnr_rgb
from runtime.ratecontrol import ConstantLevel
from runtime.stream import decode_video, encode_video

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)

LEVEL = 3.375


@pytest.fixture(scope="module")
def backends(small_export):
    bundle = small_export[0]
    with get_backend("tf", bundle) as tf_backend, onnx_backend(small_export) as onnx:
        yield {"tf": tf_backend, "onnx": onnx}


def test_onnx_matches_tf_on_every_subgraph(backends, small_export):
    bundle, _, manifest, _ = small_export
    rng = np.random.default_rng(5)
    for graph in manifest.subgraphs:
        described = [(i.name, i.stride, i.channels) for i in graph.inputs]
        feeds = sample_inputs(described, lambda l: bundle.model.embed(l).numpy(), bundle.config.max_level, 128, 192, 1, rng)
        want = backends["tf"].run(graph.name, **feeds)
        got = backends["onnx"].run(graph.name, **feeds)
        assert set(got) == set(want)
        for name in want:
            if graph.exact:
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"{graph.name}.{name}")
            else:
                assert relative_error(got[name], want[name]) < 1e-4, (graph.name, name)


def test_tf_backend_runs_the_sliced_blur_and_the_export_converts_the_compact_one(backends, small_export):
    """model/warp.py: the TF backend's flow synthesis traces the blurs as sliced sums (fast on the
    CPU), the exporter's as depthwise convolutions (fast to convert)."""
    from export.subgraphs import coding_subgraph_functions

    def ops(function):
        return {op.type for op in function.get_concrete_function().graph.get_operations()}

    assert "DepthwiseConv2dNative" not in ops(backends["tf"]._functions["flow_synthesis"])
    assert "AddN" in ops(backends["tf"]._functions["flow_synthesis"])
    exported = ops(coding_subgraph_functions(small_export[0])["flow_synthesis"])
    assert "DepthwiseConv2dNative" in exported and "AddN" not in exported


def test_range_coder_indices_identical_on_real_frames(backends, bikes_frames, small_export):
    """The integer hyper syntheses (model/integer_hyper.py) give the same mean and scale
    accumulators on tf and onnx for the q1 symbols of real frames, I and P, at several levels:
    the range coder's table indices are read from them on both sides of the channel."""
    bundle = small_export[0]
    clip = bikes_frames[:3, :128, :192].astype(np.float32)[None] / 255.0
    compared = 0
    for level in (0.0, LEVEL, bundle.config.max_level):
        out = bundle.model.forward_gop(clip, level, QuantMode.ROUND)
        qemb = quantize_embedding(bundle.model.embed(np.array([level], np.float32)).numpy())
        for t, frame in enumerate(out.frames):
            codes = [("iframe", frame.code)] if t == 0 else [("flow", frame.flow_code), ("residue", frame.residue_code)]
            for block, code in codes:
                symbols = code.hyper_symbols.numpy()
                feeds = dict(hyper_latent=symbols, quantized_embedding=qemb)
                want = backends["tf"].run(f"{block}_hyper_synthesis", **feeds)
                got = backends["onnx"].run(f"{block}_hyper_synthesis", **feeds)
                np.testing.assert_array_equal(got["scale_accumulator"], want["scale_accumulator"])
                np.testing.assert_array_equal(got["mean"], want["mean"])
                assert np.array_equal(want["scale_accumulator"], np.round(want["scale_accumulator"]))
                compared += 1
    assert compared == 3 * 5


def _coded(tmp_path, frames, encode_with, decode_with, bundle):
    path = tmp_path / f"{encode_with.name}.elfvc"
    records = []
    summary = encode_video(
        list(frames), path, fps=25, gop=len(frames), controller=ConstantLevel(LEVEL), backend=encode_with,
        bundle=bundle, progress=lambda i, frame: records.append(frame.reconstruction), scenecut=0,
    )
    decoded = []
    decode_video(path, decoded.append, decode_with, bundle)
    return summary, np.stack(records), np.stack(decoded)


@pytest.mark.parametrize("encoder, decoder", [("tf", "onnx"), ("onnx", "tf")])
def test_streams_cross_backends_through_files(tmp_path, backends, bikes_frames, encoder, decoder, small_export):
    """A stream from one backend decodes with the other: same symbols, so the frames match the
    encoder's own reconstructions up to float rounding drift (a desynchronized range decoder
    would give noise, far below 40 dB)."""
    bundle = small_export[0]
    frames = bikes_frames[:4, 40:170, 100:290]  # 190x130: padded to 192x192 and cropped back
    summary, encoder_view, decoded = _coded(tmp_path, frames, backends[encoder], backends[decoder], bundle)
    assert decoded.shape == encoder_view.shape == frames.shape
    assert summary.num_frames == 4
    assert np.abs(encoder_view.astype(int) - decoded.astype(int)).max() <= 2
    assert np.all(psnr_rgb(encoder_view, decoded) > 50.0)


def test_onnx_backend_checks_inputs(backends, small_export):
    onnx = backends["onnx"]
    bundle = small_export[0]
    c = bundle.config
    good = dict(latent=np.zeros((1, 4, 8, c.latent_channels), np.float32), embedding=np.zeros((1, c.embedding_width), np.float32))
    assert onnx.run("iframe_synthesis", **good)["reconstruction"].shape == (1, 64, 128, 3)
    bad = [
        (dict(latent=good["latent"]), "expected"),
        (dict(good, extra=good["embedding"]), "expected"),
        (dict(good, latent=good["latent"].astype(bool)), "not numeric"),
        (dict(good, latent=good["latent"][..., :-1]), "channels"),
        (dict(good, latent=good["latent"][0]), "shape"),
        (dict(good, embedding=np.zeros((2, c.embedding_width), np.float32)), "batch"),
        (dict(good, latent=np.zeros((1, 4, 5, c.latent_channels), np.float32)), "multiple of 64"),
    ]
    for inputs, message in bad:
        with pytest.raises(ValueError, match=message) as info:
            onnx.run("iframe_synthesis", **inputs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown subgraph"):
        onnx.run("nope", **good)
    # Integer-valued input of another dtype is accepted (as by the tf backend).
    z = np.zeros((1, 1, 2, c.hyper_latent_channels), np.int32)
    e = np.zeros((1, c.embedding_width), np.int64)
    np.testing.assert_array_equal(
        onnx.run("iframe_hyper_synthesis", hyper_latent=z, quantized_embedding=e)["scale_accumulator"],
        backends["tf"].run("iframe_hyper_synthesis", hyper_latent=z, quantized_embedding=e)["scale_accumulator"],
    )


def test_onnx_backend_refuses_foreign_or_damaged_exports(tmp_path, small_export):
    bundle, folder, manifest, root = small_export

    class Other:
        model_id = bytes(16)

    with pytest.raises(ManifestError, match="re-export"):
        get_backend("onnx", Other(), export_dir=str(folder))
    damaged = tmp_path / "export"
    shutil.copytree(folder, damaged)
    target = damaged / manifest.subgraph("iframe_synthesis").onnx_file
    target.write_bytes(target.read_bytes()[:-10] + bytes(10))
    with get_backend("onnx", bundle, export_dir=str(damaged)) as onnx:
        with pytest.raises(ManifestError, match="damaged"):
            onnx.run("iframe_synthesis", latent=np.zeros((1, 4, 4, bundle.config.latent_channels), np.float32),
                     embedding=np.zeros((1, bundle.config.embedding_width), np.float32))
    # An export of some subgraphs (export_trt --subgraphs) is refused when the backend is made,
    # not when the codec first needs a missing one.
    import json

    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    data = json.loads((partial / "manifest.json").read_text())
    data["subgraphs"] = [g for g in data["subgraphs"] if g["name"] != "predictor"]
    (partial / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="lacks 1 of the 13 coding subgraphs .predictor; made with --subgraphs"):
        get_backend("onnx", bundle, export_dir=str(partial))


def test_onnx_backend_uses_the_cache_without_exporting(monkeypatch, small_export):
    """`--backend onnx` without an export folder: the cache's export of this model is used (the
    session fixture made it through the same path); nothing is exported again."""
    import export.exporter

    bundle, folder, _, root = small_export

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export.exporter, "export_bundle", no_export)
    with get_backend("onnx", bundle, cache_root=str(root)) as onnx:
        assert onnx.export_dir == folder


def test_cache_re_exports_stale_or_damaged_exports(tmp_path, monkeypatch, small_export):
    """A cached export made by another exporter version, or with a damaged file, is not used."""
    import export.exporter
    from export.cache import ensure_onnx_export, onnx_export_dir

    bundle, folder, manifest, _ = small_export
    calls = []

    def fake_export(bundle_, out_dir, options, overwrite=False):
        calls.append((out_dir, overwrite))
        raise RuntimeError("stop here")

    monkeypatch.setattr(export.exporter, "export_bundle", fake_export)
    cached = onnx_export_dir(manifest.model_id, tmp_path)
    shutil.copytree(folder, cached)
    assert ensure_onnx_export(bundle, tmp_path)[0] == cached and not calls  # intact: used as is
    text = (cached / "manifest.json").read_text()
    (cached / "manifest.json").write_text(text.replace(f'"exporter_version": {manifest.exporter_version}', '"exporter_version": 1'))
    with pytest.raises(RuntimeError, match="stop here"):
        ensure_onnx_export(bundle, tmp_path)
    (cached / "manifest.json").write_text(text)
    target = cached / manifest.subgraphs[0].onnx_file
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(RuntimeError, match="stop here"):
        ensure_onnx_export(bundle, tmp_path)
    assert calls == [(cached, True), (cached, True)]


# -- the measuring tools (benchmarks/bench_backends.py, benchmarks/drift.py) ------------------------------
def test_bench_backends_times_every_subgraph(small_export):
    from benchmarks.bench_backends import compare, frame_totals, markdown

    bundle, folder, manifest, _ = small_export
    options = {"onnx": {"export_dir": str(folder)}}
    results = compare(bundle, ["tf", "onnx:1"], [(64, 128)], repeats=1, options=options)
    assert {(r.backend, r.subgraph) for r in results} == {(b, n) for b in ("tf", "onnx:1") for n in manifest.names()}
    assert all(0 < r.min_ms <= r.median_ms for r in results)
    totals = frame_totals(results)
    assert set(totals) == {("tf", 128, 64), ("onnx:1", 128, 64)}
    assert all(row["p_encode"] > row["p_decode"] > 0 for row in totals.values())
    assert "onnx:1 total" in markdown(results)


def test_drift_tool_measures_cross_backend_decodes(bikes_frames, small_export):
    from benchmarks.drift import measure

    bundle, folder, _, _ = small_export
    frames = bikes_frames[:3, :64, :128]
    results = measure(bundle, frames, "tf", ["tf", "onnx"], LEVEL, "bikes", {"onnx": {"export_dir": str(folder), "threads": 1}})
    same, other = results
    assert same.decoder == "tf" and same.psnr == [float("inf")] * 3 and same.max_abs == [0, 0, 0]
    assert other.decoder == "onnx" and len(other.psnr) == 3 and other.worst_psnr > 50.0


@pytest.mark.parametrize("module", ["benchmarks.bench_backends", "benchmarks.drift"])
def test_tool_clis_reject_bad_flags(module, capsys):
    import importlib

    main = importlib.import_module(module).main
    assert main(["prog", "--no_such_flag"]) == 2
    assert main(["prog", "stray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("error" in line for line in err)


@pytest.mark.parametrize("module", ["benchmarks.bench_backends", "benchmarks.drift"])
def test_tool_clis_map_errors_to_exit_status(module, tmp_path, capsys):
    """A missing --model folder is a usage error (2); a damaged model folder is bad input (1)."""
    import importlib

    main = importlib.import_module(module).main
    assert main(["prog", f"--model={tmp_path / 'missing'}"]) == 2
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text("{not json")
    assert main(["prog", f"--model={damaged}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"{module.split('.')[1]}: error: ") for line in err), err


# -- TensorRT ----------------------------------------------------------------------------------------
def _tensorrt_or_skip():
    from export.tensorrt_build import TensorRTUnavailable, require_cuda, require_tensorrt

    try:
        require_tensorrt()
        require_cuda()
    except TensorRTUnavailable as error:
        pytest.skip(f"needs TensorRT 10.x, pycuda and an NVIDIA GPU: {error}")


@pytest.fixture(scope="module")
def tensorrt_backend(small_export):
    _tensorrt_or_skip()
    from export.tensorrt_build import EngineProfile

    bundle, folder, _, root = small_export
    profile = EngineProfile(min_size=(64, 128), opt_size=(128, 192), max_size=(384, 640))
    with get_backend("tensorrt", bundle, export_dir=str(folder), cache_root=str(root), profile=profile) as backend:
        yield backend


@pytest.mark.gpu
def test_tensorrt_engines_match_onnx_runtime(tensorrt_backend, small_export):
    from export.tensorrt_build import FP16_TOLERANCE, verify_engine

    _, folder, manifest, _ = small_export
    for name, record in tensorrt_backend.engines.items():
        graph = manifest.subgraph(name)
        errors = verify_engine(record.path, folder, graph, tensorrt_backend.profile)
        limit = 0.0 if graph.exact else FP16_TOLERANCE
        assert all(e <= limit for e in errors.values()), (name, errors)


@pytest.mark.gpu
def test_tensorrt_engine_cache_is_reused(small_export):
    _tensorrt_or_skip()
    from export.tensorrt_build import EngineProfile, ensure_engines

    _, folder, manifest, root = small_export
    profile = EngineProfile(min_size=(64, 128), opt_size=(128, 192), max_size=(384, 640))
    records = ensure_engines(folder, manifest, root, profile, names=["iframe_hyper_synthesis"])
    again = ensure_engines(folder, manifest, root, profile, names=["iframe_hyper_synthesis"])
    assert again["iframe_hyper_synthesis"].cached and again["iframe_hyper_synthesis"].path == records["iframe_hyper_synthesis"].path
    assert list((root / "tensorrt").glob("timing-*.cache"))


@pytest.mark.gpu
@pytest.mark.parametrize("encoder, decoder", [("tensorrt", "tf"), ("tensorrt", "onnx"), ("tf", "tensorrt")])
def test_tensorrt_streams_cross_backends(tmp_path, backends, tensorrt_backend, bikes_frames, encoder, decoder, small_export):
    bundle = small_export[0]
    every = dict(backends, tensorrt=tensorrt_backend)
    frames = bikes_frames[:4, 40:170, 100:290]
    _, encoder_view, decoded = _coded(tmp_path, frames, every[encoder], every[decoder], bundle)
    assert np.all(psnr_rgb(encoder_view, decoded) > 30.0)  # FP16 drift, not a desynchronized decoder


def test_interpolated_one_hot_is_an_embedding():
    e = interpolated_one_hot([0.0, 2.5, 7.0], 8)
    np.testing.assert_allclose(e.sum(axis=1), 1.0)
    assert e[0, 0] == 1.0 and e[1, 2] == e[1, 3] == 0.5 and e[2, 7] == 1.0


def test_onnx_default_threads_are_the_cpus_capped_by_omp_num_threads(monkeypatch):
    """export/ort.py: every CPU this process may use (measured faster idle than one fewer), at most
    a positive OMP_NUM_THREADS; a value that is not a positive integer is ignored."""
    from export import ort

    monkeypatch.setattr(ort, "available_cpus", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ort.default_threads() == 6
    for value, expected in [("2", 2), ("16", 6), ("0", 6), ("-3", 6), ("four", 6), ("", 6)]:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert ort.default_threads() == expected, value
