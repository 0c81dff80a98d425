"""gpu_train/table2.py: the paper's Table 2 timed in PyTorch.

The timing itself needs a GPU; what a CPU can check is that the four frame functions compute
what the codec computes and that the CLI degrades and reports as it should. The torch half runs
in the torch environment (.venv-torch, or ELFVC_TORCH_PYTHON) through a subprocess, as in
tests/test_gpu_train.py, since torch and TensorFlow 2.14 do not share one environment here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest

from conftest import REPO, bikes_path, read_video_frames
from test_gpu_train import DEFAULT, perturbed, run_torch, torch_env, torch_python

LEVEL = 5.5  # fractional: exercises the Q_w interpolation; high: many non-zero symbols.

#: Runs table2's functions on a case and saves symbols and reconstructions: float32 as on a CPU,
#: and (prefix half_) the GPU's recipe, FP16 networks and channels_last, on the CPU.
TORCH_SIDE = """
import sys, json, numpy as np, torch
from gpu_train import table2
case, weights, config, out = sys.argv[1:]
torch.use_deterministic_algorithms(True)
level = float(np.load(case)["level"])
frames = torch.from_numpy(np.load(case)["frames"]).permute(0, 3, 1, 2).contiguous()
model = table2.build_model(json.load(open(config)), weights)
result = table2.FrameNetworks(model, level, "cpu").two_frames(frames[:1], frames[1:2])
half = table2.FrameNetworks(model, level, "cpu", half=True, channels_last=True)
frames = frames.contiguous(memory_format=torch.channels_last)
result.update({"half_" + k: v for k, v in half.two_frames(frames[:1], frames[1:2]).items()})
np.savez(out, **result)
"""


def _tf_float_chain(model, ctx, images):
    """runtime/codec.py's chain over export/subgraphs.py's FLOAT subgraphs (the model's own
    hyper syntheses, as table2 runs them), TF backend, I-frame then P-frame."""
    from runtime.codec import _round_symbols
    from export.subgraphs import SUBGRAPHS, subgraph_functions

    def positional(name, f):
        return lambda **kw: {k: v.numpy() for k, v in f(*[kw[spec.name] for spec in SUBGRAPHS[name].inputs]).items()}

    fns = {name: positional(name, f) for name, f in subgraph_functions(model).items()}
    emb = ctx.embedding
    out = {}

    def code(block, latent):
        z = _round_symbols(fns[f"{block}_hyper_analysis"](latent=latent, embedding=emb)["hyper_latent"][0])
        mean = fns[f"{block}_hyper_synthesis"](hyper_latent=z[None].astype(np.float32), embedding=emb)["mean"]
        qw = ctx.quant_width(block)
        k = _round_symbols(((latent - mean) / qw)[0])
        out[f"{block}_z"], out[f"{block}_k"] = z, k
        return (mean + qw * k[None].astype(np.float32)).astype(np.float32)

    latent = fns["iframe_analysis"](image=images[:1], embedding=emb)["latent"]
    i = fns["iframe_synthesis"](latent=code("iframe", latent), embedding=emb)
    recon, state = i["reconstruction"], i["state"]
    flow0 = np.zeros_like(recon)
    predicted = fns["predictor"](previous_flow=flow0, previous2=recon, previous=recon, embedding=emb)["predicted_flow"]
    latent = fns["flow_analysis"](target=images[1:], previous=recon, predicted_flow=predicted, state=state, embedding=emb)["latent"]
    flow = fns["flow_synthesis"](latent=code("flow", latent), previous=recon, predicted_flow=predicted, state=state, embedding=emb)
    comp = flow["compensated"]
    latent = fns["residue_analysis"](residual=images[1:] - comp, compensated=comp, state=flow["state"], embedding=emb)["latent"]
    p = fns["residue_synthesis"](latent=code("residue", latent), compensated=comp, state=flow["state"], embedding=emb)
    out["i_recon"], out["p_recon"], out["p_flow"] = recon, p["reconstruction"], flow["flow"]
    return out


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """table2 (torch, CPU) next to the TF float subgraph chain and the real codec (TF backend,
    integer hyper syntheses) on 2 frames of bikes.mp4, 128 x 128, with the shipped weights
    (whose config has motion_search_radius 8: the block search is exercised too)."""
    torch_python()
    from gpu_train.weights import assign_keras, keras_arrays
    from runtime.backends import get_backend
    from model.bundle import load_bundle
    from runtime.codec import Encoder
    from runtime.types import FrameType

    tmp = tmp_path_factory.mktemp("table2")
    frames = read_video_frames(bikes_path(), 3)[::2, 40:168, 200:328]  # uint8 [2, 128, 128, 3]
    images = frames.astype(np.float32) / np.float32(255.0)  # as Encoder._prepare
    arrays = perturbed(keras_arrays(DEFAULT))  # output heads perturbed: flows far from zero, the warp exercised
    np.savez(tmp / "w.npz", **arrays)
    np.savez(tmp / "case.npz", frames=images, level=np.float32(LEVEL))
    torch_side = subprocess.Popen(  # runs while TF works below
        [torch_python(), "-c", TORCH_SIDE, str(tmp / "case.npz"), str(tmp / "w.npz"), str(DEFAULT / "config.json"), str(tmp / "torch.npz")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **torch_env()},
    )

    bundle = load_bundle(DEFAULT)
    assign_keras(bundle.model, arrays)  # the pinned integer hyper syntheses stay valid: no head is in them
    layers = {}
    encoder = Encoder(bundle, get_backend("tf", bundle), observer=lambda block, latent, layer, ctx: layers.__setitem__(block, layer))
    refs = [encoder.encode_frame(f, LEVEL, t).references.previous for f, t in zip(frames, (FrameType.I, FrameType.P))]
    codec = {f"{b}_{s}": getattr(layers[b], "hyper_symbols" if s == "z" else "symbols") for b in layers for s in "zk"}
    codec.update(i_recon=refs[0], p_recon=refs[1])
    tf_float = _tf_float_chain(bundle.model, encoder._half.level_context(LEVEL), images)
    _, stderr = torch_side.communicate(timeout=600)
    assert torch_side.returncode == 0, stderr[-2000:]
    with np.load(tmp / "torch.npz") as t:
        torch_out = {k: t[k] for k in t.files}
    return torch_out, tf_float, codec


SYMBOLS = [f"{b}_{s}" for b in ("iframe", "flow", "residue") for s in "zk"]


def _nchw_symbols(a):
    """table2's [1, C, h, w] int32 -> the codec's [h, w, C]."""
    return np.transpose(a[0], (1, 2, 0))


def _nchw_image(a):
    return np.transpose(a, (0, 2, 3, 1))


def test_symbols_identical_to_the_tf_float_subgraphs(parity):
    torch_out, tf_float, _ = parity
    for key in SYMBOLS:
        ours = _nchw_symbols(torch_out[key])
        assert ours.shape == tf_float[key].shape, key
        np.testing.assert_array_equal(ours, tf_float[key], err_msg=key)
    assert np.count_nonzero(tf_float["residue_k"]) > 100 and np.count_nonzero(tf_float["iframe_k"]) > 100
    assert np.abs(tf_float["flow_k"][..., :2]).max() >= 1, "the block motion search should find motion"
    assert np.abs(tf_float["p_flow"][..., :2]).mean() > 0.2, "the perturbed heads should move pixels, or the warp goes untested"
    # Same float32 operations in another order. Measured: reconstructions 6.0e-7 (I), 8.9e-7 (P);
    # flow 8.6e-6 px (|flow| up to 8.6 px).
    for key in ("i_recon", "p_recon"):
        assert np.abs(_nchw_image(torch_out[key]) - tf_float[key]).max() < 1e-5, key
    assert np.abs(_nchw_image(torch_out["p_flow"]) - tf_float["p_flow"]).max() < 1e-4
    # The decoders reproduce the encoders' reconstructions exactly.
    for key in ("i_recon", "p_recon", "p_flow"):
        np.testing.assert_array_equal(torch_out[key], torch_out[key + "_decoded"], err_msg=key)


def test_the_gpu_recipe_fp16_channels_last_runs_and_stays_close(parity):
    """The GPU's recipe (FP16 networks, FP32 hyper syntheses, warp and quantization;
    channels_last kernels), on the CPU: the same dtype plumbing the GPU runs. Measured here: 99.95%
    of the I-frame's k0 and 99.8% of the residue's equal float32's (the rest +-1), every k1 equal;
    reconstructions within 0.010 (I) and 0.019 (P), mean 2.5e-4 / 6.6e-4."""
    torch_out, _, _ = parity
    for key in SYMBOLS:
        half, full = torch_out["half_" + key], torch_out[key]
        assert half.dtype == np.int32 and np.mean(half == full) >= 0.99 and np.abs(half - full).max() <= 1, key
    for key in ("i_recon", "p_recon"):
        assert np.abs(torch_out["half_" + key] - torch_out[key]).max() < 0.05, key
        np.testing.assert_array_equal(torch_out["half_" + key], torch_out["half_" + key + "_decoded"], err_msg=key)


def test_symbols_against_the_runtime_codec(parity):
    """The runtime codec's hyper syntheses are integer networks (model/integer_hyper.py), whose
    means differ from the float ones by a quantization step: k1 of the I-frame (no hyper synthesis
    before it) is identical; the rest may move by one now and then (measured: 0.68% of the
    I-frame's k0, 0.88% of the residue's, none elsewhere), and a moved symbol moves the
    reconstruction by its Q_w's worth (measured: max 0.022 / mean 0.0013 I-frame, max 0.058 /
    mean 0.0023 P-frame, pixels in [0, 1])."""
    torch_out, _, codec = parity
    np.testing.assert_array_equal(_nchw_symbols(torch_out["iframe_z"]), codec["iframe_z"])
    for key in SYMBOLS:
        ours = _nchw_symbols(torch_out[key])
        differ = np.mean(ours != codec[key])
        assert differ <= 0.02 and np.abs(ours - codec[key]).max() <= 1, (key, differ)
    for key in ("i_recon", "p_recon"):
        diff = np.abs(_nchw_image(torch_out[key]) - codec[key])
        assert diff.max() < 0.1 and diff.mean() < 0.005, (key, diff.max(), diff.mean())


#: Runs table2.main on each argv in one process (one torch import), capturing exit code and stderr.
CLI_CASES = """
import contextlib, io, json, sys
import torch
from gpu_train import table2
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = table2.main(argv)
    results.append([rc, err.getvalue()])
