"""Can the flow block learn motion? A diagnostic for the flow path of §2 (not a codec benchmark).

    python -m benchmarks.flow_probe --data=../shared/data/train/video [--model=DIR] [--steps=400]
        [--reinit] [--reference=recon|original] [--quantization=noise|none] [--rate_weight=0]
        [--motion_search_radius=R] [--free_flow] [--cache_dir=runs/frame_cache]

Draws pairs (x_{t-1}, x_t) from training footage (crop 128, 2x area-downscaled, pairs whose frames
differ), then trains ONLY the flow block (analysis, codelayer, synthesis, heads) on
MSE(x_comp, x_t) + rate_weight * flow bpp at level 4 with Adam, and prints, per 50-step window:

  warp     PSNR of x_comp = ScaleSpaceWarp(reference, f_t), the flow block's prediction
  copy     PSNR of the reference itself (zero motion)
  search   PSNR of the reference warped by model/motion.py's block search (radius 6 unless set)
  flow bpp, mean |f| (px) and mean sigma (px) of the decoded flow

`--reference=recon` (default) warps the I-frame codec's reconstruction of x_{t-1}, as the codec
does; `original` warps x_{t-1} itself. `--quantization=none` feeds the latent to the decoder
unquantized. `--free_flow` optimizes a free flow field per pair (one (dx, dy, sigma) per 4x4
block) instead of the network: the warp's own gradient, with nothing to learn but the motion.
Nothing is saved; the model folder is read only. Exit status 2 for a bad command line, 1 for data
or a model that cannot be used.
"""

from __future__ import annotations

import json
import os
import sys

from model import clikit  # first: quiets TensorFlow's C++ log

from absl import flags

