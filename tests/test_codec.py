"""The codec through real files (runtime/codec.py, runtime/stream.py) on a real clip.

Small untrained model (the default bundle when no model is shipped): exactness, structure and
robustness do not depend on training.
"""

import os
import struct
import zlib

import numpy as np
import pytest

from runtime import bitstream as bs
from runtime.backends import get_backend
from runtime.codec import Decoder, Encoder
from runtime.entropy_coding import SubstreamLayout
from runtime.stream import decode_video, encode_video, inspect
from runtime.types import CodecError, FrameType

pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")  # one trace per bundle (conftest.py)

LEVEL = 2.625  # fractional on purpose


class Constant:
    """The trivial rate controller: one level for every frame."""

    def __init__(self, level):
        self.level = level
        self.updates = []

    def select_level(self, index, frame_type, num_pixels, trial):
        return self.level

    def update(self, index, frame_type, result):
        self.updates.append(result)


class TryThenSettle(Constant):
    """Runs two trials per frame, then settles on the second level (reused, not re-coded)."""

    def select_level(self, index, frame_type, num_pixels, trial):
        trial(0.5)
        trial(self.level)
        return self.level


@pytest.fixture(scope="module")
def bundle(untrained_codec):
    return untrained_codec[0]


@pytest.fixture(scope="module")
def backend(untrained_codec):
    return untrained_codec[1]


@pytest.fixture(scope="module")
def clip(bikes_frames):
    """4 frames of bikes.mp4 cropped to an odd 130x98 (padding and cropping on both axes)."""
    return bikes_frames[:4, 100:198, 300:430]


@pytest.fixture(scope="module")
def coded(tmp_path_factory, clip, bundle, backend):
    path = tmp_path_factory.mktemp("codec") / "bikes.elfvc"
    controller = TryThenSettle(LEVEL)
    # scenecut=0: the fixed GOP pattern (this untrained model's P-frames cost more than I-frames).
    summary = encode_video(list(clip), path, fps=25, gop=3, controller=controller, backend=backend, bundle=bundle,
                           scenecut=0)  # fmt: skip
    decoded = []
    decode_summary = decode_video(path, decoded.append, backend, bundle)
    return path, summary, decoded, decode_summary, controller


def read(path):
    return path.read_bytes()


def decode_bytes(tmp_path, data, bundle, backend, name="x.elfvc"):
    path = tmp_path / name
    path.write_bytes(data)
    return decode_video(path, lambda frame: None, backend, bundle)


def test_decoder_reproduces_encoder_exactly(coded, clip, bundle, backend):
    path, summary, decoded, decode_summary, controller = coded
    assert decode_summary.num_frames == len(decoded) == 4
    assert [f.frame_type for f in summary.frames] == [FrameType.I, FrameType.P, FrameType.P, FrameType.I]
    # The encoder's own reconstructions (re-run with the same levels) equal the decoded frames
    # bit for bit, and so do the float references both sides carry.
    with Encoder(bundle, backend) as encoder, Decoder(bundle, backend, 130, 98) as decoder:
        reader = bs.Reader(read(path))
        bs.read_stream_header(reader)
        for index, frame in enumerate(clip):
            encoded = encoder.encode_frame(frame, LEVEL, summary.frames[index].frame_type)
            unit = bs.read_frame(reader, index)
            assert encoded.payload == bs.write_frame(unit)  # encoding is deterministic
            out = decoder.decode_frame(unit)
            assert out.reconstruction.shape == (98, 130, 3) and out.reconstruction.dtype == np.uint8
            np.testing.assert_array_equal(out.reconstruction, decoded[index])
            np.testing.assert_array_equal(encoded.reconstruction, decoded[index])
            for name in ("previous", "previous2", "flow", "state"):
                np.testing.assert_array_equal(getattr(encoder.references, name), getattr(decoder.references, name))
    assert [u.bits for u in controller.updates] == [f.bits for f in summary.frames]


