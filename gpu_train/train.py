"""Trains the PyTorch mirror of ELF-VC (gpu_train/net.py) on a GPU, for a wall-clock budget.

The recipe is model/train.py's (§3.1 eq. 1-3 multi-level loss, §4.1 level random walk, App. D
modulator, Adam, learning rate / 5 at 80% and / 25 at 95% of the run), with the run's length
given in minutes instead of steps because a lent GPU machine is held for a fixed time: the
schedule moves at 80% and 95% of the budget. Data are model/data.py's: every clip decoded once,
area-downscaled, random GOP crops weighted by frames x pixels, temporal stride 1..max_stride,
horizontal flips; the whole set sits on the device as uint8.

Two phases: with --image_frac > 0 the run first trains the I-frame codec alone (GOPs of one
frame) on crops of photos (--photos) and video frames for that fraction of the budget, then
whole GOPs; the GOP phase starts with fresh Adam moments and a --phase_warmup-step linear
learning-rate warm-up (shared moments wrecked the I-frame codec in the first GOP steps). Image-phase
steps do not advance the model's `step` (it counts GOP steps, which
App. C's normalization freeze is measured in); progress.json counts both. With --image_mix W > 0
every GOP step's loss also takes W times the loss of a batch of single-frame crops (--image_mix_batch
of --image_crop, from the I-frame phase's photos and video frames): one loss, one Adam state, so a
run that trains the I-frame codec on GOPs keeps it on photos too.

Throughput (a lent GPU is held for minutes): --precision tf32 (FP32 weights, TF32 matmuls and
convolutions), bf16 (autocast; rates, quantization and the loss stay FP32), fp32, or auto (the
default: tf32 on CUDA; on the CPU bf16 where it has bf16 instructions, AMX or AVX512-BF16, else
fp32: without them bf16 ran 10x slower than fp32, docs/TRAINING.md); channels_last on CUDA and
for bf16 on the CPU (7% more steps/s here: docs/TRAINING.md); --graphs
captures the whole training step (forward, backward, Adam) in a CUDA graph per phase and replays it,
removing the launch overhead of the GOP loop's thousands of small kernels (a capture failure falls
back to eager steps and says so). The log reports the model-FLOP utilization: FLOPs of one step counted once (torch.utils.flop_counter), over the
step time, over the device's dense peak for the precision (--peak_tflops, else a table).

    python -m gpu_train.train --config=CONFIG.json --init=WEIGHTS.npz --data=DIR --out_dir=DIR \\
        --minutes=20 --batch=16 --gop=16 --crop=128 --lambda_range=0.25,0.0026 [--reinit=flow]

Writes OUT_DIR/weights-NN.npz (FP32 shards of at most 15 MiB; gpu_train.weights reads the
folder) every --save_every_secs and at the end, OUT_DIR/progress.json beside them, and one log
line per --log_every steps. With --snapshot_every_secs a checkpoint at least that long after the
last kept one is also kept as OUT_DIR/snapshots/sSTEP/ (its shards, progress.json and config.json):
a run whose end measures worse than its middle can be measured, shipped or continued from there. A SIGTERM saves and stops. Needs torch and numpy; decoding needs
OpenCV (cv2), else imageio-ffmpeg and Pillow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np

from gpu_train.weights import weights_folder  # numpy and model.clikit only (TF-free)
from model.cpu import EMULATED_BF16_WARNING, cpu_has_native_bf16  # TF-free
from model.sampling import area_downscale, level_random_walk  # TF-free (model/__init__ imports nothing)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")

#: Dense peak TFLOP/s by device-name substring and precision (vendor datasheets, SXM parts); the
#: MFU in the log is measured against these. KINDS.md measured 769-798 TFLOP/s bf16 on an H200.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9},
    "H100": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


class TrainError(RuntimeError):
    pass


# -- data -------------------------------------------------------------------------------------
def decode_video(path, downscale: int) -> np.ndarray:
    """All frames as uint8 RGB [N, H/d, W/d, 3] (OpenCV, else imageio-ffmpeg)."""
    path = pathlib.Path(path)
    frames = []
    try:
        import cv2

        cap = cv2.VideoCapture(str(path))
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(area_downscale(bgr[:, :, ::-1], downscale))
        cap.release()
    except ImportError:
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        w, h = meta["size"]
        frames = [area_downscale(np.frombuffer(raw, np.uint8).reshape(h, w, 3), downscale) for raw in reader]
    if not frames:
        raise TrainError(f"{path}: no frames decoded")
    return np.stack(frames)


def _decode_or_error(args):
    path, downscale, min_side = args
    try:
        frames = decode_video(path, downscale)
        # A clip too small for the crop at this downscale is taken at the largest factor that fits.
        if min(frames.shape[1:3]) < min_side and downscale > 1:
            side = min(frames.shape[1:3]) * downscale
            fit = max(1, min(downscale, side // min_side))
            if fit != downscale:
                frames = decode_video(path, fit)
        return frames, None
    except (TrainError, OSError, RuntimeError, ValueError) as e:
        return None, str(e)


def load_clips(root, downscale: int, cache_dir=None, workers: int = 1, min_side: int = 0):
    """[(name, uint8 [N, H, W, 3])] of every video under root, decoded by `workers` processes,
    area-downscaled by `downscale`, or less where that would leave less than `min_side` pixels."""
    root = pathlib.Path(root)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not paths:
        raise TrainError(f"no videos under {root}")
    cached, todo = {}, []
    for path in paths:
        cache = pathlib.Path(cache_dir) / f"{path.stem}-d{downscale}.npy" if cache_dir else None
        if cache is not None and cache.exists():
            cached[path] = np.load(cache)
        else:
            todo.append(path)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo))) as pool:
            results = list(pool.map(_decode_or_error, [(p, downscale, min_side) for p in todo]))
    else:
        results = [_decode_or_error((p, downscale, min_side)) for p in todo]
    clips = []
    decoded = dict(zip(todo, results))
    for path in paths:
        if path in cached:
            clips.append((path.name, cached[path]))
            continue
        frames, error = decoded[path]
        if frames is None:
            print(f"warning: skipping {path.name}: {error}", file=sys.stderr)
            continue
        if cache_dir:
            cache = pathlib.Path(cache_dir) / f"{path.stem}-d{downscale}.npy"
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, frames)
        clips.append((path.name, frames))
    if not clips:
        raise TrainError(f"no readable videos under {root}")
    return clips


def _read_photo(path):
    try:
        import cv2

        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        return np.ascontiguousarray(bgr[:, :, ::-1])
    except ImportError:
        from PIL import Image

        with Image.open(path) as im:
            return np.array(im.convert("RGB"))


def load_photos(root, workers: int = 1):
    """[uint8 [H, W, 3]] of every photo under root (already at training scale: gpu_train.pack)."""
    paths = sorted(p for p in pathlib.Path(root).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not paths:
        raise TrainError(f"no photos under {root}")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            photos = list(pool.map(_read_photo, paths, chunksize=8))
    else:
        photos = [_read_photo(p) for p in paths]
    photos = [p for p in photos if p is not None]
    if not photos:
        raise TrainError(f"no readable photos under {root}")
    return photos


class GpuSampler:
    """model.data.Sampler over clips held on the device; batches of GOP crops and level walks."""

    def __init__(self, clips, gop: int, crop: int, max_stride: int, num_levels: int, device, seed: int):
        import torch

        self.gop, self.crop, self.max_stride, self.num_levels = gop, crop, max_stride, num_levels
        self.clips = [
            (n, (f if torch.is_tensor(f) else torch.from_numpy(f)).to(device))
            for n, f in clips if f.shape[0] >= gop and min(f.shape[1:3]) >= crop
        ]
        if not self.clips:
            raise TrainError(f"no clip has {gop} frames (--gop + --rollout) of at least {crop}x{crop}")
        sizes = np.array([float(f.shape[0] * f.shape[1] * f.shape[2]) for _, f in self.clips])
        self.weights = sizes / sizes.sum()
        self.rng = np.random.default_rng(seed)
        self.device = device

    def level_walk(self, batch: int):
        return level_random_walk(self.rng, batch, self.gop, self.num_levels).astype(np.int64)

    def batch(self, size: int):
        import torch

        rng, span, out = self.rng, self.gop - 1, []
        for index in rng.choice(len(self.clips), size=size, p=self.weights):
            frames = self.clips[index][1]
            n, h, w = frames.shape[:3]
            max_stride = min(self.max_stride, (n - 1) // span) if span else 1
            stride = int(rng.integers(1, max_stride + 1))
            start = int(rng.integers(0, n - span * stride))
            top, left = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
            x = frames[start : start + span * stride + 1 : stride, top : top + self.crop, left : left + self.crop]
            if rng.random() < 0.5:
                x = x.flip(2)
            out.append(x)
        frames = torch.stack(out).permute(0, 1, 4, 2, 3).float().div_(255.0)  # [B, T, 3, h, w]
        return frames, torch.from_numpy(self.level_walk(size)).to(self.device)


class StillSampler:
    """Single-frame crops for the I-frame phase: photos and video frames, each half the time
    (when both exist), every source weighted by its pixels; uniform random levels."""

    def __init__(self, photos, clips, crop: int, num_levels: int, device, seed: int):
        import torch

        self.crop, self.num_levels, self.device = crop, num_levels, device
        self.photos = [torch.from_numpy(p).to(device) for p in photos if min(p.shape[:2]) >= crop]
        self.clips = [torch.from_numpy(f).to(device) for _, f in clips if min(f.shape[1:3]) >= crop]
        if not self.photos and not self.clips:
            raise TrainError(f"no photo or video frame is at least {crop}x{crop} (--image_crop)")
        self.photo_w = np.array([float(p.shape[0] * p.shape[1]) for p in self.photos])
        self.clip_w = np.array([float(f.shape[0] * f.shape[1] * f.shape[2]) for f in self.clips])
        self.rng = np.random.default_rng(seed)

    def _one(self):
        rng = self.rng
        use_photo = bool(self.photos) and (not self.clips or rng.random() < 0.5)
        if use_photo:
            image = self.photos[rng.choice(len(self.photos), p=self.photo_w / self.photo_w.sum())]
        else:
            clip = self.clips[rng.choice(len(self.clips), p=self.clip_w / self.clip_w.sum())]
            image = clip[int(rng.integers(0, clip.shape[0]))]
        h, w = image.shape[:2]
        top, left = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
        x = image[top : top + self.crop, left : left + self.crop]
        return x.flip(1) if rng.random() < 0.5 else x

    def batch(self, size: int):
        import torch

        frames = torch.stack([self._one() for _ in range(size)])[:, None].permute(0, 1, 4, 2, 3).float().div_(255.0)
        levels = self.rng.integers(0, self.num_levels, size=(size, 1)).astype(np.int64)
        return frames, torch.from_numpy(levels).to(self.device)


# -- precision, FLOPs ---------------------------------------------------------------------------
def resolve_precision(requested: str, device_type: str, native_bf16: bool) -> tuple[str, Optional[str]]:
    """--precision as run, and a warning line or None: auto is tf32 on CUDA, and on the CPU bf16
    where the CPU has bf16 instructions, else fp32; bf16 asked for on a CPU without them runs,
    with a warning."""
    if requested == "auto":
        if device_type == "cuda":
            return "tf32", None
        return ("bf16" if native_bf16 else "fp32"), None
    if requested == "bf16" and device_type == "cpu" and not native_bf16:
        return requested, f"{EMULATED_BF16_WARNING} (--precision=auto picks fp32)"
    return requested, None


def set_precision(precision: str):
    """Sets TF32 on or off; returns the autocast dtype (None: no autocast)."""
    import torch

    tf32 = precision in ("tf32", "bf16")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return torch.bfloat16 if precision == "bf16" else None


def peak_tflops(device, precision: str, override: float = 0.0):
    """Dense peak TFLOP/s of `device` at `precision`, or None where unknown (CPU, other GPUs)."""
    import torch

    if override > 0:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_TFLOPS.items():
        if key in name:
            return table[precision]
    return None


# -- several processes (torchrun) ----------------------------------------------------------------
class Replicas:
    """Data parallelism over the processes torchrun starts (WORLD_SIZE > 1), as the Keras trainer
    scales through tf.distribute: the same initial weights everywhere (rank 0's, broadcast), a
    different data stream per rank, the gradients averaged by one all-reduce of their flattened
    concatenation every step (before clipping, so every rank takes the identical Adam step), App.
    C's normalization statistics averaged while they still update, the loss modulator fed every
    rank's distortions, and the schedule (stop, learning rate, phase) decided by rank 0 every
    `sync_every` steps. NCCL on CUDA, gloo on CPU. With one process every method is a no-op."""

    def __init__(self, device_type: str):
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.dist = dist if self.world > 1 else None
        if self.dist is not None and not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_state(self, model) -> None:
        if self.dist is None:
            return
        for tensor in model.state_dict().values():
            self.dist.broadcast(tensor, 0)

    def average_gradients(self, params) -> None:
        import torch

        if self.dist is None:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_norm_statistics(self, model) -> None:
        if self.dist is None:
            return
        for name, buffer in model.named_buffers():
            if name.endswith(("moving_mean", "moving_variance")):
                self.dist.all_reduce(buffer)
                buffer.div_(self.world)

    def gather(self, tensor):
        import torch

        if self.dist is None:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        self.dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def decide(self, frac: float, stop: bool, device):
        """Rank 0's (budget fraction, stop) for everyone."""
        import torch

        if self.dist is None:
            return frac, stop
        t = torch.tensor([frac, 1.0 if stop else 0.0], dtype=torch.float64, device=device)
        self.dist.broadcast(t, 0)
        return float(t[0]), bool(t[1] > 0)

    def mean(self, value: float, device) -> float:
        """The mean of `value` over every process (collective: every rank calls it at the same point)."""
        import torch

        if self.dist is None:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        self.dist.all_reduce(t)
        return float(t[0]) / self.world

    def max_weight_difference(self, model) -> float:
        """The largest |weight - rank 0's weight| over every parameter and buffer, on every rank."""
        import torch

        if self.dist is None:
            return 0.0
        worst = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
        for tensor in model.state_dict().values():
            reference = tensor.clone()
            self.dist.broadcast(reference, 0)
            if tensor.is_floating_point():
                worst = torch.maximum(worst, (tensor - reference).abs().max().double())
        self.dist.all_reduce(worst, op=self.dist.ReduceOp.MAX)
        return float(worst)

    def close(self) -> None:
        if self.dist is not None and self.dist.is_initialized():
            self.dist.destroy_process_group()


# -- one training step ----------------------------------------------------------------------------
class Stepper:
    """The loss and one optimizer step of model/train.py's recipe, eager or replayed from a CUDA graph.

    Outputs are device tensors (no host sync per step): loss, dist [B, T], bpp [B, T], warp [B, T-1],
    and the --image_mix stills' dist and bpp [S, 1] (S = 0 without stills).
    """

    def __init__(self, model, lam, modulator, args, device, autocast_dtype, capturable: bool, opt=None,
                 mix: float = 0.0):
        import torch

        self.model, self.lam, self.modulator, self.args, self.device = model, lam, modulator, args, device
        self.mix = float(mix)  # the weight of a step's stills loss (--image_mix), when a step has stills
        self.autocast_dtype = autocast_dtype
        self.params = [q for q in model.parameters() if q.requires_grad]
        if opt is None:  # another phase's Stepper may share its optimizer (one Adam state per run)
            lr = torch.tensor(args.lr, device=device) if capturable else args.lr
            opt = torch.optim.Adam(self.params, lr=lr, betas=(0.9, 0.999), eps=1e-7, capturable=capturable)
        self.opt = opt
        self.graphs = {}  # key -> (graph, static frames, static levels, static outputs)
        self.graph_failed = None  # the error that turned graphs off, if any
        self.warp_weight = torch.zeros((), device=device)
        self.replicas = None  # a Replicas with several processes: gradients are averaged

    def set_lr(self, lr: float):
        for g in self.opt.param_groups:
            if hasattr(g["lr"], "fill_"):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr

    def restart_optimizer(self):
        """Zeroes Adam's moments and step counts in place (a captured CUDA graph reads the same
        tensors): the next step is Adam's first again."""
        for state in self.opt.state.values():
            for key, value in state.items():
                if hasattr(value, "zero_"):
                    value.zero_()
                else:  # a non-capturable Adam may keep `step` as a number
                    state[key] = 0.0

    def set_warp_weight(self, weight: float):
        self.warp_weight.fill_(weight)

    def _autocast(self):
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # No cast cache: a cached bf16 weight copy would be stale inside a replayed CUDA graph.
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=False)

    def roll_out(self, frames, levels, frames_before: int):
        """The --rollout prefix: frames[:, :frames_before + 1] coded without gradients (an I-frame,
        then P-frames, as training codes them); returns the --gop frames that go on from its last
        frame, their levels and the decoder's carry (None when frames_before is 0: a plain GOP)."""
        import torch

        gop = self.args.gop
        if frames_before == 0:
            return frames[:, :gop], levels[:, :gop], None
        with torch.no_grad(), self._autocast():
            out = self.model.forward_gop(frames[:, : frames_before + 1], levels[:, : frames_before + 1].float(),
                                         "noise", training=True)
        span = slice(frames_before, frames_before + gop)
        return frames[:, span], levels[:, span], out.carry.detached()

    def _coded(self, frames, levels, carry=None):
        """The GOPs coded in training mode: (output, dist [B, T], bpp [B, T])."""
        with self._autocast():
            out = self.model.forward_gop(frames, levels.float(), "noise", training=True, carry=carry)
        dist = (frames - out.reconstructions.float()).pow(2).mean(dim=(2, 3, 4))
        return out, dist, out.bits.float() / (frames.shape[3] * frames.shape[4])

    def _loss(self, frames, levels, carry=None, stills=None):
        import torch

        from gpu_train.net import multilevel_loss

        out, dist, bpp = self._coded(frames, levels, carry)
        loss = multilevel_loss(dist, bpp, levels, self.modulator.mu, self.lam)
        if out.compensated:
            warp = torch.stack([(frames[:, t + 1] - c.float()).pow(2).mean(dim=(1, 2, 3)) for t, c in enumerate(out.compensated)], 1)
            loss = loss + self.warp_weight * warp.sum() / (frames.shape[0] * frames.shape[1])
        else:
            warp = torch.zeros(frames.shape[0], 0, device=frames.device)
        if stills is None:
            s_dist = s_bpp = torch.zeros(0, 1, device=frames.device)
        else:  # --image_mix: the I-frame phase's loss on a batch of single frames (mu 1: no P-frames)
            s_frames, s_levels = stills
            _, s_dist, s_bpp = self._coded(s_frames, s_levels)
            loss = loss + self.mix * multilevel_loss(s_dist, s_bpp, s_levels, torch.ones_like(self.modulator.mu[:1]), self.lam)
        return loss, dist, bpp, warp, s_dist, s_bpp

    def _train(self, frames, levels, carry=None, stills=None):
        import torch

        outputs = self._loss(frames, levels, carry, stills)
        outputs[0].backward()
        if self.replicas is not None:
            self.replicas.average_gradients(self.params)
        if self.args.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.args.clip_norm, foreach=True)
        self.opt.step()
        return tuple(o.detach() for o in outputs)

    def eager(self, frames, levels, carry=None, stills=None):
        self.opt.zero_grad(set_to_none=True)
        return self._train(frames, levels, carry, stills)

    def graphed(self, key, frames, levels, warmup: int = 3, stills=None):
        """Replays the step captured for `key` (capturing it first, after `warmup` eager steps on a
        side stream); returns None, once and for all, if capture fails. A key's steps all have
        stills (--image_mix) or none."""
        import torch

        if self.graph_failed is not None:
            return None
        if key not in self.graphs:
            try:
                static_frames, static_levels = frames.clone(), levels.clone()
                static_stills = None if stills is None else tuple(s.clone() for s in stills)
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(warmup):
                        self.eager(static_frames, static_levels, stills=static_stills)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                self.opt.zero_grad(set_to_none=True)
                with torch.cuda.graph(graph):
                    outputs = self._train(static_frames, static_levels, stills=static_stills)
                self.graphs[key] = (graph, static_frames, static_levels, static_stills, outputs)
            except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly
                self.graph_failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                self.graphs.clear()
                self.opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                return None
        graph, static_frames, static_levels, static_stills, outputs = self.graphs[key]
        static_frames.copy_(frames)
        static_levels.copy_(levels)
        for static, given in zip(static_stills or (), stills or ()):
            static.copy_(given)
        graph.replay()
        return outputs


