"""The training binary as real processes: SIGKILL / SIGTERM and resume, and two-worker training.

Slow (each process traces the train step): run with `pytest -m slow tests/test_train_process.py`.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from model import checkpoints as ckpt
from model.config import get_config
from model.elfvc import ELFVC
from conftest import REPO
from tests.test_train import write_septuplet

pytestmark = pytest.mark.slow

TIMEOUT = 600


@pytest.fixture(scope="module")
def septuplet(tmp_path_factory, bikes_frames):
    return write_septuplet(tmp_path_factory.mktemp("vimeo"), bikes_frames)


def command(data, train_dir, *extra):
    return [
        sys.executable, "-m", "model.train", f"--data={data}", f"--train_dir={train_dir}", "--gop=2",
        "--crop=64", "--batch=2", "--log_every=1", "--checkpoint_every_secs=0", *extra,
    ]


def start(args, log_path, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    log = open(log_path, "w")
    return subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def checkpoint_number(train_dir) -> int:
    latest = ckpt.latest_in(train_dir)
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def wait_for(predicate, process, what):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"process ended (rc {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_loadable(train_dir):
    """The checkpoint the index names restores completely into a fresh model and optimizer."""
    latest = ckpt.latest_in(train_dir)
    model = ELFVC(get_config("small")).build_weights()
    tf.train.Checkpoint(model=model).read(latest).expect_partial().assert_existing_objects_matched()
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == int(latest.rsplit("-", 1)[1])


def test_sigkill_mid_run_then_resume_then_sigterm(septuplet, tmp_path):
    train_dir = tmp_path / "run"
    # A checkpoint every step, so kills land inside writes as well as between them.
    args = command(septuplet, train_dir, "--steps=10000", "--checkpoint_every_steps=1", "--keep_checkpoints=2")
    rng = random.Random(0)
    resumed_at = 0
    for cycle in range(3):
        process = start(args, tmp_path / f"log{cycle}.txt")
        target = resumed_at + 3
        wait_for(lambda: checkpoint_number(train_dir) >= target, process, f"checkpoint {target}")
        time.sleep(rng.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait(TIMEOUT)
        assert process.returncode == -signal.SIGKILL
        if cycle:
            log = (tmp_path / f"log{cycle}.txt").read_text()
            assert f"resuming from {train_dir}/ckpt/ckpt-{resumed_at} at step {resumed_at}" in log
        assert_loadable(train_dir)
        resumed_at = checkpoint_number(train_dir)
        assert resumed_at >= target

    # SIGTERM: a checkpoint at the current step and exit status 128 + 15.
    process = start(command(septuplet, train_dir, "--steps=10000"), tmp_path / "term.txt")
    wait_for(lambda: f"step {resumed_at + 2}/" in (tmp_path / "term.txt").read_text(), process, "two more steps")
    process.send_signal(signal.SIGTERM)
    process.wait(TIMEOUT)
    log = (tmp_path / "term.txt").read_text()
    assert process.returncode == 128 + signal.SIGTERM, log[-2000:]
    stopped = int(log.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert stopped >= resumed_at + 2 and checkpoint_number(train_dir) == stopped
    assert_loadable(train_dir)
    assert json.loads((train_dir / ckpt.PROGRESS_FILE).read_text())["step"] == stopped


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_identical_weights(septuplet, tmp_path):
    train_dir = tmp_path / "run"
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(start(
            command(septuplet, train_dir, "--steps=3", "--strategy=auto"),
            tmp_path / f"worker{index}.txt",
            env={"TF_CONFIG": json.dumps(tf_config)},
        ))
    try:
        for process in processes:
            process.wait(TIMEOUT)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    logs = [(tmp_path / f"worker{i}.txt").read_text() for i in range(2)]
    assert [p.returncode for p in processes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "over 2 replica(s)" in logs[0] and "step 3/3" in logs[0]
    chief = tf.train.load_checkpoint(str(train_dir / "ckpt" / "ckpt-3"))
    other = tf.train.load_checkpoint(str(train_dir / "worker-1" / "ckpt" / "ckpt-3"))
    keys = [k for k in chief.get_variable_to_shape_map() if k.startswith(("model/", "modulator/"))]
    assert any("moving_mean" in k for k in keys) and any("kernel" in k for k in keys)
    for key in keys:
        np.testing.assert_array_equal(chief.get_tensor(key), other.get_tensor(key), err_msg=key)
    # and the training did something: the step counter and Adam's iterations moved, and Adam's
    # moments are not zero (the weights themselves start from a draw this test does not keep).
    assert chief.get_tensor("model/step/.ATTRIBUTES/VARIABLE_VALUE") == 3
    assert chief.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 3
    moments = [k for k in chief.get_variable_to_shape_map() if k.startswith("optimizer/_variables/")]
    assert len(moments) > 100 and sum(np.abs(chief.get_tensor(k)).max() > 0 for k in moments) > len(moments) // 2
