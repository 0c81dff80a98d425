"""Which training runs lead from the shipped model to new weights, and what training.json records
of each: the bookkeeping half of scripts/ship.sh.

A run is a gpu_train.train --out_dir: its progress.json has the model step it ended at, the steps
it trained (`steps_here`) and its flags (`args`, `--init` among them). New weights may come from a
line of runs, each started from the one before (an I-frame run, then a GOP run from its weights):
`run_chain` follows the `--init` flags back until a run starts at the shipped step, and refuses a
line with a gap, a run that did not finish, or one that diverged.

A line may pass through a committed warm-start copy (gpu_train/warm/CONFIG, `gpu_train.weights
to_warm`): the runs' folders stay on the machine that trained them, so the copy's warm.json keeps
their progress records (`runs`, from `recorded_line`), and a run from the copy follows back
through them as through the folders themselves. The copy is replaced in place as training goes
on; a run that started from an earlier copy follows back through the first runs of the present
copy's record, where they end at the step it started from (the later copy continued that line).

A line may also pass through merged weights (`gpu_train.weights merge`: some parameter groups from
one run, the rest from another, e.g. an I-frame run's I-frame codec with a P-path run's P path).
The merged folder's merge.json names its sources (`parts`, `rest`); each must lead back to the shipped step, and
the line is their runs (each once, the parts' first) followed by the runs after the merge.

A run cut before its end (a session ended) may sit inside a line, since the run after it started
from its last checkpoint (progress.json is written with every shard set); the last run of a line,
the weights shipped, must have finished.
"""

from __future__ import annotations

import datetime
import json
import pathlib
from dataclasses import dataclass
from typing import List, Optional, Union

from gpu_train.weights import MERGE_RECORD, weights_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
PRECISION_NAMES = {"bf16": "PyTorch bf16 autocast", "tf32": "PyTorch TF32", "fp32": "PyTorch FP32"}


class LineageError(ValueError):
    """Runs that cannot be shipped as a line from the shipped model; the message says why."""


@dataclass(frozen=True)
class RecordedRun:
    """A run of the line known only by its progress record, kept in a warm copy's warm.json."""
    name: str
    progress: dict


def started_at(progress: dict) -> int:
    """The model step a run started at, from its progress record (model_step - steps_here)."""
    return int(progress["model_step"]) - int(progress["steps_here"])


def run_name(run) -> str:
    return run.name if isinstance(run, RecordedRun) else pathlib.Path(run).name


def read_progress(run: Union[pathlib.Path, RecordedRun]) -> dict:
    if isinstance(run, RecordedRun):
        return run.progress
    path = pathlib.Path(run) / "progress.json"
    try:
        progress = json.loads(path.read_text())
    except OSError:
        raise LineageError(f"{run} has no progress.json (a gpu_train.train --out_dir is needed)") from None
    except ValueError:
        raise LineageError(f"{path} is not JSON") from None
    for key in ("model_step", "steps_here", "args"):
        if key not in progress:
            raise LineageError(f"{path} has no {key!r}: not a gpu_train.train run")
    return progress


