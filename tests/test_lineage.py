"""gpu_train.lineage: the line of runs scripts/ship.sh follows back to the shipped model, and what
training.json records of it."""

from __future__ import annotations

import json

import pytest

from gpu_train.lineage import LineageError, campaign_entry, chain_lambda_range, record_chain, run_chain, run_name


def _run(folder, step, here, init="", final=True, lam="0.2,0.0002", **extra):
    folder.mkdir(parents=True)
    progress = {"model_step": step, "steps_here": here, "final": final, "gop_steps": extra.pop("gop_steps", here),
                "image_steps": extra.pop("image_steps", 0), "elapsed_s": 600.0, "config": {"block_motion_upsample": "bilinear"},
                "args": {"init": init, "lambda_range": lam, "precision": "bf16", "device": "cpu", "batch": 4, "gop": 4,
                         "crop": 128, "lr": 1e-4, "clip_norm": 1.0, "seed": 3, "image_mix": extra.pop("image_mix", 0.0),
                         "image_mix_batch": 2, "rollout": 0},
                **extra}
    (folder / "progress.json").write_text(json.dumps(progress))
    return folder


def test_a_line_of_runs_is_followed_back_to_the_shipped_step(tmp_path):
    first = _run(tmp_path / "i7", 110, 10, init="weights.npz", image_steps=900, gop_steps=10, lam="0.2,0.001")
    second = _run(tmp_path / "p25", 150, 40, init=str(first), image_mix=0.5)
    assert run_chain(second, 100) == [first, second]
    third = _run(tmp_path / "p26", 160, 10, init=f"{second}/weights-00.npz,{second}/weights-01.npz")
    assert run_chain(third, 100) == [first, second, third]  # --init as shards in a run folder
    assert run_chain(first, 100) == [first]
    training = {"model_step": 100, "gop_steps": 99, "image_steps": 5, "lambda_range": [0.2, 0.001], "campaigns": [{}]}
    moved = record_chain(training, run_chain(second, 100), "why", date="2026-12-06")
    assert (moved["model_step"], moved["gop_steps"], moved["image_steps"]) == (150, 149, 905)
    assert moved["lambda_range"] == [0.2, 0.0002] == chain_lambda_range([first, second])
    assert [c.get("note") for c in moved["campaigns"]] == [
        None, "why (run 1 of 2: i7); model step 110", "why (run 2 of 2: p25); model step 150"]
    assert moved["campaigns"][2]["image_mix"] == 0.5 and "image_mix" not in moved["campaigns"][1]
    assert training["model_step"] == 100 and len(training["campaigns"]) == 1  # the input is left alone


@pytest.mark.parametrize("case, message", [
    ("unfinished", "did not finish"),
    ("gap", "but its --init"),
    ("no_init", "is not a run to follow back"),
    ("diverged", "did not finish"),
])
def test_a_broken_line_is_refused_with_the_reason(tmp_path, case, message):
    first = _run(tmp_path / "a", 110, 10, **({"diverged_at": 105} if case == "diverged" else {}))
    init = "" if case == "no_init" else str(first)
    second = _run(tmp_path / "b", 150 + (5 if case == "gap" else 0), 40, init=init, final=case != "unfinished")
    with pytest.raises(LineageError, match=message):
        run_chain(second, 100)


def test_a_run_cut_inside_a_line_is_followed(tmp_path):
    """A run cut before its end (the session ended) that the next run continued from its last
    checkpoint is part of the line; only the weights shipped must come from a finished run."""
    cut = _run(tmp_path / "i11", 100, 10, init="weights.npz", final=False, image_steps=5432)
    after = _run(tmp_path / "i12", 117, 17, init=str(cut), image_steps=2802)
    assert run_chain(after, 90) == [cut, after]
    with pytest.raises(LineageError, match="did not finish"):
        run_chain(cut, 90)


