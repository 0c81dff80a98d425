"""The one call to make whenever a GPU is lent: Table 2 timing, a throughput probe, then training.

A lent GPU machine is held for minutes (15 in all per session, start-up included, at most ~9.5
per call), so everything it should do runs in one call, unattended, within --budget_s:

  1. checks the GPU (else a one-line error and exit 1 at once, spending no time);
  2. starts the Table 2 timing (gpu_train.table2) in a subprocess, and meanwhile decodes the
     travelled data (gpu_train.pack's folder: photos and videos) into uint8 on the GPU;
  3. runs gpu_train.diagnose (does the I-frame transform pair learn, against a plain conv
     autoencoder of the same bottleneck: --diagnose_s each, results in campaign.json);
  4. probes throughput for at most --probe_s: first the `small` config at the reference batch
     16 x GOP 16 x 128^2 (CUDA graph and eager), then the trained model's own batches with
     CUDA-graph steps in TF32 and in bf16 autocast; picks the faster (bf16 only if at least
     --bf16_gain faster; eager steps are the fallback when capture fails);
  5. trains the model (--config, from its newest weights: --init, by default the committed
     warm-start copy gpu_train/warm/CONFIG/ when there is one, else the shipped model's
     runtime/checkpoints/CONFIG/weights.npz; a named --config takes the config.json beside those
     weights when there is one) for the rest of the budget,
     writing FP32 weight shards and progress.json into --out every --save_every_secs;
  6. leaves in --out: weights-NN.npz (FP32, at most 15 MiB each), progress.json (the training
     log: steps, throughput, MFU, loss, bpp and PSNR per level), campaign.json (GPU, probe,
     data, diagnosis, timings), table2.json and table2.log: at most 8 files with the
     caller's tee'd log, as a device call returns.

    python3 -m gpu_train.campaign --out=$OUT            # on the device, from the repository root

If the call is cut, the last complete checkpoint is already in --out. The command to run from
the development machine, and what to do with what comes back, is in docs/GPU.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Optional

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)

REPO = pathlib.Path(__file__).resolve().parents[1]

#: Tried in this order; each entry (name, graphs, precision).
#: The first H200 campaign (docs/TRAINING.md) measured eager steps 2.7x slower than CUDA-graph
#: steps for `base`, so eager is no longer probed: it is the fallback when capture fails.
PROBE_SETTINGS = (("graph-tf32", True, "tf32"), ("graph-bf16", True, "bf16"))
CHOICES = ("eager-tf32", "eager-bf16") + tuple(n for n, _, _ in PROBE_SETTINGS)


class CampaignError(RuntimeError):
    pass


def default_init(config_name: str) -> str:
    """A config's newest committed weights: gpu_train/warm/CONFIG/ (shards, when training is
    ahead of the shipped model), else the shipped runtime/checkpoints/CONFIG/weights.npz (the
    compact form is keyed by the mirror's state_dict names), else '' (from scratch)."""
    from gpu_train.weights import shipped_step, warm_step

    folder = REPO / "gpu_train" / "warm" / config_name
    shipped = REPO / "runtime" / "checkpoints" / config_name / "weights.npz"
    if folder.is_dir() and any(folder.glob("*.npz")) and warm_step(folder) > shipped_step(shipped.parent):
        return str(folder)
    return str(shipped) if shipped.is_file() else ""


def weights_config(init: str, scratch: pathlib.Path) -> Optional[pathlib.Path]:
    """The config.json the weights at `init` were trained with, when it lies beside them: a named
    --config continues the shipped model with the shipped config.json, whose weight-free fields
    (block_motion_upsample, the motion search) may differ from model/config.py's recipe of the
    same name, and the flow decoder is fitted to them. A training run's folder has the config in
    its progress.json instead: written into `scratch` as config.json (`gpu_train.train.config_beside`).
    The path is also what scripts/after_campaign.sh builds a run's model folder with."""
    from gpu_train.train import config_beside

    config, source = config_beside(init)
    if config is None:
        return None
    return source if source.name != "progress.json" else write_config(scratch, config)


#: The rate weights a campaign trains with when its initial weights record none (from scratch).
DEFAULT_LAMBDA_RANGE = "0.2,0.001"


def weights_lambda_range(init: str) -> str:
    """The --lambda_range the weights at `init` were trained with, so a campaign goes on at their
    rate weights (gpu_train.weights.recorded_lambda_range: a shipped folder's card, a warm copy's
    warm.json, a run's progress.json), else DEFAULT_LAMBDA_RANGE (with a warning when there were
    weights: the default may not be theirs)."""
    from gpu_train.weights import recorded_lambda_range

    if not init:
        return DEFAULT_LAMBDA_RANGE
    recorded = recorded_lambda_range(init)
    if recorded:
        return recorded
    print(f"warning: no lambda_range recorded beside {init} (no model_card.json, warm.json or progress.json): training at "
          f"{DEFAULT_LAMBDA_RANGE}; pass -- --lambda_range=A,B if those weights trained at another", file=sys.stderr, flush=True)
    return DEFAULT_LAMBDA_RANGE


def write_config(folder: pathlib.Path, config: dict) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder / "config.json"


def resolve_config(config: str, init: str, scratch: pathlib.Path):
    """(config.json path, initial weights) for --config and --init. A config.json is used as
    given; a config name takes the config of the weights it continues (the config.json beside
    them, as the shipped model's, or a training run's progress.json), else model/config.py's
    recipe, written into `scratch` (not --out: a call returns at most 8 files)."""
    from model.config import get_config  # TF-free

    if str(config).endswith(".json"):
        path = pathlib.Path(config)
        return path, default_init(json.loads(path.read_text())["name"]) if init == "auto" else init
    init = default_init(config) if init == "auto" else init
    path = weights_config(init, scratch) if init else None
    if path is None:  # from scratch, or weights without their config: the named recipe
        path = write_config(scratch, get_config(config).to_dict())
    return path, init


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device) -> None:
    import torch

    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def gpu_facts(device) -> dict:
    import torch

    if device.type != "cuda":
        return {"name": "cpu (a rehearsal: --device=cpu)", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
    }


