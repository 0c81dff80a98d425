"""Moves ELF-VC weights between Keras checkpoints and the PyTorch mirror (gpu_train/net.py).

The interchange format is one .npz whose keys are the Keras attribute paths of the model's
variables (`iframe.analysis.block4.convs.0.kernel`, `step`, ...), values in Keras' layout: the
names and shapes of gpu_train.net.ELFVC's state_dict, so neither side reshapes anything.

    python -m gpu_train.weights to_npz --model=runtime/checkpoints/small --out=w.npz
    python -m gpu_train.weights from_npz --npz=w.npz --config=config.json --out=DIR [--metadata=m.json]

`to_npz` reads a shipped-model folder or a training checkpoint (a train dir, or a checkpoint
prefix); `from_npz` writes a shipped-model folder (model/checkpoints.export_model), refusing an
existing one. Both need TensorFlow; the torch side (`load_npz` / `save_npz_shards`) needs only torch.
`to_warm` writes an FP16 warm-start folder with the config and the rate weights (`warm.json`:
model step, source, lambda_range) the weights were trained at, so a campaign continues at them,
and the progress records of the runs from the shipped model to them (`runs`), so that a run from
the copy ships as a line (gpu_train.lineage). `merge` puts parameter groups of several weights
together (`--part iframe=RUN_A --rest=RUN_B`: an I-frame run's I-frame codec with a P-path run's P
path), FP32, with merge.json naming the sources, which a run from it ships through.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Optional

import numpy as np

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)



class WeightsError(ValueError):
    """A weights file or checkpoint cannot be converted; the message says why."""


# -- TensorFlow side --------------------------------------------------------------------------
def _checkpoint_prefix(path) -> str:
    from model import checkpoints as ckpt

    try:
        prefix, _ = ckpt.resolve_checkpoint(path)
    except ckpt.CheckpointError as e:
        raise WeightsError(str(e)) from None
    return prefix


def _require_tensorflow(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise WeightsError(f"{what} builds the Keras model: run it with the TensorFlow environment's Python "
                           f"(.venv/bin/python), not {sys.executable}")


def keras_arrays(path) -> dict:
    """{attribute path: array} of every model variable in a shipped folder (a compact one's FP16
    kernels widened to FP32; a shipped model's name too) or a train checkpoint."""
    folder = pathlib.Path(path)
    if not folder.exists():
        from model.bundle import resolve_model  # TF-free
        from model.errors import CodecError

        try:
            folder = resolve_model(str(path))
        except CodecError:
            pass  # a checkpoint prefix (TRAIN_DIR/ckpt/ckpt-N), or nothing: resolve_checkpoint says
    if (folder / "weights.npz").is_file() and not (folder / "model.index").exists():  # runtime.bundle's compact form
        return {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in read_arrays(folder / "weights.npz").items()}
    _require_tensorflow("to_npz of a TF checkpoint")
    from model import checkpoints as ckpt

    try:
        return ckpt.checkpoint_arrays(_checkpoint_prefix(path))
    except ckpt.CheckpointError as e:
        raise WeightsError(f"{path}: {e}") from None


def assign_keras(model, arrays: dict) -> None:
    """Assigns every array to the Keras variable at its attribute path; all must match exactly."""
    from model import checkpoints as ckpt

    try:
        ckpt.assign_arrays(model, arrays)
    except ckpt.CheckpointError as e:
        raise WeightsError(str(e)) from None


def read_arrays(spec) -> dict:
    """{name: array} from one .npz, a comma-separated list of .npz shards, or a folder of shards
    (every *.npz in it, as gpu_train.train writes them: weights-00.npz, weights-01.npz, ...)."""
    spec = str(spec)
    path = pathlib.Path(spec)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise WeightsError(f"{spec}: no .npz files in the folder")
    else:
        files = [pathlib.Path(p) for p in spec.split(",") if p]
    arrays: dict = {}
    for f in files:
        if not f.is_file():
            raise WeightsError(f"{f}: no such file")
        with np.load(f) as data:
            for k in data.files:
                if k in arrays:
                    raise WeightsError(f"{f}: weight {k!r} is also in another shard")
                arrays[k] = np.array(data[k])
    return arrays


def iframe_digest(arrays: dict) -> str:
    """A short hash of the I-frame codec's weights (the iframe.* arrays, widened to FP32, so an FP16
    copy and an FP32 run that froze it agree): equal digests, identical all-intra coding. The
    evaluation scripts key their reuse of GOP 1 results on it."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(k for k in arrays if k.startswith("iframe.")):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k], np.float32).tobytes())
    return h.hexdigest()[:12]


def from_npz(npz, config_path, out_dir, metadata: Optional[dict] = None) -> pathlib.Path:
    """A shipped-model folder of the weights at `npz`; its training.json is `metadata`, else what
    the run beside the weights recorded (model step, rate weights, its arguments; not its log)."""
    _require_tensorflow("from_npz")
    import time

    from model import checkpoints as ckpt
    from model.elfvc import ELFVC

    config = ckpt.load_config(config_path)
    arrays = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in read_arrays(npz).items()}
    if not metadata:
        try:
            progress = json.loads((weights_folder(str(npz)) / "progress.json").read_text())
        except (OSError, ValueError):
            progress = {}
        progress = progress if isinstance(progress, dict) else {}
        metadata = {"source": str(npz), "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if "step" in arrays:
            metadata["model_step"] = int(arrays["step"])
        metadata.update({k: progress[k] for k in ("gop_steps", "image_steps", "steps_here") if k in progress})
        lambda_range = recorded_lambda_range(str(npz))
        if lambda_range:
            metadata["lambda_range"] = lambda_range
        if isinstance(progress.get("args"), dict):
            metadata["train_args"] = progress["args"]
    model = ELFVC(config).build_weights()
    assign_keras(model, arrays)
    return ckpt.export_model(model, config, metadata, out_dir)


# -- where weights came from ---------------------------------------------------------------
MERGE_RECORD = "merge.json"  # beside merged weights (`merge`): step, parts, rest, lambda_range


def weights_folder(init: str) -> pathlib.Path:
    """The folder of the weights at `init` (an .npz, comma-separated shards or a folder of shards),
    where their config.json, model_card.json, warm.json or progress.json lie."""
    path = pathlib.Path(init.split(",")[0])
    return path if path.is_dir() else path.parent


def recorded_lambda_range(init: str) -> Optional[str]:
    """The --lambda_range ("A,B") the weights at `init` were trained with, as recorded beside
    them: a shipped folder's model_card.json, a warm-start folder's warm.json, merged weights'
    merge.json (their `rest` source's), else the flag of the
    training run whose progress.json is there; None when none records a readable one."""
    folder = weights_folder(init)
    for name, read in (("model_card.json", lambda d: d.get("lambda_range")),
                       ("warm.json", lambda d: d.get("lambda_range")),
                       (MERGE_RECORD, lambda d: d.get("lambda_range")),
                       ("progress.json", lambda d: (d.get("args") or {}).get("lambda_range"))):
        try:
            pair = lambda_pair(read(json.loads((folder / name).read_text())))
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # unreadable, or not a range a run could have trained at: the next source
        if pair is not None:
            return f"{pair[0]:g},{pair[1]:g}"
    return None


def warm_step(folder) -> int:
    """The model step a warm copy's warm.json records (-1 when unreadable)."""
    try:
        return int(json.loads((pathlib.Path(folder) / "warm.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def shipped_step(folder) -> int:
    """A shipped model folder's step (its training.json), -1 when there is none: a warm copy at or
    behind it is stale (left after the line it started was shipped) and is passed over."""
    try:
        return int(json.loads((pathlib.Path(folder) / "training.json").read_text())["model_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def lambda_pair(value) -> Optional[tuple]:
    """A lambda range as recorded ("A,B" or [A, B]) -> (A, B) with A > B > 0; None for an empty
    value; ValueError for anything else."""
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        first, last = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"a lambda range is two numbers A,B, got {value!r}") from None
    if not 0 < last < first < float("inf"):
        raise ValueError(f"a lambda range is A,B with A > B > 0, got {value!r}")
    return first, last


# -- torch side -------------------------------------------------------------------------------
def load_npz(module, path) -> None:
    """Loads weights (keys = state_dict names; one .npz, shards: see read_arrays) into a
    gpu_train.net.ELFVC, strictly. FP16 copies are widened to the module's dtypes."""
    import torch

    state = {k: torch.from_numpy(v) for k, v in read_arrays(path).items()}
    own = module.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise WeightsError(f"weight {key!r}: shape {tuple(value.shape)} does not match {tuple(own[key].shape)}")
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def write_shards(arrays: dict, folder, stem: str = "weights", max_bytes: int = 15 * 2**20, dtype=None) -> list:
    """Writes {name: array} as .npz shards of at most max_bytes of array data each (a lent GPU
    machine returns files of at most 16 MiB), atomically: every shard is written under a
    temporary name first, then all are renamed, then shards of an older, larger set are removed.
    `dtype` (e.g. np.float16) narrows floating-point arrays for a compact warm-start copy."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups, current, size = [], {}, 0
    for key, array in arrays.items():
        if dtype is not None and np.issubdtype(array.dtype, np.floating) and array.dtype != np.float64:
            array = array.astype(dtype)
        if current and size + array.nbytes > max_bytes:
            groups.append(current)
            current, size = {}, 0
        current[key] = array
        size += array.nbytes
    groups.append(current)
    names = [f"{stem}-{i:02d}.npz" for i in range(len(groups))]
    for name, group in zip(names, groups):
        np.savez(folder / f".{name}.tmp.npz", **group)
    for name in names:
        (folder / f".{name}.tmp.npz").replace(folder / name)
    for old in folder.glob(f"{stem}-*.npz"):
        if old.name not in names:
            old.unlink()
    return [folder / n for n in names]


def save_npz_shards(module, folder, stem: str = "weights", max_bytes: int = 15 * 2**20, dtype=None) -> list:
    """A module's state_dict through write_shards."""
    arrays = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    return write_shards(arrays, folder, stem, max_bytes, dtype)


def merge(parts, rest: str, config_path: str, out) -> str:
    """Writes into the new folder `out` the weights whose parameters under each PREFIX of `parts`
    ("PREFIX=WEIGHTS") come from those WEIGHTS and all others (the model step too) from `rest`,
    FP32 shards with config.json and merge.json (step, parts, rest, lambda_range). Every
    source must hold the same parameters with the same shapes; each prefix must match some and no
    two prefixes the same parameter. Returns a one-line summary."""
    out = pathlib.Path(out)
    if out.exists():
        raise WeightsError(f"{out} already exists; remove it or choose another")
    if not pathlib.Path(config_path).is_file():
        raise WeightsError(f"{config_path}: no such file")
    if not parts:
        raise WeightsError("no --part PREFIX=WEIGHTS: nothing to merge")
    merged = read_arrays(rest)
    if "step" not in merged:
        raise WeightsError(f"{rest}: no 'step' array: not a model's weights")
    taken, record_parts = {}, {}
    for part in parts:
        prefix, sep, source = part.partition("=")
        if not sep or not prefix or not source:
            raise WeightsError(f"--part {part!r}: expected PREFIX=WEIGHTS")
        arrays = read_arrays(source)
        if set(arrays) != set(merged) or any(arrays[k].shape != merged[k].shape for k in merged):
            raise WeightsError(f"{source} and {rest} do not hold the same parameters: not the same model")
        keys = [k for k in merged if k.startswith(prefix + ".")]
        if not keys:
            raise WeightsError(f"--part {part!r}: no parameters under {prefix!r}")
        for k in keys:
            if k in taken:
                raise WeightsError(f"--part {part!r}: {k} is already taken from {taken[k]}")
            taken[k] = source
            merged[k] = arrays[k]
        record_parts[prefix] = source
    files = write_shards(merged, out)
    config = json.loads(pathlib.Path(config_path).read_text())
    (out / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    record = {"step": int(merged["step"]), "parts": record_parts, "rest": rest,
              "lambda_range": recorded_lambda_range(rest)}
    (out / MERGE_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return (f"model step {record['step']}: {len(taken)} of {len(merged)} arrays from "
            f"{', '.join(f'{p}={s}' for p, s in record_parts.items())}, the rest from {rest} -> "
            f"{', '.join(str(f) for f in files)}")


# -- CLI --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run("python -m gpu_train.weights", _main, sys.argv[1:] if argv is None else argv, tracebacks=True)


def _main(argv) -> int:
    parser = clikit.ArgumentParser(prog="python -m gpu_train.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to_npz", help="Keras checkpoint -> .npz")
    a.add_argument("--model", required=True, help="shipped-model folder, train dir or checkpoint prefix")
    a.add_argument("--out", required=True)
    b = sub.add_parser("from_npz", help=".npz -> shipped-model folder")
    b.add_argument("--npz", required=True, help="an .npz, comma-separated shards, or a folder of shards")
    b.add_argument("--config", required=True, help="the model's config.json")
    b.add_argument("--out", required=True, help="new shipped-model folder (must not exist)")
    b.add_argument("--metadata", help="JSON file recorded as the folder's training.json")
    c = sub.add_parser("to_warm", help="weights (.npz / shards / folder) -> an FP16 warm-start folder (gpu_train/warm/NAME)")
    c.add_argument("--npz", required=True, help="an .npz, comma-separated shards, or a folder of shards")
    c.add_argument("--config", required=True, help="the model's config.json (copied beside the weights)")
    c.add_argument("--out", required=True, help="the warm-start folder; its old shards are replaced")
    c.add_argument("--lambda_range", default="",
                   help="the rate weights A,B the weights trained at (default: as recorded beside --npz; "
                        "refused when none is recorded there)")
    d = sub.add_parser("merge", help="parameter groups of several weights -> one FP32 folder of shards, with merge.json "
                       "naming the sources (a run from it can be shipped: gpu_train.lineage)")
    d.add_argument("--part", action="append", default=[], metavar="PREFIX=WEIGHTS",
                   help="take every parameter under PREFIX (e.g. iframe) from WEIGHTS; repeatable")
    d.add_argument("--rest", required=True, help="the weights every other parameter (and the model step) comes from")
    d.add_argument("--config", required=True, help="the model's config.json (copied beside the weights)")
    d.add_argument("--out", required=True, help="new folder (must not exist)")
    args = parser.parse_args(argv)
    try:
        if args.command == "merge":
            print(merge(args.part, args.rest, args.config, args.out))
        elif args.command == "to_warm":
            config = json.loads(pathlib.Path(args.config).read_text())
            arrays = read_arrays(args.npz)
            if "step" not in arrays:
                raise WeightsError(f"{args.npz}: no 'step' array: not a model's weights")
            recorded = recorded_lambda_range(args.npz)
            lambda_range = args.lambda_range or recorded
            if not lambda_range:
                raise WeightsError(f"no lambda_range recorded beside {args.npz} (model_card.json, warm.json or "
                                   "progress.json): pass --lambda_range=A,B, the rate weights they trained at")
            try:
                first, last = lambda_pair(lambda_range)
            except ValueError as e:
                raise WeightsError(f"--lambda_range: {e}") from None
            if recorded and lambda_pair(recorded) != (first, last):
                # Allowed (weights retrained at a new range keep the old record until the run's own),
                # but said: a campaign from the copy trains at the given range, not at the recorded one.
                print(f"note: --lambda_range {first:g},{last:g} differs from {recorded}, recorded beside {args.npz}; "
                      "warm.json records the given range", file=sys.stderr)
            files = write_shards(arrays, args.out, dtype=np.float16)
            (pathlib.Path(args.out) / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
            record = {"step": int(arrays["step"]), "source": str(args.npz), "lambda_range": [first, last]}
            # The line of runs from the shipped model (its training.json beside --config) to these
            # weights, so that a run from the copy can be shipped by scripts/ship.sh (gpu_train.lineage).
            from gpu_train.lineage import recorded_line
            shipped = shipped_step(pathlib.Path(args.config).parent)
            runs = recorded_line(args.npz, shipped) if shipped >= 0 else None
            if runs:
                record["runs"] = runs
            else:
                print(f"note: no line of finished runs from the shipped model step {shipped} to {args.npz} to record; "
                      "a run from this copy is shipped by hand", file=sys.stderr)
            (pathlib.Path(args.out) / "warm.json").write_text(json.dumps(record, indent=1) + "\n")
            print(f"model step {int(arrays['step'])}: {len(arrays)} arrays -> {', '.join(str(f) for f in files)} (FP16)"
                  + (f"; warm.json records the line {' -> '.join(r['name'] for r in runs)}" if runs else ""))
        elif args.command == "to_npz":
            out = pathlib.Path(args.out)
            if out.exists():
                raise WeightsError(f"{out} already exists; remove it or choose another")
            arrays = keras_arrays(args.model)
            tmp = out.with_name(f".{out.name}.tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(out)
            print(f"{len(arrays)} arrays -> {out}")
        else:
            for p in (args.config,) + ((args.metadata,) if args.metadata else ()):
                if not pathlib.Path(p).is_file():
                    raise WeightsError(f"{p}: no such file")
            metadata = json.loads(pathlib.Path(args.metadata).read_text()) if args.metadata else {}
            print(f"exported {from_npz(args.npz, args.config, args.out, metadata)}")
    except (WeightsError, OSError, ValueError) as e:
        print(f"{parser.prog}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