def run_chain(run, shipped_step: int, max_runs: int = 20, require_final: bool = True) -> list:
    """The runs from the first, which started at `shipped_step`, to `run`, in training order.

    `run` must have finished (`final`; unless not `require_final`: a merge's source may have been
    cut, the merge took its last checkpoint), no run of the line may have diverged, and each but the
    first must have started (`model_step - steps_here`) at the step the run its --init names
    ended at (through a warm copy's or a merge's record where --init names one).
    """
    chain = [pathlib.Path(run)]
    while True:
        current = chain[0]
        progress = read_progress(current)
        if "diverged_at" in progress or (require_final and len(chain) == 1 and not progress.get("final")):
            raise LineageError(f"{current} did not finish (cut, or stopped diverging): ship its last shards by hand")
        start = started_at(progress)
        if start == shipped_step:
            return chain
        init = (progress["args"] or {}).get("init") or ""
        before = weights_folder(str(warm_here(pathlib.Path(init.split(",")[0])))) if init else None
        if before is not None and (before / MERGE_RECORD).is_file():
            return merged_line(before, start, shipped_step, max_runs) + chain
        recorded = warm_runs(before) if before is not None and not (before / "progress.json").is_file() else None
        if recorded:
            # The copy may have been replaced since the run started from it by a later copy of the
            # same line, whose record then holds the older copy's runs as its first ones.
            ends = [int(read_progress(r)["model_step"]) for r in recorded]
            if start in ends[:-1]:
                recorded = recorded[: ends.index(start) + 1]
            if int(read_progress(recorded[-1])["model_step"]) != start:
                raise LineageError(f"{current} started at model step {start}, but the warm copy {before} it started "
                                   f"from holds step {read_progress(recorded[-1])['model_step']}: ship it by hand")
            if started_at(recorded[0].progress) != shipped_step:
                raise LineageError(f"the warm copy {before} continues model step {started_at(recorded[0].progress)}, not the shipped "
                                   f"{shipped_step}: ship it by hand")
            return recorded + chain
        if not init or not (before / "progress.json").is_file():
            raise LineageError(
                f"{current} started at model step {start}, not at the shipped {shipped_step}, and its --init "
                f"({init or 'none'}) is not a run to follow back: ship it by hand")
        if int(read_progress(before)["model_step"]) != start:
            raise LineageError(f"{current} started at model step {start}, but its --init {before} ended at "
                               f"{read_progress(before)['model_step']}: ship it by hand")
        if before in chain or len(chain) >= max_runs:
            raise LineageError(f"{run}: the --init line loops or is longer than {max_runs} runs")
        chain.insert(0, before)


def merged_line(folder: pathlib.Path, start: int, shipped_step: int, max_runs: int) -> list:
    """The runs behind merged weights (`folder`'s merge.json: `step`, `parts` {prefix: weights} and
    `rest`, the weight folders the groups came from), each run once, the parts' sources first; the
    merge must hold step `start`."""
    try:
        record = json.loads((folder / MERGE_RECORD).read_text())
        step = int(record["step"])
        sources = [str(s) for s in dict(record["parts"]).values()] + [str(record["rest"])]
    except (OSError, ValueError, TypeError, KeyError):
        raise LineageError(f"{folder / MERGE_RECORD} is not a merge record (step, parts, rest)") from None
    if step != start:
        raise LineageError(f"a run started at model step {start}, but the merged weights {folder} it started from "
                           f"hold step {step}: ship it by hand")
    line, names = [], set()
    for source in sources:
        before = weights_folder(str(warm_here(pathlib.Path(source))))
        if (before / "progress.json").is_file():
            runs = run_chain(before, shipped_step, max_runs, require_final=False)
        else:
            runs = warm_runs(before)
            if not runs or started_at(runs[0].progress) != shipped_step:
                raise LineageError(f"the merged weights' source {source} is neither a run nor a warm copy with a line "
                                   f"from the shipped step {shipped_step}: ship it by hand")
        for r in runs:
            if run_name(r) not in names:
                names.add(run_name(r))
                line.append(r)
    return line


def warm_here(path: pathlib.Path) -> pathlib.Path:
    """`path`, or where a warm copy named by another machine's path lies in this checkout: a GPU
    campaign records its --init as the device's absolute path (.../gpu_train/warm/base)."""
    parts = path.parts
    if not path.exists():
        for i in range(len(parts) - 2):
            if parts[i:i + 2] == ("gpu_train", "warm"):
                return REPO.joinpath(*parts[i:])
    return path