def start_table2(out: pathlib.Path, budget_s: float, device: str):
    """Starts gpu_train.table2 in its own process (its crash cannot touch the training)."""
    if not (REPO / "gpu_train" / "table2.py").exists():
        return None
    cmd = [
        sys.executable, "-m", "gpu_train.table2", "--configs=paper,base,small",
        f"--config_json={REPO / 'runtime/checkpoints/small/config.json'}", "--sizes=1080p,720p,vga,cif",
        f"--budget_s={budget_s:.0f}", f"--out={out / 'table2.json'}", f"--device={device}",
    ]
    log = open(out / "table2.log", "w")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log, cmd


def finish_table2(handle, timeout_s: float) -> dict:
    if handle is None:
        return {"status": "gpu_train/table2.py not present"}
    proc, log, cmd = handle
    try:
        rc = proc.wait(timeout=max(1.0, timeout_s))
        status = "ok" if rc == 0 else f"exit {rc}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        status = "killed at its time limit"
    log.close()
    return {"status": status, "command": " ".join(cmd)}


def time_steps(stepper, sampler, batch: int, graphs: bool, steps: int, key) -> float:
    """Steps per second of `stepper` over `steps` timed steps after warm-up (graphs: after capture)."""
    device = stepper.device
    frames, levels = sampler.batch(batch)
    if graphs:
        if stepper.graphed(key, frames, levels) is None:
            raise CampaignError(f"CUDA graph capture failed: {stepper.graph_failed}")
    else:
        stepper.eager(frames, levels)
    sync(device)
    batches = [sampler.batch(batch) for _ in range(steps)]
    sync(device)
    t0 = time.perf_counter()
    for frames, levels in batches:
        out = stepper.graphed(key, frames, levels) if graphs else stepper.eager(frames, levels)
        stepper.modulator.update(out[1], levels)
    sync(device)
    loss = float(out[0])
    if loss != loss or loss in (float("inf"), float("-inf")):
        raise CampaignError(f"non-finite loss {loss}")
    return steps / (time.perf_counter() - t0)


