"""Training data (§4.1): random T-frame crops, with a random temporal stride, from real footage.

Three source layouts, found under one directory (`kind="auto"` picks by what is there):

  video   any files ffmpeg reads (.mp4, .mkv, .avi, .y4m, ...), searched recursively. Each is
          decoded once (imageio-ffmpeg), downscaled, and cached as a uint8 .npy that later runs
          memory-map, because decoding is the slow part on a small CPU.
  vimeo   the Vimeo-90k septuplet layout `sequences/*/*/im1.png .. im7.png`, read per sample.
  images  still photos (.png, .jpg, ...) for I-frame pretraining (GOP 1), held in memory.

`--downscale=k` averages k x k pixel blocks (an area filter) to wash out the sources' own
compression artefacts. A sample is [T, crop_h, crop_w, 3] uint8 frames i0, i0 + s, ... with
stride s uniform in [1, max_stride] (capped by the clip's length), a uniform crop position and a
random horizontal flip; clips are weighted by frames x pixels. Each sample also carries the
§4.1 level random walk of its T frames.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from model.config import FRAME_MULTIPLE
from model.sampling import area_downscale, level_random_walk  # noqa: F401  (re-exported)

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".y4m", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".wmv"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
KINDS = ("auto", "video", "vimeo", "images")


class DataError(ValueError):
    """The data directory cannot give a single training sample; the message names why."""


@dataclass(frozen=True)
class DataConfig:
    path: str
    gop: int = 3
    crop: Tuple[int, int] = (128, 128)  # (height, width), multiples of FRAME_MULTIPLE.
    kind: str = "auto"
    downscale: int = 1
    max_stride: int = 2
    flip: bool = True
    cache_dir: Optional[str] = None  # where decoded videos are cached; None: no disk cache.

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(f"unknown data kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.gop < 1 or self.downscale < 1 or self.max_stride < 1:
            raise DataError("gop, downscale and max_stride must be >= 1")
        for size in self.crop:
            if size < FRAME_MULTIPLE or size % FRAME_MULTIPLE:
                raise DataError(f"crop {self.crop[0]}x{self.crop[1]}: each side must be a multiple of {FRAME_MULTIPLE}")


# -- clips ------------------------------------------------------------------------------------
class Clip:
    """A sequence of equally sized frames; `read(indices)` -> uint8 [n, H, W, 3]."""

    name: str
    length: int
    height: int
    width: int

    def read(self, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError


class ArrayClip(Clip):
    def __init__(self, name: str, frames: np.ndarray):
        self.name, self.frames = name, frames
        self.length, self.height, self.width = frames.shape[:3]

    def read(self, indices):
        return np.asarray(self.frames[list(indices)])


class ImageFilesClip(Clip):
    """Frames stored as image files, decoded (and downscaled) per read: the Vimeo-90k layout."""

    def __init__(self, name: str, paths: List[pathlib.Path], downscale: int):
        self.name, self.paths, self.downscale = name, paths, downscale
        first = _read_image(paths[0], downscale)
        self.length = len(paths)
        self.height, self.width = first.shape[:2]

    def read(self, indices):
        return np.stack([_read_image(self.paths[i], self.downscale) for i in indices])


def _read_image(path: pathlib.Path, downscale: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return area_downscale(np.asarray(image.convert("RGB")), downscale)


def decode_video(path: pathlib.Path, downscale: int, max_frames: Optional[int] = None) -> np.ndarray:
    """All (or the first `max_frames`) frames of a video as uint8 [N, H / downscale, W / downscale, 3]."""
    import itertools

    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
        width, height = meta["size"]
        frames = [area_downscale(np.frombuffer(raw, np.uint8).reshape(height, width, 3), downscale)
                  for raw in itertools.islice(reader, max_frames)]
    finally:
        reader.close()
    if not frames:
        raise DataError(f"{path}: no frames decoded")
    return np.stack(frames)


def _cache_name(path: pathlib.Path, downscale: int) -> str:
    """The cache entry of `path` at `downscale`, keyed by the file's bytes (not its path or mtime).

    Hashing a compressed video costs milliseconds against seconds to decode it, and a content key
    survives what a path/mtime key does not: a data folder re-created, copied or moved keeps its
    cache, while an edited file (even one of the same size and time stamp) gets a new entry."""
    digest = hashlib.sha1(f"downscale={downscale}|".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:12]}.npy"


def load_video(path: pathlib.Path, downscale: int, cache_dir: Optional[str]) -> ArrayClip:
    """Decodes `path` once; with a cache_dir, later calls memory-map the cached .npy."""
    if cache_dir is None:
        return ArrayClip(str(path), decode_video(path, downscale))
    cache = pathlib.Path(cache_dir) / _cache_name(path, downscale)
    if not cache.exists():
        frames = decode_video(path, downscale)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, frames)
        os.replace(tmp, cache)  # a kill mid-write never leaves a truncated cache entry.
    return ArrayClip(str(path), np.load(cache, mmap_mode="r"))


# -- discovery --------------------------------------------------------------------------------
def _files(root: pathlib.Path, suffixes) -> List[pathlib.Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _vimeo_sequences(root: pathlib.Path) -> List[pathlib.Path]:
    base = root / "sequences" if (root / "sequences").is_dir() else root
    return sorted(p.parent for p in base.glob("*/*/im1.png"))


def detect_kind(root: pathlib.Path) -> str:
    if _vimeo_sequences(root):
        return "vimeo"
    if _files(root, VIDEO_SUFFIXES):
        return "video"
    if _files(root, IMAGE_SUFFIXES):
        return "images"
    raise DataError(f"no videos, Vimeo-90k septuplets or images found in {root}")


def find_clips(config: DataConfig, warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> List[Clip]:
    """Every usable clip under config.path; warns about each one skipped, fails if none is left."""
    root = pathlib.Path(config.path)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist or is not a directory")
    try:
        return _find_clips(root, config, warn)
    except PermissionError as e:
        raise DataError(f"data directory {root} is not readable: {e.filename}: {e.strerror}") from None


def _find_clips(root: pathlib.Path, config: DataConfig, warn) -> List[Clip]:
    kind = detect_kind(root) if config.kind == "auto" else config.kind
    clips: List[Clip] = []
    found = 0
    if kind == "video":
        for path in _files(root, VIDEO_SUFFIXES):
            found += 1
            try:
                clips.append(load_video(path, config.downscale, config.cache_dir))
            except (OSError, RuntimeError, DataError, ValueError) as e:
                warn(f"warning: skipping unreadable video {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    elif kind == "vimeo":
        for seq in _vimeo_sequences(root):
            paths = sorted(seq.glob("im*.png"), key=lambda p: int(p.stem[2:]) if p.stem[2:].isdigit() else 0)
            found += 1
            try:
                clips.append(ImageFilesClip(str(seq), paths, config.downscale))
            except OSError as e:
                warn(f"warning: skipping unreadable sequence {seq}: {e}")
    else:
        for path in _files(root, IMAGE_SUFFIXES):
            found += 1
            try:
                clips.append(ArrayClip(str(path), _read_image(path, config.downscale)[None]))
            except OSError as e:
                warn(f"warning: skipping unreadable image {path}: {e}")
    if not found:
        raise DataError(f"no {kind} data found in {root}")
    usable = []
    for clip in clips:
        if clip.length < config.gop:
            warn(f"warning: skipping {clip.name}: {clip.length} frames, shorter than the GOP ({config.gop})")
        elif clip.height < config.crop[0] or clip.width < config.crop[1]:
            warn(
                f"warning: skipping {clip.name}: {clip.width}x{clip.height} after downscale "
                f"{config.downscale}, smaller than the crop {config.crop[1]}x{config.crop[0]}"
            )
        else:
            usable.append(clip)
    if not usable:
        raise DataError(
            f"no usable clips in {root}: all {found} {kind} clips are unreadable, shorter than the GOP "
            f"({config.gop} frames) or smaller than the crop ({config.crop[1]}x{config.crop[0]})"
        )
    return usable


# -- sampling ---------------------------------------------------------------------------------
class Sampler:
    """Draws random GOP crops, clips weighted by frames x pixels (every pixel of footage equally likely).

    Weighting by frames alone would let long, small, static clips (surveillance footage) crowd out
    short high-resolution clips that hold most of the content and motion.
    """

    def __init__(self, clips: Sequence[Clip], config: DataConfig, num_levels: int, seed):
        self.clips, self.config, self.num_levels = list(clips), config, num_levels
        self.rng = np.random.default_rng(seed)
        sizes = np.array([float(c.length) * c.height * c.width for c in self.clips])
        self.weights = sizes / sizes.sum()

    def sample(self) -> Tuple[np.ndarray, np.ndarray]:
        """-> (frames uint8 [T, crop_h, crop_w, 3], levels int32 [T])."""
        cfg, rng = self.config, self.rng
        clip = self.clips[rng.choice(len(self.clips), p=self.weights)]
        span = cfg.gop - 1
        max_stride = min(cfg.max_stride, (clip.length - 1) // span) if span else 1
        stride = int(rng.integers(1, max_stride + 1))
        start = int(rng.integers(0, clip.length - span * stride))
        frames = clip.read(range(start, start + span * stride + 1, stride))
        top = int(rng.integers(0, clip.height - cfg.crop[0] + 1))
        left = int(rng.integers(0, clip.width - cfg.crop[1] + 1))
        frames = frames[:, top : top + cfg.crop[0], left : left + cfg.crop[1]]
        if cfg.flip and rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        levels = level_random_walk(rng, 1, cfg.gop, self.num_levels)[0]
        return np.ascontiguousarray(frames), levels


def make_dataset(clips: Sequence[Clip], config: DataConfig, batch: int, num_levels: int, seed) -> tf.data.Dataset:
    """Endless batches (frames float32 [batch, T, h, w, 3] in [0, 1], levels int32 [batch, T])."""
    sampler = Sampler(clips, config, num_levels, seed)

    def generate():
        while True:
            yield sampler.sample()

    h, w = config.crop
    signature = (
        tf.TensorSpec([config.gop, h, w, 3], tf.uint8),
        tf.TensorSpec([config.gop], tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.batch(batch, drop_remainder=True)
    dataset = dataset.map(lambda f, l: (tf.cast(f, tf.float32) / 255.0, l))
    return dataset.prefetch(2)
