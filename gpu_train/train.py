"""Trains the PyTorch mirror of ELF-VC (gpu_train/net.py) on a GPU, for a wall-clock budget.

The recipe is model/train.py's (§3.1 eq. 1-3 multi-level loss, §4.1 level random walk, App. D
modulator, Adam, learning rate / 5 at 80% and / 25 at 95% of the run), with the run's length
given in minutes instead of steps because a lent GPU machine is held for a fixed time: the
schedule moves at 80% and 95% of the budget. Data are model/data.py's: every clip decoded once,
area-downscaled, random GOP crops weighted by frames x pixels, temporal stride 1..max_stride,
horizontal flips; the whole set sits on the GPU as uint8.

    python -m gpu_train.train --config=CONFIG.json --init=WEIGHTS.npz --data=DIR --out_dir=DIR \
        --minutes=20 --batch=16 --gop=16 --crop=128 --lambda_range=0.25,0.0026 [--reinit=flow]

Writes OUT_DIR/latest.npz (weights, gpu_train.weights' format) every --save_every_secs and at
the end, OUT_DIR/progress.json beside it, and one log line per --log_every steps. A SIGTERM
saves and stops. Needs torch and numpy; decoding needs OpenCV (cv2) or imageio-ffmpeg.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import signal
import sys
import time

import numpy as np

from model.sampling import area_downscale, level_random_walk  # TF-free (model/__init__ imports nothing)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


class TrainError(RuntimeError):
    pass


# -- data -------------------------------------------------------------------------------------
def decode_video(path: pathlib.Path, downscale: int) -> np.ndarray:
    """All frames as uint8 RGB [N, H/d, W/d, 3] (OpenCV, else imageio-ffmpeg)."""
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


def load_clips(root, downscale: int, cache_dir=None):
    root = pathlib.Path(root)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not paths:
        raise TrainError(f"no videos under {root}")
    clips = []
    for path in paths:
        cache = pathlib.Path(cache_dir) / f"{path.stem}-d{downscale}.npy" if cache_dir else None
        if cache is not None and cache.exists():
            clips.append((path.name, np.load(cache)))
            continue
        try:
            frames = decode_video(path, downscale)
        except (TrainError, OSError, RuntimeError, ValueError) as e:
            print(f"warning: skipping {path.name}: {e}", file=sys.stderr)
            continue
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, frames)
        clips.append((path.name, frames))
    if not clips:
        raise TrainError(f"no readable videos under {root}")
    return clips


class GpuSampler:
    """model.data.Sampler over clips held on the device; batches of GOP crops and level walks."""

    def __init__(self, clips, gop: int, crop: int, max_stride: int, num_levels: int, device, seed: int):
        import torch

        self.gop, self.crop, self.max_stride, self.num_levels = gop, crop, max_stride, num_levels
        self.clips = [(n, torch.from_numpy(f).to(device)) for n, f in clips if f.shape[0] >= gop and min(f.shape[1:3]) >= crop]
        if not self.clips:
            raise TrainError(f"no clip has {gop} frames of at least {crop}x{crop}")
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


def check_args(args) -> None:
    """Rejects values the model or the loop cannot use, naming the flag."""
    if args.minutes <= 0:
        raise TrainError(f"--minutes must be positive, got {args.minutes:g}")
    for flag in ("batch", "gop", "downscale", "max_stride", "log_every"):
        if getattr(args, flag) < 1:
            raise TrainError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.crop < 64 or args.crop % 64:
        raise TrainError(f"--crop must be a multiple of 64 (the model's frame multiple), got {args.crop}")
    if args.lr <= 0 or args.warp_loss < 0 or args.clip_norm < 0:
        raise TrainError("--lr must be positive, --warp_loss and --clip_norm non-negative")
    for path, flag in ((args.config, "--config"), (args.init, "--init")):
        if path and not pathlib.Path(path).is_file():
            raise TrainError(f"{flag}: {path}: no such file")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpu_train.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--init", help="initial weights (.npz from gpu_train.weights to_npz)")
    p.add_argument("--reinit", default="", help="comma list of parameter prefixes to re-initialize, e.g. flow")
    p.add_argument("--data", required=True)
    p.add_argument("--cache_dir")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--gop", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--downscale", type=int, default=2)
    p.add_argument("--max_stride", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lambda_range", default="0.25,0.0026")
    p.add_argument("--warp_loss", type=float, default=0.0)
    p.add_argument("--warp_loss_frac", type=float, default=0.0, help="fraction of the budget the warp loss is on (0: all)")
    p.add_argument("--clip_norm", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--save_every_secs", type=float, default=120)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    try:
        check_args(args)
        return _train(args)
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _train(args) -> int:
    import torch

    from gpu_train.net import ELFVC, LossModulator, lambdas, multilevel_loss
    from gpu_train.weights import load_npz, save_npz

    torch.backends.cudnn.allow_tf32 = False  # FP32 training, as model/train.py
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads(pathlib.Path(args.config).read_text())
    device = torch.device(args.device)
    model = ELFVC(config)
    if args.init:
        load_npz(model, args.init)
    reinit = [s for s in args.reinit.split(",") if s]
    if reinit:
        names = reinitialize(model, reinit, args.seed + 1)
        print(f"re-initialized {len(names)} tensors under {','.join(reinit)}", flush=True)
    model.to(device).train()
    model.step_int = int(model.step)
    num_levels = model.c["levels"]
    lam = lambdas(*parse_pair(args.lambda_range, "--lambda_range"), num_levels).to(device)
    t0 = time.time()
    clips = load_clips(args.data, args.downscale, args.cache_dir)
    sampler = GpuSampler(clips, args.gop, args.crop, args.max_stride, num_levels, device, args.seed)
    print(f"{len(sampler.clips)} clips, {sum(f.shape[0] for _, f in sampler.clips)} frames loaded in {time.time() - t0:.0f}s", flush=True)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-7)
    modulator = LossModulator(args.gop, num_levels, device)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    budget = args.minutes * 60.0
    start = last_save = time.time()
    step0 = int(model.step)
    # Sums over the log window, kept on the device (no host sync per step); logged as means.
    def empty_window():
        zeros = torch.zeros(args.gop, device=device)
        return {"n": 0, "loss": torch.zeros((), device=device), "mse": zeros, "bpp": zeros.clone(), "warp": torch.zeros((), device=device)}

    window = empty_window()
    window_start = time.time()

    def save(final=False):
        save_npz(model, out_dir / "latest.npz")
        (out_dir / "progress.json").write_text(json.dumps({
            "model_step": int(model.step), "steps_here": int(model.step) - step0,
            "elapsed_s": round(time.time() - start, 1), "final": final, "mu": modulator.mu.cpu().numpy().round(3).tolist(),
            "args": vars(args),
        }, indent=1))

    while True:
        frac = (time.time() - start) / budget
        if frac >= 1.0 or stop["flag"]:
            break
        lr = args.lr * (1.0 if frac < 0.8 else 0.2 if frac < 0.95 else 0.04)
        for g in opt.param_groups:
            g["lr"] = lr
        frames, levels = sampler.batch(args.batch)
        out = model.forward_gop(frames, levels.float(), "noise", training=True)
        dist = (frames - out.reconstructions).pow(2).mean(dim=(2, 3, 4))
        bpp = out.bits / (frames.shape[3] * frames.shape[4])
        loss = multilevel_loss(dist, bpp, levels, modulator.mu, lam)
        warp = torch.stack([(frames[:, t + 1] - c).pow(2).mean(dim=(1, 2, 3)) for t, c in enumerate(out.compensated)], 1)
        if args.warp_loss > 0 and (args.warp_loss_frac <= 0 or frac < args.warp_loss_frac):
            loss = loss + args.warp_loss * warp.sum() / (args.batch * args.gop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip_norm)
        opt.step()
        modulator.update(dist.detach(), levels)
        model.step += 1
        model.step_int += 1
        window["n"] += 1
        window["loss"] += loss.detach()
        window["mse"] += dist.detach().mean(0)
        window["bpp"] += bpp.detach().mean(0)
        window["warp"] += warp.detach().mean()
        if window["n"] == args.log_every:
            n = window["n"]
            mean_loss = float(window["loss"]) / n
            if not math.isfinite(mean_loss):
                raise TrainError(f"loss became non-finite at step {int(model.step)}")
            psnr = (-10 * torch.log10(window["mse"] / n)).cpu().numpy()
            rate = (window["bpp"] / n).cpu().numpy()
            sps = n / (time.time() - window_start)
            print(
                f"step {int(model.step)} ({int(model.step) - step0} here, {sps:.2f}/s, {100 * frac:.0f}% of budget, lr {lr:.1e}) "
                f"loss {mean_loss:.5f} | I {psnr[0]:.2f} dB {rate[0]:.4f} bpp | P mean {psnr[1:].mean():.2f} dB "
                f"{rate[1:].mean():.4f} bpp | last P {psnr[-1]:.2f} dB | warp PSNR {float(-10 * torch.log10(window['warp'] / n)):.2f}",
                flush=True,
            )
            window = empty_window()
            window_start = time.time()
        if time.time() - last_save >= args.save_every_secs:
            save()
            last_save = time.time()
    save(final=True)
    print(f"done: model step {int(model.step)}, {int(model.step) - step0} steps in {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