def probe(args, model, sampler, train_args, deadline: float) -> dict:
    """Times the `small` config at the reference setting (batch 16 x GOP 16 x 128^2,
    CUDA graphs and eager; throwaway weights), then each PROBE_SETTINGS on the run's GOP
    batches (real steps: the model trains); stops at `deadline`. Returns the results and choice."""
    import torch

    from gpu_train import train as T
    from gpu_train.net import ELFVC, LossModulator, lambdas

    device = torch.device(train_args.device)
    results, frames_per_step = {}, train_args.batch * train_args.gop
    num_levels = model.c["levels"]
    lam = lambdas(*T.parse_pair(train_args.lambda_range, "--lambda_range"), num_levels).to(device)
    # The reference point: the `small` config at batch 16 x GOP 16 x 128^2.
    if args.reference:
        ref_deadline = time.time() + 0.4 * max(0.0, deadline - time.time())
        rb, rg, rc = args.reference
        reference = {}
        import torch

        # CUDA graphs in TF32, then with bf16 autocast (the first campaigns measured TF32 only:
        # 6.65 steps/s against the GPU issue's 9), then eager TF32 if time is left.
        for name, graphs, autocast in (("small-graph", True, None), ("small-graph-bf16", True, torch.bfloat16),
                                       ("small-eager", False, None)):  # fmt: skip
            if time.time() > ref_deadline:
                reference[name] = {"skipped": "probe time spent"}
                break
            t0 = time.time()
            try:
                small = ELFVC(json.loads((REPO / "runtime/checkpoints/small/config.json").read_text())).to(device).train()
                small.step_int = 10**6  # normalization frozen, as in the shipped model
                ref_args = argparse.Namespace(**{**vars(train_args), "batch": rb, "gop": rg, "crop": rc})
                ref_sampler = T.GpuSampler(sampler.clips, rg, rc, 2, small.c["levels"], device, 5)
                T.set_precision("tf32")
                stepper = T.Stepper(small, lam, LossModulator(rg, small.c["levels"], device), ref_args, device, autocast,
                                    capturable=graphs and device.type == "cuda")  # fmt: skip
                sps = time_steps(stepper, ref_sampler, rb, graphs, args.probe_steps, ("reference", name))
                reference[name] = {"steps_per_s": round(sps, 3), "seconds": round(time.time() - t0, 1)}
            except Exception as e:  # noqa: BLE001
                reference[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            finally:
                stepper = small = ref_sampler = None
                release(device)
            print(f"reference {name} (small, {rb} x {rg} x {rc}^2, tf32{' + bf16 autocast' if autocast else ''}): "
                  f"{reference[name]}", flush=True)
        results["reference_small"] = reference
    for i, (name, graphs, precision) in enumerate(PROBE_SETTINGS):
        if i and time.time() > deadline:  # the first setting always runs: training needs a choice
            results[name] = {"skipped": "probe time spent"}
            continue
        t0 = time.time()
        try:
            dtype = T.set_precision(precision)
            stepper = T.Stepper(model, lam, LossModulator(train_args.gop, num_levels, device), train_args, device, dtype, capturable=graphs and device.type == "cuda")
            sps = time_steps(stepper, sampler, train_args.batch, graphs, args.probe_steps, ("probe", name))
            results[name] = {"steps_per_s": round(sps, 3), "frames_per_s": round(sps * frames_per_step, 1), "seconds": round(time.time() - t0, 1)}
        except Exception as e:  # noqa: BLE001 - a failed setting is a result, not the end of the call
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "seconds": round(time.time() - t0, 1)}
        finally:
            stepper = None
            release(device)
        print(f"probe {name}: {results[name]}", flush=True)
    speed = {n: r["steps_per_s"] for n, r in results.items() if isinstance(r, dict) and "steps_per_s" in r}
    if not speed:
        return {"results": results, "choice": "eager-tf32", "note": "no CUDA-graph setting ran: training eagerly"}
    tf32 = {n: s for n, s in speed.items() if n.endswith("tf32")}
    best_tf32 = max(tf32, key=tf32.get) if tf32 else None
    choice = best_tf32 or max(speed, key=speed.get)
    if "graph-bf16" in speed and (best_tf32 is None or speed["graph-bf16"] >= args.bf16_gain * speed[best_tf32]):
        choice = "graph-bf16"
    return {"results": results, "choice": choice}


