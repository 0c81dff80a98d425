"""Encoder presets (runtime/presets.py): every preset's stream decodes bit-exactly with the plain
decoder on every backend, `fast` writes medium's bytes, and the `slow` latent search never keeps
a coding whose real rate + lambda x distortion is worse than plain rounding's."""

from __future__ import annotations

import numpy as np
import pytest

from export_helpers import onnx_backend
from runtime.codec import Encoder
from runtime.ratecontrol import ConstantLevel, MinQuality
from runtime.stream import decode_video, encode_video
from runtime.types import CodecError, FrameType

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")


@pytest.fixture(scope="module")
def small():
    from runtime.backends import get_backend
    from model.bundle import shipped_bundle

    bundle = shipped_bundle("small")
    return bundle, get_backend("tf", bundle)


@pytest.fixture(scope="module")
def clip(bikes_frames):
    return np.ascontiguousarray(bikes_frames[:3, 60:124, 100:228])  # 3 frames of 128x64


def _encode(tmp_path, name, clip, small, preset, gop, controller=None):
    bundle, backend = small
    encoded = []
    summary = encode_video(list(clip), tmp_path / f"{name}.elfvc", fps=25, gop=gop, controller=controller or ConstantLevel(3.5),
                           backend=backend, bundle=bundle, preset=preset, progress=lambda i, e: encoded.append(e))  # fmt: skip
    return tmp_path / f"{name}.elfvc", summary, encoded


def test_presets_decode_with_the_plain_decoder_on_every_backend(tmp_path, small, clip, small_export):
    """`slow` (I-frame latent search + motion refinement) and `veryslow` (residue search and R-D
    frame types too), I+P: the plain tf decoder returns exactly what the encoder reconstructed,
    onnx within the cross-backend bound (1 level of 8 bits, tests/test_backends.py); `fast` with
    GOP 1 writes medium's bytes without reconstructing."""
    bundle, tf_backend = small
    plain, _, _ = _encode(tmp_path, "medium2", clip, small, "medium", 2)
    for preset in ("slow", "veryslow"):
        path, _, encoded = _encode(tmp_path, preset, clip, small, preset, 2)
        assert path.read_bytes() != plain.read_bytes(), preset  # the search moved some symbols
        for backend, tolerance in ((tf_backend, 0), (onnx_backend(small_export), 1)):
            decoded = []
            decode_video(path, decoded.append, backend, bundle)
            for frame, enc in zip(decoded, encoded, strict=True):
                assert np.abs(frame.astype(int) - enc.reconstruction.astype(int)).max() <= tolerance, preset
    fast, _, fast_frames = _encode(tmp_path, "fast", clip, small, "fast", 1)
    medium, _, medium_frames = _encode(tmp_path, "medium", clip, small, "medium", 1)
    assert fast.read_bytes() == medium.read_bytes()
    assert all(e.reconstruction is None and e.psnr is None for e in fast_frames)
    assert all(e.reconstruction is not None for e in medium_frames)
    _, _, fast_ip = _encode(tmp_path, "fast2", clip, small, "fast", 2)
    assert all(e.reconstruction is not None for e in fast_ip)  # P-frames need their references


def test_fast_reconstructs_when_something_needs_it(tmp_path, small, clip):
    """A PSNR floor judges frames by their reconstruction: `fast` then reconstructs, GOP 1 or not;
    an I-frame that skipped its reconstruction cannot be followed by a P-frame."""
    bundle, backend = small
    _, summary, encoded = _encode(tmp_path, "floor", clip, small, "fast", 1, MinQuality(20.0, bundle.config.max_level))
    assert all(e.psnr is not None for e in encoded) and summary.mean_psnr is not None
    with Encoder(bundle, backend) as encoder:
        encoder.commit(encoder.encode_frame(clip[0], 3.0, FrameType.I, commit=False, reconstruct=False))
        with pytest.raises(CodecError, match="needs a preceding I-frame"):
            encoder.encode_frame(clip[1], 3.0, FrameType.P)
        with pytest.raises(ValueError, match="only I-frames"):
            encoder.encode_frame(clip[1], 3.0, FrameType.P, reconstruct=False)
    with pytest.raises(CodecError, match="unknown preset 'turbo'; valid presets: fast, medium, slow, veryslow$"):
        _encode(tmp_path, "bad", clip, small, "turbo", 1)