def test_a_line_through_merged_weights_is_followed(tmp_path):
    """gpu_train.weights merge: an I-frame run's I-frame codec with a P-path run's P path (both
    from one earlier run); a run from the merge follows back through both sources, each run once.
    The merge refuses what would lose or mix up weights."""
    import numpy as np

    from gpu_train import weights

    base = _run(tmp_path / "p28", 150, 50, init="weights.npz")
    iruns = _run(tmp_path / "i12", 152, 2, init=str(base), image_steps=3000)
    pruns = _run(tmp_path / "p29", 200, 50, init=str(base))
    arrays = {"iframe.k": np.zeros(2, np.float32), "flow.k": np.zeros(3, np.float32)}
    np.savez(iruns / "weights-00.npz", step=np.array(152), **{k: v + 1 for k, v in arrays.items()})
    np.savez(pruns / "weights-00.npz", step=np.array(200), **{k: v + 2 for k, v in arrays.items()})
    config = tmp_path / "config.json"
    config.write_text("{}")
    merged = tmp_path / "merged"
    assert weights.main(["merge", f"--part=iframe={iruns}", f"--rest={pruns}", f"--config={config}", f"--out={merged}"]) == 0
    got = weights.read_arrays(str(merged))
    assert (int(got["step"]), got["iframe.k"].tolist(), got["flow.k"].tolist()) == (200, [1, 1], [2, 2, 2])
    assert weights.recorded_lambda_range(str(merged)) == "0.2,0.0002"
    after = _run(tmp_path / "p30", 230, 30, init=str(merged))
    assert [run_name(r) for r in run_chain(after, 100)] == ["p28", "i12", "p29", "p30"]
    early = _run(tmp_path / "p31", 220, 30, init=str(merged))  # started at 190: not the merge's step
    with pytest.raises(LineageError, match="merged weights .* hold step 200"):
        run_chain(early, 100)
    for argv, message in (
        ([f"--part=iframe={iruns}"], "already exists"),  # into the same folder again
        ([f"--part=residue={iruns}"], "no parameters under 'residue'"),
        ([f"--part=iframe={iruns}", f"--part=iframe={iruns}"], "already taken"),
        (["--part=iframe"], "expected PREFIX=WEIGHTS"),
    ):
        out = merged if message == "already exists" else tmp_path / "again"
        with pytest.raises(weights.WeightsError, match=message):
            weights.merge([a.split("=", 1)[1] for a in argv], str(pruns), str(config), out)
        assert not (tmp_path / "again").exists()


def test_a_folder_without_progress_is_named(tmp_path):
    with pytest.raises(LineageError, match="has no progress.json"):
        run_chain(tmp_path, 100)
    (tmp_path / "progress.json").write_text('{"model_step": 1}')
    with pytest.raises(LineageError, match="no 'steps_here'"):
        run_chain(tmp_path, 100)


def test_campaign_entry_leaves_out_what_the_run_did_not_use(tmp_path):
    run = _run(tmp_path / "r", 10, 10)
    entry = campaign_entry(json.loads((run / "progress.json").read_text()), "n", date="2026-12-06")
    assert entry["device"] == "CPU (PyTorch bf16 autocast)" and entry["lambda_range"] == [0.2, 0.0002]
    assert not {"image_mix", "image_mix_batch", "rollout", "rollout_frac", "freeze", "image_steps"} & set(entry)


def test_campaign_entry_dates_a_run_by_its_last_save(tmp_path):
    """A line of runs shipped days after its first run records each run's own day (progress.json's
    saved_at), not the shipping day; an explicit date still wins, and a run from before saved_at
    existed gets today."""
    import datetime

    progress = json.loads((_run(tmp_path / "r", 10, 10) / "progress.json").read_text())
    assert campaign_entry(progress, "n")["date"] == datetime.date.today().isoformat()
    progress["saved_at"] = "2026-11-30T23:59:58Z"
    assert campaign_entry(progress, "n")["date"] == "2026-11-30"
    assert campaign_entry(progress, "n", date="2026-12-06")["date"] == "2026-12-06"


