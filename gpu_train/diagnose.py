"""Do the I-frame transforms learn? A short, fixed-time check of what caps the I-frame codec.

Measured on CPU (docs/BENCHMARKS.md, "The I-frame codec on Kodak"): the shipped model's I-frame
reconstruction from *unquantized* latents is no better than from quantized ones (20.3 dB on
kodim05 at level 7), below a linear PCA code of the same size (23.5 dB with 32 numbers per
16x16 block, 31.9 with 128). So the transform pair, not quantization or the entropy model,
sets the ceiling. This trains, each for the same wall time on the same photo crops, with no
quantization and no rate (pure MSE autoencoders with the latent's shape of the config: C
channels at 1/16):

  * `elf`:   the config's I-frame analysis + synthesis + image head (gpu_train/net.py), level
             embedding of the top level;
  * `plain`: a plain conv autoencoder of the same bottleneck (four 5x5 stride-2 convolutions
             with ReLU each way, Balle et al.'s layout without GDN), fewer parameters (for `base`
             1.16M against the ELF pair's 2.48M: a comparison that favours `elf`);

and reports the training PSNR over time. If `plain` learns far faster, the ELF transform design
(space-to-depth stems, DM blocks, linear pixel heads) is what to change; if both are slow, the
optimization (learning rate, data) is.

    python -m gpu_train.diagnose --photos=.gpu/pack/photos --seconds=20 --out=diag.json [--device=cuda]
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)


def make_models(config: dict, device):
    import torch
    import torch.nn as nn

    from gpu_train import net

    c = net._cfg(config)
    ic = net.IFrameCodec(c)
    emb = torch.zeros(1, c["embedding_width"])
    emb[0, -1] = 1.0  # the top level

    class Elf(nn.Module):
        def __init__(self):
            super().__init__()
            self.analysis, self.synthesis, self.head = ic.analysis, ic.synthesis, ic.image_head
            self.register_buffer("emb", emb)

        def forward(self, x):
            e = self.emb.expand(x.shape[0], -1)
            y = self.analysis(net.space_to_depth(x - 0.5, 4), e)
            return 0.5 + net.depth_to_space(self.head(self.synthesis(y, e)).float(), 4)

    n, m = c["encoder_channels"], c["latent_channels"]

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            conv = lambda i, o: nn.Conv2d(i, o, 5, 2, 2)  # noqa: E731
            deconv = lambda i, o: nn.ConvTranspose2d(i, o, 5, 2, 2, 1)  # noqa: E731
            self.enc = nn.Sequential(conv(3, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, m))
            self.dec = nn.Sequential(deconv(m, n), nn.ReLU(), deconv(n, n), nn.ReLU(), deconv(n, n), nn.ReLU(), deconv(n, 3))

        def forward(self, x):
            return 0.5 + self.dec(self.enc(x - 0.5)).float()

    return {"elf": Elf().to(device), "plain": Plain().to(device)}


def run(photos, config: dict, seconds: float, batch: int, crop: int, lr: float, device, log=print) -> dict:
    import torch

    from gpu_train.train import StillSampler

    sampler = StillSampler(photos, [], crop, 1, device, seed=0)
    results = {}
    for name, model in make_models(config, device).items():
        torch.manual_seed(0)
        sampler.rng = np.random.default_rng(0)  # the same crops for both
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        params = sum(p.numel() for p in model.parameters())
        curve, window, steps, t0 = [], [], 0, time.time()
        next_report = t0 + seconds / 10
        while time.time() - t0 < seconds:
            x = sampler.batch(batch)[0][:, 0]
            loss = (model(x) - x).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window.append(loss.detach())
            steps += 1
            if time.time() >= next_report:
                mse = float(torch.stack(window).mean())
                curve.append({"seconds": round(time.time() - t0, 1), "steps": steps, "psnr": round(-10 * math.log10(mse), 2)})
                window, next_report = [], time.time() + seconds / 10
        results[name] = {"parameters": params, "steps": steps, "curve": curve}
        last = curve[-1]["psnr"] if curve else None
        log(f"diagnose {name}: {params / 1e6:.2f}M parameters, {steps} steps in {seconds:g}s, training PSNR {last} dB")
    return results


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run("python -m gpu_train.diagnose", _main, sys.argv[1:] if argv is None else argv, tracebacks=True)


def _main(argv) -> int:
    p = clikit.ArgumentParser(prog="python -m gpu_train.diagnose", description=__doc__.splitlines()[0])
    p.add_argument("--photos", required=True)
    p.add_argument("--config", default="base", help="a config name or a config.json")
    p.add_argument("--seconds", type=float, default=20.0, help="training time of each model")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    import torch

    from gpu_train.train import TrainError, load_photos, set_precision
    from model.config import get_config

    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainError("no CUDA GPU here (use --device=cpu for a rehearsal)")
        if args.seconds <= 0 or args.batch < 1 or args.crop < 64 or args.crop % 64:
            raise TrainError("--seconds must be positive, --batch >= 1, --crop a multiple of 64")
        config = json.loads(open(args.config).read()) if args.config.endswith(".json") else get_config(args.config).to_dict()
        set_precision("tf32")
        photos = load_photos(args.photos)
        results = run(photos, config, args.seconds, args.batch, args.crop, args.lr, torch.device(args.device))
    except (TrainError, ValueError, OSError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    with open(args.out, "w") as f:
        json.dump({"config": config["name"], "seconds": args.seconds, "batch": args.batch, "crop": args.crop, "lr": args.lr,
                   "device": args.device, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
