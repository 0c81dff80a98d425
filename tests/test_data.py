"""Training data: the three layouts, the decode cache, sampling and clear errors for bad input."""

import os

import numpy as np
import pytest
from PIL import Image

from model.data import (
    ArrayClip,
    DataConfig,
    DataError,
    Sampler,
    area_downscale,
    find_clips,
    make_dataset,
)
from conftest import bikes_path


def test_area_downscale_is_the_block_mean():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, [9, 13, 3]).astype(np.uint8)
    small = area_downscale(frame, 2)
    assert small.shape == (4, 6, 3)
    expected = frame[:8, :12].astype(np.float64).reshape(4, 2, 6, 2, 3).mean(axis=(1, 3))
    assert np.max(np.abs(small - expected)) <= 0.5
    assert area_downscale(frame, 1) is frame


def test_video_is_decoded_once_into_a_memory_mapped_cache(tmp_path):
    data = tmp_path / "videos"
    data.mkdir()
    (data / "bikes.mp4").symlink_to(bikes_path())
    config = DataConfig(str(data), gop=3, crop=(64, 128), downscale=2, cache_dir=str(tmp_path / "cache"))
    (clip,) = find_clips(config)
    assert (clip.length, clip.height, clip.width) == (250, 136, 320)
    cached = list((tmp_path / "cache").glob("bikes-*.npy"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    (again,) = find_clips(config)
    assert isinstance(again.frames, np.memmap)
    np.testing.assert_array_equal(again.read([0, 249]), clip.read([0, 249]))


def test_decode_cache_is_keyed_by_content_not_path_or_mtime(tmp_path):
    from model.data import _cache_name

    first = tmp_path / "a" / "clip.mp4"
    first.parent.mkdir()
    first.write_bytes(b"some video bytes")
    moved = tmp_path / "b" / "clip.mp4"
    moved.parent.mkdir()
    moved.write_bytes(first.read_bytes())
    os.utime(moved, ns=(1, 1))  # another folder and another time stamp, the same bytes
    assert _cache_name(first, 2) == _cache_name(moved, 2)
    assert _cache_name(first, 2) != _cache_name(first, 1)
    stat = moved.stat()
    moved.write_bytes(b"Some video bytes")  # same size, same time stamp, other content
    os.utime(moved, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _cache_name(first, 2) != _cache_name(moved, 2)


def test_sampler_takes_strided_crops_of_consecutive_frames():
    # Frame i is filled with the value i, so a sample's values reveal the indices it read.
    frames = np.broadcast_to(np.arange(40, dtype=np.uint8)[:, None, None, None], [40, 70, 130, 3])
    clip = ArrayClip("ramp", frames)
    config = DataConfig("unused", gop=4, crop=(64, 128), max_stride=3)
    sampler = Sampler([clip], config, num_levels=8, seed=0)
    strides = set()
    for _ in range(200):
        sample, levels = sampler.sample()
        assert sample.shape == (4, 64, 128, 3) and sample.dtype == np.uint8
        indices = sample[:, 0, 0, 0].astype(int)
        stride = np.diff(indices)
        assert np.all(stride == stride[0]) and 1 <= stride[0] <= 3
        strides.add(int(stride[0]))
        assert levels.shape == (4,) and levels.min() >= 0 and levels.max() <= 7
    assert strides == {1, 2, 3}


def test_dataset_yields_fixed_shape_float_batches():
    frames = np.random.default_rng(1).integers(0, 256, [10, 64, 64, 3]).astype(np.uint8)
    config = DataConfig("unused", gop=2, crop=(64, 64))
    frames_batch, levels = next(iter(make_dataset([ArrayClip("x", frames)], config, 3, 8, seed=0)))
    assert frames_batch.shape == (3, 2, 64, 64, 3) and frames_batch.dtype.name == "float32"
    assert 0.0 <= float(np.min(frames_batch)) and float(np.max(frames_batch)) <= 1.0
    assert levels.shape == (3, 2)


def _write_septuplet(root, frames):
    seq = root / "sequences" / "00001" / "0001"
    seq.mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(seq / f"im{i}.png")


def test_vimeo_layout_and_images(tmp_path, bikes_frames):
    crop = bikes_frames[:7, :128, :192]
    _write_septuplet(tmp_path / "vimeo", np.concatenate([crop, crop[:0]]) if len(crop) == 7 else crop)
    (clip,) = find_clips(DataConfig(str(tmp_path / "vimeo"), gop=7, crop=(64, 64), downscale=2))
    assert (clip.length, clip.height, clip.width) == (7, 64, 96)
    np.testing.assert_array_equal(clip.read([6])[0], area_downscale(crop[6], 2))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(bikes_frames[0]).save(photos / "a.png")
    Image.fromarray(bikes_frames[1]).save(photos / "b.jpg")
    clips = find_clips(DataConfig(str(photos), gop=1, crop=(64, 64)))
    assert [c.length for c in clips] == [1, 1]


def test_bad_data_fails_with_one_line(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_clips(DataConfig(str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no videos, Vimeo-90k septuplets or images found"):
        find_clips(DataConfig(str(empty)))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros([64, 64, 3], np.uint8)).save(photos / "a.png")
    warnings = []
    with pytest.raises(DataError, match=r"shorter than the GOP \(3 frames\)"):
        find_clips(DataConfig(str(photos), gop=3, crop=(64, 64)), warn=warnings.append)
    assert any("1 frames, shorter than the GOP (3)" in w for w in warnings)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "clip.mp4").write_bytes(b"not a video at all")
    warnings = []
    with pytest.raises(DataError, match="no usable clips"):
        find_clips(DataConfig(str(broken), gop=2, crop=(64, 64)), warn=warnings.append)
    assert len(warnings) == 1 and "unreadable video" in warnings[0] and "\n" not in warnings[0]
    with pytest.raises(DataError, match="multiple of 64"):
        DataConfig(str(photos), crop=(100, 64))