def test_stream_structure(coded, bundle):
    path, summary, *_ = coded
    info = inspect(path)
    assert (info.width, info.height, info.num_frames, info.gop, info.fps) == (130, 98, 4, 3, 25)
    assert info.model_id == bundle.model_id.hex()
    assert bs.header_size() + sum(f.num_bytes for f in info.frames) == os.path.getsize(path) == summary.total_bytes
    assert [f.num_bytes * 8 for f in info.frames] == [f.bits for f in summary.frames]
    assert all(f.level == np.float32(LEVEL) for f in info.frames)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_substream_layout_changes_the_packing_not_the_pictures(tmp_path, clip, bundle, backend):
    """A stream cut into more substreams (3 channel groups x 64-pixel tiles: 12 per q0 codelayer
    of this 130x98 clip) decodes to the same frames as one group and one tile (512 px, the
    SubstreamLayout() default), and costs more: each substream adds two length varints and a
    range-coder flush."""
    results = {}
    for name, layout in [("default", SubstreamLayout()), ("split", SubstreamLayout(channel_groups=3, tile=4))]:
        path = tmp_path / f"{name}.elfvc"
        summary = encode_video(list(clip), path, fps=25, gop=3, controller=Constant(LEVEL), backend=backend,
                               bundle=bundle, scenecut=0, layout=layout)  # fmt: skip
        frames = []
        decode_video(path, frames.append, backend, bundle)
        results[name] = summary, inspect(path), frames
    (default, default_info, default_frames), (split, split_info, split_frames) = results["default"], results["split"]
    assert (default_info.channel_groups, split_info.channel_groups, split_info.tile) == (1, 3, 4)
    assert all(len(a.substreams) > len(b.substreams) for a, b in zip(split_info.frames, default_info.frames))
    assert len(split_frames) == len(default_frames) == len(clip)
    for a, b in zip(split_frames, default_frames):
        np.testing.assert_array_equal(a, b)
    assert split.total_bytes > default.total_bytes


def test_estimate_matches_actual_size(bundle, backend, bikes_frames):
    """Real size within 3% of App. A's estimate with the coded scales, plus the fixed frame
    header (marker, type, level, count, CRC: 12 bytes) and 2 length bytes + 2 flush bytes per
    substream. I-frames and first P-frames only: an untrained model's later P-frames diverge
    (PSNR < 10 dB), its latents then sit far outside its own scales, and the escape code and
    App. A's floored likelihood part ways by design (docs/BENCHMARKS.md has real-model numbers)."""
    frames = bikes_frames[:2, :, :256]
    for level in (0.0, 3.5, 7.0):
        with Encoder(bundle, backend) as encoder:
            for frame_type, frame in zip((FrameType.I, FrameType.P), frames):
                encoded = encoder.encode_frame(frame, level, frame_type)
                overhead = 8 * (12 + 4 * len(encoded.substream_bytes))
                assert abs(encoded.bits - encoded.estimated_bits) <= 0.03 * encoded.estimated_bits + overhead, (
                    level, frame_type, encoded.bits, encoded.estimated_bits)  # fmt: skip


def test_trial_leaves_references_untouched(bundle, backend, clip):
    with Encoder(bundle, backend) as a, Encoder(bundle, backend) as b:
        a.encode_frame(clip[0], LEVEL, FrameType.I)
        b.encode_frame(clip[0], LEVEL, FrameType.I)
        before = a.references
        trial = a.encode_frame(clip[1], 6.0, FrameType.P, commit=False)
        assert a.references is before
        direct = b.encode_frame(clip[1], 3.0, FrameType.P)
        after_trial = a.encode_frame(clip[1], 3.0, FrameType.P)
        assert after_trial.payload == direct.payload
        with pytest.raises(ValueError, match="other references"):
            a.commit(trial)


