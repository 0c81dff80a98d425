"""The training binary in-process through main(argv): train, resume, export, warm start, bad input.

Subprocess tests (SIGKILL / SIGTERM and resume, two workers) are in test_train_process.py.
"""

import contextlib
import dataclasses
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model import checkpoints as ckpt
from model import train
from model.config import get_config
from model.data import DataConfig


def run_main(*args) -> int:
    return train.main(["train", *args])


def write_septuplet(root, bikes_frames):
    """A Vimeo-90k style folder with one real 7-frame sequence of 128x192 crops."""
    seq = root / "sequences" / "00001" / "0001"
    seq.mkdir(parents=True)
    for i, frame in enumerate(bikes_frames[:7, 80:208, 200:392], start=1):
        Image.fromarray(frame).save(seq / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def septuplet(tmp_path_factory, bikes_frames):
    return write_septuplet(tmp_path_factory.mktemp("vimeo"), bikes_frames)


def tiny(data, train_dir, *extra):
    return (
        f"--data={data}", f"--train_dir={train_dir}", "--gop=2", "--crop=64", "--batch=2",
        "--log_every=1", "--checkpoint_every_secs=0", *extra,
    )


def _weights(prefix, scope=""):
    reader = tf.train.load_checkpoint(str(prefix))
    return {
        k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
        if k.startswith(f"model/{scope}") and "OPTIMIZER_SLOT" not in k
    }


def _run_quietly(*args):
    """run_main outside a test (module fixtures have no capsys): (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_main(*args)
    return code, out.getvalue(), err.getvalue()


FIRST_RUN = ("--steps=2", "--warp_loss=1", "--warp_loss_steps=1")


@pytest.fixture(scope="module")
def trained(septuplet, tmp_path_factory):
    """A 2-step run (the warp loss on for its first step) and its export, shared by the tests
    below (each traced training step costs tens of CPU seconds): (train_dir, export_dir, stdout)."""
    root = tmp_path_factory.mktemp("trained")
    train_dir, export_dir = root / "run", root / "shipped"
    # The warp loss is a training option (no config field): on for step 1, the config stays small's.
    code, out, err = _run_quietly(*tiny(septuplet, train_dir, *FIRST_RUN))
    assert code == 0, err
    code, _, err = _run_quietly(f"--train_dir={train_dir}", f"--export_to={export_dir}")
    assert code == 0, err
    return train_dir, export_dir, out


@pytest.fixture(scope="module")
def warm_pframe_run(septuplet, trained, tmp_path_factory):
    """2 steps warm-started from the export across a Q_w-only config change (per-level Q_w on the
    P-frames, a new spread 4 -> 0.5, the flow at its own spread 1, 1) with the warp loss on for
    the first step: (run_dir, stdout)."""
    run_dir = tmp_path_factory.mktemp("warm") / "run"
    args = ("--steps=2", "--quant_width=4,0.5", "--pframe_quant_width", "--flow_quant_width=1,1",
            "--warp_loss=1", "--warp_loss_steps=1", f"--init_from={trained[1]}")
    code, out, err = _run_quietly(*tiny(septuplet, run_dir, *args))
    assert code == 0, err
    return run_dir, out


def test_train_resume_export_and_warm_start(septuplet, trained, tmp_path, capsys):
    train_dir, export_dir, out = trained
    assert "step 2/2" in out and "step/s" in out and "PSNR/bpp by level" in out
    assert ckpt.load_config(train_dir / ckpt.CONFIG_FILE) == get_config("small")
    progress = json.loads((train_dir / ckpt.PROGRESS_FILE).read_text())
    assert progress["step"] == 2 and np.array(progress["mu"]).shape == (2, 8)
    assert list((train_dir / "summaries").glob("events.out.tfevents.*"))

    # Export: weights-only folder that tf.train.Checkpoint(model=...) loads, same weights.
    latest = ckpt.latest_in(train_dir)
    assert latest.endswith("ckpt-2")
    assert tf.train.load_checkpoint(latest).get_tensor("model/step/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert run_main(*tiny(septuplet, train_dir, *FIRST_RUN)) == 0  # rerun: already done
    assert "resuming from" in capsys.readouterr().out  # (the resume itself: test_train_process.py)
    assert sorted(p.name for p in export_dir.iterdir() if not p.name.startswith("model.data")) == [
        "config.json", "model.index", "training.json"]
    model, config = ckpt.load_exported(export_dir)
    assert config == get_config("small")
    kernel = model.iframe.analysis.trainable_variables[0]
    shipped = _weights(export_dir / "model")
    trained_weights = _weights(latest)
    assert set(shipped) == set(trained_weights)
    for key, value in trained_weights.items():
        np.testing.assert_array_equal(shipped[key], value)
    meta = json.loads((export_dir / ckpt.TRAINING_FILE).read_text())
    assert meta["step"] == 2 and meta["options"]["gop"] == 2
    assert run_main(f"--train_dir={train_dir}", f"--export_to={export_dir}") == 1
    assert "already exists" in capsys.readouterr().err

    # Warm start of the I-frame codec only (from the export) into a new trainer.
    data = DataConfig(str(septuplet), gop=2, crop=(64, 64))
    trainer = train.Trainer(get_config("small"), data, train.TrainOptions(steps=1, batch=2), tmp_path / "warm",
                            tf.distribute.get_strategy(), init_from=str(export_dir), init_scope="iframe")
    assert "warm start" in trainer.resumed_from
    np.testing.assert_array_equal(trainer.model.iframe.analysis.trainable_variables[0].numpy(), kernel.numpy())
    assert not np.array_equal(trainer.model.flow.analysis.trainable_variables[0].numpy(),
                              model.flow.analysis.trainable_variables[0].numpy())
    assert int(trainer.optimizer.iterations.numpy()) == 0

    # A checkpoint of another config: resuming or warm starting ends with one line, exit 1.
    assert run_main(*tiny(septuplet, train_dir, "--steps=4", "--ablation=no_predictor")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: error:") and "another config" in err and "use_predictor" in err and "\n" not in err
    assert "--quant_width" in err
    assert run_main(*tiny(septuplet, tmp_path / "fresh", "--steps=4", "--ablation=no_predictor",
                          f"--init_from={export_dir}")) == 1
    err = capsys.readouterr().err.strip()
    assert "another config" in err and "\n" not in err
    # Resuming with another GOP length is refused too (the modulator has one mu per frame).
    assert run_main(*tiny(septuplet, train_dir, "--steps=4", "--gop=3")) == 1
    assert "--gop=2" in capsys.readouterr().err


def test_warp_loss_is_an_option_and_every_line_reports_the_prediction(trained):
    train_dir, _, out = trained
    assert out.count("warp PSNR") == 2, out
    options = json.loads((train_dir / ckpt.OPTIONS_FILE).read_text())["options"]
    assert options["warp_loss"] == 1.0 and options["warp_loss_steps"] == 1


def test_warm_start_sets_each_quant_width_table(septuplet, trained, tmp_path):
    """A warm start across a Q_w-only config change (here: the export, small's spread 1 -> 1 and
    no P-frame Q_w, into per-level P-frame Q_w) loads every other weight; a block keeps its
    learned table only when its initial spread is unchanged, every other table starts at the new
    config's spread: --quant_width's, or the flow's own. (The same through the command line,
    trained on and back again: the slow test_warm_start_across_a_quant_width_change.)"""
    export_dir = trained[1]
    model, _ = ckpt.load_exported(export_dir)
    learned = model.iframe.log_quant_width.numpy()[:, 0]
    assert not np.allclose(learned, 0.0, atol=1e-6, rtol=0)  # two Adam steps from log 1
    data = DataConfig(str(septuplet), gop=2, crop=(64, 64))
    spread = np.linspace(np.log(4), np.log(0.5), 8)
    cases = [  # (config overrides, init scope, expected iframe / flow / residue tables)
        (dict(quant_width_first=4.0, quant_width_last=0.5), "all", (spread, spread, spread)),
        (dict(quant_width_first=4.0, quant_width_last=0.5, flow_quant_width_first=1.0, flow_quant_width_last=1.0),
         "all", (spread, np.zeros(8), spread)),
        # (the same tables with scope "all" add nothing: the two cases above load every block)
        ({}, "iframe", (learned, np.zeros(8), np.zeros(8))),
    ]
    for i, (overrides, scope, expected) in enumerate(cases):
        config = get_config("small", pframe_quant_width=True, **overrides)
        trainer = train.Trainer(config, data, train.TrainOptions(steps=1, batch=2), tmp_path / f"w{i}",
                                tf.distribute.get_strategy(), init_from=str(export_dir), init_scope=scope)
        assert "warm start" in trainer.resumed_from
        for block, table in zip(("iframe", "flow", "residue"), expected):
            got = getattr(trainer.model, block).log_quant_width.numpy()[:, 0]
            np.testing.assert_allclose(got, table, rtol=0, atol=1e-6, err_msg=f"case {i} {block}")
        np.testing.assert_array_equal(trainer.model.iframe.analysis.trainable_variables[0].numpy(),
                                      model.iframe.analysis.trainable_variables[0].numpy())
        loaded = scope == "all"
        assert np.array_equal(trainer.model.flow.analysis.trainable_variables[0].numpy(),
                              model.flow.analysis.trainable_variables[0].numpy()) == loaded


@pytest.mark.slow  # its own traced training run; fast: test_warm_start_sets_each_quant_width_table
def test_warm_start_across_a_quant_width_change(septuplet, trained, warm_pframe_run, tmp_path):
    """Every other weight loads; every Q_w table starts at the new config's initial spread, never
    from the checkpoint's: --quant_width's for the I-frame and residue, --flow_quant_width's for
    the flow, and (without --flow_quant_width) --quant_width's for the flow too."""
    export_dir = trained[1]
    qw_dir, out = warm_pframe_run
    assert "warm start from" in out
    qw_config = ckpt.load_config(qw_dir / ckpt.CONFIG_FILE)
    assert qw_config.pframe_quant_width and (qw_config.quant_width_first, qw_config.quant_width_last) == (4.0, 0.5)
    reader = tf.train.load_checkpoint(ckpt.latest_in(qw_dir))
    spread = np.linspace(np.log(4), np.log(0.5), 8)
    for block, initial in (("iframe", spread), ("residue", spread), ("flow", np.zeros(8))):
        table = reader.get_tensor(f"model/{block}/log_quant_width/.ATTRIBUTES/VARIABLE_VALUE")
        # Two Adam steps (lr 7e-5) away from the initial spread, never from the checkpoint's table.
        np.testing.assert_allclose(table[:, 0], initial, atol=1e-3)
    data = DataConfig(str(septuplet), gop=2, crop=(64, 64))
    flow_follows = dataclasses.replace(qw_config, flow_quant_width_first=None, flow_quant_width_last=None)
    trainer = train.Trainer(flow_follows, data, train.TrainOptions(steps=1, batch=2), tmp_path / "follows",
                            tf.distribute.get_strategy(), init_from=str(export_dir))
    assert "warm start" in trainer.resumed_from
    np.testing.assert_allclose(trainer.model.flow.log_quant_width.numpy()[:, 0], spread, rtol=0, atol=1e-6)
    # Back without P-frame Q_w, same spread: the I-frame keeps the table it learned, exactly; a new
    # spread resets it.
    learned = reader.get_tensor("model/iframe/log_quant_width/.ATTRIBUTES/VARIABLE_VALUE")
    assert not np.allclose(learned[:, 0], spread, atol=1e-6, rtol=0)
    for spread_, scope, expected in (((4.0, 0.5), "all", learned[:, 0]), ((4.0, 0.5), "iframe", learned[:, 0]),
                                     ((8.0, 0.5), "all", np.linspace(np.log(8), np.log(0.5), 8))):
        config = dataclasses.replace(get_config("small"), quant_width_first=spread_[0], quant_width_last=spread_[1])
        trainer = train.Trainer(config, data, train.TrainOptions(steps=1, batch=2), tmp_path / f"back{spread_[0]}{scope}",
                                tf.distribute.get_strategy(), init_from=str(qw_dir), init_scope=scope)
        np.testing.assert_allclose(trainer.model.iframe.log_quant_width.numpy()[:, 0], expected, rtol=0, atol=1e-6)
        assert not hasattr(trainer.model.flow, "log_quant_width")


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda p: p, (), "no videos, Vimeo-90k septuplets or images found"),
        (lambda p: p / "missing", (), "does not exist"),
        (None, ("--gop=8",), "shorter than the GOP (8 frames)"),
        (None, ("--crop=100",), "multiple of 64"),
        (None, ("--lambda_range=big",), "expected low, high or FIRST,LAST"),
        (None, ("--batch=0",), "--batch must be >= 1"),
        (None, ("--quant_width=0,1",), "must be positive and finite"),
        (None, ("--quant_width=2",), "expected FIRST,LAST"),
        (None, ("--flow_quant_width=1",), "--flow_quant_width='1': expected FIRST,LAST"),
        (None, ("--flow_quant_width=1,1",), "needs pframe_quant_width"),
        (None, ("--warp_loss=-1",), "--warp_loss and --warp_loss_steps must be >= 0"),
    ],
)
def test_bad_input_ends_with_one_line(septuplet, tmp_path, capsys, make, args, message):
    data = septuplet if make is None else make(tmp_path)
    code = run_main(f"--data={data}", f"--train_dir={tmp_path / 'run'}", "--crop=64", *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len([l for l in err if l.startswith("train: error:")]) == 1
    assert message in err[-1]
    assert not (tmp_path / "run" / "ckpt").exists()


def test_bf16_training_trains_and_writes_fp32_checkpoints(septuplet, trained, tmp_path, capsys, monkeypatch):
    """--precision=bf16 (convolutions in bf16, FP32 weights): a warm-started I-frame step changes
    the weights, and its checkpoint holds the same FP32 variables an FP32 run writes. On a CPU
    without bf16 instructions (made so here) it says that bf16 is emulated; FP32 runs never do."""
    import model.cpu

    assert model.cpu.EMULATED_BF16_WARNING not in trained[2]
    monkeypatch.setattr(model.cpu, "cpu_has_native_bf16", lambda: False)
    export_dir = trained[1]
    run_dir = tmp_path / "bf16"
    assert run_main(*tiny(septuplet, run_dir, "--steps=1", "--gop=1", "--precision=bf16", f"--init_from={export_dir}")) == 0
    out = capsys.readouterr().out
    assert "bf16 convolutions" in out and "step 1/1" in out
    assert out.count(model.cpu.EMULATED_BF16_WARNING) == 1
    assert json.loads((run_dir / ckpt.OPTIONS_FILE).read_text())["options"]["precision"] == "bf16"
    after, before = _weights(ckpt.latest_in(run_dir), "iframe"), _weights(export_dir / "model", "iframe")
    assert set(after) == set(before)
    assert all(after[k].dtype == before[k].dtype for k in after)
    assert {v.dtype for v in after.values()} == {np.dtype(np.float32)}
    assert any(not np.array_equal(after[k], before[k]) for k in after if "analysis" in k)


def test_unknown_precision_is_a_usage_error(septuplet, tmp_path, capsys):
    assert run_main(*tiny(septuplet, tmp_path / "run", "--precision=fp16")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: error: flag --precision=fp16: value should be one of <fp32|bf16>") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_unreadable_checkpoint_dir_for_init_from(septuplet, tmp_path, capsys):
    code = run_main(*tiny(septuplet, tmp_path / "run", "--steps=1", f"--init_from={tmp_path / 'nothing'}"))
    assert code == 1 and "does not exist" in capsys.readouterr().err
    # That run left its config.json and no checkpoint: a corrected rerun of another config is not
    # refused as "a checkpoint of another config" (it gets as far as its own --init_from here).
    code = run_main(*tiny(septuplet, tmp_path / "run", "--steps=1", "--ablation=no_predictor", f"--init_from={tmp_path / 'none2'}"))
    err = capsys.readouterr().err
    assert code == 1 and "none2 does not exist" in err and "another config" not in err
    (tmp_path / "file").write_text("mine")
    assert run_main(*tiny(septuplet, tmp_path / "file", "--steps=1")) == 2
    assert capsys.readouterr().err.strip() == f"train: error: --train_dir {tmp_path / 'file'} exists and is not a folder (see 'train --help')"
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.slow  # shares that run; fast: test_warm_start_sets_each_quant_width_table, test_warp_loss_is_an_option_...
def test_flow_quant_width_and_warp_loss(septuplet, warm_pframe_run, tmp_path):
    """--flow_quant_width gives the flow codelayer its own initial spread (1, 1: the paper's Q_w = 1)
    while the residue keeps --quant_width's; --warp_loss adds MSE(x_comp, x) for the first
    --warp_loss_steps steps, and every log line reports the prediction's PSNR."""
    run_dir, out = warm_pframe_run
    assert out.count("warp PSNR") == 2, out
    config = ckpt.load_config(run_dir / ckpt.CONFIG_FILE)
    assert (config.flow_quant_width_first, config.flow_quant_width_last) == (1.0, 1.0)
    options = json.loads((run_dir / ckpt.OPTIONS_FILE).read_text())["options"]
    assert options["warp_loss"] == 1.0 and options["warp_loss_steps"] == 1
    reader = tf.train.load_checkpoint(ckpt.latest_in(run_dir))
    table = lambda block: reader.get_tensor(f"model/{block}/log_quant_width/.ATTRIBUTES/VARIABLE_VALUE")[:, 0]
    np.testing.assert_allclose(table("flow"), np.zeros(8), atol=1e-3)  # two Adam steps of lr 7e-5 from log 1
    np.testing.assert_allclose(table("residue"), np.linspace(np.log(4), np.log(0.5), 8), atol=1e-3)

    # Warm start into another flow spread: the flow table resets, I-frame and residue keep theirs.
    config2 = dataclasses.replace(config, flow_quant_width_first=2.0, flow_quant_width_last=2.0)
    data = DataConfig(str(septuplet), gop=2, crop=(64, 64))
    trainer = train.Trainer(config2, data, train.TrainOptions(steps=1, batch=2), tmp_path / "warm2",
                            tf.distribute.get_strategy(), init_from=str(run_dir))
    np.testing.assert_allclose(trainer.model.flow.log_quant_width.numpy()[:, 0], np.full(8, np.log(2.0)), atol=1e-6)
    np.testing.assert_array_equal(trainer.model.residue.log_quant_width.numpy()[:, 0], table("residue"))
    np.testing.assert_array_equal(trainer.model.iframe.log_quant_width.numpy()[:, 0], table("iframe"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"flow_quant_width_first": 1.0}, "or neither"),
        ({"flow_quant_width_first": 1.0, "flow_quant_width_last": 1.0}, "needs pframe_quant_width"),
        ({"flow_quant_width_first": 1.0, "flow_quant_width_last": 0.0, "pframe_quant_width": True}, "must be positive"),
    ],
)
def test_flow_quant_width_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("small", **overrides)