print(json.dumps({"cuda": torch.cuda.is_available(), "results": results}))
"""


def test_cli_errors_are_one_line_and_exit_1_before_any_work(tmp_path):
    out = tmp_path / "t.json"
    cases = {
        "--device=cuda": "--device=cuda but no CUDA GPU is available (torch.cuda.is_available() is false)",
        "--device=auto": "--device=auto: no CUDA GPU here; --device=cpu times the networks on this CPU",
        "--sizes=4k": "unknown size '4k' in --sizes; valid: cif, vga, 720p, 1080p or WIDTHxHEIGHT",
        "--configs=huge": "unknown config 'huge' in --configs; valid: ",
        "--weights_small=/nonexistent.npz": "--weights_small: /nonexistent.npz: no such file",
        "--budget_s=0": "--budget_s must be positive, got 0",
    }
    argvs = [[flag, f"--out={out}"] + ([] if flag.startswith("--device") else ["--device=cpu"]) for flag in cases]
    result = run_torch(["-c", CLI_CASES, json.dumps(argvs)])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for (flag, message), (rc, stderr) in zip(cases.items(), report["results"]):
        if flag.startswith("--device") and report["cuda"]:
            continue  # this machine has a GPU
        assert rc == 1 and len(stderr.strip().splitlines()) == 1, (flag, rc, stderr)
        assert stderr.startswith(f"python -m gpu_train.table2: error: {message}"), (flag, stderr)
    assert not out.exists()


def test_cli_on_cpu_writes_the_table(tmp_path):
    out = tmp_path / "t.json"
    result = run_torch([
        "-m", "gpu_train.table2", "--device=cpu", "--configs=small", f"--config_json={DEFAULT / 'config.json'}",
        "--sizes=128x64", "--budget_s=300", "--timing_s=0.05", f"--out={out}",
    ])
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["stopped"] == "complete" and data["device"] == "cpu" and data["torch"] and data["gpu"] is None
    assert data["precision"]["networks"] == "float32" and data["precision"]["hyper_synthesis"] == "float32"
    assert data["configs"]["small"]["source"].endswith("config.json")
    assert data["configs"]["small"]["motion_search_radius"] == 8 and data["configs"]["small"]["weights"] == "random init"
    (row,) = data["rows"]
    assert (row["config"], row["size"], row["padded_width"], row["padded_height"]) == ("small", "128x64", 128, 64)
    assert row["dtype"] == "float32" and data["skipped"] == []
    for name in ("i_encode", "i_decode", "p_encode", "p_decode"):
        f = row["functions"][name]
        assert f["mode"] == "eager" and f["ms"] > 0 and f["fps"] == pytest.approx(1e3 / f["ms"]) and f["replays"] >= 3, f
        assert f["gflop"] > 0 and f["tflops"] > 0
    assert row["checks"] == {"i_decode_vs_encode_max_abs": 0.0, "p_decode_vs_encode_max_abs": 0.0}
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("small 128x64 128x64 float32: i_encode") for line in lines), lines


def test_cli_with_the_budget_spent_writes_what_it_has(tmp_path):
    out = tmp_path / "t.json"
    result = run_torch([
        "-m", "gpu_train.table2", "--device=cpu", "--configs=small,paper", "--sizes=64x64,cif", "--budget_s=0.01", f"--out={out}",
    ])
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["stopped"] == "budget"
    for row in data["rows"]:  # a row begun just before the deadline skips its functions
        assert all(f["error"].startswith("skipped: budget spent") for f in row["functions"].values()), row
    listed = [(r["config"], r["size"]) for r in data["rows"]] + [(x["config"], x["size"]) for x in data["skipped"]]
    # The order of importance: configs as given, the largest size first.
    assert listed == [("small", "cif"), ("small", "64x64"), ("paper", "cif"), ("paper", "64x64")]


@pytest.mark.slow
def test_the_watchdog_ends_a_row_that_overruns_the_budget(tmp_path):
    """The paper model at 1080p on a CPU: its first eager calls alone outlast the budget."""
    out = tmp_path / "t.json"
    t0 = time.monotonic()
    result = run_torch([
        "-m", "gpu_train.table2", "--device=cpu", "--configs=paper", "--sizes=1080p", "--budget_s=1", f"--out={out}",
    ])
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    assert "watchdog" in result.stdout
    data = json.loads(out.read_text())
    assert data["stopped"].startswith("watchdog") and data["rows"] == []
    assert data["skipped"] == [{"config": "paper", "size": "1080p", "reason": "watchdog: budget spent"}]