def warm_runs(folder) -> Optional[List[RecordedRun]]:
    """The line a warm copy's warm.json records (oldest first), None when it records none."""
    try:
        runs = json.loads((pathlib.Path(folder) / "warm.json").read_text()).get("runs")
        return [RecordedRun(str(r["name"]), dict(r["progress"])) for r in runs] or None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def recorded_line(init: str, shipped_step: int) -> Optional[List[dict]]:
    """What a warm copy of the weights at `init` keeps of their line from the shipped step (warm.json's
    `runs`: name and progress record of each run, oldest first), or None where there is no such line
    (weights that are not a finished run's, or a line that does not start at the shipped step)."""
    folder = weights_folder(init)
    try:
        chain = warm_runs(folder) if not (folder / "progress.json").is_file() else run_chain(folder, shipped_step)
        if not chain:
            return None
        if started_at(read_progress(chain[0])) != shipped_step:  # a copy's line from an older shipped model
            return None
    except (LineageError, KeyError, TypeError, ValueError):
        return None
    # Everything training.json's entries read; the per-window log (tens of kB a run) stays behind.
    return [{"name": run_name(r), "progress": {k: v for k, v in read_progress(r).items() if k != "log"}} for r in chain]


def campaign_entry(progress: dict, note: str, date: Optional[str] = None) -> dict:
    """training.json's `campaigns` entry for one run (None fields left out). Its date: `date` when
    given, else the day the run last saved (progress.json's `saved_at`, UTC), else today (a run from
    before the trainer recorded it)."""
    args = progress["args"]
    precision = PRECISION_NAMES.get(args.get("precision"), args.get("precision"))
    device = args.get("device", "cuda")
    entry = {
        "date": date or (progress.get("saved_at") or "")[:10] or datetime.date.today().isoformat(),
        "device": f"CPU ({precision})" if device == "cpu" else f"{device} ({precision})",
        "freeze": args.get("freeze") or None, "batch": args.get("batch"), "gop": args.get("gop"), "crop": args.get("crop"),
        "lr": args.get("lr"), "clip_norm": args.get("clip_norm"), "rollbacks": len(progress.get("rollbacks", [])),
        "lambda_range": _lambda_pair(args),
        "block_motion_upsample": (progress.get("config") or {}).get("block_motion_upsample"),
        "gop_steps": progress.get("gop_steps"), "image_steps": progress.get("image_steps") or None,
        "image_frac": args.get("image_frac") or None,
        "image_batch": args.get("image_batch") if args.get("image_frac") else None,
        "image_crop": args.get("image_crop") if (args.get("image_frac") or args.get("image_mix")) else None,
        "image_mix": args.get("image_mix") or None, "image_mix_batch": args.get("image_mix_batch") if args.get("image_mix") else None,
        "minutes": round(progress.get("elapsed_s", 0.0) / 60, 1), "seed": args.get("seed"),
        "rollout": args.get("rollout") or None, "rollout_frac": args.get("rollout_frac") if args.get("rollout") else None,
        "note": f"{note}; model step {progress['model_step']}",
    }
    return {k: v for k, v in entry.items() if v is not None}


def record_chain(training: dict, chain, note: str, date: Optional[str] = None) -> dict:
    """`training` (a shipped training.json) moved on by the runs of `chain` (run_chain's): a
    campaigns entry each, model_step the last run's, gop_steps by the steps kept (a window rolled
    back is trained again), image_steps added up, lambda_range the last run's."""
    out = json.loads(json.dumps(training))
    last = None
    for i, run in enumerate(chain):
        progress = read_progress(run)
        label = note if len(chain) == 1 else f"{note} (run {i + 1} of {len(chain)}: {run_name(run)})"
        out["campaigns"].append(campaign_entry(progress, label, date))
        out["image_steps"] = int(out.get("image_steps", 0)) + int(progress.get("image_steps", 0))
        last = progress
    out["gop_steps"] = int(out.get("gop_steps", 0)) + int(last["model_step"]) - int(training["model_step"])
    out["model_step"] = int(last["model_step"])
    lambda_range = chain_lambda_range(chain)
    if lambda_range is not None:
        out["lambda_range"] = lambda_range
    return out


def chain_lambda_range(chain) -> Optional[List[float]]:
    """The --lambda_range the line's last run trained with, as two floats (None if unrecorded)."""
    return _lambda_pair(read_progress(chain[-1])["args"])


def _lambda_pair(args: dict) -> Optional[List[float]]:
    """A run's --lambda_range flag as two floats (None if it recorded none)."""
    text = args.get("lambda_range")
    return [float(v) for v in text.split(",")] if text else None