def _cost(encoded, source, rd_lambda):
    recon = encoded.reconstruction.astype(np.float64) / 255.0
    distortion = float(np.mean((source.astype(np.float64) / 255.0 - recon) ** 2))
    return distortion + rd_lambda * encoded.bits / (source.shape[0] * source.shape[1])


def test_latent_search_never_keeps_a_worse_coding(small, clip, monkeypatch):
    """The real search lowers (or keeps) the frame's real cost; a search that returns a damaged
    latent is not kept: the frame is coded exactly as without the search (this fails if
    Encoder._keep_cheaper's comparison is removed), for I-frames and P-frame residues alike."""
    from runtime import latent_opt

    bundle, backend = small
    settings = latent_opt.LatentOptimization(steps=15)
    level = 3.5
    rd_lambda = settings.rd_lambda(level, bundle.config.max_level, bundle.card.get("lambda_range"))
    with Encoder(bundle, backend) as plain_encoder:
        plain = plain_encoder.encode_frame(clip[0], level, FrameType.I)
    with Encoder(bundle, backend, latent_optimization=settings) as encoder:
        searched = encoder.encode_frame(clip[0], level, FrameType.I)
    assert _cost(searched, clip[0], rd_lambda) <= _cost(plain, clip[0], rd_lambda)

    def damaged(self, image, embedding, quant_width, rd_lambda, latent0):
        return (latent0 + 40.0 * np.sign(np.random.default_rng(0).standard_normal(latent0.shape))).astype(np.float32), None

    monkeypatch.setattr(latent_opt.LatentSearch, "search_iframe", damaged)
    monkeypatch.setattr(latent_opt.LatentSearch, "search_residue",
                        lambda self, image, compensated, state, *rest: damaged(self, image, *rest))
    with Encoder(bundle, backend) as plain_encoder, Encoder(bundle, backend, latent_optimization=settings) as encoder:
        for index, frame_type in enumerate((FrameType.I, FrameType.P)):
            plain = plain_encoder.encode_frame(clip[index], level, frame_type)
            guarded = encoder.encode_frame(clip[index], level, frame_type)
            assert guarded.payload == plain.payload, frame_type
            np.testing.assert_array_equal(guarded.reconstruction, plain.reconstruction)


def test_slow_searches_i_frames_only_and_veryslow_residues_too(small, clip, monkeypatch):
    """The two search presets differ in what they search: `slow` one latent a GOP (the I-frame's),
    `veryslow` every P-frame's residue latent as well (counted through the search's entry points)."""
    from runtime import latent_opt
    from runtime.presets import get_preset

    bundle, backend = small
    calls = []
    for name in ("search_iframe", "search_residue"):
        real = getattr(latent_opt.LatentSearch, name)
        monkeypatch.setattr(latent_opt.LatentSearch, name,
                            lambda self, *a, _real=real, _name=name: calls.append(_name) or _real(self, *a))  # fmt: skip
    searched = {}
    for preset in ("slow", "veryslow"):
        calls.clear()
        settings = get_preset(preset).latent_optimization()
        with Encoder(bundle, backend, latent_optimization=settings) as encoder:
            for index, frame_type in enumerate((FrameType.I, FrameType.P, FrameType.P)):
                encoder.encode_frame(clip[index], 3.5, frame_type)
        searched[preset] = list(calls)
    assert searched == {"slow": ["search_iframe"], "veryslow": ["search_iframe", "search_residue", "search_residue"]}


