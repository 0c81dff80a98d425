"""Trains ELF-VC (§4.1, App. D) on real footage; resumable, distributable, safe to leave running.

    python -m model.train --config=small --data=DIR --train_dir=runs/x --gop=3 --crop=128 \\
        --batch=4 --steps=5000 --lr=2e-4 --downscale=2

    # I-frame pretraining on photos, then the whole GOP warm-started from its I-frame codec:
    python -m model.train --data=PHOTOS --gop=1 --train_dir=runs/i ...
    python -m model.train --data=VIDEOS --gop=3 --train_dir=runs/p --init_from=runs/i --init_scope=iframe
    # fine-tuning on larger crops: --init_from=runs/p --crop=256 --steps=...
    # ship: python -m model.train --train_dir=runs/p --export_to=models/small_v1

Rerunning the same command resumes from TRAIN_DIR's last complete checkpoint (after SIGTERM,
SIGINT or SIGKILL). Checkpoints are written every --checkpoint_every_secs / _steps and on
SIGTERM / SIGINT. Distribution: --strategy=auto picks MultiWorkerMirroredStrategy when TF_CONFIG
is set, MirroredStrategy with several GPUs, and the default strategy otherwise; with several
workers TRAIN_DIR must be on a shared file system (non-chief workers write their own copies to
TRAIN_DIR/worker-<i>/).

Schedule (§4.1): Adam (beta_1 = 0.9), lr lowered 5x at 80% and again at 95% of --steps.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

from model import clikit  # before TensorFlow: quiets its C++ log

import numpy as np
from absl import flags

from model.config import ABLATIONS, config_names, parse_lambda_range, parse_positive_pair

PROG = "train"
# Own flag registry (not absl's global one): main(argv) parses from the defaults on every call.
FLAGS = flags.FlagValues()
flags.DEFINE_string("train_dir", None, "Where checkpoints, config.json and TensorBoard summaries go.", flag_values=FLAGS)
flags.DEFINE_string("data", None, "Training data directory (videos, Vimeo-90k septuplets or images).", flag_values=FLAGS)
flags.DEFINE_enum("data_kind", "auto", ["auto", "video", "vimeo", "images"], "Layout of --data.", flag_values=FLAGS)
flags.DEFINE_string("config", "small", f"Model config: {', '.join(config_names())}.", flag_values=FLAGS)
flags.DEFINE_enum("ablation", "none", sorted(ABLATIONS), "Table 3 ablation.", flag_values=FLAGS)
flags.DEFINE_string(
    "quant_width", None, "Initial Q_w 'FIRST,LAST' at level 0 and the top level, geometric between (default: the config's).", flag_values=FLAGS
)
flags.DEFINE_bool(
    "pframe_quant_width", None, "Give the flow and residue codelayers a per-level Q_w too (default: the config's).", flag_values=FLAGS
)
flags.DEFINE_string(
    "flow_quant_width", None, "The flow codelayer's own initial Q_w 'FIRST,LAST' (needs --pframe_quant_width; default: --quant_width's).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "motion_search_radius", None,
    "Encoder-side block motion search radius in pixels feeding flow latents 0-1 (model/motion.py; 0 = the paper's flow block; default: the config's).", flag_values=FLAGS,
)
flags.DEFINE_float(
    "motion_search_penalty", None,
    "Motion search cost per pixel of |dx| + |dy| in mean |luma difference| (model/motion.py; default: the config's).", flag_values=FLAGS,
)
flags.DEFINE_float(
    "motion_search_penalty_top", None,
    "Motion search penalty at the top level; --motion_search_penalty is then level 0's, geometric in between "
    "(model/motion.py, level_penalty; default: the config's).", flag_values=FLAGS,
)
flags.DEFINE_enum(
    "block_motion_upsample", None, ["nearest", "bilinear"],
    "How the decoder spreads each block's coded motion over its pixels (model/motion.py, upsample_blocks; default: the config's).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("gop", 3, "Frames per training GOP (1 = I-frame codec only; §4.1 uses IPPP = 4).", flag_values=FLAGS)
flags.DEFINE_string("crop", "128", "Crop size: N (square) or HxW, multiples of 64.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 4, "Global batch size (split over replicas).", flag_values=FLAGS)
flags.DEFINE_integer("downscale", 1, "Area-downscale sources by this factor before cropping.", flag_values=FLAGS)
flags.DEFINE_integer("max_stride", 2, "Temporal stride between GOP frames is uniform in [1, max_stride].", flag_values=FLAGS)
flags.DEFINE_integer("steps", 10000, "Optimizer steps of this stage (the lr schedule is relative to it).", flag_values=FLAGS)
flags.DEFINE_float("lr", 7e-5, "Initial learning rate (§4.1: 7e-5 for 800k steps).", flag_values=FLAGS)
flags.DEFINE_string("lambda_range", "low", "λ range: 'low' [1e-1.7, 1e-3.7], 'high' [1e-3, 1e-5] or 'FIRST,LAST'.", flag_values=FLAGS)
flags.DEFINE_enum("distortion", "mse", ["mse", "ms_ssim"], "Distortion D: MSE (default) or 1 - MS-SSIM (fine-tuning).", flag_values=FLAGS)
flags.DEFINE_bool("modulate", True, "App. D dynamic loss modulation (False: mu = 1).", flag_values=FLAGS)
flags.DEFINE_float("modulator_step", 0.01, "How much mu moves per step (App. D's 'small value').", flag_values=FLAGS)
flags.DEFINE_enum(
    "precision", "fp32", ["fp32", "bf16"],
    "fp32, or bf16: convolutions in bfloat16 with FP32 weights (faster only on a CPU with AMX or AVX512-BF16; "
    "elsewhere emulated, 7.5x slower); rates, quantization and the loss stay FP32, checkpoints are the same "
    "either way (docs/TRAINING.md).", flag_values=FLAGS)
flags.DEFINE_float("clip_norm", 0.0, "Clip gradients to this global norm (0: off).", flag_values=FLAGS)
flags.DEFINE_float(
    "warp_loss", 0.0, "Weight of the auxiliary motion loss MSE(x_comp, x) over P-frames (0: off; see TrainOptions).", flag_values=FLAGS
)
flags.DEFINE_integer("warp_loss_steps", 0, "Apply --warp_loss for the first N steps of this stage only (0: all of them).", flag_values=FLAGS)
flags.DEFINE_string("init_from", None, "Warm start: a train dir, export folder or checkpoint prefix.", flag_values=FLAGS)
flags.DEFINE_enum("init_scope", "all", ["all", "iframe"], "What --init_from loads.", flag_values=FLAGS)
flags.DEFINE_integer("log_every", 20, "Print progress and write summaries every N steps.", flag_values=FLAGS)
flags.DEFINE_integer("checkpoint_every_secs", 600, "Checkpoint at most this many seconds apart (0: off).", flag_values=FLAGS)
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint every N steps (0: off).", flag_values=FLAGS)
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints to keep.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed for weights, data and levels.", flag_values=FLAGS)
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker"], "tf.distribute strategy.", flag_values=FLAGS)
flags.DEFINE_string("cache_dir", None, "Decoded-video cache (default TRAIN_DIR/frame_cache).", flag_values=FLAGS)
flags.DEFINE_string("export_to", None, "Do not train: write TRAIN_DIR's latest weights as a shipped-model folder.", flag_values=FLAGS)


#: Where a train-dir checkpoint keeps the optimizer step (Keras 2.14 Adam's `iterations`).
ITERATIONS_KEY = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


class TrainError(RuntimeError):
    """Training cannot go on; the message says why."""


@dataclass(frozen=True)
class TrainOptions:
    """Everything about a run except the model config and the data layout."""

    steps: int = 10000
    batch: int = 4  # global
    lr: float = 7e-5
    lambda_range: Tuple[float, float] = (10 ** -1.7, 10 ** -3.7)
    distortion: str = "mse"
    modulate: bool = True
    modulator_step: float = 0.01
    clip_norm: float = 0.0
    # Auxiliary motion loss (our gap-filling, DVC-style): + warp_loss * MSE(x_comp, x_t) for every
    # P-frame, normalized like eq. 1's terms (sum / (B T)), for the first warp_loss_steps steps of
    # the stage (0: all). It rewards the flow block for a good motion-compensated prediction
    # directly, not only through the residue. (Measured: it did not revive a collapsed flow.)
    warp_loss: float = 0.0
    warp_loss_steps: int = 0
    log_every: int = 20
    checkpoint_every_secs: int = 600
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 3
    seed: int = 0
    # "bf16": convolutions in bfloat16 with FP32 weights (model.layers.conv_precision); rates,
    # quantization, the losses and the optimizer stay FP32. Checkpoints are the same either way.
    precision: str = "fp32"


def parse_crop(text: str) -> Tuple[int, int]:
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--crop={text!r}: expected N or HxW") from None
    if len(sizes) == 1:
        return sizes[0], sizes[0]
    if len(sizes) == 2:
        return sizes[0], sizes[1]
    raise ValueError(f"--crop={text!r}: expected N or HxW")


def parse_quant_width(text: str, flag: str = "--quant_width") -> Tuple[float, float]:
    """'FIRST,LAST' -> initial Q_w at level 0 (lowest rate) and the top level."""
    return parse_positive_pair(text, flag, "FIRST,LAST (two positive numbers)", "quantization widths")


# -- distribution -----------------------------------------------------------------------------
def make_strategy(name: str):
    import tensorflow as tf

    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(strategy) -> Tuple[bool, int]:
    """(is_chief, task id) of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())
    return is_chief, int(task_id or 0)


