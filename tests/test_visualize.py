"""Fig. 4 / Fig. 5 renderings: real PNGs, correct flow colour coding, clear errors."""

import numpy as np
import pytest
import tensorflow as tf

from model.config import get_config
from model.elfvc import ELFVC
from runtime.visualize import FLOW_SATURATION_PX, flow_to_rgb, visualize_bit_allocation, visualize_pframe


def test_flow_colour_coding():
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 1] = [FLOW_SATURATION_PX, 0]  # saturated, hue 0 (red)
    flow[1, 2] = [0, 100.0]  # beyond saturation: clipped, still fully saturated
    rgb = flow_to_rgb(flow)
    np.testing.assert_allclose(rgb[0, 0], [1, 1, 1])  # no motion is white
    np.testing.assert_allclose(rgb[0, 1], [1, 0, 0], atol=1e-6)
    assert rgb[1, 2].min() < 1e-6  # fully saturated


def test_renders_pngs_from_a_real_clip(tmp_path, bikes_frames):
    tf.random.set_seed(0)
    model = ELFVC(get_config("small")).build_weights()
    frames = bikes_frames[:3, :70, :90]  # odd-ish size: padded to 128x128, cropped back.
    stats = visualize_pframe(model, frames, 3.0, 2, str(tmp_path / "fig5.png"))
    assert stats["bpp"] > 0 and np.isfinite(stats["psnr"])
    levels = visualize_bit_allocation(model, frames, [0.0, 7.0], 2, str(tmp_path / "fig4.png"))
    assert [s["level"] for s in levels] == [0.0, 7.0]
    for name in ("fig5.png", "fig4.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig4.png", "fig5.png"]  # no temp files left


def test_pframe_view_rejects_the_iframe_and_bad_shapes(tmp_path, bikes_frames):
    model = ELFVC(get_config("small")).build_weights()
    with pytest.raises(ValueError, match="frame index >= 1"):
        visualize_pframe(model, bikes_frames[:2, :64, :64], 0.0, 0, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="outside the clip"):
        visualize_pframe(model, bikes_frames[:2, :64, :64], 0.0, 5, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        visualize_pframe(model, bikes_frames[0], 0.0, 1, str(tmp_path / "x.png"))
    assert not list(tmp_path.iterdir())