def test_a_line_through_a_committed_warm_copy_is_followed(tmp_path):
    """A run from a warm copy (gpu_train.weights to_warm) follows back through the runs its
    warm.json records, whose folders the shipping machine need not have; a copy of a line that
    does not start at the shipped step records none, and a run from it is refused."""
    import numpy as np

    from gpu_train import weights
    from gpu_train.lineage import recorded_line

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text(json.dumps({"name": "base"}))
    (shipped / "training.json").write_text(json.dumps({"model_step": 100}))
    first = _run(tmp_path / "i10", 110, 10, init="weights.npz", image_steps=900)
    second = _run(tmp_path / "p28", 150, 40, init=str(first))
    np.savez(second / "weights-00.npz", step=np.array(150, np.int64), kernel=np.ones(3, np.float32))
    warm = tmp_path / "warm"
    assert weights.main(["to_warm", f"--npz={second}", f"--config={shipped / 'config.json'}", f"--out={warm}"]) == 0
    assert [r["name"] for r in json.loads((warm / "warm.json").read_text())["runs"]] == ["i10", "p28"]
    # The run folders go (another machine); a run from the copy still ships as a line of three.
    for run in (first, second):
        (run / "progress.json").unlink()
    third = _run(tmp_path / "p29", 170, 20, init=str(warm))
    chain = run_chain(third, 100)
    assert [run_name(r) for r in chain] == ["i10", "p28", "p29"]
    moved = record_chain({"model_step": 100, "gop_steps": 0, "image_steps": 0, "campaigns": []}, chain, "n", date="2026-12-06")
    assert moved["model_step"] == 170 and moved["image_steps"] == 900
    assert [c["note"] for c in moved["campaigns"]][0] == "n (run 1 of 3: i10); model step 110"
    # A GPU campaign records its --init as the device's path: the copy is found in this checkout.
    from gpu_train import lineage

    checkout = tmp_path / "checkout"
    (checkout / "gpu_train" / "warm").mkdir(parents=True)
    warm.rename(checkout / "gpu_train" / "warm" / "base")
    lineage_repo, lineage.REPO = lineage.REPO, checkout
    try:
        device = _run(tmp_path / "device_run", 160, 10, init="/root/elsewhere/gpu_train/warm/base")
        assert [run_name(r) for r in run_chain(device, 100)] == ["i10", "p28", "device_run"]
        other = tmp_path / "nowhere" / "warm" / "base"  # not a gpu_train/warm path: left as it is
        assert lineage.warm_here(other) == other
    finally:
        lineage.REPO = lineage_repo
    (checkout / "gpu_train" / "warm" / "base").rename(warm)
    # A copy of the copy keeps the line.
    assert recorded_line(str(warm), 100)[-1]["name"] == "p28"
    # Once the shipped model moved on, neither the copy's line nor a run from it is shippable as one.
    assert recorded_line(str(warm), 130) is None
    with pytest.raises(LineageError, match="continues model step 100, not the shipped 130"):
        run_chain(third, 130)
    assert run_chain(third, 150) == [third]  # the copy's step shipped: a line of one
    # A copy at another step than the run says it started from is refused.
    gap = _run(tmp_path / "p30", 175, 20, init=str(warm))
    with pytest.raises(LineageError, match="holds step 150"):
        run_chain(gap, 100)
    # The copy replaced in place by a later point of the same line (i10 -> p28 -> p29, a copy of
    # p29): a run that started from the old copy (step 150) still follows back, through the first
    # runs of the new copy's record; the new copy's own line ends where it does.
    third_progress = third / "progress.json"
    np.savez(third / "weights-00.npz", step=np.array(170, np.int64), kernel=np.ones(3, np.float32))
    assert weights.main(["to_warm", f"--npz={third}", f"--config={shipped / 'config.json'}", f"--out={warm}"]) == 0
    assert [r["name"] for r in json.loads((warm / "warm.json").read_text())["runs"]] == ["i10", "p28", "p29"]
    third_progress.unlink()
    side = _run(tmp_path / "p29b", 180, 30, init=str(warm))  # started at 150: from the old copy
    assert [run_name(r) for r in run_chain(side, 100)] == ["i10", "p28", "p29b"]
    later = _run(tmp_path / "p31", 200, 30, init=str(warm))  # from the new copy (step 170)
    assert [run_name(r) for r in run_chain(later, 100)] == ["i10", "p28", "p29", "p31"]
    with pytest.raises(LineageError, match="holds step 170"):
        run_chain(_run(tmp_path / "p32", 205, 40, init=str(warm)), 100)  # started at 165: on no copy