# -- progress ---------------------------------------------------------------------------------
class Progress:
    """Accumulates per-level stats between log lines; formats the line a person reads."""

    def __init__(self, num_levels: int, gop: int):
        self.num_levels, self.gop = num_levels, gop
        self.reset()
        self.smoothed_loss = None

    def reset(self):
        self.mse = np.zeros([self.gop, self.num_levels])
        self.bpp = np.zeros([self.gop, self.num_levels])
        self.count = np.zeros([self.gop, self.num_levels])
        self.warp_mse, self.warp_count = 0.0, 0.0
        self.loss, self.steps, self.started = 0.0, 0, time.monotonic()

    def add(self, totals: dict):
        self.mse += totals["mse_sum"]
        self.bpp += totals["bpp_sum"]
        self.count += totals["count"]
        self.warp_mse += float(totals.get("warp_mse_sum", 0.0))
        self.warp_count += float(totals.get("warp_count", 0.0))
        self.loss += float(totals["loss"])
        self.steps += 1
        value = float(totals["loss"])
        self.smoothed_loss = value if self.smoothed_loss is None else 0.95 * self.smoothed_loss + 0.05 * value

    def summary(self) -> dict:
        from model.losses import psnr_from_mse

        per_level = self.count.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            level_mse = self.mse.sum(0) / per_level
            level_bpp = self.bpp.sum(0) / per_level
            frame_mse = self.mse.sum(1) / self.count.sum(1)
            frame_bpp = self.bpp.sum(1) / self.count.sum(1)
        clean = lambda xs: [None if not np.isfinite(x) else round(float(x), 5) for x in xs]
        return {
            "loss": self.loss / max(self.steps, 1),
            "psnr_by_level": clean(psnr_from_mse(level_mse)),
            "bpp_by_level": clean(level_bpp),
            "psnr_by_frame": clean(psnr_from_mse(frame_mse)),
            "bpp_by_frame": clean(frame_bpp),
            # PSNR of the motion-compensated prediction x_comp over P-frames: does the flow move pixels?
            "psnr_warp": clean([psnr_from_mse(self.warp_mse / self.warp_count)])[0] if self.warp_count else None,
        }

    def line(self, step: int, total: int, steps_per_sec: float) -> str:
        s = self.summary()
        eta = (total - step) / steps_per_sec if steps_per_sec > 0 else float("inf")
        fmt = lambda p, b: "   -/-   " if p is None else f"{p:.1f}/{b:.3f}"
        levels = " ".join(f"{l}:{fmt(p, b)}" for l, (p, b) in enumerate(zip(s["psnr_by_level"], s["bpp_by_level"])))
        frames = " ".join(fmt(p, b) for p, b in zip(s["psnr_by_frame"], s["bpp_by_frame"]))
        return (
            f"step {step}/{total} | {steps_per_sec:.3f} step/s | ETA {format_duration(eta)} | loss {s['loss']:.5f} | "
            f"PSNR/bpp by level {levels} | by frame {frames}"
            + ("" if s["psnr_warp"] is None else f" | warp PSNR {s['psnr_warp']:.2f}")
        )


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# -- the trainer -------------------------------------------------------------------------------
class Trainer:
    """Owns the model, optimizer, modulator, checkpoint and the distributed train step."""

    def __init__(self, model_config, data_config, options: TrainOptions, train_dir, strategy, init_from=None, init_scope="all"):
        import tensorflow as tf

        from model import checkpoints as ckpt
        from model.elfvc import ELFVC
        from model.layers import conv_precision
        from model.losses import LossModulator, ModulatorConfig, lambdas

        self.model_config, self.data_config, self.options = model_config, data_config, options
        self.train_dir = pathlib.Path(train_dir)
        self.strategy = strategy
        self.is_chief, self.task_id = worker_role(strategy)
        self.num_levels = model_config.levels
        self.gop = data_config.gop
        replicas = strategy.num_replicas_in_sync
        if options.batch % replicas:
            raise TrainError(f"--batch={options.batch} does not split evenly over {replicas} replicas")
        self.lambdas = lambdas(options.lambda_range, self.num_levels)
        self._check_train_dir()

        tf.random.set_seed(options.seed)
        with strategy.scope():
            with conv_precision(options.precision):
                self.model = ELFVC(model_config).build_weights()
            boundaries = [int(0.8 * options.steps), int(0.95 * options.steps)]
            values = [options.lr, options.lr / 5, options.lr / 25]
            self.schedule = tf.keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
            self.optimizer = tf.keras.optimizers.Adam(self.schedule, beta_1=0.9)
            self.optimizer.build(self.model.trainable_variables)
            self.modulator = LossModulator(
                self.gop, self.num_levels, ModulatorConfig(step=options.modulator_step, enabled=options.modulate)
            )
            self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, modulator=self.modulator)
        directory = self.train_dir / ckpt.CHECKPOINT_SUBDIR
        if not self.is_chief:  # every worker must take part in a save; only the chief's is kept.
            directory = self.train_dir / f"worker-{self.task_id}" / ckpt.CHECKPOINT_SUBDIR
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=options.keep_checkpoints)
        self.init_scope = init_scope
        self.resumed_from = self._restore(init_from, init_scope)
        self._train_step = self._make_train_step()

    # -- setup ----------------------------------------------------------------------------
    def _check_train_dir(self):
        from model import checkpoints as ckpt

        config_path = self.train_dir / ckpt.CONFIG_FILE
        options_path = self.train_dir / ckpt.OPTIONS_FILE
        if config_path.exists() and ckpt.latest_in(self.train_dir):  # (a run that failed before its first
            # checkpoint leaves a config.json behind: nothing trained to protect)
            ckpt.check_same_config(self.model_config, ckpt.load_config(config_path), self.train_dir)
        if options_path.exists():
            previous = ckpt.read_json(options_path)
            if previous.get("gop") != self.gop and ckpt.latest_in(self.train_dir):
                raise TrainError(
                    f"{self.train_dir} was trained with --gop={previous.get('gop')}, not {self.gop}; "
                    f"warm start a new train dir with --init_from instead"
                )
        if self.is_chief:
            ckpt.write_json(config_path, self.model_config.to_dict())
            ckpt.write_json(options_path, self.describe())

    def describe(self) -> dict:
        return {
            "gop": self.gop,
            "data": asdict(self.data_config),
            "options": asdict(self.options),
            "lambdas": [float(x) for x in self.lambdas],
        }

    def _restore(self, init_from, init_scope) -> Optional[str]:
        from model import checkpoints as ckpt

        latest = ckpt.latest_in(self.train_dir)
        if latest:
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError) as e:
                raise TrainError(f"cannot resume from {latest}: {str(e).splitlines()[0]}") from None
            return latest
        if init_from:
            return "warm start from " + ckpt.warm_start(self.model, init_from, init_scope, self.model_config)
        return None

    def _make_train_step(self):
        import tensorflow as tf

        from model.losses import distortion, mse, multilevel_loss, per_frame_level_sums

        model, optimizer, modulator, strategy = self.model, self.optimizer, self.modulator, self.strategy
        distortion_fn = distortion(self.options.distortion)
        lambda_table = tf.constant(self.lambdas)
        global_batch, num_levels, clip_norm = self.options.batch, self.num_levels, self.options.clip_norm
        warp_weight, warp_steps = self.options.warp_loss, self.options.warp_loss_steps
        variables = model.trainable_variables
        sync_vars = [v for v in model.variables if v.synchronization == tf.VariableSynchronization.ON_READ]
        multi = strategy.num_replicas_in_sync > 1

        def replica_step(frames, levels, stop):
            with tf.GradientTape() as tape:
                out = model.forward_gop(frames, levels, "noise", training=True)
                dist = distortion_fn(frames, out.reconstructions)
                bpp = out.bpp()
                loss = multilevel_loss(dist, bpp, levels, modulator.mu, lambda_table, global_batch)
                if len(out.frames) > 1:
                    compensated = tf.stack([f.compensated for f in out.frames[1:]], axis=1)
                    warp_mse = mse(frames[:, 1:], compensated)  # [B, T-1]
                else:
                    warp_mse = tf.zeros([tf.shape(frames)[0], 0])
                if warp_weight > 0 and len(out.frames) > 1:
                    active = optimizer.iterations < warp_steps if warp_steps > 0 else tf.constant(True)
                    weight = warp_weight * tf.cast(active, tf.float32)
                    loss += weight * tf.reduce_sum(warp_mse) / tf.cast(global_batch * len(out.frames), tf.float32)
            grads = tape.gradient(loss, variables)
            # A GOP of 1 trains the I-frame codec alone: the P-frame blocks get no gradient.
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            if clip_norm > 0:
                clipped, _ = tf.clip_by_global_norm([g for g, _ in pairs], clip_norm)
                pairs = list(zip(clipped, [v for _, v in pairs]))
            optimizer.apply_gradients(pairs)
            dist_sum, count = per_frame_level_sums(dist, levels, num_levels)
            mse_sum, _ = per_frame_level_sums(mse(frames, out.reconstructions), levels, num_levels)
            bpp_sum, _ = per_frame_level_sums(bpp, levels, num_levels)
            return {
                "loss": loss, "dist_sum": dist_sum, "mse_sum": mse_sum, "bpp_sum": bpp_sum, "count": count, "stop": stop,
                "warp_mse_sum": tf.reduce_sum(warp_mse), "warp_count": tf.cast(tf.size(warp_mse), tf.float32),
            }

        @tf.function(autograph=False)
        def train_step(batch, stop):
            frames, levels = batch
            per_replica = strategy.run(replica_step, args=(frames, levels, stop))
            totals = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}
            modulator.update(totals["dist_sum"], totals["count"])
            model.step.assign_add(1)
            if multi:
                # App. C's moving stats are per-replica (ON_READ); keep every copy at their mean.
                for v in sync_vars:
                    v.assign(v.read_value())
            return totals

        return train_step

    # -- data -----------------------------------------------------------------------------
    def dataset(self, clips, start_step: int):
        from model.data import make_dataset

        strategy, options = self.strategy, self.options

        def fn(context):
            import tensorflow as tf

            batch = context.get_per_replica_batch_size(options.batch)
            # A new seed per worker and per resume, so a restart does not replay the same samples.
            seed = [options.seed, context.input_pipeline_id, start_step]
            return make_dataset(clips, self.data_config, batch, self.num_levels, seed)

        return strategy.distribute_datasets_from_function(fn)

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, progress_summary: dict) -> str:
        from model import checkpoints as ckpt

        step = int(self.optimizer.iterations.numpy())
        path = self.manager.save(checkpoint_number=step)
        if self.is_chief:
            ckpt.write_json(self.train_dir / ckpt.PROGRESS_FILE, {
                "step": step,
                "model_step": int(self.model.step.numpy()),
                "checkpoint": path,
                "recent": progress_summary,
                "mu": np.round(self.modulator.mu.numpy(), 3).tolist(),
                **self.describe(),
            })
        return path

    # -- the loop -------------------------------------------------------------------------
    def train(self, clips, log=print) -> dict:
        import tensorflow as tf

        options = self.options
        step = int(self.optimizer.iterations.numpy())
        if self.resumed_from and self.resumed_from.startswith("warm start"):
            log(f"{self.resumed_from} (init scope: {self.init_scope}); step {step}")
        elif self.resumed_from:
            log(f"resuming from {self.resumed_from} at step {step}")
        if step >= options.steps:
            log(f"already trained {step} of {options.steps} steps; nothing to do")
            return {"step": step, "stopped_by": None}
        iterator = iter(self.dataset(clips, step))
        writer = tf.summary.create_file_writer(str(self.train_dir / "summaries")) if self.is_chief else None
        progress = Progress(self.num_levels, self.gop)
        signals = {"received": None}
        previous = {}

        def handler(signum, _frame):
            signals["received"] = signum

        if hasattr(signal, "SIGTERM"):
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, handler)
        last_save = time.monotonic()
        last_summary = {}
        try:
            first = True
            window_start, window_steps = time.monotonic(), 0
            while step < options.steps:
                stop = tf.constant(1.0 if signals["received"] else 0.0)
                totals = {k: v.numpy() for k, v in self._train_step(next(iterator), stop).items()}
                step = int(self.optimizer.iterations.numpy())
                if not np.isfinite(totals["loss"]):
                    raise TrainError(
                        f"loss became non-finite at step {step}; last good checkpoint: {self.manager.latest_checkpoint}"
                    )
                if first:  # the first step traces the graph: leave it out of the speed.
                    first, window_start, window_steps = False, time.monotonic(), 0
                else:
                    window_steps += 1
                progress.add(totals)
                if step % options.log_every == 0 or step == options.steps:
                    elapsed = time.monotonic() - window_start
                    rate = window_steps / elapsed if elapsed > 0 and window_steps else 0.0
                    last_summary = progress.summary()
                    if self.is_chief:
                        log(progress.line(step, options.steps, rate))
                        self._write_summaries(writer, step, last_summary, rate)
                    progress.reset()
                    window_start, window_steps = time.monotonic(), 0
                by_time = options.checkpoint_every_secs and time.monotonic() - last_save >= options.checkpoint_every_secs
                by_steps = options.checkpoint_every_steps and step % options.checkpoint_every_steps == 0
                if totals["stop"] > 0:
                    path = self.save(last_summary or progress.summary())
                    name = signal.Signals(signals["received"]).name if signals["received"] else "a peer's signal"
                    log(f"stopped by {name} at step {step}; checkpoint {path}")
                    return {"step": step, "stopped_by": signals["received"] or signal.SIGTERM, "checkpoint": path}
                if by_time or by_steps:
                    path = self.save(last_summary or progress.summary())
                    last_save = time.monotonic()
                    if self.is_chief:
                        log(f"checkpoint {path}")
            path = self.save(last_summary or progress.summary())
            log(f"done: {step} steps; checkpoint {path}")
            return {"step": step, "stopped_by": None, "checkpoint": path}
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            if writer is not None:
                writer.close()

    def _write_summaries(self, writer, step, summary, rate):
        import tensorflow as tf

        with writer.as_default(step=step):
            tf.summary.scalar("loss", summary["loss"])
            tf.summary.scalar("steps_per_sec", rate)
            tf.summary.scalar("learning_rate", float(self.schedule(step)))
            for l, (p, b) in enumerate(zip(summary["psnr_by_level"], summary["bpp_by_level"])):
                if p is not None:
                    tf.summary.scalar(f"psnr/level_{l}", p)
                    tf.summary.scalar(f"bpp/level_{l}", b)
            for t, (p, b) in enumerate(zip(summary["psnr_by_frame"], summary["bpp_by_frame"])):
                if p is not None:
                    tf.summary.scalar(f"psnr/frame_{t}", p)
                    tf.summary.scalar(f"bpp/frame_{t}", b)
            if summary.get("psnr_warp") is not None:
                tf.summary.scalar("psnr/warp", summary["psnr_warp"])
            mu = self.modulator.mu.numpy()
            for t in range(mu.shape[0]):
                for l in range(mu.shape[1]):
                    tf.summary.scalar(f"mu/frame_{t}_level_{l}", mu[t, l])
        writer.flush()