def test_bad_streams_raise_codec_error(tmp_path, coded, bundle, backend):
    path = coded[0]
    good = read(path)
    header_end = bs.header_size()
    cases = {
        "empty file": b"",
        "not an ELF-VC stream": b"P6\n130 98\n255\n" + bytes(200),
        "truncated": good[: len(good) - 7],
        "frame 1 CRC mismatch": good[:header_end + 600] + bytes([good[header_end + 600] ^ 4]) + good[header_end + 601:],
        "bytes after the last": good + b"\0",
        "unsupported format version": good[:8] + b"\x02\x00" + good[10:],
    }
    # another model: same stream with a different identity (and a valid header CRC)
    raw = bytearray(good[: header_end - 4])
    raw[10] ^= 0xFF
    cases["wrong model"] = bytes(raw) + struct.pack("<I", zlib.crc32(bytes(raw))) + good[header_end:]
    for message, data in cases.items():
        with pytest.raises(CodecError, match=message) as err:
            decode_bytes(tmp_path, data, bundle, backend)
        assert "\n" not in str(err.value)
    with pytest.raises(CodecError, match="no such file"):
        decode_video(tmp_path / "missing.elfvc", lambda f: None, backend, bundle)
    with pytest.raises(CodecError, match="folder"):
        decode_video(tmp_path, lambda f: None, backend, bundle)


def test_any_reader_refuses_what_needs_no_model(tmp_path, coded, bundle, backend):
    """`inspect` (elfvc info) checks what the container alone says (docs/BITSTREAM.md, "Errors"):
    a header announcing 0 frames (an encode that did not finish), a first frame that is not an
    I-frame, a substream count the frame's size and layout do not give. The decoder too, and
    a wrong-model error names the file as every other stream error does."""
    good = read(coded[0])
    reader = bs.Reader(good)
    header = bs.read_stream_header(reader)
    units = [bs.read_frame(reader, i) for i in range(header.frame_count)]
    assert [len(u.substreams) for u in units] == [2, 4, 4, 2]  # 130x98: one tile; q1 and q0 per codelayer

    def restream(units, **fields):
        import dataclasses

        head = dataclasses.replace(header, **fields)
        body = bs.write_stream_header(dataclasses.replace(head, frame_count=max(1, head.frame_count)))
        if head.frame_count == 0:  # what an encoder writes first, its count to come
            raw = bytearray(body[: bs.header_size() - 4])
            raw[42:46] = bytes(4)
            body = bytes(raw) + struct.pack("<I", zlib.crc32(bytes(raw)))
        return body + b"".join(bs.write_frame(u) for u in units)

    import dataclasses

    cases = {
        "the header announces 0 frames \\(an unfinished encode\\)": restream(units, frame_count=0),
        "the first frame is not an I-frame": restream([units[1]], frame_count=1),
        r"frame 1 \(P\) has 3 substreams; its size and layout give 4": restream(
            [units[0], dataclasses.replace(units[1], substreams=units[1].substreams[:3])], frame_count=2),
        r"frame 0 \(I\) has 5 substreams; its size and layout give 2 to 4": restream(
            [dataclasses.replace(units[0], substreams=units[0].substreams * 2 + units[0].substreams[:1])],
            frame_count=1, channel_groups=2),
    }
    for message, data in cases.items():
        path = tmp_path / "bad.elfvc"
        path.write_bytes(data)
        for read_it in (inspect, lambda p: decode_video(p, lambda frame: None, backend, bundle)):
            with pytest.raises(CodecError, match=f"^{path}: corrupt stream: {message}$"):
                read_it(path)
    raw = bytearray(good[: bs.header_size() - 4])
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw) + struct.pack("<I", zlib.crc32(bytes(raw))) + good[bs.header_size():])
    with pytest.raises(CodecError, match=f"^{path}: wrong model: the stream was encoded with model "):
        decode_video(path, lambda frame: None, backend, bundle)