def build_parser() -> argparse.ArgumentParser:
    p = clikit.ArgumentParser(prog="python3 -m gpu_train.campaign", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", ""), help="folder whose files come back (default $OUT)")
    p.add_argument("--budget_s", type=float, default=500.0, help="wall-clock seconds for the whole call")
    p.add_argument("--pack", default=".gpu/pack", help="gpu_train.pack's folder (photos/, video/, MANIFEST.json)")
    p.add_argument("--config", default="base", help="a config name (model/config.py) or a config.json")
    p.add_argument("--init", default="auto", help="initial weights; 'auto': gpu_train/warm/CONFIG, else runtime/checkpoints/CONFIG/weights.npz; '' from scratch")
    p.add_argument("--table2_s", type=float, default=75.0, help="seconds for the Table 2 timing (0: skip)")
    p.add_argument("--probe_s", type=float, default=45.0)
    p.add_argument("--diagnose_s", type=float, default=20.0, help="seconds per model of gpu_train.diagnose (0: skip)")
    p.add_argument("--choice", choices=CHOICES, help="skip the probe and train with this setting")
    p.add_argument("--probe_steps", type=int, default=4)
    p.add_argument("--bf16_gain", type=float, default=1.15, help="bf16 is chosen only if this much faster than TF32")
    p.add_argument("--reserve_s", type=float, default=20.0, help="seconds kept for the final save")
    p.add_argument("--image_frac", type=float, default=-1.0, help="I-frame phase share (-1: 0.3 from scratch, 0.1 warm)")
    p.add_argument("--reference", type=lambda v: tuple(int(x) for x in v.split(",")) if v else (), default=(16, 16, 128),
                   help="batch,gop,crop of the `small` reference timing (the GPU issue's 16,16,128; '' skips it)")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # 'cpu': a rehearsal for the tests
    p.add_argument("train_flags", nargs="*", help="extra gpu_train.train flags after --, e.g. -- --lr=1e-4")
    return p


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run("python3 -m gpu_train.campaign", _main, sys.argv[1:] if argv is None else argv, tracebacks=True)


def _main(argv) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    start = time.time()
    try:
        if any(f.split("=")[0] == "--rollout" for f in args.train_flags):
            raise CampaignError("--rollout trains eagerly (its GOPs vary in depth) and the campaign probes and trains with "
                                "CUDA graphs: run python -m gpu_train.train --rollout=N directly")
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            raise CampaignError("no CUDA GPU here; this command is for a lent GPU machine (it spent no time)")
        if not args.out:
            raise CampaignError("--out not given and $OUT not set")
        from gpu_train.train import TrainError

        try:
            return run(args, start)
        except TrainError as e:
            raise CampaignError(str(e)) from None
    except CampaignError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1


def run(args, start: float) -> int:
    import torch

    from gpu_train import train as T

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pack = pathlib.Path(args.pack)
    if not (pack / "video").is_dir():
        raise CampaignError(f"--pack: {pack}/video: no such folder (make it with python -m gpu_train.pack)")
    deadline = start + args.budget_s
    device = torch.device(args.device)
    facts = {"gpu": gpu_facts(device), "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start))}
    print(f"GPU: {facts['gpu']}", flush=True)
    config_path, init = resolve_config(args.config, args.init, pathlib.Path("/tmp/elfvc_campaign"))
    image_frac = args.image_frac if args.image_frac >= 0 else (0.1 if init else 0.3)
    train_argv = [
        f"--config={config_path}", f"--data={pack / 'video'}", f"--out_dir={out}", "--minutes=1",
        "--batch=16", "--gop=8", "--crop=256", "--image_batch=32", "--image_crop=256", f"--image_frac={image_frac}",
        "--lr=2e-4", f"--lambda_range={weights_lambda_range(init)}", "--clip_norm=1", "--workers=12", "--log_every=100",
        "--save_every_secs=90", f"--device={args.device}",
    ]
    if (pack / "photos").is_dir() and any((pack / "photos").iterdir()):
        train_argv.append(f"--photos={pack / 'photos'}")
    if init:
        train_argv.append(f"--init={init}")
    train_args = T.build_parser().parse_args(train_argv + list(args.train_flags))
    try:
        T.check_args(train_args)
    except T.TrainError as e:
        raise CampaignError(str(e)) from None
    facts["init"] = init or "from scratch"
    facts["config"] = json.loads(config_path.read_text())
    facts["train_argv"] = train_argv + list(args.train_flags)
    # 2. Table 2 in the background while the data decode.
    table2 = start_table2(out, args.table2_s, args.device) if args.table2_s > 0 else None
    t0 = time.time()
    model = T.build_model(train_args, device)
    data = T.load_data(train_args, model.c["levels"], device)
    facts["data_load_s"] = round(time.time() - t0, 1)
    manifest = pack / "MANIFEST.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        facts["data"] = {"photos": len(m["photos"]), "videos": [v["source"] for v in m["videos"]], "bytes": m["total_bytes"], "seed": m["seed"]}
    facts["table2"] = finish_table2(table2, args.table2_s + 20 - (time.time() - t0)) if table2 else {"status": "skipped"}
    print(f"table2: {facts['table2']['status']}", flush=True)
    # 3. Diagnose the I-frame transforms (gpu_train/diagnose.py): a few seconds of pure autoencoders.
    if args.diagnose_s > 0 and data[1] is not None and data[1].photos:
        from gpu_train import diagnose

        t0 = time.time()
        try:
            photos = [p.cpu().numpy() for p in data[1].photos]
            sides = sorted(min(p.shape[:2]) for p in photos)
            crop = max(64, min(256, sides[len(sides) // 2] // 64 * 64))  # one most photos can give
            facts["diagnose"] = diagnose.run(photos, json.loads(config_path.read_text()), args.diagnose_s, 16, crop, 2e-4, device)
        except Exception as e:  # noqa: BLE001 - a diagnostic never stops the training
            facts["diagnose"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        facts["diagnose_s"] = round(time.time() - t0, 1)
        release(device)
    # 4. Probe.
    from gpu_train import net

    net.CHANNELS_LAST = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    t0 = time.time()
    if args.choice:
        facts["probe"] = {"results": {}, "choice": args.choice, "note": "--choice given: no probe"}
    else:
        facts["probe"] = probe(args, model, data[0], train_args, min(deadline - min(60.0, 0.3 * args.budget_s), time.time() + args.probe_s))
    facts["probe_s"] = round(time.time() - t0, 1)
    choice = facts["probe"]["choice"]
    print(f"probe chose {choice} in {facts['probe_s']}s", flush=True)
    train_args.graphs = choice.startswith("graph") and device.type == "cuda"
    train_args.precision = choice.split("-")[1]
    # 5. Train for the rest.
    train_args.minutes = (deadline - time.time() - args.reserve_s) / 60.0
    if train_args.minutes <= 0.2:
        facts["train_error"] = f"no time left to train ({train_args.minutes * 60:.0f}s)"
        (out / "campaign.json").write_text(json.dumps(facts, indent=1))
        raise CampaignError(facts["train_error"])
    facts["train_minutes"] = round(train_args.minutes, 2)
    (out / "campaign.json").write_text(json.dumps(facts, indent=1))
    try:
        rc = T.train(train_args, stop_flag={"flag": False}, model=model, data=data)
    except Exception as e:  # noqa: BLE001 - the periodic checkpoint in --out stands; say what stopped it
        rc = 1
        facts["train_error"] = f"{type(e).__name__}: {e}"
        print(f"training stopped: {facts['train_error']}", flush=True)
    facts["train_rc"] = rc
    facts["elapsed_s"] = round(time.time() - start, 1)
    (out / "campaign.json").write_text(json.dumps(facts, indent=1))
    print(f"campaign done in {facts['elapsed_s']}s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
