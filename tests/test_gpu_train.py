"""The PyTorch training mirror (gpu_train/) and the weight conversion around it.

The mirror is only worth its GPU time if weights trained in it mean the same in Keras: the
central test runs one GOP through both with the same weights and asserts they agree to float32
rounding. The torch half runs in the torch environment setup_env.sh makes (.venv-torch, or
ELFVC_TORCH_PYTHON), since torch and TensorFlow 2.14 do not share one environment here.
"""

from __future__ import annotations

import calendar
import json
import os
import pathlib
import subprocess
import time

import numpy as np
import pytest

from conftest import REPO, bikes_path, read_video_frames
from model.fileio import umask

DEFAULT = REPO / "runtime" / "checkpoints" / "small"  # a shipped model stored as a TF checkpoint


def torch_python() -> str:
    candidate = os.environ.get("ELFVC_TORCH_PYTHON") or str(REPO / ".venv-torch" / "bin" / "python")
    if not pathlib.Path(candidate).exists():
        pytest.skip(f"no torch environment at {candidate} (setup_env.sh makes one where a CPU torch wheel is available)")
    return candidate


def torch_env() -> dict:
    """What a torch subprocess of the suite runs with beside the environment (run_torch)."""
    return {"OMP_NUM_THREADS": "1"}


def run_torch(args, **kwargs):
    """The torch environment's Python on `args`, one intra-op thread unless `env=` names
    OMP_NUM_THREADS: the suite runs two pytest-xdist workers on two cores, and a torch process
    spinning two OpenMP threads beside the other worker ran 2-5x slower than with one. Started from
    a fork server that has imported torch once (tests/torch_server.py) where it can."""
    import torch_server

    env = {**os.environ, **torch_env(), **kwargs.pop("env", {})}
    if kwargs:
        return subprocess.run([torch_python(), *args], cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
                              **kwargs)
    return torch_server.run(torch_python(), list(args), REPO, env, torch_env())


@pytest.fixture(scope="module")
def default_arrays():
    from gpu_train.weights import keras_arrays

    return keras_arrays(DEFAULT)


SCALE = 0.005


def perturbed(arrays: dict, seed: int = 0) -> dict:
    """The shipped weights with every output head perturbed, so that flows, masks and residues are
    far from their trained (and, for a collapsed flow, trivial) values and every path is exercised."""
    rng = np.random.default_rng(seed)
    out = dict(arrays)
    for key, value in arrays.items():
        if "head" in key and key.endswith("kernel"):
            out[key] = value + rng.normal(0, SCALE, value.shape).astype(np.float32)
    return out


#: id -> (motion_search_radius, motion_search_penalty_top, block_motion_upsample)
MIRROR_CASES = {
    "no-search": (0, None, "nearest"), "search": (4, None, "nearest"),
    "level-penalty": (4, 0.001, "nearest"), "bilinear-block-motion": (4, None, "bilinear"),
}


@pytest.fixture(scope="module")
def mirror_diffs(tmp_path_factory, default_arrays):
    """Every MIRROR_CASES config of the shipped model (heads perturbed) codes the same two GOPs in
    Keras; one gpu_train.compare call (torch imported once) runs the mirror on all of them:
    id -> (the largest flow Keras coded, compare's differences)."""
    import dataclasses

    from model.checkpoints import load_config, write_json
    from model.elfvc import ELFVC
    from gpu_train.weights import assign_keras

    root = tmp_path_factory.mktemp("mirror")
    arrays = perturbed(default_arrays)
    np.savez(root / "w.npz", **arrays)
    clip = read_video_frames(bikes_path(), 4)[:, 40:168, 100:292].astype(np.float32) / 255.0  # 128 x 192
    frames = np.stack([clip, clip[:, :, ::-1]])
    levels = np.array([[0, 2.5, 5, 7], [7, 3.25, 1, 0.5]], np.float32)
    argv, flow_max = [], {}
    for name, (radius, penalty_top, upsample) in MIRROR_CASES.items():
        config = dataclasses.replace(load_config(DEFAULT / "config.json"), motion_search_radius=radius,
                                     motion_search_penalty_top=penalty_top, block_motion_upsample=upsample)
        write_json(root / f"{name}.json", config.to_dict())
        model = ELFVC(config).build_weights()
        assign_keras(model, arrays)
        out = model.forward_gop(frames, levels, "round")
        flow_max[name] = float(np.abs(np.stack([f.flow.numpy() for f in out.frames[1:]])[..., :2]).max())
        np.savez(root / f"{name}.npz", frames=frames, levels=levels,
                 reconstructions=out.reconstructions.numpy(), bits=out.bits.numpy())
        argv += [str(root / f"{name}.npz"), str(root / "w.npz"), str(root / f"{name}.json")]
    result = run_torch(["-m", "gpu_train.compare", *argv])
    assert result.returncode == 0, result.stderr[-2000:]
    diffs = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(MIRROR_CASES):]]
    return {name: (flow_max[name], diff) for name, diff in zip(MIRROR_CASES, diffs)}