def test_encode_failures_leave_no_output(tmp_path, clip, bundle, backend):
    out = tmp_path / "out.elfvc"
    mixed = [clip[0], clip[1][:, :64]]  # the second frame has another size
    with pytest.raises(CodecError, match="differs"):
        encode_video(mixed, out, fps=25, controller=Constant(1.0), backend=backend, bundle=bundle)
    with pytest.raises(CodecError, match="no frames"):
        encode_video([], out, fps=25, controller=Constant(1.0), backend=backend, bundle=bundle)
    with pytest.raises(CodecError, match="a frame must be uint8"):  # not skipped: the first frame chooses the layout
        encode_video([None, clip[0]], out, fps=25, controller=Constant(1.0), backend=backend, bundle=bundle)
    # 64-pixel tiles of a 8192x8256 picture: 4 x 16,512 substreams a P-frame, past the format's
    # 65,535; refused before any network runs (the frame is a read-only view, no memory).
    huge = np.broadcast_to(clip[0][:1, :1], (8256, 8192, 3))
    with pytest.raises(CodecError, match="66048 substreams a P-frame; the format allows 65535: use larger tiles"):
        encode_video([huge], out, fps=25, controller=Constant(1.0), backend=backend, bundle=bundle,
                     layout=SubstreamLayout(tile=4), max_pixels=1 << 30)  # fmt: skip
    with pytest.raises(CodecError, match="outside"):
        encode_video([clip[0]], out, fps=25, controller=Constant(9.5), backend=backend, bundle=bundle)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(CodecError, match="scene-cut threshold"):
            encode_video([clip[0]], out, fps=25, controller=Constant(1.0), backend=backend, bundle=bundle, scenecut=bad)
    source = tmp_path / "in.y4m"
    source.write_bytes(b"not touched")
    with pytest.raises(CodecError, match="is the input"):
        encode_video([clip[0]], source, fps=25, controller=Constant(1.0), backend=backend, bundle=bundle,
                     input_path=source)  # fmt: skip
    assert source.read_bytes() == b"not touched"
    (tmp_path / "folder").mkdir()
    with pytest.raises(CodecError, match="is a folder; an ELF-VC stream is one file"):
        encode_video(iter([clip[0]]), tmp_path / "folder", fps=25, controller=Constant(1.0), backend=backend, bundle=bundle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "in.y4m"]


def test_a_backend_of_another_model_or_a_closed_one_is_refused(bundle, backend, clip):
    """The symbols come from the backend's networks, the header's model id from the bundle: a
    backend built for another model would write a stream no decoder reads. A closed backend, and
    a closed encoder, run nothing."""
    from runtime.backends.base import Backend

    class Other(Backend):
        name, model_id = "other", bytes(16)

        def run(self, subgraph, **inputs):
            raise AssertionError("never run")

    for side in (lambda: Encoder(bundle, Other()), lambda: Decoder(bundle, Other(), 130, 98)):
        with pytest.raises(CodecError, match=f"the other backend runs model 0{{32}}, not the bundle's {bundle.model_id.hex()}"):
            side()
    encoder = Encoder(bundle, backend)
    encoder.close()
    with pytest.raises(CodecError, match="the encoder or decoder is closed"):
        encoder.encode_frame(clip[0], 1.0, FrameType.I)
    closed = get_backend("tf", bundle)
    closed.close()
    with pytest.raises(CodecError, match="the tf backend is closed: it cannot run iframe_analysis"):
        closed.run("iframe_analysis", frame=np.zeros((1, 64, 64, 3), np.float32))


def test_backend_registry(bundle):
    with pytest.raises(ValueError, match="valid backends: tf, onnx, tensorrt"):
        get_backend("cuda", bundle)


def write_bundle_folder(folder, bundle, pinned=True):
    import json

    import tensorflow as tf

    from model.bundle import INTEGER_HYPER_FILE, integer_hyper_arrays

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(bundle.config.to_dict()))
    tf.train.Checkpoint(model=bundle.model).write(str(folder / "model"))
    if pinned:
        np.savez(folder / INTEGER_HYPER_FILE, **integer_hyper_arrays(bundle.integer_hyper))