def count_step_flops(stepper, frames, levels, carry=None, stills=None):
    """(FLOPs, outputs) of one training step (forward and backward), counted by
    torch.utils.flop_counter on one real step (which also trains: it is a step like any other,
    logged, though not timed). With --rollout, the trained frames only: the rollout's forward
    passes vary in depth and are not counted (nor in MFU). With --image_mix, the stills' frames too."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        outputs = stepper.eager(frames, levels, carry, stills)
    return float(counter.get_total_flops()), outputs


# -- training ---------------------------------------------------------------------------------
def parse_pair(text: str, flag: str):
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise TrainError(f"{flag}: expected two comma-separated numbers, got {text!r}") from None
    if a <= 0 or b <= 0:
        raise TrainError(f"{flag}: values must be positive, got {text!r}")
    return a, b


def reinitialize(model, prefixes, seed: int):
    """Fresh initial values (gpu_train.net's Keras-like init) for every parameter under `prefixes`.

    Channel-normalization statistics are kept: they describe the block's inputs, not its weights.
    """
    import torch

    from gpu_train.net import ELFVC

    torch.manual_seed(seed)
    fresh = ELFVC(model.c).state_dict()
    state = model.state_dict()
    names = []
    for key in state:
        if any(key.startswith(p + ".") for p in prefixes) and key.rsplit(".", 1)[-1] not in ("moving_mean", "moving_variance", "num_updates"):
            state[key] = fresh[key].to(state[key].device)
            names.append(key)
    if prefixes and not names:
        raise TrainError(f"--reinit {','.join(prefixes)}: no such parameters")
    model.load_state_dict(state)
    return names


def freeze_parameters(model, prefixes):
    """Turns off requires_grad of every parameter under `prefixes` (the Stepper's optimizer then
    leaves them alone); returns their names. Normalization statistics freeze on their own
    schedule (norm_freeze_steps)."""
    names = []
    for prefix in prefixes:
        under = [(n, q) for n, q in model.named_parameters() if n.startswith(prefix + ".")]
        if not under:
            raise TrainError(f"--freeze {','.join(prefixes)}: no parameters under {prefix!r}")
        for name, param in under:
            param.requires_grad_(False)
            names.append(name)
    if all(not q.requires_grad for q in model.parameters()):
        raise TrainError(f"--freeze {','.join(prefixes)}: that leaves nothing to train")
    return names


def rollout_depth(rng: np.random.Generator, rollout: int, frac: float = -1.0) -> int:
    """The depth k of one GOP step's --rollout: uniform in 0..rollout (frac -1), else 1..rollout
    with probability frac and 0 (a plain GOP) otherwise."""
    if frac < 0:
        return int(rng.integers(0, rollout + 1))
    return int(rng.integers(1, rollout + 1)) if rng.random() < frac else 0


def check_args(args) -> None:
    """Rejects values the model or the loop cannot use, naming the flag."""
    if args.minutes <= 0:
        raise TrainError(f"--minutes must be positive, got {args.minutes:g}")
    if args.image_frac > 0 and "iframe" in args.freeze.split(","):
        raise TrainError("--freeze=iframe leaves the I-frame phase nothing to train: pass --image_frac=0")
    if not args.image_mix >= 0:  # NaN too
        raise TrainError(f"--image_mix must be >= 0 (0: off), got {args.image_mix:g}")
    if args.image_mix > 0 and "iframe" in args.freeze.split(","):
        raise TrainError("--freeze=iframe leaves --image_mix's stills nothing to train: pass --image_mix=0")
    if args.max_steps < 0:
        raise TrainError(f"--max_steps must be >= 0 (0: no step budget), got {args.max_steps}")
    if not args.snapshot_every_secs >= 0:  # NaN too
        raise TrainError(f"--snapshot_every_secs must be >= 0 (0: off), got {args.snapshot_every_secs:g}")
    for flag in ("batch", "gop", "downscale", "max_stride", "log_every", "image_batch", "image_mix_batch", "workers"):
        if getattr(args, flag) < 1:
            raise TrainError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    for flag in ("crop", "image_crop"):
        value = getattr(args, flag)
        if value < 64 or value % 64:
            raise TrainError(f"--{flag} must be a multiple of 64 (the model's frame multiple), got {value}")
    if args.lr <= 0 or args.warp_loss < 0 or args.clip_norm < 0:
        raise TrainError("--lr must be positive, --warp_loss and --clip_norm non-negative")
    if not (args.diverge_factor == 0 or args.diverge_factor > 1) or args.max_rollbacks < 0:
        raise TrainError("--diverge_factor must be 0 (off) or > 1, --max_rollbacks non-negative")
    if not 0 <= args.image_frac < 1:
        raise TrainError(f"--image_frac must be in [0, 1), got {args.image_frac:g}")
    if args.image_frac > 0 and args.gop < 2:
        raise TrainError("--image_frac needs --gop >= 2 (the image phase already trains single frames)")
    if args.graphs and args.device == "cpu":
        raise TrainError("--graphs needs a CUDA device")
    if args.rollout < 0 or (args.rollout and (args.graphs or args.gop < 2)):
        raise TrainError("--rollout must be >= 0, with --gop >= 2 and without --graphs (its GOPs vary in length)")
    if args.rollout_frac != -1.0 and not (args.rollout and 0 <= args.rollout_frac <= 1):
        raise TrainError(f"--rollout_frac must be in [0, 1] (or -1), with --rollout, got {args.rollout_frac:g}")
    from model.config import config_names, parse_lambda_range  # TF-free

    if not pathlib.Path(args.config).exists() and args.config not in config_names():
        raise TrainError(f"--config: {args.config}: no such file, nor a config name ({', '.join(config_names())})")
    if args.init and not pathlib.Path(args.init.split(",")[0]).exists():
        raise TrainError(f"--init: {args.init}: no such file")
    try:  # a name (low, high) as the Keras trainer takes it; recorded as its two numbers
        args.lambda_range = ",".join(repr(v) for v in parse_lambda_range(args.lambda_range))
    except ValueError as e:
        raise TrainError(str(e)) from None
    if args.precision == "tf32" and args.device == "cpu":
        raise TrainError("--precision=tf32 is CUDA's (TF32 tensor cores): on the CPU use fp32, bf16 or auto")
    out = pathlib.Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out_dir: {out} exists and is not a folder")
    held = sorted(p.name for p in out.glob("weights-*.npz")) + [p.name for p in out.glob("progress.json")] if out.is_dir() else []
    if held:
        raise TrainError(f"--out_dir: {out} already holds a run ({', '.join(held[:3])}); this trainer does not resume "
                         f"in place: continue from it with --init={out} and a new --out_dir, or remove it")
    if args.photos and not pathlib.Path(args.photos).is_dir():
        raise TrainError(f"--photos: {args.photos}: no such folder")


def build_parser() -> argparse.ArgumentParser:
    from model.clikit import DefaultsHelpFormatter  # TF-free

    p = argparse.ArgumentParser(prog="python -m gpu_train.train", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--config", required=True,
                   help="model config: a .json (a shipped folder's config.json), or a config name (small, base, "
                        "paper): the --init weights' own config where it has that name, else model/config.py's recipe")
    p.add_argument("--init", help="initial weights: an .npz, comma-separated shards, or a folder of shards")
    p.add_argument("--reinit", default="", help="comma list of parameter prefixes to re-initialize, e.g. flow")
    p.add_argument("--freeze", default="",
                   help="comma list of parameter prefixes left untrained, e.g. iframe (train the P path alone: no "
                        "gradients, no Adam state, no weight change under them)")
    p.add_argument("--data", required=True, help="folder of videos (searched recursively)")
    p.add_argument("--photos", default="", help="folder of photos for the I-frame phase")
    p.add_argument("--cache_dir", help="a folder that keeps the decoded clips (.npy) for the next run (default: none, decoded each run)")
    p.add_argument("--out_dir", required=True, help="new folder for the weight shards, progress.json and snapshots")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget, data loading excluded")
    p.add_argument("--max_steps", type=int, default=0,
                   help="a step budget (I-frame and GOP steps together) that ends the run if it comes before --minutes; "
                        "the phases and the lr schedule then follow steps (0: time only)")
    p.add_argument("--batch", type=int, default=16, help="GOPs per step")
    p.add_argument("--gop", type=int, default=16, help="frames per trained GOP (an I-frame, then P-frames)")
    p.add_argument("--rollout", type=int, default=0,
                   help="expose the P-frames to a long GOP's drift: each GOP step draws a depth k in 0..N; for k > 0 it "
                        "first codes frames 0..k without gradients (an I-frame, then k P-frames) and trains the --gop frames "
                        "from frame k on, frame k being the rollout's (its reconstruction and bits, untrained, count in the "
                        "log's I-frame columns); k = 0 is a plain GOP, so the I-frame trains on 1/(N+1) of the steps. The "
                        "loss modulator learns from plain GOPs only; MFU counts the trained frames only (0: off; eager "
                        "steps only, no --graphs)")
    p.add_argument("--rollout_frac", type=float, default=-1.0,
                   help="with --rollout N: the fraction of GOP steps that roll out, each to a depth uniform in 1..N, "
                        "the rest plain GOPs (most steps stay cheap plain GOPs, some see deep references; -1: every "
                        "depth 0..N equally likely, k = 0 included)")
    p.add_argument("--crop", type=int, default=128, help="side of the square GOP crops (a multiple of 64)")
    p.add_argument("--image_frac", type=float, default=0.0, help="fraction of the budget spent on the I-frame phase")
    p.add_argument("--image_batch", type=int, default=32, help="crops per step of the I-frame phase")
    p.add_argument("--image_crop", type=int, default=256, help="side of the I-frame phase's (and --image_mix's) crops")
    p.add_argument("--image_mix", type=float, default=0.0,
                   help="in the GOP phase, add this weight times the loss of --image_mix_batch single-frame crops "
                        "(--image_crop, from --photos and video frames, as the I-frame phase draws them) to every step's "
                        "loss: the I-frame codec trains for the P path without drifting off photos (0: off)")
    p.add_argument("--image_mix_batch", type=int, default=4, help="single-frame crops per GOP step with --image_mix")
    p.add_argument("--downscale", type=int, default=2, help="videos are area-downscaled by this factor once, at load")
    p.add_argument("--max_stride", type=int, default=2, help="GOPs take every k-th frame, k uniform in 1..this")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (/5 at 80%% and /25 at 95%% of the run)")
    p.add_argument("--phase_warmup", type=int, default=200,
                   help="steps of linear learning-rate warm-up after a phase change, which also restarts Adam's moments "
                        "(0: neither)")
    p.add_argument("--lambda_range", default="0.25,0.0026",
                   help="rate weights of the lowest and the top level: FIRST,LAST or a name (low, high) as model.train takes")
    p.add_argument("--warp_loss", type=float, default=0.0, help="weight of the warped-reference loss (0: off)")
    p.add_argument("--warp_loss_frac", type=float, default=0.0, help="fraction of the budget the warp loss is on (0: all)")
    p.add_argument("--clip_norm", type=float, default=0.0, help="clip the gradient's global norm to this (0: off)")
    p.add_argument("--diverge_factor", type=float, default=20.0,
                   help="a log window whose loss is non-finite or this many times the median of the phase's last 10 "
                        "windows is a divergence: the weights roll back to the last checkpoint, Adam restarts and the "
                        "lr halves (0: off)")
    p.add_argument("--max_rollbacks", type=int, default=3,
                   help="divergences survived by rolling back; the next one ends the run with the last good weights saved")
    p.add_argument("--precision", choices=("auto", "tf32", "bf16", "fp32"), default="auto",
                   help="auto: tf32 on CUDA; on the CPU bf16 where it has bf16 instructions (AMX, AVX512-BF16), "
                        "else fp32")
    p.add_argument("--graphs", action="store_true", help="capture the training step in CUDA graphs (CUDA only)")
    p.add_argument("--channels_last", type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                   help="convolutions in channels_last layout (default: on for CUDA, and on the CPU with "
                   "--precision=bf16, measured faster there: docs/TRAINING.md)")
    p.add_argument("--peak_tflops", type=float, default=0.0, help="device peak for the MFU (0: from the table)")
    p.add_argument("--workers", type=int, default=1, help="processes decoding the data")
    p.add_argument("--seed", type=int, default=0, help="data order, crops and levels")
    p.add_argument("--log_every", type=int, default=50, help="steps per log line")
    p.add_argument("--save_every_secs", type=float, default=120, help="seconds between checkpoints into --out_dir")
    p.add_argument("--snapshot_every_secs", type=float, default=0.0,
                   help="also keep a checkpoint at least this long after the last kept one in OUT_DIR/snapshots/sSTEP/ "
                        "(0: off; the last checkpoint alone is kept)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        check_args(args)
        return train(args)
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def is_divergent(loss: float, previous, factor: float) -> bool:
    """A window's mean loss diverged: non-finite, or (with at least 3 earlier windows of the phase)
    more than `factor` times the median of the last 10 (factor 0: only non-finite counts)."""
    if not math.isfinite(loss):
        return True
    recent = sorted(previous[-10:])
    if factor <= 0 or len(recent) < 3:
        return False
    return loss > factor * recent[len(recent) // 2]


class Run:
    """One training run's state: model, stepper, log window and checkpoints.

    It keeps a host copy of the weights at the last checkpoint (the run's initial weights before
    the first): a divergence (`is_divergent`) rolls the model back to it instead of training on,
    or saving, exploded weights.
    """

    def __init__(self, args, model, stepper, device, num_levels, out_dir, flops_peak):
        import torch

        self.args, self.model, self.stepper, self.device = args, model, stepper, device
        self.num_levels, self.out_dir, self.peak = num_levels, out_dir, flops_peak
        # The config itself, not only --config's path (a GPU machine's /tmp, or a file that changes
        # later): what the weights were trained with, for config_beside and after_campaign.sh.
        self.config = read_config(args.config, getattr(args, "init", None)) if getattr(args, "config", None) else None
        self.start = time.time()
        self.last_snapshot = self.start
        self.budget = args.minutes * 60.0
        self.step0 = int(model.step)
        self.image_steps = 0
        self.gop_steps = 0
        self.flops = {}  # phase -> FLOPs per step
        self.history = []
        self.torch = torch
        self.quiet = False  # set on every process but rank 0 of several
        self.losses = {}  # phase -> mean loss of every healthy log window
        self.rollbacks = []  # {"model_step", "to_step", "loss", "lr_scale"} of every divergence survived
        self.lr_scale = 1.0
        self.replicas = None  # a Replicas of several processes: divergence is judged on their mean loss
        self.keep_good_state()
        self.reset_window()

    def keep_good_state(self):
        self.good_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def window_loss(self) -> float:
        """This process's mean loss over the current window."""
        return float(self.window["loss"]) / max(self.window["n"], 1)

    def healthy(self, phase: str, loss: float) -> bool:
        return not is_divergent(loss, self.losses.get(phase, []), self.args.diverge_factor)

    def roll_back(self, phase: str, loss: float):
        """Restores the last checkpoint's weights in place (captured CUDA graphs keep their
        tensors), restarts Adam's moments and halves the lr; TrainError after --max_rollbacks, with
        the good weights saved first."""
        model = self.model
        step = int(model.step)
        model.load_state_dict(self.good_state)
        model.step_int = int(model.step)
        self.stepper.restart_optimizer()
        self.reset_window()
        if len(self.rollbacks) >= self.args.max_rollbacks:
            self.save(final=True, extra={"diverged_at": step})
            raise TrainError(
                f"the loss diverged at model step {step} ({phase} phase, window loss {loss:.4g}) after "
                f"{len(self.rollbacks)} rollbacks: saved the last good weights (model step {int(model.step)}) and stopped"
            )
        self.lr_scale *= 0.5
        self.rollbacks.append({"model_step": step, "to_step": int(model.step), "loss": loss, "lr_scale": self.lr_scale})
        print(f"warning: the loss diverged at model step {step} ({phase} phase, window loss {loss:.4g}): rolled back to "
              f"model step {int(model.step)}, restarted Adam, lr x{self.lr_scale:g}", flush=True)

    def reset_window(self):
        torch, L = self.torch, self.num_levels
        z = lambda *s: torch.zeros(*s, device=self.device)  # noqa: E731
        self.window = {"n": 0, "untimed": 0, "loss": z(()), "mse": z(3, L), "bpp": z(3, L), "count": z(3, L),
                       "warp": z(()), "warp_n": 0}
        self.window_start = time.time()

    def accumulate(self, outputs, levels, still_levels=None, timed=True):
        """Adds a step's outputs (Stepper's) to the window: rows I-frames, P-frames, --image_mix stills.
        An untimed step (the FLOP count's, the first of its window) counts in the losses, not in
        the throughput: the window's clock starts after it."""
        loss, dist, bpp, warp, s_dist, s_bpp = outputs
        w = self.window
        if not timed:
            w["untimed"] += 1
            self.window_start = time.time()
        w["n"] += 1
        w["loss"] += loss
        self._add(0, dist[:, :1], bpp[:, :1], levels[:, :1])
        self._add(1, dist[:, 1:], bpp[:, 1:], levels[:, 1:])
        if still_levels is not None:
            self._add(2, s_dist, s_bpp, still_levels)
        if warp.numel():
            w["warp"] += warp.mean()
            w["warp_n"] += 1

    def _add(self, kind: int, dist, bpp, levels):
        if dist.numel():
            w = self.window
            onehot = self.torch.nn.functional.one_hot(levels, self.num_levels).float()  # [B, T, L]
            w["mse"][kind] += (onehot * dist[..., None]).sum((0, 1))
            w["bpp"][kind] += (onehot * bpp[..., None]).sum((0, 1))
            w["count"][kind] += onehot.sum((0, 1))

    def log(self, phase: str, frames_per_step: int, pixels: int, lr: float, frac: float):
        """Prints and records the window; returns False (recording nothing) if its loss diverged."""
        w = self.window
        n = w["n"]
        mean_loss = self.window_loss()  # this process's (each sees its own data)
        # Every process logs at the same step, so all judge divergence on the same mean over them.
        shared = mean_loss if self.replicas is None else self.replicas.mean(mean_loss, self.device)
        if not self.healthy(phase, shared):
            return False
        self.losses.setdefault(phase, []).append(shared)
        dt = time.time() - self.window_start
        timed = n - w["untimed"]
        sps = timed / dt if timed > 0 and dt > 0 else None  # None: the window's one step was the FLOP count's
        count = w["count"].clamp(min=1)
        psnr = (-10 * self.torch.log10(w["mse"] / count)).cpu().numpy()
        rate = (w["bpp"] / count).cpu().numpy()
        seen = (w["count"] > 0).cpu().numpy()
        flops = self.flops.get(phase)
        tflops = flops * sps / 1e12 if (flops and sps) else None
        mfu = tflops / self.peak if (tflops and self.peak) else None
        record = {
            "phase": phase, "model_step": int(self.model.step), "image_steps": self.image_steps, "gop_steps": self.gop_steps,
            "elapsed_s": round(time.time() - self.start, 1), "budget_frac": round(frac, 3), "lr": lr,
            "steps_per_s": None if sps is None else round(sps, 3),
            "frames_per_s": None if sps is None else round(sps * frames_per_step, 1),
            "megapixels_per_s": None if sps is None else round(sps * frames_per_step * pixels / 1e6, 2),
            "tflops": None if tflops is None else round(tflops, 2), "mfu": None if mfu is None else round(mfu, 4),
            "loss": round(mean_loss, 6),
            "i_psnr": [round(float(v), 2) if s else None for v, s in zip(psnr[0], seen[0])],
            "i_bpp": [round(float(v), 4) if s else None for v, s in zip(rate[0], seen[0])],
            "p_psnr": [round(float(v), 2) if s else None for v, s in zip(psnr[1], seen[1])],
            "p_bpp": [round(float(v), 4) if s else None for v, s in zip(rate[1], seen[1])],
            "still_psnr": [round(float(v), 2) if s else None for v, s in zip(psnr[2], seen[2])],
            "still_bpp": [round(float(v), 4) if s else None for v, s in zip(rate[2], seen[2])],
            "warp_psnr": round(float(-10 * math.log10(float(w["warp"]) / w["warp_n"])), 2) if w["warp_n"] else None,
        }
        self.history.append(record)
        if self.quiet:
            self.reset_window()
            return True
        fmt = lambda xs: " ".join("-" if v is None else f"{v:g}" for v in xs)  # noqa: E731
        util = f", {tflops:.1f} TFLOP/s" if tflops else ""
        util += f", MFU {100 * mfu:.1f}%" if mfu else ""
        speed = "not timed (the FLOP count's step)" if sps is None else f"{sps:.2f} steps/s, {record['frames_per_s']:g} frames/s{util}"
        print(
            f"[{phase}] step {record['model_step']} (image {self.image_steps}, gop {self.gop_steps}; {speed}; "
            f"{100 * frac:.0f}% of budget, lr {lr:.1e}) loss {mean_loss:.5f}\n"
            f"    I dB by level: {fmt(record['i_psnr'])} | I bpp: {fmt(record['i_bpp'])}\n"
            f"    P dB by level: {fmt(record['p_psnr'])} | P bpp: {fmt(record['p_bpp'])}"
            + (f" | warp {record['warp_psnr']} dB" if record["warp_psnr"] is not None else "")
            + (f"\n    stills (--image_mix) dB by level: {fmt(record['still_psnr'])} | bpp: {fmt(record['still_bpp'])}"
               if seen[2].any() else ""),
            flush=True,
        )
        self.reset_window()
        return True

    def save(self, final=False, extra=None):
        from gpu_train.weights import save_npz_shards

        files = save_npz_shards(self.model, self.out_dir, "weights")
        progress = {
            "model_step": int(self.model.step), "steps_here": int(self.model.step) - self.step0,
            "image_steps": self.image_steps, "gop_steps": self.gop_steps,
            "elapsed_s": round(time.time() - self.start, 1), "final": final, "weights": [f.name for f in files],
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),  # training.json's date for the run
            "mu": self.stepper.modulator.mu.cpu().numpy().round(3).tolist(), "flops_per_step": self.flops,
            "graphs": bool(self.args.graphs) and self.stepper.graph_failed is None, "graph_error": self.stepper.graph_failed,
            "args": vars(self.args), "config": self.config, "log": self.history, "rollbacks": self.rollbacks,
        }
        if extra:
            progress.update(extra)
        tmp = self.out_dir / ".progress.json.tmp"
        tmp.write_text(json.dumps(progress, indent=1))
        tmp.replace(self.out_dir / "progress.json")
        every = getattr(self.args, "snapshot_every_secs", 0.0)
        if every > 0 and time.time() - self.last_snapshot >= every:
            self.snapshot(progress)
        self.keep_good_state()

    def snapshot(self, progress: dict) -> pathlib.Path:
        """Keeps the checkpoint just saved as OUT_DIR/snapshots/sSTEP/ (shards, progress.json and
        config.json: gpu_train.weights, config_beside and scripts/ship_check.sh read the folder);
        written beside and renamed into place, so a folder there is complete."""
        import shutil

        root = self.out_dir / "snapshots"
        final = root / f"s{int(self.model.step)}"
        partial = root / f".s{int(self.model.step)}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in progress["weights"]:
            shutil.copy2(self.out_dir / name, partial / name)
        (partial / "progress.json").write_text(json.dumps(progress, indent=1))
        if self.config is not None:
            (partial / "config.json").write_text(json.dumps(self.config, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        partial.replace(final)
        self.last_snapshot = time.time()
        return final


def _read_json(path) -> Optional[dict]:
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data else None


def read_config(spec: str, init: Optional[str] = None) -> dict:
    """--config: a config .json, or a config name (model/config.py): the config of the --init
    weights (`config_beside`) where it has that name, as gpu_train.campaign resolves one (the
    shipped `base` differs from its recipe), else the named recipe."""
    path = pathlib.Path(spec)
    if path.exists():
        return json.loads(path.read_text())
    from model.config import get_config  # TF-free

    theirs, _ = config_beside(init) if init else (None, None)
    if theirs is not None and theirs.get("name") == spec:
        return theirs
    return get_config(spec).to_dict()


def config_beside(init: str):
    """(config, the file it came from) of the weights at `init` (an .npz, comma-separated shards
    or a folder of shards): the config.json beside them, else the config a training run recorded
    in the progress.json beside them, else (a run from before it recorded one) the file its
    --config named, where that still exists; (None, None) when none is there or readable."""
    folder = weights_folder(init)
    config = _read_json(folder / "config.json")
    if config is not None:
        return config, folder / "config.json"
    progress = _read_json(folder / "progress.json") or {}
    if isinstance(progress.get("config"), dict) and progress["config"]:
        return progress["config"], folder / "progress.json"
    named = (progress.get("args") or {}).get("config")
    config = _read_json(named) if named else None
    return (config, pathlib.Path(named)) if config is not None else (None, None)


def config_differences(config: dict, init: str) -> dict:
    """{field: (config's value, the init weights' value)} for the fields in which `config` differs
    from the config of the weights `init` (`config_beside`); {} when it is unknown. Weight-free
    fields (block_motion_upsample, the motion search) load silently under either value, yet the
    flow decoder is fitted to its own: a switch is worth a warning (it may be meant, as when a run
    first trains the bilinear block motion)."""
    from model.config import ModelConfig  # TF-free

    theirs, _ = config_beside(init)
    if theirs is None:
        return {}
    try:  # through the dataclass, so that a field left out and its default compare equal
        ours, theirs = (ModelConfig.from_dict(c).to_dict() for c in (config, theirs))
    except (ValueError, TypeError):
        return {}
    return {k: (ours[k], theirs[k]) for k in sorted(ours) if k != "name" and ours[k] != theirs[k]}


def default_channels_last(device, precision: str) -> bool:
    """channels_last unless --channels_last says otherwise: on CUDA, and for bf16 on the CPU (the
    shipped base's P path, batch 4 x GOP 4 x 128^2: 1.04 against 0.97 steps/s on 2 cores, session
    34; the I-frame phase 6% in session 15). FP32 on the CPU stays in the plain layout (unmeasured)."""
    return device.type == "cuda" or (device.type == "cpu" and precision == "bf16")


def build_model(args, device):
    """The mirror with its initial weights, on `device`."""
    from gpu_train.net import ELFVC
    from gpu_train.weights import WeightsError, load_npz

    config = read_config(args.config, args.init)
    model = ELFVC(config)
    if args.init:
        try:
            load_npz(model, args.init)
        except WeightsError as e:
            raise TrainError(f"--init: {e}") from None
        for field, (ours, theirs) in config_differences(config, args.init).items():
            print(f"warning: --init's weights were trained with {field}={theirs!r} (the config beside them), "
                  f"--config says {ours!r}", file=sys.stderr, flush=True)
    reinit = [s for s in args.reinit.split(",") if s]
    if reinit:
        names = reinitialize(model, reinit, args.seed + 1)
        print(f"re-initialized {len(names)} tensors under {','.join(reinit)}", flush=True)
    freeze = [s for s in args.freeze.split(",") if s]
    if freeze:
        names = freeze_parameters(model, freeze)
        print(f"froze {len(names)} tensors under {','.join(freeze)}", flush=True)
    model.to(device)
    model.train()
    model.step_int = int(model.step)
    return model


def load_data(args, num_levels, device):
    t0 = time.time()
    clips = load_clips(args.data, args.downscale, args.cache_dir, args.workers, min_side=args.crop)
    photos = load_photos(args.photos, args.workers) if args.photos else []
    sampler = GpuSampler(clips, args.gop + args.rollout, args.crop, args.max_stride, num_levels, device, args.seed)
    wanted = args.image_frac > 0 or args.image_mix > 0
    stills = StillSampler(photos, clips, args.image_crop, num_levels, device, args.seed + 7) if wanted else None
    frames = sum(f.shape[0] for _, f in sampler.clips)
    left_out = len(clips) - len(sampler.clips)
    note = f" ({left_out} shorter than {sampler.gop} frames or smaller than the crop left out)" if left_out else ""
    print(f"{len(sampler.clips)} clips{note}, {frames} frames, {len(photos)} photos loaded in {time.time() - t0:.0f}s", flush=True)
    return sampler, stills


def train(args, stop_flag=None, model=None, data=None) -> int:
    """Runs the training loop of `args` (build_parser's flags); `model` and `data` (the
    (GpuSampler, StillSampler) pair of load_data) may be passed in already built, as
    gpu_train.campaign does after its throughput probe."""
    import torch

    from gpu_train.net import LossModulator, lambdas

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    replicas = Replicas(device.type)
    # --rollout depths: one draw per step shared by every process (seeded before the rank offset
    # below), so that all of them train the same parameters (a depth-0 step trains the I-frame,
    # a deeper one does not) and average gradients of the same shapes.
    rollout_rng = np.random.default_rng([args.seed, 7919])
    if replicas.dist is not None:
        if device.type == "cuda":
            device = torch.device("cuda", replicas.local_rank)
            torch.cuda.set_device(device)
        args.seed += 1000 * replicas.rank  # each rank its own data and noise (the weights come from rank 0)
        torch.manual_seed(args.seed)
        if not replicas.main:
            args.out_dir = str(pathlib.Path(args.out_dir) / f"rank{replicas.rank}")
    # A CPU whose flags cannot be read (no /proc/cpuinfo) counts as one without bf16 instructions.
    args.precision, warning = resolve_precision(args.precision, device.type,
                                                device.type == "cpu" and cpu_has_native_bf16() is True)
    if warning and replicas.main:
        print(warning, flush=True)
    autocast_dtype = set_precision(args.precision)  # resolved, so that progress.json's args say which ran
    from gpu_train import net

    if args.channels_last is None:  # resolved, so that progress.json's args say which layout ran
        args.channels_last = default_channels_last(device, args.precision)
    net.CHANNELS_LAST = args.channels_last
    torch.backends.cudnn.benchmark = True
    out_dir = pathlib.Path(args.out_dir)
    lam_pair = parse_pair(args.lambda_range, "--lambda_range")
    model = model if model is not None else build_model(args, device)
    replicas.broadcast_state(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_levels = model.c["levels"]
    lam = lambdas(*lam_pair, num_levels).to(device)
    sampler, stills = data if data is not None else load_data(args, num_levels, device)
    modulator = LossModulator(args.gop, num_levels, device)
    image_modulator = LossModulator(1, num_levels, device)
    use_graphs = bool(args.graphs)
    if use_graphs and args.rollout:  # gpu_train.campaign sets --graphs after check_args
        raise TrainError("--rollout trains eagerly (its GOPs vary in depth): run without --graphs")
    stepper = Stepper(model, lam, modulator, args, device, autocast_dtype, capturable=use_graphs, mix=args.image_mix)
    image_stepper = None
    if stills is not None:
        image_stepper = Stepper(model, lam, image_modulator, args, device, autocast_dtype, capturable=use_graphs, opt=stepper.opt)
    if replicas.dist is not None:
        if use_graphs:
            raise TrainError("--graphs with several processes is not supported yet: run without --graphs")
        stepper.replicas = replicas
        if image_stepper is not None:
            image_stepper.replicas = replicas
    run = Run(args, model, stepper, device, num_levels, out_dir, peak_tflops(device, args.precision, args.peak_tflops))
    run.quiet = not replicas.main
    run.replicas = replicas if replicas.dist is not None else None
    stop = stop_flag if stop_flag is not None else {"flag": False}
    if stop_flag is None:
        signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    last_save = time.time()
    phase = None
    phase_start = None  # the iteration the current phase began, when it began after another
    sync_every = 10 if replicas.dist is not None else 1
    iteration = 0
    while True:
        if iteration % sync_every == 0:
            time_frac, stopping = replicas.decide((time.time() - run.start) / run.budget, stop["flag"], device)
        # The run's progress: time over --minutes, or steps over --max_steps when that comes first
        # (the same count on every process); it sets the phases and the lr schedule.
        frac = max(time_frac, iteration / args.max_steps) if args.max_steps else time_frac
        iteration += 1
        if frac >= 1.0 or stopping:
            break
        new_phase = "image" if stills is not None and frac < args.image_frac else "gop"
        if new_phase != phase:
            if phase is not None and run.window["n"]:
                run.log(phase, frames_per_step, pixels, lr, frac)
            if phase is not None and args.phase_warmup > 0:
                # The I-frame phase's Adam moments mis-scale the GOP loss's gradients: without a restart
                # the first GOP steps wrecked the I-frame codec (H200, 2026-12-04: 25 -> 14 dB in 100
                # steps, ~1,500 steps to recover). Fresh moments and a warm-up, as at a run's start.
                stepper.restart_optimizer()
                phase_start = iteration
            phase = new_phase
            run.reset_window()
            print(f"phase {phase}: " + (
                f"I-frame crops, batch {args.image_batch} x {args.image_crop}^2" if phase == "image"
                else f"GOPs, batch {args.batch} x {args.gop} x {args.crop}^2"
                + ((f", after 0-{args.rollout} frames coded without gradients (--rollout)" if args.rollout_frac < 0 else
                    f", {args.rollout_frac:.0%} of them after 1-{args.rollout} frames coded without gradients (--rollout)")
                   if args.rollout else "")
                + (f", each with {args.image_mix_batch} stills of {args.image_crop}^2 at loss weight {args.image_mix:g} "
                   "(--image_mix)" if args.image_mix > 0 else "")), flush=True)
        lr = args.lr * run.lr_scale * (1.0 if frac < 0.8 else 0.2 if frac < 0.95 else 0.04)
        if phase_start is not None and args.phase_warmup > 0:
            lr *= min(1.0, (iteration - phase_start + 1) / args.phase_warmup)
        active = image_stepper if phase == "image" else stepper
        source = stills if phase == "image" else sampler
        size = args.image_batch if phase == "image" else args.batch
        frames_per_step = size * (1 if phase == "image" else args.gop)
        pixels = (args.image_crop if phase == "image" else args.crop) ** 2
        active.set_lr(lr)
        warp_on = args.warp_loss > 0 and (args.warp_loss_frac <= 0 or frac < args.warp_loss_frac)
        active.set_warp_weight(args.warp_loss if warp_on else 0.0)
        frames, levels = source.batch(size)
        carry = still_batch = None
        if phase == "gop" and args.rollout:
            frames, levels, carry = active.roll_out(frames, levels, rollout_depth(rollout_rng, args.rollout, args.rollout_frac))
        if phase == "gop" and args.image_mix > 0:
            still_batch = stills.batch(args.image_mix_batch)
        counted = phase not in run.flops  # the phase's first step counts its FLOPs: logged, not timed
        outputs = None
        if counted:
            run.flops[phase], outputs = count_step_flops(active, frames, levels, carry, still_batch)
        elif use_graphs:
            key = (phase, model.step_int >= model.c["norm_freeze_steps"], still_batch is not None)
            outputs = active.graphed(key, frames, levels, stills=still_batch)
            if outputs is None and active.graph_failed is not None:
                print(f"warning: CUDA graph capture failed ({active.graph_failed}); training eagerly", flush=True)
                use_graphs = False
        if outputs is None:
            outputs = active.eager(frames, levels, carry, still_batch)
        if carry is None:  # row 0 of the modulator is the I-frame's: a rolled-out P-frame is not
            active.modulator.update(replicas.gather(outputs[1]), replicas.gather(levels))
        if model.step_int < model.c["norm_freeze_steps"]:
            replicas.average_norm_statistics(model)
        run.accumulate(outputs, levels, None if still_batch is None else still_batch[1], timed=not counted)
        if phase == "image":
            run.image_steps += 1
        else:
            model.step += 1
            model.step_int += 1
            run.gop_steps += 1
        done = max((time.time() - run.start) / run.budget, iteration / args.max_steps if args.max_steps else 0.0)
        if run.window["n"] >= args.log_every and not run.log(phase, frames_per_step, pixels, lr, min(done, 1.0)):
            run.roll_back(phase, run.window_loss())
        if replicas.main and time.time() - last_save >= args.save_every_secs:
            if run.window["n"] and not run.healthy(phase, run.window_loss()):
                # Never save exploded weights; the window's log (on every process) rolls them back.
                print(f"warning: window loss {run.window_loss():.4g} looks diverged: checkpoint postponed", flush=True)
            else:
                run.save()
                last_save = time.time()
    done = max((time.time() - run.start) / run.budget, iteration / args.max_steps if args.max_steps else 0.0)
    if run.window["n"] and phase is not None and not run.log(phase, frames_per_step, pixels, lr, min(done, 1.0)):
        run.roll_back(phase, run.window_loss())
    extra = None
    if replicas.dist is not None:
        difference = replicas.max_weight_difference(model)
        extra = {"replicas": replicas.world, "replica_max_weight_difference": difference}
        if replicas.main:
            print(f"replicas: {replicas.world} processes, largest weight difference from rank 0: {difference:g}", flush=True)
        replicas.close()
        if difference > 0:
            raise TrainError(f"the {replicas.world} replicas' weights diverged (largest difference {difference:g})")
    run.save(final=True, extra=extra)
    if replicas.main:
        print(
            f"done: model step {int(model.step)}, {run.gop_steps} GOP steps and {run.image_steps} image steps "
            f"in {time.time() - run.start:.0f}s", flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