def test_a_searched_hyper_latent_decodes_exactly(tmp_path, small, clip):
    """LatentOptimization(hyper=True) codes a searched hyper latent instead of h_a(y): the plain
    decoder still returns exactly the encoder's reconstructions (I and P)."""
    from runtime.latent_opt import LatentOptimization
    from runtime.stream import encode_video as encode

    bundle, backend = small
    encoded = []
    path = tmp_path / "hyper.elfvc"
    with pytest.MonkeyPatch.context() as mp:
        from runtime import presets

        mp.setitem(presets.PRESETS, "slow", presets.Preset("slow", "test", latent_steps=5))
        mp.setattr(presets.Preset, "latent_optimization", lambda self: LatentOptimization(steps=5, hyper=True))
        encode(list(clip[:2]), path, fps=25, gop=2, controller=ConstantLevel(5.0), backend=backend, bundle=bundle,
               preset="slow", progress=lambda i, e: encoded.append(e))  # fmt: skip
    decoded = []
    decode_video(path, decoded.append, backend, bundle)
    for frame, enc in zip(decoded, encoded, strict=True):
        np.testing.assert_array_equal(frame, enc.reconstruction)


def test_bad_settings_are_refused():
    from runtime.latent_opt import LatentOptimization

    for kwargs, message in (({"steps": -1}, "steps"), ({"learning_rate": 0.0}, "learning rate"),
                            ({"lambda_scale": float("nan")}, "lambda scale")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            LatentOptimization(**kwargs)


def test_rd_cost_is_the_training_loss():
    from runtime.stream import rd_cost

    assert rd_cost(0, 20.0, 100, 0.5) == pytest.approx(0.01)  # MSE 10^-2
    assert rd_cost(800, 30.0, 100, 0.01) == pytest.approx(1e-3 + 0.08)
    assert rd_cost(8, float("inf"), 4, 1.0) == 2.0  # an exact frame costs its bits alone


def test_rd_frame_type_keeps_the_cheaper_coding(tmp_path, small, bikes_frames):
    """rd_frame_type: every P-frame is also coded as an I-frame and the one of lower MSE + lambda x
    bpp is kept: a repeated frame stays a P-frame, a cut to unrelated content becomes an I-frame
    (without it, a P-frame); the stream decodes to exactly what the encoder reconstructed. (At
    level 1 with `small`; at higher levels its P-frames code even this cut more cheaply.)"""
    from runtime.stream import rd_cost

    bundle, backend = small
    a = np.ascontiguousarray(bikes_frames[0, 60:124, 100:228])
    b = np.ascontiguousarray(bikes_frames[7, ::-1, ::-1][60:124, 100:228])  # frame 7 turned over: other content
    clip = [a, a, b]
    types = {}
    for rd in (True, False):
        encoded = []
        path = tmp_path / f"rd{rd}.elfvc"
        encode_video(clip, path, fps=25, gop=16, controller=ConstantLevel(1.0), backend=backend, bundle=bundle,
                     preset="medium", scenecut=0, rd_frame_type=rd, progress=lambda i, e: encoded.append(e))  # fmt: skip
        types[rd] = [e.frame_type for e in encoded]
        decoded = []
        decode_video(path, decoded.append, backend, bundle)
        for frame, enc in zip(decoded, encoded, strict=True):
            np.testing.assert_array_equal(frame, enc.reconstruction)
    assert types[True] == [FrameType.I, FrameType.P, FrameType.I]
    assert types[False] == [FrameType.I, FrameType.P, FrameType.P]
    # The cut frame: its I-frame coding is the lower cost, as the encoder judged.
    with Encoder(bundle, backend) as encoder:
        first = encoder.encode_frame(a, 1.0, FrameType.I)
        second = encoder.encode_frame(a, 1.0, FrameType.P)
        cut_p = encoder.encode_frame(b, 1.0, FrameType.P, commit=False)
        cut_i = encoder.encode_frame(b, 1.0, FrameType.I, commit=False)
    lam = bundle.training_lambda(1.0)
    px = a.shape[0] * a.shape[1]
    assert rd_cost(second.bits, second.psnr, px, lam) < rd_cost(first.bits, first.psnr, px, lam)
    assert rd_cost(cut_i.bits, cut_i.psnr, px, lam) < rd_cost(cut_p.bits, cut_p.psnr, px, lam)