def test_bundle_folder_round_trip(tmp_path, bundle, capsys, monkeypatch):
    from model.bundle import load_bundle
    from runtime.bundle import main

    folder = tmp_path / "model"
    write_bundle_folder(folder, bundle)
    loaded = load_bundle(folder)
    assert loaded.model_id == bundle.model_id and loaded.trained and not loaded.notes
    assert main(["bundle", "info", str(folder)]) == 0
    assert bundle.model_id.hex() in capsys.readouterr().out
    (folder / "config.json").write_text("{\"name\": \"small\", \"bogus\": 1}")
    with pytest.raises(CodecError, match="not a model config"):
        load_bundle(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CodecError, match="no config.json"):
        load_bundle(folder)
    assert main(["bundle", "info", str(folder)]) == 1
    with pytest.raises(CodecError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    # pin takes a folder's path: a shipped model's name is refused before any calibration, and
    # nothing is written where the name would point from the working directory.
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["bundle", "pin", "small"]) == 1
    err = capsys.readouterr().err
    assert "shipped model's name" in err and err.count("\n") == 1 and not (tmp_path / "small").exists()
    assert main(["bundle", "pin", "nowhere"]) == 1
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{\"name\": \"small\"}")
    with pytest.raises(CodecError, match="no TF checkpoint"):
        load_bundle(empty)


