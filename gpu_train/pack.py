"""Packs the training data that travels to a lent GPU machine within one call's 64 MiB.

The training set under ../shared/data/train is about 170 MB (109 MB of photos as PNG, 58 MB of
video), and a device call carries at most 64 MiB with the code and weights. What travels:

  * every photo (train/images, recursively), re-encoded as JPEG (--quality, default 90) with
    4:4:4 chroma (Pillow), its long side area-downscaled to at most --photo_side (default 768,
    Kodak's scale; it also keeps the 20 large wallpapers from dominating the area-weighted crop
    sampling): JPEG's error at q90 (about 40 dB PSNR) is far below anything the codec reaches,
    and it is 5-10x smaller than PNG. The 270 photos take 32.4 MiB at 1024 px / q95 (over 28),
    about 25 at 768 / q92 (6 videos fit beside them), less at 768 / q90 (13 videos);
  * as many source videos as fit in what is left of --max_mb, taken in a seeded order so that
    successive calls (--seed) can see different subsets; they travel as they are (already
    compressed) and are decoded on the device;
  * MANIFEST.json: every file that travelled with its source, size and (photos) dimensions, and
    every video left out, so each run records exactly what it trained on.

    python -m gpu_train.pack --train=../shared/data/train --out=.gpu/pack --max_mb=28 --seed=0

Needs numpy and Pillow only (the project's .venv has both). Refuses an existing --out.
"""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import sys

import numpy as np

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


class PackError(RuntimeError):
    pass


def _area_downscale_to(image, max_side: int):
    """Pillow's box filter to a long side of at most max_side (an area average, as model.sampling)."""
    from PIL import Image

    w, h = image.size
    if max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)


def encode_photo(path: pathlib.Path, max_side: int, quality: int) -> tuple[bytes, tuple[int, int]]:
    from PIL import Image

    with Image.open(path) as im:
        image = _area_downscale_to(im.convert("RGB"), max_side)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue(), image.size


def build(train: pathlib.Path, out: pathlib.Path, max_mb: float, seed: int, photo_side: int = 768, quality: int = 90,
          photos: bool = True) -> dict:
    if not train.is_dir():
        raise PackError(f"--train: {train}: no such folder")
    if out.exists():
        raise PackError(f"--out: {out} exists; remove it or choose another folder")
    photos = sorted(p for p in (train / "images").rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES) if photos else []
    videos = sorted(p for p in (train / "video").rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not photos and not videos:
        raise PackError(f"{train}: no photos under images/ and no videos under video/")
    budget = int(max_mb * 2**20)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "video").mkdir(parents=True)
    if photos:
        (tmp / "photos").mkdir()
    manifest = {"train": str(train), "seed": seed, "photo_side": photo_side, "jpeg_quality": quality, "photos": [], "videos": [], "videos_left_out": []}
    used = 0
    for i, path in enumerate(photos):
        data, (w, h) = encode_photo(path, photo_side, quality)
        name = f"{i:04d}.jpg"
        (tmp / "photos" / name).write_bytes(data)
        used += len(data)
        manifest["photos"].append({"file": name, "source": str(path.relative_to(train)), "bytes": len(data), "size": [w, h]})
    if used > budget:
        shutil.rmtree(tmp)
        raise PackError(f"the photos alone take {used / 2**20:.1f} MiB, over --max_mb {max_mb:g}; lower --photo_side")
    order = np.random.default_rng(seed).permutation(len(videos))
    for j in order:
        path = videos[j]
        size = path.stat().st_size
        rel = str(path.relative_to(train))
        if used + size > budget:
            manifest["videos_left_out"].append(rel)
            continue
        name = f"{len(manifest['videos']):03d}{path.suffix.lower()}"
        shutil.copyfile(path, tmp / "video" / name)
        used += size
        manifest["videos"].append({"file": name, "source": rel, "bytes": size})
    manifest["total_bytes"] = used
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    tmp.rename(out)
    return manifest


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run("python -m gpu_train.pack", _main, sys.argv[1:] if argv is None else argv, tracebacks=True)


def _main(argv) -> int:
    p = clikit.ArgumentParser(prog="python -m gpu_train.pack", description=__doc__.splitlines()[0],
                              formatter_class=clikit.DefaultsHelpFormatter)
    p.add_argument("--train", default="../shared/data/train", help="the training set (never eval/)")
    p.add_argument("--out", required=True, help="new folder to write")
    p.add_argument("--max_mb", type=float, default=28.0, help="MiB the pack may take (the call carries 64 MiB with the tracked files: code, docs and the shipped models, ~34 MB)")
    p.add_argument("--seed", type=int, default=0, help="order in which videos are taken")
    p.add_argument("--photo_side", type=int, default=768, help="longest photo side after downscaling")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the photos")
    p.add_argument("--no_photos", action="store_true", help="videos only (a run without the I-frame phase)")
    args = p.parse_args(argv)
    try:
        if args.max_mb <= 0 or args.photo_side < 64 or not 1 <= args.quality <= 100:
            raise PackError("--max_mb must be positive, --photo_side >= 64, --quality in 1..100")
        m = build(pathlib.Path(args.train), pathlib.Path(args.out), args.max_mb, args.seed, args.photo_side, args.quality, not args.no_photos)
    except PackError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.out}: {len(m['photos'])} photos, {len(m['videos'])} videos ({len(m['videos_left_out'])} left out), "
        f"{m['total_bytes'] / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