PROG = "flow_probe"
FLAGS = flags.FlagValues()
flags.DEFINE_string("data", None, "Training footage (a folder of videos); never the eval set.", flag_values=FLAGS)
clikit.define_model(FLAGS)
flags.DEFINE_integer("steps", 400, "Adam steps.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 8, "Pairs per step.", flag_values=FLAGS)
flags.DEFINE_float("lr", 1e-3, "Adam learning rate (a free field wants ~0.05).", flag_values=FLAGS)
flags.DEFINE_bool("reinit", False, "Re-initialize the flow block (as a fresh model would have it).", flag_values=FLAGS)
flags.DEFINE_enum("reference", "recon", ["recon", "original"], "What the flow warps.", flag_values=FLAGS)
flags.DEFINE_enum("quantization", "noise", ["noise", "none"], "Latent the decoder sees.", flag_values=FLAGS)
flags.DEFINE_float("rate_weight", 0.0, "Weight of the flow bpp in the loss.", flag_values=FLAGS)
flags.DEFINE_integer("motion_search_radius", None, "Override the config's block search (model/motion.py).", flag_values=FLAGS)
flags.DEFINE_bool("free_flow", False, "Optimize a free flow field instead of the network.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 1, "Data sampling seed.", flag_values=FLAGS)
flags.DEFINE_string("cache_dir", None, "Decoded-frame cache shared with model.train (default: none).", flag_values=FLAGS)

LEVEL = 4.0
CROP = 128
WINDOW = 50
SEARCH_RADIUS = 6  # the "search" column's radius when the model has none.


def _psnr(mse):
    import numpy as np

    return float(-10.0 * np.log10(max(float(mse), 1e-10)))


def _pairs(sampler, batch: int):
    import numpy as np

    out = []
    while len(out) < batch:
        pair = sampler.sample()[0].astype(np.float32) / 255.0
        if np.mean((pair[0] - pair[1]) ** 2) > 1e-4:  # frames that differ: static pairs teach nothing
            out.append(pair)
    return np.stack(out)


def probe(data: str, model_dir=None, steps: int = 400, batch: int = 8, lr: float = 1e-3, reinit=False,
          reference="recon", quantization="noise", rate_weight=0.0, motion_search_radius=None,
          free_flow=False, seed: int = 1, cache_dir=None, report=print) -> list:
    """Runs the probe; returns one dict per window (see the module docstring)."""
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from model import data as model_data
    from model.checkpoints import load_exported
    from model.elfvc import ELFVC
    from model.entropy import QuantMode
    from model.motion import block_motion_search, upsample_blocks
    from model.warp import scale_space_warp
    from model.bundle import DEFAULT_DIR, resolve_model

    model, config = load_exported(resolve_model(model_dir) if model_dir else DEFAULT_DIR)  # a folder or a shipped name
    if motion_search_radius is not None:
        config = dataclasses.replace(config, motion_search_radius=motion_search_radius)
        trained = model
        model = ELFVC(config).build_weights()
        for ours, theirs in zip(model.variables, trained.variables):
            ours.assign(theirs)
    if reinit:
        fresh = ELFVC(config).build_weights()
        for ours, theirs in zip(model.flow.trainable_variables, fresh.flow.trainable_variables):
            ours.assign(theirs)
    data_config = model_data.DataConfig(path=data, gop=2, crop=(CROP, CROP), downscale=2, max_stride=2,
                                         cache_dir=cache_dir)
    if os.path.isdir(data):  # (a missing folder is find_clips' one-line error)
        print(f"flow_probe: decoding the clips under {data} once (minutes the first time; cached in {cache_dir or 'memory'})",
              file=sys.stderr, flush=True)
    sampler = model_data.Sampler(model_data.find_clips(data_config, warn=lambda m: None), data_config, config.levels, seed)
    level = tf.fill([batch], LEVEL)
    embedding = model.embed(level)
    radius = config.motion_search_radius or SEARCH_RADIUS
    optimizer = tf.keras.optimizers.Adam(lr)
    free = tf.Variable(tf.zeros([batch, CROP // 4, CROP // 4, 3])) if free_flow else None
    variables = [free] if free_flow else model.flow.trainable_variables

    def references(pair):
        previous, target = pair[:, 0], pair[:, 1]
        _, refs = model.iframe_step(previous, level, QuantMode.ROUND)
        if reference == "original":
            refs.previous = refs.previous2 = previous
        return target, refs

    @tf.function
    def step(pair):
        target, refs = references(pair)
        with tf.GradientTape() as tape:
            if free_flow:
                flow = tf.image.resize(free, [CROP, CROP], "nearest")
                compensated, bits = scale_space_warp(refs.previous, flow), tf.zeros([batch])
            else:
                predicted = model.predict_flow(refs, embedding)
                latent = model.flow.encode_latent(target, refs.previous, predicted, refs.state, embedding, True)
                code = model.flow.codelayer(latent, embedding, model.flow.quant_width(level), QuantMode.NOISE)
                latent_hat = latent if quantization == "none" else code.latent_hat
                flow, _, _, compensated, _ = model.flow.decode(latent_hat, refs.previous, predicted, refs.state, embedding, True)
                bits = code.bits
            warp_mse = tf.reduce_mean((compensated - target) ** 2)
            bpp = tf.reduce_mean(bits) / (CROP * CROP)
            loss = warp_mse + rate_weight * bpp
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        searched = upsample_blocks(block_motion_search(target, refs.previous, radius))
        searched = tf.concat([searched, tf.zeros_like(searched[..., :1])], axis=-1)
        return {
            "warp": warp_mse,
            "copy": tf.reduce_mean((refs.previous - target) ** 2),
            "search": tf.reduce_mean((scale_space_warp(refs.previous, searched) - target) ** 2),
            "bpp": bpp,
            "abs_flow": tf.reduce_mean(tf.abs(flow[..., :2])),
            "sigma": tf.reduce_mean(flow[..., 2]),
        }

    rows, window = [], []
    fixed = tf.constant(_pairs(sampler, batch)) if free_flow else None  # a free field fits one batch
    for i in range(1, steps + 1):
        window.append({k: float(v) for k, v in step(fixed if free_flow else tf.constant(_pairs(sampler, batch))).items()})
        if i % WINDOW == 0 or i == steps:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            row = {"step": i, "warp_psnr": _psnr(mean["warp"]), "copy_psnr": _psnr(mean["copy"]),
                   "search_psnr": _psnr(mean["search"]), "flow_bpp": mean["bpp"],
                   "mean_abs_flow_px": mean["abs_flow"], "mean_sigma_px": mean["sigma"]}
            rows.append(row)
            report(f"step {i:5d}  warp {row['warp_psnr']:6.2f} dB  copy {row['copy_psnr']:6.2f} dB  "
                   f"search {row['search_psnr']:6.2f} dB  flow {row['flow_bpp']:.4f} bpp  "
                   f"|f| {row['mean_abs_flow_px']:.2f} px  sigma {row['mean_sigma_px']:.2f} px")
            window = []
    return rows


def main(argv) -> int:
    from model.checkpoints import CheckpointError
    from model.data import DataError

    return clikit.run(PROG, _main, argv, failures=(DataError, CheckpointError, ValueError, OSError), tracebacks=True)


def _main(argv) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    problem = None
    if not FLAGS.data:
        problem = "--data is required (training footage; never the eval set)"
    elif FLAGS.steps < 1 or FLAGS.batch < 1 or FLAGS.lr <= 0 or FLAGS.rate_weight < 0:
        problem = "--steps and --batch must be >= 1, --lr positive, --rate_weight >= 0"
    elif FLAGS.motion_search_radius is not None and FLAGS.motion_search_radius < 0:
        problem = "--motion_search_radius must be >= 0"
    if problem:
        raise clikit.UsageError(problem)
    rows = probe(FLAGS.data, FLAGS.model, FLAGS.steps, FLAGS.batch, FLAGS.lr, FLAGS.reinit, FLAGS.reference,
                 FLAGS.quantization, FLAGS.rate_weight, FLAGS.motion_search_radius, FLAGS.free_flow, FLAGS.seed,
                 FLAGS.cache_dir)
    print(json.dumps(rows[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
