"""How close is the I-frame codec to its transforms' ceiling? Quantized against unquantized latents.

For each level, the I-frame codec of a model (the PyTorch mirror, gpu_train/net.py, in rounding
mode) codes each image with its own quantization width times each `--scales` factor (1: the model
as shipped; < 1: finer quantization, more bits), and once more with the latents unquantized (the
analysis output straight into the synthesis). If the unquantized PSNR is barely above the
quantized one at the top level, the transform pair, not quantization or the entropy model, caps the
quality: more bits cannot buy more, and only training (or wider transforms) can. Rates are the
hyperprior's estimated bits (the training's rate term), not a bitstream's; benchmarks/bench_image.py
measures real files. Each level also counts the latent channels in use: those whose spread over an
image (the standard deviation of the analysis output) is above half the level's quantization width,
averaged over the images; the decoder was trained to read the others as quantization noise.

    python -m gpu_train.ceiling --model=runtime/checkpoints/base --images=../shared/data/eval/images \\
        --limit=4 --levels=4,7 --out=ceiling.json [--weights=runs/cpu_run]   # a run's shards on the same config

Images are center-cropped to a multiple of 64 pixels (the hyperprior's stride). CPU, one thread
by default (it runs beside a training job); about 1 s per image, level and setting at 768x512
(all 24 Kodak images, 3 levels, 2 scales and the unquantized pass: 4 min).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")


class CeilingError(Exception):
    """Bad input: one line for the user."""


def load_images(folder, limit: int):
    """The first `limit` images of `folder` (sorted by name) as [H, W, 3] float32 in [0, 1],
    center-cropped to a multiple of 64; their names."""
    from PIL import Image

    root = pathlib.Path(folder)
    if not root.is_dir():
        raise CeilingError(f"--images: {folder}: no such folder")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: limit or None]
    if not paths:
        raise CeilingError(f"--images: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                x = np.asarray(im.convert("RGB"), np.float32) / 255.0
        except OSError as e:
            raise CeilingError(f"{path}: not a readable image ({e})") from None
        h, w = (x.shape[0] // 64) * 64, (x.shape[1] // 64) * 64
        if h == 0 or w == 0:
            raise CeilingError(f"{path}: {x.shape[1]}x{x.shape[0]} is smaller than 64x64")
        top, left = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
        images.append(x[top : top + h, left : left + w])
    return images, [p.name for p in paths]


def psnr(a, b) -> float:
    """PSNR-RGB of the 8-bit rounding of `a` against `b` (both [0, 1])."""
    mse = float(np.mean((np.round(np.clip(a, 0.0, 1.0) * 255.0) / 255.0 - b) ** 2))
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def code_image(model, image, level: float, scale):
    """The I-frame codec on one image at `level`: (reconstruction [H, W, 3], estimated bits).
    `scale`: a factor on the level's quantization width, or None for unquantized latents (bits 0)."""
    import torch

    ic = model.iframe  # gpu_train.net.IFrameCodec: forward() is encode, codelayer, decode
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    lv = torch.tensor([float(level)])
    with torch.no_grad():
        emb = model.embed(lv)
        latent = ic.encode(x, emb)
        bits = 0.0
        if scale is not None:
            code = ic.codelayer(latent, emb, ic.quant_width(lv) * float(scale), "round")
            latent, bits = code.latent_hat, float(code.bits[0])
        y, _ = ic.decode(latent, emb)
    return y[0].permute(1, 2, 0).numpy(), bits


def active_channels(model, image, level: float, threshold: float = 0.5) -> int:
    """How many latent channels spread (standard deviation over the image) above `threshold` times
    the level's quantization width."""
    import torch

    ic = model.iframe
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    lv = torch.tensor([float(level)])
    with torch.no_grad():
        latent = ic.encode(x, model.embed(lv))[0]
        spread = latent.flatten(1).std(dim=1) / ic.quant_width(lv)[0]
    return int((spread > threshold).sum())