# -- export -----------------------------------------------------------------------------------
def export(train_dir, out_dir) -> pathlib.Path:
    """Writes TRAIN_DIR's latest checkpoint as a shipped-model folder (see model/checkpoints.py)."""
    import tensorflow as tf

    from model import checkpoints as ckpt
    from model.elfvc import ELFVC

    train_dir = pathlib.Path(train_dir)
    latest = ckpt.latest_in(train_dir)
    if not latest:
        raise ckpt.CheckpointError(f"no checkpoint in {train_dir / ckpt.CHECKPOINT_SUBDIR}")
    config = ckpt.checkpoint_config(train_dir)
    model = ELFVC(config).build_weights()
    status = tf.train.Checkpoint(model=model).read(latest).expect_partial()
    status.assert_existing_objects_matched()
    progress_path = train_dir / ckpt.PROGRESS_FILE
    progress = ckpt.read_json(progress_path) if progress_path.exists() else {}
    step = int(tf.train.load_checkpoint(latest).get_tensor(ITERATIONS_KEY))
    metadata = {
        "source_checkpoint": str(pathlib.Path(latest).resolve()),
        "step": step,
        "model_step": int(model.step.numpy()),
        "progress": progress if progress.get("checkpoint") == latest else {},
        "options": ckpt.read_json(train_dir / ckpt.OPTIONS_FILE) if (train_dir / ckpt.OPTIONS_FILE).exists() else {},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return ckpt.export_model(model, config, metadata, out_dir)


# -- CLI --------------------------------------------------------------------------------------
def _configs_from_flags():
    from model.config import get_config
    from model.data import DataConfig

    overrides = {}
    if FLAGS.quant_width is not None:
        overrides["quant_width_first"], overrides["quant_width_last"] = parse_quant_width(FLAGS.quant_width)
    if FLAGS.pframe_quant_width is not None:
        overrides["pframe_quant_width"] = FLAGS.pframe_quant_width
    if FLAGS.flow_quant_width is not None:
        first, last = parse_quant_width(FLAGS.flow_quant_width, "--flow_quant_width")
        overrides["flow_quant_width_first"], overrides["flow_quant_width_last"] = first, last
    if FLAGS.motion_search_radius is not None:
        overrides["motion_search_radius"] = FLAGS.motion_search_radius
    if FLAGS.motion_search_penalty is not None:
        overrides["motion_search_penalty"] = FLAGS.motion_search_penalty
    if FLAGS.motion_search_penalty_top is not None:
        overrides["motion_search_penalty_top"] = FLAGS.motion_search_penalty_top
    if FLAGS.block_motion_upsample is not None:
        overrides["block_motion_upsample"] = FLAGS.block_motion_upsample
    model_config = get_config(FLAGS.config, FLAGS.ablation, **overrides)
    data_config = DataConfig(
        path=FLAGS.data,
        gop=FLAGS.gop,
        crop=parse_crop(FLAGS.crop),
        kind=FLAGS.data_kind,
        downscale=FLAGS.downscale,
        max_stride=FLAGS.max_stride,
        cache_dir=FLAGS.cache_dir or str(pathlib.Path(FLAGS.train_dir) / "frame_cache"),
    )
    for name in ("steps", "batch", "log_every", "keep_checkpoints"):
        if getattr(FLAGS, name) < 1:
            raise ValueError(f"--{name} must be >= 1")
    if FLAGS.warp_loss < 0 or FLAGS.warp_loss_steps < 0 or not math.isfinite(FLAGS.warp_loss):
        raise ValueError("--warp_loss and --warp_loss_steps must be >= 0")
    options = TrainOptions(
        steps=FLAGS.steps,
        batch=FLAGS.batch,
        lr=FLAGS.lr,
        lambda_range=parse_lambda_range(FLAGS.lambda_range),
        distortion=FLAGS.distortion,
        modulate=FLAGS.modulate,
        modulator_step=FLAGS.modulator_step,
        clip_norm=FLAGS.clip_norm,
        warp_loss=FLAGS.warp_loss,
        warp_loss_steps=FLAGS.warp_loss_steps,
        log_every=FLAGS.log_every,
        checkpoint_every_secs=FLAGS.checkpoint_every_secs,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        keep_checkpoints=FLAGS.keep_checkpoints,
        seed=FLAGS.seed,
        precision=FLAGS.precision,
    )
    return model_config, data_config, options


def main(argv) -> int:
    """Runs one command line (argv[0]: the program); returns the exit status (128 + the signal
    when SIGTERM / SIGINT stopped the run after its checkpoint)."""
    return clikit.run(PROG, _main, argv, failures=(ValueError, TrainError), tracebacks=True)


def _main(argv) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)  # before TensorFlow loads: --help and bad flags stay fast
    from model.checkpoints import CheckpointError
    from model.data import DataError

    try:
        return _train()
    except (CheckpointError, DataError) as err:
        raise clikit.Failed(err) from None


