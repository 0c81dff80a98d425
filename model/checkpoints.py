"""Checkpoint layout, config identity checks, warm starts and the shipped-model folder.

Train directory (written by `python -m model.train`):

    TRAIN_DIR/config.json        ModelConfig.to_dict(): the identity every resume is checked against
    TRAIN_DIR/options.json       the training flags of the run (GOP, crop, lambdas, ...)
    TRAIN_DIR/progress.json      step and recent losses, rewritten at each checkpoint
    TRAIN_DIR/ckpt/ckpt-N.*      tf.train.Checkpoint(model=..., optimizer=..., modulator=...)

The object graph holds the model under the key `model`, so
`tf.train.Checkpoint(model=model).restore(path).expect_partial()` loads the weights alone.

Shipped-model folder (`--export_to=DIR`, what the runtime loads):

    DIR/model.index, DIR/model.data-*   tf.train.Checkpoint(model=model).write(DIR/"model")
    DIR/config.json                     ModelConfig.to_dict()
    DIR/training.json                   step, recent losses, data, options

Every JSON file is written to a temporary name and renamed, so a kill never leaves half a file.
tf.train.CheckpointManager writes the data files first and then replaces its `checkpoint` index
file atomically, so the index always names a complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf

from model.config import QUANT_WIDTH_FIELDS, WEIGHT_FREE_FIELDS, ModelConfig
from model.fileio import as_umask_allows

CONFIG_FILE = "config.json"
OPTIONS_FILE = "options.json"
PROGRESS_FILE = "progress.json"
TRAINING_FILE = "training.json"
CHECKPOINT_SUBDIR = "ckpt"
WEIGHTS_PREFIX = "model"
#: A shipped folder's compact weights (model/bundle.py `compact`): arrays by attribute path.
COMPACT_FILE = "weights.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for what was asked; the message says why."""


def write_json(path, value) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    as_umask_allows(tmp)
    os.replace(tmp, path)