def measure(model, images, levels, scales) -> list:
    """Per level: for each scale the mean PSNR-RGB and bpp over the images, the unquantized PSNR,
    and the mean count of latent channels in use (`active_channels`)."""
    rows = []
    for level in levels:
        row = {"level": level, "scales": []}
        for scale in scales:
            results = [code_image(model, im, level, scale) for im in images]
            row["scales"].append({
                "scale": scale,
                "psnr": float(np.mean([psnr(y, im) for (y, _), im in zip(results, images)])),
                "bpp": float(np.mean([b / (im.shape[0] * im.shape[1]) for (_, b), im in zip(results, images)])),
            })  # fmt: skip
        row["unquantized_psnr"] = float(np.mean([psnr(code_image(model, im, level, None)[0], im) for im in images]))
        row["active_channels"] = float(np.mean([active_channels(model, im, level) for im in images]))
        row["latent_channels"] = int(model.c["latent_channels"])
        rows.append(row)
    return rows


def _floats(text: str, flag: str, positive: bool):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CeilingError(f"{flag}: not a comma list of numbers: {text!r}") from None
    if not values or any(not math.isfinite(v) or (v <= 0 if positive else v < 0) for v in values):
        raise CeilingError(f"{flag}: needs {'positive' if positive else 'non-negative'} numbers, got {text!r}")
    return values


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run("python -m gpu_train.ceiling", _main, sys.argv[1:] if argv is None else argv, tracebacks=True)


def _main(argv) -> int:
    p = clikit.ArgumentParser(prog="python -m gpu_train.ceiling", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model folder (config.json, weights.npz)")
    p.add_argument("--weights", default="", help="other weights on the folder's config: an .npz, shards or a run folder")
    p.add_argument("--images", required=True, help="a folder of images (e.g. ../shared/data/eval/images)")
    p.add_argument("--limit", type=int, default=4, help="the first N images by name (0: all)")
    p.add_argument("--levels", default="4,7")
    p.add_argument("--scales", default="1,0.5,0.25", help="factors on the quantization width (1: as shipped)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="", help="also write the table as JSON here")
    args = p.parse_args(argv)
    from gpu_train.weights import WeightsError, load_npz

    try:
        if args.limit < 0 or args.threads < 1:
            raise CeilingError("--limit must be >= 0 and --threads >= 1")
        folder = pathlib.Path(args.model)
        if not (folder / "config.json").is_file():
            raise CeilingError(f"--model: {args.model}: no config.json there")
        config = json.loads((folder / "config.json").read_text())
        levels = _floats(args.levels, "--levels", positive=False)
        if max(levels) > config["num_levels"] - 1:
            raise CeilingError(f"--levels: the model's levels are 0..{config['num_levels'] - 1}")
        scales = _floats(args.scales, "--scales", positive=True)
        if args.out and not pathlib.Path(args.out).resolve().parent.is_dir():
            raise CeilingError(f"--out: {pathlib.Path(args.out).parent}: no such folder")
        images, names = load_images(args.images, args.limit)
        import torch  # after the checks: bad input is refused without it

        from gpu_train import net

        torch.set_num_threads(args.threads)
        model = net.ELFVC(config).eval()
        load_npz(model, args.weights or str(folder / "weights.npz"))
        rows = measure(model, images, levels, scales)
    except (CeilingError, WeightsError, ValueError, OSError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"{p.prog}: error: {args.model}/config.json has no {e}: not a model config", file=sys.stderr)
        return 1
    print(f"{len(images)} images ({', '.join(names)}), mean PSNR-RGB / estimated bpp; 'unquantized': latents not rounded")
    for row in rows:
        cells = "  ".join(f"x{s['scale']:g}: {s['psnr']:.2f} dB {s['bpp']:.3f} bpp" for s in row["scales"])
        print(f"level {row['level']:g}: {cells}  unquantized: {row['unquantized_psnr']:.2f} dB  "
              f"channels in use: {row['active_channels']:.1f} of {row['latent_channels']}")
    if args.out:
        tmp = pathlib.Path(args.out + ".tmp")
        try:
            tmp.write_text(json.dumps({"model": args.model, "weights": args.weights or None, "images": names, "rows": rows}, indent=1))
            tmp.replace(args.out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            print(f"{p.prog}: error: --out {args.out}: {e.strerror or e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
