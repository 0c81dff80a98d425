"""Frame encoder and decoder (Figure 2, App. A) over a backend and the range coder.

    Encoder.encode_frame(frame uint8 [H, W, 3], level, type)
      pad to a multiple of 64 (edge) -> analysis -> hyper analysis -> k1 = round(z)
      -> integer D1 (mean, scale index) -> k0 = round((y - mean) / Q_w) -> range code
      -> the decoder half (`_DecoderHalf`) on (k1, k0) -> reconstruction, next references
    Decoder.decode_frame(unit)
      range decode k1 -> integer D1 -> range decode k0 -> the same `_DecoderHalf`

The encoder and decoder share one implementation of everything after the symbols
(`_DecoderHalf`): the entropy parameters, dequantization, syntheses and the predictor. The
encoder keeps its own decoded frames as references (float, unclipped, as in the model), never
the originals, so on the same backend its references and the decoder's are bit-identical.

Substream order inside a frame unit: per codelayer (I: iframe; P: flow, residue), first the q1
substreams, then the q0 substreams, each in `SubstreamLayout` order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from model.config import FRAME_MULTIPLE
from runtime.bitstream import FrameUnit, write_frame
from runtime.entropy_coding import SYMBOL_LIMIT, EntropyCoder, Substream, SubstreamLayout, estimated_bits
from model.npmath import level_embedding, quant_width
from model.integer_hyper import quantize_embedding
from runtime.limits import MAX_PIXELS, check_picture_size
from runtime import latent_opt, motion_refine
from runtime.types import CodecError, FrameType, TrialResult


@dataclass(frozen=True)
class LevelContext:
    """Everything a frame's level decides, computed identically on both sides (host, float64)."""

    level: float  # a float32 value
    embedding: np.ndarray  # float32 [1, E] eq. (4)-(8)
    quantized_embedding: np.ndarray  # float32 integers [1, E], input of the integer D1
    quant_widths: Dict[str, np.ndarray]  # block -> float64 [C] Q_w (ones for P-frames without one)

    def quant_width(self, block: str) -> np.ndarray:
        """float32 [1, 1, 1, C]: the Q_w that quantizes and dequantizes `block`'s codelayer."""
        return self.quant_widths[block].astype(np.float32)[None, None, None, :]


@dataclass
class References:
    """What both sides carry from frame to frame (model/elfvc.py ReferenceState, in numpy)."""

    previous: np.ndarray  # x_hat_{t-1} [1, H, W, 3] float32, unclipped
    previous2: np.ndarray  # x_hat_{t-2}
    flow: np.ndarray  # f_{t-1} [1, H, W, 3]
    state: np.ndarray  # s_{t-1} [1, H/4, W/4, S]


@dataclass(frozen=True)
class CodedLayer:
    """One codelayer's symbols and what they decode to."""

    hyper_symbols: np.ndarray  # int32 [h/4, w/4, C_z]
    symbols: np.ndarray  # int32 [h, w, C]
    indices: np.ndarray  # int32 [h, w, C] scale table indices of q0
    hyper_indices: np.ndarray  # int32 [h/4, w/4, C_z]
    latent_hat: np.ndarray  # float32 [1, h, w, C]

    def estimated_bits(self) -> float:
        """The model's codelength (App. A) with the quantized table scales actually used."""
        return estimated_bits(self.hyper_symbols, self.hyper_indices) + estimated_bits(self.symbols, self.indices)


@dataclass(frozen=True)
class EncodedFrame:
    payload: bytes  # the frame unit (runtime/bitstream.py), header and CRC included
    frame_type: FrameType
    level: float
    bits: int  # len(payload) * 8
    estimated_bits: float  # model estimate with the coded (quantized) scales
    reconstruction: Optional[np.ndarray]  # uint8 [H, W, 3], cropped (None: not reconstructed)
    psnr: Optional[float]  # RGB PSNR against the source frame, dB (None: not reconstructed)
    substream_bytes: Tuple[int, ...] = ()
    # What committing this frame makes the references (for Encoder.commit after a trial).
    references: Optional["References"] = field(default=None, repr=False, compare=False)
    generation: int = field(default=-1, repr=False, compare=False)

    def trial_result(self) -> TrialResult:
        return TrialResult(level=self.level, bits=self.bits, psnr=self.psnr)