@pytest.mark.parametrize("case", list(MIRROR_CASES))
def test_mirror_matches_keras_on_a_gop(mirror_diffs, case):
    flow_max, diff = mirror_diffs[case]
    assert flow_max > 0.5, "the perturbed heads should move pixels, or the warp goes untested"
    # Same float32 operations in another order: differences stay at rounding level. A wrong
    # channel order, padding or equation gives errors of 1e-2 and more.
    assert diff["recon_max_abs"] < 1e-4, diff
    assert diff["bits_max_rel"] < 1e-4, diff


def test_mirror_motion_search_picks_the_keras_vectors(tmp_path):
    """The mirror's block search (shifts costed one row at a time, no gradient) chooses exactly
    the vectors of model.motion's (all (2R + 1)^2 shifts at once) at the shipped radius, with a
    per-example penalty, on real frames two apart and on a copy shifted by a known amount."""
    import tensorflow as tf

    from model.motion import block_motion_search

    clip = read_video_frames(bikes_path(), 3)[:, 40:168, 100:292].astype(np.float32) / 255.0  # 128 x 192
    target = np.stack([clip[2], clip[2]])
    reference = np.stack([clip[0], np.roll(clip[2], (5, -3), (0, 1))])
    penalty = np.array([0.01, 0.0], np.float32)
    vectors = block_motion_search(target, reference, radius=8, penalty=tf.constant(penalty)).numpy()
    # the known shift (dx, dy) = (-3, 5) on most blocks (flat ones tie; the first shift wins)
    assert (vectors[1] == [-3.0, 5.0]).all(-1).mean() > 0.8, vectors[1]
    np.savez(tmp_path / "case.npz", target=target, reference=reference, penalty=penalty, vectors=vectors)
    code = (
        "import sys, numpy as np, torch; from gpu_train.net import block_motion_search as s; "
        "d = np.load(sys.argv[1]); t = lambda k: torch.from_numpy(d[k]).permute(0, 3, 1, 2); "
        "ref = t('reference').requires_grad_(); out = s(t('target'), ref, 8, torch.from_numpy(d['penalty'])); "
        "assert not out.requires_grad; "
        "print(int((out.permute(0, 2, 3, 1).numpy() != d['vectors']).sum()))"
    )
    result = run_torch(["-c", code, str(tmp_path / "case.npz")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0"


def test_weights_round_trip_through_npz(tmp_path, default_arrays):
    from gpu_train import weights

    np.savez(tmp_path / "w.npz", **default_arrays)
    out = weights.from_npz(tmp_path / "w.npz", DEFAULT / "config.json", tmp_path / "model", {"note": "test"})
    again = weights.keras_arrays(out)
    assert sorted(again) == sorted(default_arrays)
    for key, value in default_arrays.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    assert json.loads((out / "training.json").read_text()) == {"note": "test"}
    # Without --metadata, training.json records what the run beside the weights did.
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "weights-00.npz", **default_arrays)
    (run / "progress.json").write_text(json.dumps({"gop_steps": 5, "image_steps": 2, "log": [{"loss": 1}],
                                                   "args": {"lambda_range": "0.2,0.0002", "batch": 8}}))
    training = json.loads((weights.from_npz(run, DEFAULT / "config.json", tmp_path / "m2") / "training.json").read_text())
    assert training["model_step"] == int(default_arrays["step"]) and training["source"] == str(run)
    assert (training["gop_steps"], training["image_steps"], training["lambda_range"]) == (5, 2, "0.2,0.0002")
    assert training["train_args"]["batch"] == 8 and "log" not in training
    assert (tmp_path / "m2").stat().st_mode & 0o777 == 0o777 & ~umask()  # not mkdtemp's 0700


def test_to_npz_reads_a_compact_folder_by_name_without_tensorflow(tmp_path):
    """The shipped `base` is a compact folder (FP16 kernels): to_npz widens them, by name or path,
    with no TensorFlow (the torch environment); from_npz there says which Python to use."""
    from gpu_train.weights import read_arrays

    result = run_torch(["-m", "gpu_train.weights", "to_npz", "--model=base", f"--out={tmp_path / 'b.npz'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    got, shipped = read_arrays(tmp_path / "b.npz"), read_arrays(REPO / "runtime" / "checkpoints" / "base" / "weights.npz")
    assert sorted(got) == sorted(shipped) and all(got[k].dtype != np.float16 for k in got)
    assert all(np.array_equal(got[k], shipped[k].astype(got[k].dtype)) for k in got)
    result = run_torch(["-m", "gpu_train.weights", "from_npz", f"--npz={tmp_path / 'b.npz'}",
                        f"--config={REPO / 'runtime' / 'checkpoints' / 'base' / 'config.json'}", f"--out={tmp_path / 'm'}"])
    assert result.returncode == 1 and not (tmp_path / "m").exists()
    assert result.stderr.strip().startswith("python -m gpu_train.weights: error: from_npz builds the Keras model: run it "
                                            "with the TensorFlow environment's Python (.venv/bin/python)")


def test_weights_errors_name_the_problem(tmp_path, default_arrays, capsys):
    from gpu_train import weights

    bad = dict(default_arrays)
    bad["iframe.analysis.stem.kernel"] = bad["iframe.analysis.stem.kernel"][:, :, :3]
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(weights.WeightsError, match="iframe.analysis.stem.kernel.*shape"):
        weights.from_npz(tmp_path / "shape.npz", DEFAULT / "config.json", tmp_path / "a", {})
    missing = dict(default_arrays)
    del missing["residue.image_head.bias"]
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(weights.WeightsError, match="no weight"):
        weights.from_npz(tmp_path / "missing.npz", DEFAULT / "config.json", tmp_path / "b", {})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    existing = tmp_path / "exists.npz"
    existing.write_bytes(b"keep me")
    assert weights.main(["to_npz", f"--model={DEFAULT}", f"--out={existing}"]) == 1
    assert existing.read_bytes() == b"keep me"
    assert weights.main(["to_npz", f"--model={tmp_path / 'nothing'}", f"--out={tmp_path / 'x.npz'}"]) == 1
    assert weights.main(["from_npz", f"--npz={tmp_path / 'none.npz'}", f"--config={DEFAULT / 'config.json'}", f"--out={tmp_path / 'c'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("python -m gpu_train.weights: error: ") for line in err), err


def _clip_folder(tmp_path):
    """A folder holding one 8-frame 256x256 clip cut from bikes.mp4."""
    import imageio_ffmpeg

    frames = read_video_frames(bikes_path(), 8)[:, :256, :256]
    data = tmp_path / "data"
    data.mkdir()
    writer = imageio_ffmpeg.write_frames(str(data / "bikes.mp4"), (256, 256), quality=9, macro_block_size=1)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return data


def test_gpu_trainer_runs_and_writes_weights(tmp_path, default_arrays):
    """A few CPU steps: the trainer loads, trains (the loss is finite), and writes weights that load."""
    data = _clip_folder(tmp_path)
    np.savez(tmp_path / "init.npz", **default_arrays)
    result = run_torch([
        "-m", "gpu_train.train", f"--config={DEFAULT / 'config.json'}", f"--init={tmp_path / 'init.npz'}",
        f"--data={data}", f"--out_dir={tmp_path / 'out'}", "--minutes=10", "--max_steps=3", "--batch=1", "--gop=3", "--crop=64",
        "--device=cpu", "--log_every=2", "--reinit=flow", "--warp_loss=1", "--freeze=iframe", "--precision=fp32", "--lambda_range=low",
        "--save_every_secs=0", "--snapshot_every_secs=1e-9",  # a checkpoint, and a snapshot of it, every step
    ])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "re-initialized" in result.stdout and "froze" in result.stdout and "done: model step" in result.stdout
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert progress["final"] and progress["steps_here"] == 3  # --max_steps
    assert progress["model_step"] == int(default_arrays["step"]) + 3
    saved = calendar.timegm(time.strptime(progress["saved_at"], "%Y-%m-%dT%H:%M:%SZ"))  # UTC, training.json's date
    assert 0 <= time.time() - saved < 600, progress["saved_at"]
    # Steps 1-2 (the first, which counts the FLOPs, logged but not timed), then step 3; each
    # window's budget fraction is the one reached at its end (2 and 3 of --max_steps=3).
    log = progress["log"]
    assert [r["model_step"] - int(default_arrays["step"]) for r in log] == [2, 3] and all(r["loss"] > 0 for r in log)
    assert [r["budget_frac"] for r in log] == [0.667, 1.0] and all(r["steps_per_s"] > 0 for r in log)
    from model.config import LAMBDA_RANGES

    assert progress["args"]["lambda_range"] == ",".join(map(repr, LAMBDA_RANGES["low"]))  # a name, recorded as its numbers
    # Rerun into the same --out_dir: refused at once, the run's weights untouched (it does not resume in place).
    before = (tmp_path / "out" / "weights-00.npz").read_bytes()
    again = run_torch(["-m", "gpu_train.train", f"--config={DEFAULT / 'config.json'}", f"--data={data}",
                       f"--out_dir={tmp_path / 'out'}", "--minutes=1", "--device=cpu"])
    assert again.returncode == 1 and again.stderr.strip().startswith(f"error: --out_dir: {tmp_path / 'out'} already holds a run")
    assert f"--init={tmp_path / 'out'}" in again.stderr and (tmp_path / "out" / "weights-00.npz").read_bytes() == before
    from gpu_train.weights import read_arrays

    trained = read_arrays(tmp_path / "out")
    assert sorted(trained) == sorted(default_arrays)
    assert all(trained[k].dtype == default_arrays[k].dtype for k in trained)
    # Re-initialized and trained: the flow block changed, the frozen norm statistics did not.
    assert not np.array_equal(trained["flow.analysis.stem.kernel"], default_arrays["flow.analysis.stem.kernel"])
    np.testing.assert_array_equal(trained["flow.encoder_norm.moving_mean"], default_arrays["flow.encoder_norm.moving_mean"])
    # --freeze=iframe: every I-frame codec weight comes back bit for bit, the residue block trained.
    iframe = [k for k in trained if k.startswith("iframe.")]
    assert iframe and all(np.array_equal(trained[k], default_arrays[k]) for k in iframe)
    assert any(not np.array_equal(trained[k], default_arrays[k]) for k in trained if k.startswith("residue."))
    # --snapshot_every_secs: each step's checkpoint kept whole, in a folder the tools read as a run.
    from gpu_train.train import config_beside

    step0 = int(default_arrays["step"])
    snapshots = tmp_path / "out" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == [f"s{step0 + k}" for k in (1, 2, 3)]
    for k in (1, 2, 3):
        kept = read_arrays(snapshots / f"s{step0 + k}")
        assert int(kept["step"]) == step0 + k
        assert json.loads((snapshots / f"s{step0 + k}" / "progress.json").read_text())["model_step"] == step0 + k
    assert all(np.array_equal(kept[k], trained[k]) for k in trained)  # the last one is the run's end
    assert not np.array_equal(read_arrays(snapshots / f"s{step0 + 1}")["flow.analysis.stem.kernel"],
                              trained["flow.analysis.stem.kernel"])  # fmt: skip
    assert config_beside(str(snapshots / f"s{step0 + 1}"))[0] == json.loads((DEFAULT / "config.json").read_text())


def test_divergence_rule():
    from gpu_train.train import is_divergent

    assert is_divergent(float("nan"), [], 20) and is_divergent(float("inf"), [1.0] * 5, 0)
    assert not is_divergent(1e9, [1.0, 1.0], 20)  # fewer than 3 earlier windows: only non-finite counts
    assert not is_divergent(19.0, [1.0, 1.0, 1.0], 20) and is_divergent(21.0, [1.0, 1.0, 1.0], 20)
    assert not is_divergent(1e9, [1.0] * 5, 0)  # factor 0: off
    assert is_divergent(25.0, [100.0] * 20 + [1.0] * 10, 20)  # the median of the last 10 windows only


@pytest.mark.slow  # ~10 s of training to a forced divergence; fast: test_divergence_rule
def test_gpu_trainer_rolls_a_divergence_back(tmp_path, default_arrays):
    """With a divergence factor barely above 1, a window whose loss tops the median of the earlier
    ones counts as diverged: the first rolls the weights back (Adam restarted, lr halved), the
    second ends the run with exit 1, the last good weights (here the initial ones, bit for bit)
    saved and both events in progress.json."""
    data = _clip_folder(tmp_path)
    np.savez(tmp_path / "init.npz", **default_arrays)
    result = run_torch([
        "-m", "gpu_train.train", f"--config={DEFAULT / 'config.json'}", f"--init={tmp_path / 'init.npz'}",
        f"--data={data}", f"--out_dir={tmp_path / 'out'}", "--minutes=10", "--max_steps=60", "--batch=1", "--gop=2", "--crop=64",
        "--device=cpu", "--log_every=1", "--diverge_factor=1.000001", "--max_rollbacks=1", "--save_every_secs=1e9",
        "--precision=fp32",  # not auto: the same on every CPU
    ])
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("rolled back to model step") == 1 and "lr x0.5" in result.stdout
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the loss diverged at model step") and "after 1 rollbacks" in err[0]
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert len(progress["rollbacks"]) == 1 and progress["rollbacks"][0]["lr_scale"] == 0.5 and progress["diverged_at"]
    from gpu_train.weights import read_arrays

    saved = read_arrays(tmp_path / "out")
    assert all(np.array_equal(saved[k], default_arrays[k]) for k in default_arrays)


def test_gpu_trainer_rejects_bad_input_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_torch([
        "-m", "gpu_train.train", f"--config={DEFAULT / 'config.json'}", f"--data={empty}",
        f"--out_dir={tmp_path / 'out'}", "--minutes=1", "--device=cpu",
    ])
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no videos under {empty}"
    result = run_torch([
        "-m", "gpu_train.train", f"--config={DEFAULT / 'config.json'}", f"--data={empty}",
        f"--out_dir={tmp_path / 'out'}", "--minutes=1", "--device=cpu", "--lambda_range=1",
    ])
    assert result.returncode == 1 and result.stderr.strip().startswith("error: --lambda_range")
    (tmp_path / "file").write_text("mine")
    result = run_torch([
        "-m", "gpu_train.train", f"--config={DEFAULT / 'config.json'}", f"--data={empty}",
        f"--out_dir={tmp_path / 'file'}", "--minutes=1", "--device=cpu",
    ])
    assert (result.returncode, result.stderr.strip()) == (1, f"error: --out_dir: {tmp_path / 'file'} exists and is not a folder")
    assert (tmp_path / "file").read_text() == "mine"


def test_config_flag_takes_a_file_or_a_name():
    """--config NAME: the --init weights' own config where it has that name (the shipped `base`
    differs from its recipe), else model/config.py's recipe; a file as it is."""
    from gpu_train.train import read_config
    from model.config import get_config

    shipped = json.loads((DEFAULT / "config.json").read_text())
    assert read_config(str(DEFAULT / "config.json")) == shipped
    assert read_config(shipped["name"], str(DEFAULT / "weights.npz")) == shipped
    assert read_config(shipped["name"]) == get_config(shipped["name"]).to_dict()
    assert read_config("paper", str(DEFAULT / "weights.npz")) == get_config("paper").to_dict()


@pytest.mark.parametrize("flag, message", [
    ("--crop=100", "error: --crop must be a multiple of 64 (the model's frame multiple), got 100"),
    ("--minutes=0", "error: --minutes must be positive, got 0"),
    ("--init=/nonexistent.npz", "error: --init: /nonexistent.npz: no such file"),
    ("--freeze=iframe,nosuch", "error: --freeze iframe,nosuch: no parameters under 'nosuch'"),
    ("--diverge_factor=0.5", "error: --diverge_factor must be 0 (off) or > 1, --max_rollbacks non-negative"),
    ("--max_steps=-1", "error: --max_steps must be >= 0 (0: no step budget), got -1"),
    ("--snapshot_every_secs=-1", "error: --snapshot_every_secs must be >= 0 (0: off), got -1"),
    ("--freeze=iframe --image_frac=0.1", "error: --freeze=iframe leaves the I-frame phase nothing to train: pass --image_frac=0"),
    ("--precision=tf32", "error: --precision=tf32 is CUDA's (TF32 tensor cores): on the CPU use fp32, bf16 or auto"),
    ("--config=nosuch", "error: --config: nosuch: no such file, nor a config name (base, paper, small)"),
    ("--lambda_range=0.1,inf", "error: --lambda_range='0.1,inf': lambdas must be positive and finite"),
])
def test_gpu_trainer_checks_flags_before_work(tmp_path, flag, message):
    result = run_torch([
        "-m", "gpu_train.train", f"--config={DEFAULT / 'config.json'}", f"--data={tmp_path}",
        f"--out_dir={tmp_path / 'out'}", "--minutes=1", "--device=cpu", *flag.split(),
    ])
    assert (result.returncode, result.stderr.strip()) == (1, message)
    assert not (tmp_path / "out").exists()


def test_compare_takes_whole_triples(capsys):
    from gpu_train import compare

    assert compare.main(["case.npz", "w.npz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "expected CASE.npz WEIGHTS.npz CONFIG.json triples, got 2 paths" in err[-1], err


def test_precision_auto_takes_bf16_only_where_the_cpu_has_it(tmp_path):
    """--precision=auto: tf32 on CUDA; on the CPU bf16 only with AMX or AVX512-BF16 in /proc/cpuinfo's
    flags (emulated bf16 ran 10x slower than fp32), else fp32; bf16 asked for without them runs with a
    warning; explicit choices pass through."""
    from gpu_train.train import resolve_precision
    from model.cpu import EMULATED_BF16_WARNING, cpu_has_native_bf16

    assert resolve_precision("auto", "cuda", False) == ("tf32", None)
    assert resolve_precision("auto", "cpu", True) == ("bf16", None)
    assert resolve_precision("auto", "cpu", False) == ("fp32", None)
    assert resolve_precision("bf16", "cpu", True) == ("bf16", None)
    precision, warning = resolve_precision("bf16", "cpu", False)
    assert precision == "bf16" and warning.startswith(EMULATED_BF16_WARNING)
    for p in ("tf32", "fp32"):
        assert resolve_precision(p, "cpu", False) == (p, None) and resolve_precision(p, "cuda", True) == (p, None)
    head = "processor\t: 0\nvendor_id\t: X\nflags\t\t: fpu sse2 avx2 avx512f avx512bw"
    for extra, native in (("", False), (" avx512_bf16", True), (" amx_tile amx_bf16", True), (" amx_tile", False)):
        (tmp_path / "cpuinfo").write_text(f"{head}{extra}\nbogomips\t: 1.0\n")
        assert cpu_has_native_bf16(str(tmp_path / "cpuinfo")) is native, extra
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is None  # unknown: the trainers take it as none


def test_channels_last_by_default_where_it_was_measured_faster():
    """channels_last: on CUDA, on the CPU for bf16 (measured faster there), not for CPU FP32."""
    from types import SimpleNamespace

    from gpu_train.train import default_channels_last

    cpu, cuda = SimpleNamespace(type="cpu"), SimpleNamespace(type="cuda")
    assert default_channels_last(cpu, "bf16") and default_channels_last(cuda, "tf32") and default_channels_last(cuda, "bf16")
    assert not default_channels_last(cpu, "fp32") and not default_channels_last(cpu, "tf32")