def test_compact_folder_holds_fp16_kernels_and_pins_them(tmp_path, bundle):
    """`compact`: kernels stored FP16, small vectors FP32 and exact, the integer networks pinned
    on the rounded weights (the folder's identity is its own); a mismatched file is refused."""
    from model.bundle import COMPACT_FILE, COMPACT_FP16_MIN_SIZE, calibration_frames, load_bundle, write_compact

    source, target = tmp_path / "model", tmp_path / "compact"
    write_bundle_folder(source, bundle)
    (source / "model_card.json").write_text('{"gop": 8, "model_id": "stale"}')
    write_compact(source, target, frames=calibration_frames(2)[:, :64, :64])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compact", "model"]  # no partial folder left
    loaded = load_bundle(target)
    assert not loaded.notes and loaded.model_id != bundle.model_id
    assert loaded.card == {"gop": 8, "model_id": loaded.model_id.hex()}  # the card travels, with the copy's id
    big = 0
    for a, b in zip(bundle.model.variables, loaded.model.variables):
        a, b = a.numpy(), b.numpy()
        if a.size >= COMPACT_FP16_MIN_SIZE and a.dtype == np.float32:
            big += 1
            np.testing.assert_array_equal(b, a.astype(np.float16).astype(np.float32))
        else:
            np.testing.assert_array_equal(b, a)
    assert big > 10
    # The Keras trainer's --init_from takes a compact folder (the shipped models are): same weights.
    from model.checkpoints import warm_start
    from model.elfvc import ELFVC

    fresh = ELFVC(bundle.config).build_weights()
    assert warm_start(fresh, target, "all", bundle.config) == str(target / COMPACT_FILE)
    for a, b in zip(fresh.variables, loaded.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(CodecError, match="exists"):
        write_compact(source, target)
    with np.load(target / COMPACT_FILE) as arrays:
        damaged = dict(arrays)
    damaged.pop(sorted(damaged)[0])
    np.savez(target / COMPACT_FILE, **damaged)
    with pytest.raises(CodecError, match="does not match this config .1 model variables have no weight"):
        load_bundle(target)
    (target / COMPACT_FILE).write_bytes(b"not a zip")
    with pytest.raises(CodecError, match="is not a compact weights file"):
        load_bundle(target)


def test_shipped_models_resolve_by_name(tmp_path):
    from model.bundle import DEFAULT_DIR, read_card, resolve_model, shipped_models

    shipped = dict(shipped_models())
    assert shipped_models()[0][1] == DEFAULT_DIR and {"small", "base"} <= set(shipped)
    assert resolve_model("small") == shipped["small"] and resolve_model(str(tmp_path)) == tmp_path
    with pytest.raises(CodecError, match=r"nor is it a shipped model's name \(shipped: .*small"):
        resolve_model("no-such-model")
    for name, folder in shipped.items():
        card = read_card(folder)
        assert card.get("name") == name and isinstance(card.get("gop"), int), (name, card)
    (tmp_path / "model_card.json").write_text("[1]")
    with pytest.raises(CodecError, match="not a JSON object"):
        read_card(tmp_path)


@pytest.mark.slow
def test_unpinned_folder_calibrates_like_the_default(tmp_path, bundle):
    """Without integer_hyper.npz the folder calibrates on the same frames: same identity here."""
    from model.bundle import load_bundle, pin_integer_hyper

    folder = tmp_path / "model"
    write_bundle_folder(folder, bundle, pinned=False)
    loaded = load_bundle(folder)
    assert loaded.notes and loaded.model_id == bundle.model_id
    pin_integer_hyper(folder)
    assert not load_bundle(folder).notes


@pytest.mark.parametrize("flow_spread", [
    # The flow on the same per-level spread is slow: the shipped model's (a per-level flow Q_w of
    # its own) streams decode exactly by default (test_scene_cut_codes_an_iframe_and_restarts_the_gop,
    # test_cli), and the rate property is the fixed-flow case's.
    pytest.param({}, marks=pytest.mark.slow),
    {"flow_quant_width_first": 1.0, "flow_quant_width_last": 1.0},
], ids=["flow_spread0", "flow_spread1"])
def test_pframe_quant_width_is_coded_exactly_and_sets_the_rate(tmp_path, clip, flow_spread):
    """With config.pframe_quant_width the flow and residue codelayers quantize on their own
    per-level Q_w: the decoder still reproduces the encoder bit for bit, and a P-frame at level 0
    (Q_w = 4) costs far fewer bits than at the top level (Q_w = 0.5) -- about log2(8) = 3 bits
    less per significant latent, which an untrained model's level maps alone never give. The
    same holds with the flow at a fixed Q_w = 1 (flow_quant_width), the residue setting the rate."""
    from model.bundle import untrained_bundle

    bundle = untrained_bundle(pframe_quant_width=True, quant_width_first=4.0, quant_width_last=0.5, **flow_spread)
    if flow_spread:
        np.testing.assert_array_equal(bundle.model.flow.quant_width([0.0, 7.0]).numpy(), 1.0)
    backend = get_backend("tf", bundle)
    pframe_bits = {}
    for level in (0.0, 7.0):
        path = tmp_path / f"level{level:g}.elfvc"
        summary = encode_video(list(clip[:3]), path, fps=25, gop=3, controller=Constant(level), backend=backend,
                               bundle=bundle, scenecut=0)  # fmt: skip
        decoded = []
        decode_video(path, decoded.append, backend, bundle)
        with Encoder(bundle, backend) as encoder:
            for index, frame in enumerate(clip[:3]):
                encoded = encoder.encode_frame(frame, level, summary.frames[index].frame_type)
                np.testing.assert_array_equal(encoded.reconstruction, decoded[index])
        # untrained_model draws every kernel, the heads too: a P-frame, not a copy of its reference
        assert np.abs(decoded[1].astype(int) - decoded[0]).max() > 2
        assert [f.frame_type for f in summary.frames] == [FrameType.I, FrameType.P, FrameType.P]
        pframe_bits[level] = sum(f.bits for f in summary.frames[1:])
    assert pframe_bits[0.0] < 0.5 * pframe_bits[7.0], pframe_bits


def test_scene_cut_codes_an_iframe_and_restarts_the_gop(tmp_path, clip):
    """A cut from bikes to flat grey, GOP 4, shipped model. Scene-cut check off: the fixed pattern.
    On (threshold 0.05 of the last I-frame, so every P-frame is also tried as an I-frame): the
    cut frame is coded as an I-frame (smaller and better than its P-frame), the grey P-frames
    after it stay P-frames (tried as I-frames too, but those are worse), and the next I-frame
    comes 4 frames after the cut, not at frame 4. Both streams decode to exactly the frames the
    encoder measured."""
    from model.bundle import shipped_bundle
    from runtime.metrics import psnr_rgb

    bundle = shipped_bundle("small")
    backend = get_backend("tf", bundle)
    cut = np.concatenate([clip[:3], np.full((5,) + clip.shape[1:], 128, np.uint8)])
    summaries = {}
    for scenecut, pattern in ((0.0, "IPPPIPPP"), (0.05, "IPPIPPPI")):
        path = tmp_path / f"cut{scenecut:g}.elfvc"
        summary = encode_video(list(cut), path, fps=25, gop=4, controller=Constant(2.625), backend=backend,
                               bundle=bundle, scenecut=scenecut)  # fmt: skip
        assert "".join(f.frame_type.name for f in summary.frames) == pattern
        summaries[scenecut] = summary
        decoded = []
        decode_video(path, decoded.append, backend, bundle)
        np.testing.assert_allclose(psnr_rgb(cut, np.stack(decoded)), [f.psnr for f in summary.frames], rtol=0, atol=1e-9)
    with_cut, without = (inspect(tmp_path / name) for name in ("cut0.05.elfvc", "cut0.elfvc"))
    assert with_cut.frames[3].num_bytes < without.frames[3].num_bytes  # the I-frame: smaller ...
    assert summaries[0.05].frames[3].psnr >= summaries[0.0].frames[3].psnr  # ... and no worse


def test_a_scene_cut_iframe_gets_the_iframe_level_under_a_p_level_offset(tmp_path, clip):
    """P-frames at offsets -1, 0, -1, 0, ... from the I-frames (a pattern, as the base card's): the
    cut frame is tried as an I-frame at the P-frame's level (equal footing), and once it wins it
    starts a GOP, so it is coded at the I-frames' level like every other I-frame and the pattern
    restarts after it (frame 4 is the first P-frame of its GOP: level 2, where the pattern counted
    from frame 0 would give 3); the stream decodes to what the encoder measured."""
    from model.bundle import shipped_bundle
    from runtime.metrics import psnr_rgb
    from runtime.ratecontrol import ConstantLevel

    bundle = shipped_bundle("small")
    backend = get_backend("tf", bundle)
    cut = np.concatenate([clip[:3], np.full((5,) + clip.shape[1:], 128, np.uint8)])
    controller = ConstantLevel(3.0, p_offset=(-1.0, 0.0), max_level=bundle.config.max_level)
    path = tmp_path / "cut.elfvc"
    summary = encode_video(list(cut), path, fps=25, gop=4, controller=controller, backend=backend, bundle=bundle,
                           scenecut=0.05)  # fmt: skip
    types = "".join(f.frame_type.name for f in summary.frames)
    assert types.startswith("IPPIP"), types  # the cut at frame 3, a P-frame after it
    assert {f.level for f in summary.frames if f.frame_type is FrameType.I} == {3.0}
    expected, last = [], 0
    for index, kind in enumerate(types):
        last = index if kind == "I" else last
        expected.append(3.0 if kind == "I" else (2.0, 3.0)[(index - last - 1) % 2])
    assert [f.level for f in summary.frames] == expected and expected[4] == 2.0, (types, expected)
    assert [f.level for f in inspect(path).frames] == [f.level for f in summary.frames]
    decoded = []
    decode_video(path, decoded.append, backend, bundle)
    np.testing.assert_allclose(psnr_rgb(cut, np.stack(decoded)), [f.psnr for f in summary.frames], rtol=0, atol=1e-9)


def test_model_id_ignores_later_config_fields_at_their_defaults():
    """Q_w config fields came after model ids: at their defaults they stay out of the hash (a
    model folder made before them keeps its id, so its streams still decode); set, they count."""
    from model.config import QUANT_WIDTH_FIELDS, get_config
    from model.bundle import identity_config

    plain = identity_config(get_config("small"))
    assert not set(QUANT_WIDTH_FIELDS) & set(plain)
    assert {"flow_quant_width_first", "flow_quant_width_last"} <= set(QUANT_WIDTH_FIELDS)
    assert plain == {k: v for k, v in get_config("small").to_dict().items() if k in plain}
    varied = identity_config(get_config("small", pframe_quant_width=True, quant_width_first=4.0))
    assert varied["pframe_quant_width"] is True and varied["quant_width_first"] == 4.0
    assert "quant_width_last" not in varied
    flow = identity_config(get_config("small", pframe_quant_width=True, flow_quant_width_first=1.0, flow_quant_width_last=1.0))
    assert flow["flow_quant_width_first"] == flow["flow_quant_width_last"] == 1.0