@dataclass(frozen=True)
class DecodedFrame:
    frame_type: FrameType
    level: float
    reconstruction: np.ndarray  # uint8 [H, W, 3], cropped
    bits: int


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] image -> uint8 (round, clip)."""
    return np.clip(np.floor(np.asarray(image, np.float32) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def padded_size(height: int, width: int) -> Tuple[int, int]:
    return height + (-height % FRAME_MULTIPLE), width + (-width % FRAME_MULTIPLE)


@dataclass
class Timings:
    """Wall time spent so far in the networks (backend) and in range coding."""

    network_seconds: float = 0.0
    entropy_seconds: float = 0.0

    @property
    def entropy_share(self) -> float:
        total = self.network_seconds + self.entropy_seconds
        return self.entropy_seconds / total if total > 0 else 0.0


class _DecoderHalf:
    """The decoder half, shared by Encoder and Decoder."""

    def __init__(self, bundle, backend, layout: SubstreamLayout, workers: Optional[int]):
        runs = getattr(backend, "model_id", None)
        if runs is not None and runs != bundle.model_id:
            raise CodecError(f"the {getattr(backend, 'name', '?')} backend runs model {runs.hex()}, not the bundle's "
                             f"{bundle.model_id.hex()}: build the backend from the same bundle")
        self.bundle = bundle
        self.backend = backend
        self.closed = False
        self.config = bundle.config
        self.coder = EntropyCoder(layout, workers)
        self.layout = layout
        # log Q_w per block (§3.1; the P-frame blocks have one only with config.pframe_quant_width).
        self._log_quant_widths = {
            name: getattr(block, "log_quant_width").numpy().astype(np.float64)
            for name, block in (("iframe", bundle.model.iframe), ("flow", bundle.model.flow), ("residue", bundle.model.residue))
            if hasattr(block, "log_quant_width")
        }
        self._thresholds_cache: Dict[Tuple[str, float], np.ndarray] = {}
        self.refs: Optional[References] = None
        self.timings = Timings()

    def run(self, subgraph: str, **inputs) -> Dict[str, np.ndarray]:
        if self.closed:
            raise CodecError("the encoder or decoder is closed")
        start = time.perf_counter()
        try:
            return self.backend.run(subgraph, **inputs)
        finally:
            self.timings.network_seconds += time.perf_counter() - start

    def encode_symbols(self, symbols, indices, hyper: bool) -> List[Substream]:
        start = time.perf_counter()
        try:
            return self.coder.encode(symbols, indices, hyper=hyper)
        finally:
            self.timings.entropy_seconds += time.perf_counter() - start

    def decode_symbols(self, substreams, indices, hyper: bool) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.coder.decode(substreams, indices, hyper=hyper)
        finally:
            self.timings.entropy_seconds += time.perf_counter() - start

    # -- level -------------------------------------------------------------------------------
    def level_context(self, level: float) -> LevelContext:
        level = float(np.float32(level))
        if not (math.isfinite(level) and 0.0 <= level <= self.config.max_level):
            raise CodecError(f"level {level:g} outside [0, {self.config.max_level:g}]")
        embedding = level_embedding(level, self.config.levels, self.config.embedding_width)  # eq. (4)-(8), float64
        ones = np.ones(self.config.latent_channels)
        widths = {
            block: quant_width(self._log_quant_widths[block], level) if block in self._log_quant_widths else ones
            for block in ("iframe", "flow", "residue")
        }
        return LevelContext(
            level=level,
            embedding=embedding.astype(np.float32)[None],
            quantized_embedding=quantize_embedding(embedding[None]),
            quant_widths=widths,
        )

    def _thresholds(self, block: str, ctx: LevelContext) -> np.ndarray:
        key = (block, ctx.level if block in self._log_quant_widths else 0.0)
        if key not in self._thresholds_cache:
            if len(self._thresholds_cache) > 192:
                self._thresholds_cache.clear()
            self._thresholds_cache[key] = self.bundle.integer_hyper[block].scale_thresholds(ctx.quant_widths[block])
        return self._thresholds_cache[key]

    # -- entropy parameters ------------------------------------------------------------------
    def hyper_indices(self, block: str, shape) -> np.ndarray:
        index = self.bundle.integer_hyper[block].hyper_scale_index
        return np.broadcast_to(index, tuple(shape[:2]) + (len(index),)).astype(np.int32)

    def entropy_parameters(self, block: str, hyper_symbols: np.ndarray, ctx: LevelContext):
        """Integer D1 on k1 [h1, w1, C_z] -> (mean float32 [1, h, w, C], scale indices int32 [h, w, C])."""
        out = self.run(
            f"{block}_hyper_synthesis",
            hyper_latent=hyper_symbols[None].astype(np.float32),
            quantized_embedding=ctx.quantized_embedding,
        )
        accumulator = out["scale_accumulator"][0]
        if not np.array_equal(accumulator, np.round(accumulator)):
            raise RuntimeError(
                f"backend {self.backend.name!r} returned non-integer accumulators from {block}_hyper_synthesis: "
                "it does not evaluate the integer network exactly (FP16? TF32 with large weights?)"
            )
        net = self.bundle.integer_hyper[block]
        indices = net.accumulator_scale_index(accumulator.astype(np.int64), self._thresholds(block, ctx))
        return out["mean"].astype(np.float32), indices

    @staticmethod
    def dequantize(mean: np.ndarray, symbols: np.ndarray, quant_width) -> np.ndarray:
        """latent_hat = mean + Q_w * k (float32, the same expression on both sides)."""
        return (mean + quant_width * symbols[None].astype(np.float32)).astype(np.float32)

    # -- syntheses -----------------------------------------------------------------------------
    def iframe_synthesis(self, latent_hat: np.ndarray, ctx: LevelContext) -> References:
        out = self.run("iframe_synthesis", latent=latent_hat, embedding=ctx.embedding)
        recon = out["reconstruction"]
        state = out["state"] if self.config.use_state else np.zeros_like(out["state"])
        return References(previous=recon, previous2=recon, flow=np.zeros_like(recon), state=state)

    def predict(self, refs: References, ctx: LevelContext) -> np.ndarray:
        if self.bundle.model.predictor is None:
            return np.zeros_like(refs.flow)
        return self.run(
            "predictor", previous_flow=refs.flow, previous2=refs.previous2, previous=refs.previous, embedding=ctx.embedding
        )["predicted_flow"]

    def flow_synthesis(self, latent_hat, refs: References, predicted, ctx: LevelContext) -> Dict[str, np.ndarray]:
        return self.run(
            "flow_synthesis",
            latent=latent_hat,
            previous=refs.previous,
            predicted_flow=predicted,
            state=refs.state,
            embedding=ctx.embedding,
        )

    def residue_synthesis(self, latent_hat, compensated, state, ctx: LevelContext) -> Dict[str, np.ndarray]:
        return self.run(
            "residue_synthesis", latent=latent_hat, compensated=compensated, state=state, embedding=ctx.embedding
        )

    @staticmethod
    def check_finite(refs: References) -> None:
        """Both sides refuse non-finite references (a decoder would otherwise carry NaNs on)."""
        for name in ("previous", "flow", "state"):
            if not np.all(np.isfinite(getattr(refs, name))):
                raise CodecError(f"the frame decodes to non-finite values ({name})")

    def close(self):
        self.closed = True
        self.coder.close()


class _CodecSide:
    """What the encoder and the decoder share: their _DecoderHalf's references and timings, and
    closing it (the range coder's worker pool), by hand or as a context manager."""

    _half: _DecoderHalf

    @property
    def references(self) -> Optional[References]:
        return self._half.refs

    @property
    def timings(self) -> Timings:
        return self._half.timings

    def close(self):
        self._half.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Encoder(_CodecSide):
    """Encodes frames one by one; keeps its own reconstructions as references.

    Frames are uint8 [H, W, 3] of any size (all frames of one encoder the same size).
    `encode_frame(..., commit=False)` is a trial (rate control): it codes the frame and returns
    what it would cost without touching the references.
    """

    def __init__(
        self,
        bundle,
        backend,
        layout: SubstreamLayout = SubstreamLayout(),
        workers: Optional[int] = None,
        observer: Optional[Callable] = None,
        motion_refinement: Optional[motion_refine.MotionRefinement] = None,
        latent_optimization: Optional[latent_opt.LatentOptimization] = None,
    ):
        self._half = _DecoderHalf(bundle, backend, layout, workers)
        # The encoder-side choice of the quantized block motion (runtime/motion_refine.py); None or
        # disabled: plain rounding. A no-op for a model without the block-motion path.
        self.motion_refinement = (
            motion_refinement
            if motion_refinement is not None and motion_refinement.enabled and bundle.config.motion_search_radius
            else None
        )
        # The encoder-side search of each I-frame's latent (runtime/latent_opt.py, the `slow`
        # preset); None or disabled: the analysis output as is.
        self.latent_optimization = latent_optimization if latent_optimization is not None and latent_optimization.enabled else None
        self._latent_search = (
            latent_opt.LatentSearch(bundle.model, latent_optimization) if self.latent_optimization is not None else None
        )
        # observer(block, latent, layer: CodedLayer, ctx: LevelContext) sees every coded
        # codelayer (measurements, e.g. runtime/measure_codec.py); it must not modify anything.
        self.observer = observer
        self.bundle = bundle
        self.backend = backend
        self.layout = layout
        self.size: Optional[Tuple[int, int]] = None  # (height, width) of the source frames
        self._generation = 0  # counts commits: a trial can only be committed on the refs it saw

    def _prepare(self, frame) -> Tuple[np.ndarray, np.ndarray]:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
            raise CodecError(f"a frame must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise CodecError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the stream's {self.size[1]}x{self.size[0]}")
        height, width = padded_size(*frame.shape[:2])
        padded = np.pad(frame, [(0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)], mode="edge")
        return frame, (padded.astype(np.float32) / np.float32(255.0))[None]

    def _code_layer(
        self, block: str, latent: np.ndarray, ctx: LevelContext, choose: Optional[Callable] = None, observe: bool = True,
        hyper: Optional[np.ndarray] = None,
    ) -> Tuple[CodedLayer, List[Substream]]:
        """Quantizes and range-codes one codelayer. `choose(mean, indices, quant_width, symbols)`,
        if given, may replace the rounded symbols before they are coded (the hyper path is fixed)."""
        half = self._half
        if hyper is None:  # else: a hyper latent the encoder searched (runtime/latent_opt.py)
            hyper = half.run(f"{block}_hyper_analysis", latent=latent, embedding=ctx.embedding)["hyper_latent"]
        hyper_symbols = _round_symbols(hyper[0])
        mean, indices = half.entropy_parameters(block, hyper_symbols, ctx)
        quant_width = ctx.quant_width(block)
        symbols = _round_symbols(((latent - mean) / quant_width)[0])
        if choose is not None:
            symbols = choose(mean, indices, quant_width, symbols)
        hyper_indices = half.hyper_indices(block, hyper_symbols.shape)
        substreams = half.encode_symbols(hyper_symbols, hyper_indices, hyper=True)
        substreams += half.encode_symbols(symbols, indices, hyper=False)
        layer = CodedLayer(hyper_symbols, symbols, indices, hyper_indices, half.dequantize(mean, symbols, quant_width))
        if self.observer is not None and observe:
            self.observer(block, latent, layer, ctx)
        return layer, substreams

    def _rd_lambda(self, settings, ctx: LevelContext) -> float:
        """The rate weight of `settings` (a model.npmath.ScaledLambda) at the frame's level."""
        return settings.rd_lambda(ctx.level, self.bundle.config.max_level, self.bundle.card.get("lambda_range"))

    def _keep_cheaper(self, source, ctx: LevelContext, frame_type: FrameType, fixed: list, plain, candidate):
        """Of two codings (layer, substreams, reconstruction [1, H, W, 3] padded float) of the same
        codelayer, the one with the lower real cost D + lambda R: the bits of the whole frame unit
        (with the `fixed` substreams of the frame's other codelayers), the distortion of the
        reconstruction the decoder will make. Ties keep plain coding."""
        rd_lambda = self._rd_lambda(self.latent_optimization, ctx)

        def cost(coded):
            bits = 8 * len(write_frame(FrameUnit(frame_type, ctx.level, tuple(fixed) + tuple(coded[1]))))
            recon = to_uint8(coded[2][0, : source.shape[0], : source.shape[1]]).astype(np.float64) / 255.0
            distortion = float(np.mean((source.astype(np.float64) / 255.0 - recon) ** 2))
            return distortion + rd_lambda * bits / (source.shape[0] * source.shape[1])

        return candidate if cost(candidate) < cost(plain) else plain

    def _motion_chooser(self, latent, image, previous: References, predicted, ctx: LevelContext, decoded: dict):
        """A `_code_layer` chooser for the flow layer: runtime/motion_refine.py's per-block choice
        of the two motion symbols. Leaves the flow decoder's output for the chosen symbols in
        `decoded["flow"]` (so encode_frame need not run it again)."""
        half = self._half
        rd_lambda = self._rd_lambda(self.motion_refinement, ctx)

        def choose(mean, indices, quant_width, symbols):
            config = self.bundle.config
            estimate = None
            if not self.motion_refinement.decode_candidates:
                estimate = motion_refine.ShiftedFlowWarp(previous.previous, quant_width, config.scale_space_levels,
                                                         config.scale_space_sigma0, config.block_motion_upsample)  # fmt: skip
            result = motion_refine.refine(
                symbols,
                ((latent - mean) / quant_width)[0],
                indices,
                lambda trial: half.flow_synthesis(half.dequantize(mean, trial, quant_width), previous, predicted, ctx),
                image,
                rd_lambda,
                estimate,
            )
            decoded["flow"] = result.flow
            return result.symbols

        return choose

    def encode_frame(self, frame, level: float, frame_type: FrameType, commit: bool = True,
                     reconstruct: bool = True) -> EncodedFrame:
        """Codes one frame. reconstruct=False (I-frames only; the `fast` preset with GOP 1) skips
        the synthesis: the frame has no reconstruction or PSNR and leaves no references, so the
        next frame must be an I-frame too."""
        frame_type = FrameType(frame_type)
        if not reconstruct and (frame_type is not FrameType.I or self._latent_search is not None):
            raise ValueError("only I-frames without the latent search can skip their reconstruction")
        source, image = self._prepare(frame)
        half = self._half
        ctx = half.level_context(level)
        if frame_type is FrameType.I:
            latent = half.run("iframe_analysis", image=image, embedding=ctx.embedding)["latent"]
            searching = self._latent_search is not None
            layer, substreams = self._code_layer("iframe", latent, ctx, observe=not searching)
            refs = half.iframe_synthesis(layer.latent_hat, ctx) if reconstruct else None
            if searching:
                rd_lambda = self._rd_lambda(self.latent_optimization, ctx)
                searched, s_hyper = self._latent_search.search_iframe(image, ctx.embedding, ctx.quant_width("iframe"),
                                                                      rd_lambda, latent)  # fmt: skip
                s_layer, s_substreams = self._code_layer("iframe", searched, ctx, observe=False, hyper=s_hyper)
                s_refs = half.iframe_synthesis(s_layer.latent_hat, ctx)
                plain = (layer, substreams, refs.previous, refs, latent)
                kept = self._keep_cheaper(source, ctx, FrameType.I, [], plain,
                                          (s_layer, s_substreams, s_refs.previous, s_refs, searched))  # fmt: skip
                layer, substreams, _, refs, latent = kept
                if self.observer is not None:
                    self.observer("iframe", latent, layer, ctx)
            estimate = layer.estimated_bits()
        else:
            previous = half.refs
            if previous is None:
                raise CodecError("a P-frame needs a preceding I-frame")
            predicted = half.predict(previous, ctx)
            latent = half.run(
                "flow_analysis",
                target=image,
                previous=previous.previous,
                predicted_flow=predicted,
                state=previous.state,
                embedding=ctx.embedding,
            )["latent"]
            decoded: dict = {}
            chooser = None
            if self.motion_refinement is not None:
                chooser = self._motion_chooser(latent, image, previous, predicted, ctx, decoded)
            flow_layer, substreams = self._code_layer("flow", latent, ctx, chooser)
            flow = decoded.get("flow")
            if flow is None:
                flow = half.flow_synthesis(flow_layer.latent_hat, previous, predicted, ctx)
            latent = half.run(
                "residue_analysis",
                residual=image - flow["compensated"],
                compensated=flow["compensated"],
                state=flow["state"],
                embedding=ctx.embedding,
            )["latent"]
            searching = self._latent_search is not None and self.latent_optimization.residues
            residue_layer, residue_substreams = self._code_layer("residue", latent, ctx, observe=not searching)
            out = half.residue_synthesis(residue_layer.latent_hat, flow["compensated"], flow["state"], ctx)
            if searching:
                rd_lambda = self._rd_lambda(self.latent_optimization, ctx)
                searched, s_hyper = self._latent_search.search_residue(
                    image, flow["compensated"], flow["state"], ctx.embedding, ctx.quant_width("residue"), rd_lambda,
                    latent)  # fmt: skip
                s_layer, s_substreams = self._code_layer("residue", searched, ctx, observe=False, hyper=s_hyper)
                s_out = half.residue_synthesis(s_layer.latent_hat, flow["compensated"], flow["state"], ctx)
                kept = self._keep_cheaper(source, ctx, FrameType.P, substreams,
                                          (residue_layer, residue_substreams, out["reconstruction"], out, latent),
                                          (s_layer, s_substreams, s_out["reconstruction"], s_out, searched))  # fmt: skip
                residue_layer, residue_substreams, _, out, latent = kept
                if self.observer is not None:
                    self.observer("residue", latent, residue_layer, ctx)
            substreams += residue_substreams
            refs = References(out["reconstruction"], previous.previous, flow["flow"], out["state"])
            estimate = flow_layer.estimated_bits() + residue_layer.estimated_bits()
        if refs is not None:
            half.check_finite(refs)
        payload = write_frame(FrameUnit(frame_type, ctx.level, tuple(substreams)))
        reconstruction = None if refs is None else to_uint8(refs.previous[0, : source.shape[0], : source.shape[1]])
        encoded = EncodedFrame(
            payload=payload,
            frame_type=frame_type,
            level=ctx.level,
            bits=8 * len(payload),
            estimated_bits=estimate,
            reconstruction=reconstruction,
            psnr=None if reconstruction is None else _psnr(source, reconstruction),
            substream_bytes=tuple(s.size for s in substreams),
            references=refs,
            generation=self._generation,
        )
        if commit:
            self.commit(encoded)
        return encoded

    def commit(self, encoded: EncodedFrame) -> None:
        """Makes a frame coded by `encode_frame` (a trial included) the new reference."""
        if encoded.generation != self._generation or (encoded.references is None and encoded.reconstruction is not None):
            raise ValueError("this frame was coded against other references; code it again")
        self._half.refs = encoded.references
        self._generation += 1


class Decoder(_CodecSide):
    """Decodes frame units of a stream of `width` x `height` frames: CodecError at once for a
    picture over `max_pixels` (runtime/limits.py) or one whose decoding would not fit in memory."""

    def __init__(self, bundle, backend, width: int, height: int, layout: SubstreamLayout = SubstreamLayout(),
                 workers: Optional[int] = None, max_pixels: int = MAX_PIXELS):  # fmt: skip
        # Before anything is allocated: a stream may claim any size (runtime/limits.py).
        self.memory_estimate = check_picture_size(width, height, max_pixels, config=bundle.config)
        self._half = _DecoderHalf(bundle, backend, layout, workers)
        self.bundle = bundle
        self.backend = backend
        self.width, self.height = width, height
        padded_h, padded_w = padded_size(height, width)
        config = bundle.config
        self._latent_shape = (padded_h // 16, padded_w // 16, config.latent_channels)
        self._hyper_shape = (padded_h // 64, padded_w // 64, config.hyper_latent_channels)
        self._counts = (layout.count(self._hyper_shape, hyper=True), layout.count(self._latent_shape, hyper=False))

    def expected_substreams(self, frame_type: FrameType) -> int:
        return sum(self._counts) * (1 if frame_type is FrameType.I else 2)

    def _decode_layer(self, block: str, substreams: List[Substream], ctx: LevelContext) -> np.ndarray:
        half = self._half
        hyper_indices = half.hyper_indices(block, self._hyper_shape)
        count1 = self._counts[0]
        hyper_symbols = half.decode_symbols(substreams[:count1], hyper_indices, hyper=True)
        mean, indices = half.entropy_parameters(block, hyper_symbols, ctx)
        symbols = half.decode_symbols(substreams[count1:], indices, hyper=False)
        return half.dequantize(mean, symbols, ctx.quant_width(block))

    def decode_frame(self, unit: FrameUnit) -> DecodedFrame:
        """Decodes one frame unit; any failure (a stream that is consistent but not what an
        encoder writes, or a backend error on it) is a CodecError, the references untouched."""
        try:
            return self._decode_frame(unit)
        except CodecError:
            raise
        except Exception as e:  # noqa: BLE001 - the decoder's contract: only CodecError escapes
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise CodecError(f"corrupt frame: decoding failed ({type(e).__name__}: {first})") from e

    def _decode_frame(self, unit: FrameUnit) -> DecodedFrame:
        half = self._half
        expected = self.expected_substreams(unit.frame_type)
        if len(unit.substreams) != expected:
            raise CodecError(f"corrupt frame: {len(unit.substreams)} substreams, expected {expected}")
        ctx = half.level_context(unit.level)
        per_layer = sum(self._counts)
        if unit.frame_type is FrameType.I:
            latent_hat = self._decode_layer("iframe", list(unit.substreams), ctx)
            refs = half.iframe_synthesis(latent_hat, ctx)
        else:
            previous = half.refs
            if previous is None:
                raise CodecError("corrupt stream: a P-frame without a preceding I-frame")
            predicted = half.predict(previous, ctx)
            flow_hat = self._decode_layer("flow", list(unit.substreams[:per_layer]), ctx)
            residue_hat = self._decode_layer("residue", list(unit.substreams[per_layer:]), ctx)
            flow = half.flow_synthesis(flow_hat, previous, predicted, ctx)
            out = half.residue_synthesis(residue_hat, flow["compensated"], flow["state"], ctx)
            refs = References(out["reconstruction"], previous.previous, flow["flow"], out["state"])
        half.check_finite(refs)
        half.refs = refs
        return DecodedFrame(
            frame_type=unit.frame_type,
            level=ctx.level,
            reconstruction=to_uint8(refs.previous[0, : self.height, : self.width]),
            bits=8 * (unit.size or len(write_frame(unit))),
        )


# -- host-side math shared by both sides ---------------------------------------------------------------
def _round_symbols(values: np.ndarray) -> np.ndarray:
    """round-half-even (as tf.round), clamped to the coder's limit; non-finite input is an error."""
    values = np.asarray(values)
    if not np.all(np.isfinite(values)):
        raise CodecError("the model produced non-finite latents")
    return np.clip(np.round(values), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int32)


def _psnr(source: np.ndarray, reconstruction: np.ndarray) -> float:
    from runtime.metrics import psnr_rgb

    return float(psnr_rgb(source[None], reconstruction[None])[0])