def _train() -> int:
    import tensorflow as tf

    from model.cpu import EMULATED_BF16_WARNING, cpu_has_native_bf16
    from model.data import find_clips

    if not FLAGS.train_dir:
        raise clikit.UsageError("--train_dir is required")
    if pathlib.Path(FLAGS.train_dir).exists() and not pathlib.Path(FLAGS.train_dir).is_dir():
        raise clikit.UsageError(f"--train_dir {FLAGS.train_dir} exists and is not a folder")
    if FLAGS.export_to:
        out = export(FLAGS.train_dir, FLAGS.export_to)
        print(f"exported {out}")
        return 0
    if not FLAGS.data:
        raise clikit.UsageError("--data is required")
    model_config, data_config, options = _configs_from_flags()
    clips = find_clips(data_config)
    frames = sum(c.length for c in clips)
    strategy = make_strategy(FLAGS.strategy)
    trainer = Trainer(model_config, data_config, options, FLAGS.train_dir, strategy, FLAGS.init_from, FLAGS.init_scope)
    if (trainer.is_chief and options.precision == "bf16" and cpu_has_native_bf16() is False
            and not tf.config.list_physical_devices("GPU")):
        print(EMULATED_BF16_WARNING, flush=True)
    if trainer.is_chief:
        print(
            f"training {model_config.name} on {len(clips)} clips ({frames} frames) from {data_config.path}; "
            f"GOP {data_config.gop}, crop {data_config.crop[0]}x{data_config.crop[1]}, batch {options.batch} "
            f"over {strategy.num_replicas_in_sync} replica(s), {options.precision} convolutions, "
            f"lambdas {', '.join(f'{x:.2e}' for x in trainer.lambdas)}",
            flush=True,
        )
    result = trainer.train(clips, log=lambda m: print(m, flush=True))
    if result.get("stopped_by"):
        return 128 + int(result["stopped_by"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