def read_json(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def config_difference(a: ModelConfig, b: ModelConfig) -> str:
    """'field: a_value != b_value' for every differing field (name included)."""
    da, db = a.to_dict(), b.to_dict()
    return ", ".join(f"{k}: {da[k]!r} != {db[k]!r}" for k in da if da[k] != db.get(k))


def load_config(path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(read_json(path))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a model config: {e}") from None


def check_same_config(expected: ModelConfig, found: ModelConfig, where) -> None:
    if expected != found:
        raise CheckpointError(
            f"{where} holds a checkpoint of another config ({config_difference(found, expected)}); "
            "use a fresh train dir (or another --init_from), or the --config, --ablation, --quant_width and "
            "--pframe_quant_width that match it"
        )


def resolve_checkpoint(path) -> tuple[str, pathlib.Path]:
    """A checkpoint prefix and the folder whose config.json describes it.

    Accepts a train dir, an export folder, a ckpt/ folder or a prefix like TRAIN_DIR/ckpt/ckpt-N.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        if (path / f"{WEIGHTS_PREFIX}.index").exists():
            return str(path / WEIGHTS_PREFIX), path
        for folder, owner in ((path / CHECKPOINT_SUBDIR, path), (path, path.parent)):
            if folder.is_dir():
                latest = tf.train.latest_checkpoint(str(folder))
                if latest:
                    return latest, owner
        raise CheckpointError(f"no checkpoint found in {path}")
    if not pathlib.Path(f"{path}.index").exists():
        raise CheckpointError(f"checkpoint {path} does not exist (no {path.name}.index)")
    owner = path.parent.parent if path.parent.name == CHECKPOINT_SUBDIR else path.parent
    return str(path), owner


def checkpoint_config(owner: pathlib.Path) -> ModelConfig:
    config_path = owner / CONFIG_FILE
    if not config_path.exists():
        raise CheckpointError(f"no {CONFIG_FILE} in {owner}: cannot tell which model config the checkpoint holds")
    return load_config(config_path)


# A checkpoint whose config differs from the model's only in QUANT_WIDTH_FIELDS still warm-starts it.


def _differs_only_in_quant_width(a: ModelConfig, b: ModelConfig) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return a != b and all(da[k] == db[k] for k in da if k not in QUANT_WIDTH_FIELDS)


def _warm_start_new_quant_width(model, prefix: str, source_config: ModelConfig, scope: str) -> None:
    """Warm start across a Q_w-only config change: every weight but Q_w comes from the checkpoint
    (checked value by value against a strictly loaded model of the checkpoint's own config).
    A Q_w table keeps its learned values when its block's initial spread is unchanged and the
    checkpoint has one (the I-frame's always does; flow and residue only with
    pframe_quant_width); every other table starts from the new spread."""
    from model.elfvc import ELFVC

    source = ELFVC(source_config).build_weights()
    warm_start(source, prefix, scope, source_config)
    if scope == "all":
        tf.train.Checkpoint(model=model).read(prefix).expect_partial()
    else:
        tf.train.Checkpoint(model=tf.train.Checkpoint(iframe=model.iframe)).read(prefix).expect_partial()
    # Both models are built by the same code, so apart from the Q_w tables their variables come
    # in the same order (names alone are not unique across blocks).
    def weights(m):
        variables = m.variables if scope == "all" else m.iframe.variables
        return [v for v in variables if "log_quant_width" not in v.name]

    wanted, mine = weights(source), weights(model)
    if len(wanted) != len(mine):
        raise CheckpointError(f"cannot warm start from {prefix}: {len(wanted)} weights there, {len(mine)} here")
    for theirs, ours in zip(wanted, mine):
        if theirs.shape != ours.shape or not np.array_equal(theirs.numpy(), ours.numpy()):
            raise CheckpointError(f"cannot warm start from {prefix}: {ours.name} did not load")
    # A block whose initial spread is unchanged, and which has a table on both sides, keeps its
    # learned table (loaded in either scope); every other table starts from the new spread.
    for name in ("iframe", "flow", "residue"):
        block, theirs = getattr(model, name), getattr(source, name)
        if not hasattr(block, "log_quant_width"):
            continue
        same = source_config.quant_width_spread(name) == model.config.quant_width_spread(name)
        if same and hasattr(theirs, "log_quant_width"):
            block.log_quant_width.assign(theirs.log_quant_width)
        else:
            block.log_quant_width.assign(model.config.initial_log_quant_width(name))


def warm_start(model, path, scope: str, expected: ModelConfig) -> str:
    """Loads `model` weights (scope 'all') or only its I-frame codec (scope 'iframe') from `path`.

    WEIGHT_FREE_FIELDS (the motion search) may differ freely: they change no variable.
    A checkpoint whose config differs only in QUANT_WIDTH_FIELDS loads everything but Q_w, which
    starts from `expected`'s initial spread (a block's table stays learned if its spread is
    unchanged). Returns the checkpoint prefix used. Raises
    CheckpointError for a checkpoint of another config or one that lacks any requested variable.
    A compact folder (runtime.bundle's FP16 kernels, as the shipped models are) warm-starts too,
    its kernels widened to FP32.
    """
    folder = pathlib.Path(path)
    if folder.is_dir() and (folder / COMPACT_FILE).is_file() and not (folder / f"{WEIGHTS_PREFIX}.index").exists():
        with tempfile.TemporaryDirectory(prefix="elfvc_warm_") as tmp:
            _compact_as_checkpoint(folder, pathlib.Path(tmp))
            warm_start(model, tmp, scope, expected)
        return str(folder / COMPACT_FILE)
    prefix, owner = resolve_checkpoint(path)
    # WEIGHT_FREE_FIELDS change no variable: a checkpoint loads whatever they are set to.
    found = dataclasses.replace(
        checkpoint_config(owner), **{name: getattr(expected, name) for name in WEIGHT_FREE_FIELDS}
    )
    if _differs_only_in_quant_width(expected, found):
        _warm_start_new_quant_width(model, prefix, found, scope)
        return prefix
    check_same_config(expected, found, prefix)
    if scope == "all":
        target = tf.train.Checkpoint(model=model)
    elif scope == "iframe":
        target = tf.train.Checkpoint(model=tf.train.Checkpoint(iframe=model.iframe))
    else:
        raise CheckpointError(f"unknown init scope {scope!r}; valid: all, iframe")
    try:
        target.read(prefix).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise CheckpointError(f"cannot warm start from {prefix}: {str(e).splitlines()[0]}") from None
    return prefix


def _compact_as_checkpoint(folder: pathlib.Path, out: pathlib.Path) -> None:
    """Writes a compact folder's weights (FP16 kernels widened) as a TF checkpoint with its
    config.json into `out`: what warm_start reads."""
    from model.elfvc import ELFVC

    config = checkpoint_config(folder)
    source = ELFVC(config).build_weights()
    try:
        load_compact(source, folder / COMPACT_FILE)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / COMPACT_FILE}: not a compact weights file ({str(e).splitlines()[0]})") from None
    tf.train.Checkpoint(model=source).write(str(out / WEIGHTS_PREFIX))
    shutil.copy(folder / CONFIG_FILE, out / CONFIG_FILE)


def export_model(model, config: ModelConfig, metadata: dict, out_dir) -> pathlib.Path:
    """Writes the shipped-model folder (weights only, config.json, training.json) to out_dir.

    Built in a temporary sibling folder and renamed into place; refuses an existing out_dir.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists():
        raise CheckpointError(f"export folder {out_dir} already exists; remove it or choose another")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as e:
        raise CheckpointError(f"cannot create the export folder {out_dir} ({e.strerror}: {e.filename})") from None
    try:
        as_umask_allows(tmp)  # a model folder others can read, as the shipped ones
        tf.train.Checkpoint(model=model).write(str(tmp / WEIGHTS_PREFIX))
        write_json(tmp / CONFIG_FILE, config.to_dict())
        write_json(tmp / TRAINING_FILE, metadata)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_exported(model_dir, model=None):
    """Loads a shipped-model folder -> (model, config). Builds the model if none is given."""
    from model.elfvc import ELFVC

    model_dir = pathlib.Path(model_dir)
    config = load_config(model_dir / CONFIG_FILE)
    if model is None:
        model = ELFVC(config).build_weights()
    if (model_dir / COMPACT_FILE).exists():  # runtime.bundle's compact form (FP16 kernels)
        load_compact(model, model_dir / COMPACT_FILE)
        return model, config
    prefix = str(model_dir / WEIGHTS_PREFIX)
    tf.train.Checkpoint(model=model).read(prefix).expect_partial().assert_existing_objects_matched()
    return model, config


# -- weights as arrays keyed by attribute path (the PyTorch mirror's state_dict names) ----------------
_VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint_arrays(prefix: str) -> dict:
    """{attribute path ("iframe.analysis.layers.0.kernel"): array} of every model variable in a
    tf.train.Checkpoint(model=...) at `prefix`, optimizer slots excluded. The paths are
    gpu_train/net.py's state_dict names, so the same file loads on either side."""
    reader = tf.train.load_checkpoint(prefix)
    out = {}
    for key in reader.get_variable_to_shape_map():
        if key.startswith("model/") and key.endswith(_VARIABLE_SUFFIX) and "/.OPTIMIZER_SLOT/" not in key:
            out[key[len("model/") : -len(_VARIABLE_SUFFIX)].replace("/", ".")] = reader.get_tensor(key)
    if not out:
        raise CheckpointError(f"{prefix}: no model variables found in the checkpoint")
    return out


def model_arrays(model) -> dict:
    """checkpoint_arrays of a built model (through a temporary checkpoint)."""
    with tempfile.TemporaryDirectory(prefix="elfvc-arrays-") as tmp:
        prefix = tf.train.Checkpoint(model=model).write(os.path.join(tmp, WEIGHTS_PREFIX))
        return checkpoint_arrays(prefix)


def _resolve(model, key: str):
    obj = model
    for part in key.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def assign_arrays(model, arrays: dict) -> None:
    """Assigns every array to the variable at its attribute path (FP16 widened); every variable
    of the model must get exactly one array of its shape, else CheckpointError."""
    assigned = {}
    for key, value in arrays.items():
        try:
            var = _resolve(model, key)
        except (AttributeError, IndexError, KeyError, TypeError):
            raise CheckpointError(f"weight {key!r} has no variable in the Keras model") from None
        if not isinstance(var, tf.Variable):
            raise CheckpointError(f"weight {key!r} has no variable in the Keras model")
        if tuple(var.shape) != tuple(value.shape):
            raise CheckpointError(f"weight {key!r}: shape {tuple(value.shape)} does not match the model's {tuple(var.shape)}")
        assigned[id(var)] = key
        var.assign(np.asarray(value).astype(var.dtype.as_numpy_dtype))
    missing = [v.name for v in model.variables if id(v) not in assigned]
    if missing:
        raise CheckpointError(f"{len(missing)} model variables have no weight, e.g. {missing[0]}")


def load_compact(model, path) -> None:
    """Assigns a compact weights file (arrays by attribute path, FP16 widened) to a built model;
    CheckpointError if it does not match the model, OSError / ValueError if it is no .npz."""
    with np.load(path, allow_pickle=False) as arrays:
        assign_arrays(model, {k: arrays[k] for k in arrays.files})


def latest_in(train_dir) -> Optional[str]:
    folder = pathlib.Path(train_dir) / CHECKPOINT_SUBDIR
    return tf.train.latest_checkpoint(str(folder)) if folder.is_dir() else None
