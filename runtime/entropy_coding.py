"""Range coding of the codelayers with App. A's Gaussian conditionals (§4.2, App. A).

    symbols k [h, w, C] (integers, mean already removed)   scale indices i [h, w, C]
        |  split into substreams: channel groups x spatial tiles (`SubstreamLayout`)
        v
    per substream: value v = k + T[i] for |k| <= T[i], else the escape bin 2 T[i] + 1
        -> tensorflow-compression's range coder (CDF row i)            -> `data` bytes
        -> escaped symbols' true values as LEB128 varints, scan order  -> `escapes` bytes

The coder never sees a mean: with mean-shifted quantization (model/entropy.py) every symbol is
coded with a zero-mean Gaussian of scale sigma / Q_w on unit bins, App. A's

    p(k | sigma) = Phi((k + 1/2) / sigma) - Phi((k - 1/2) / sigma).

Scales are quantized to a fixed table of `SCALE_COUNT` log-spaced values in [SCALE_MIN,
SCALE_MAX] (quantization units); a scale maps to the nearest table entry in the log domain
(`scale_index`). Each table row covers |k| <= T (two-sided tail mass `TAIL_MASS` left out) plus
one escape bin holding that tail mass; the row's PMF is quantized to `PRECISION`-bit integer
frequencies (every bin at least 1). The tables are a function of the format version only; they
are built in float64 numpy and checked against `TABLES_SHA256`, so a platform that would build
different tables fails loudly instead of desynchronizing the range decoder.

Escapes are not tfc's built-in overflow (Elias gamma inside the range code): decoding garbage
with that can spin for a very long time on a corrupted stream, whereas table-only decoding is
linear in the symbol count whatever the input. |k| is limited to `SYMBOL_LIMIT` (the encoder
clamps, the decoder rejects larger values).

Substreams are independent: each can be coded and decoded on its own thread (TF kernels release
the GIL), which is how the paper parallelizes entropy coding "over channels and space".
"""

from __future__ import annotations

import functools
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from model import entropy as _model_entropy
from model.npmath import SCALE_COUNT, SCALE_MAX, SCALE_MIN, scale_boundaries, scale_index, scale_table  # noqa: F401
from scipy.special import ndtr, ndtri

from runtime.limits import SINGLE_TILE_MAX_PX, TILE_PX_UNIT
from runtime.types import CodecError

# The scale table is model/npmath.py's (the model clamps to SCALE_MIN; the integer hyper synthesis
# indexes it); the coder builds one CDF row per entry.

#: Range coder probability precision (tfc allows at most 16 bits).
PRECISION = 16
#: Two-sided Gaussian mass outside each table row; it becomes the row's escape bin.
TAIL_MASS = 2.0**-12
#: Largest |symbol| a stream may carry.
SYMBOL_LIMIT = 2**20
#: Probability floor of the model's codelength estimate: the model's own, which is 2^-PRECISION.
LIKELIHOOD_MIN = _model_entropy.LIKELIHOOD_MIN
assert LIKELIHOOD_MIN == 2.0**-PRECISION, "model.entropy.LIKELIHOOD_MIN must match the coder's precision"
#: SHA-256 of the CDF tables of format version 1 (see `coding_tables`).
TABLES_SHA256 = "97de1a9143ea2e992f938bd2fad7e8ebdc39b169f214680c1db246f67f198c58"


# -- the CDF tables ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodingTables:
    """The range coder's lookup (tfc layout) and per-row geometry.

    lookup: int32 [SCALE_COUNT, width]; row i = [PRECISION, cdf_0 = 0, ..., cdf_last = 2^PRECISION,
            then 2^PRECISION padding]. Bin b of row i holds symbol b - T[i] for b <= 2 T[i], and
            bin 2 T[i] + 1 is the escape.
    tails:  int32 [SCALE_COUNT] T[i].
    frequencies: per row, the int64 bin frequencies (sum 2^PRECISION), for diagnostics.
    """

    lookup: np.ndarray
    tails: np.ndarray
    frequencies: Tuple[np.ndarray, ...]

    @property
    def escape(self) -> np.ndarray:
        return 2 * self.tails + 1

    def table_bits(self, symbols: np.ndarray, indices: np.ndarray) -> float:
        """Ideal codelength of `symbols` under the quantized tables (escapes' varints excluded)."""
        symbols = np.asarray(symbols, np.int64).ravel()
        indices = np.asarray(indices, np.int64).ravel()
        tails = self.tails[indices].astype(np.int64)
        bins = np.where(np.abs(symbols) <= tails, symbols + tails, 2 * tails + 1)
        lookup = self.lookup.astype(np.int64)
        freq = lookup[indices, bins + 2] - lookup[indices, bins + 1]
        return float(np.sum(PRECISION - np.log2(freq)))


def _row_frequencies(scale: float) -> Tuple[int, np.ndarray]:
    """(T, integer frequencies of bins -T..T and the escape bin, summing to 2^PRECISION)."""
    tail = max(1, int(math.ceil(-ndtri(TAIL_MASS / 2) * scale - 0.5)))
    k = np.arange(-tail, tail + 1, dtype=np.float64)
    pmf = ndtr((k + 0.5) / scale) - ndtr((k - 0.5) / scale)
    pmf = np.append(pmf, max(0.0, 1.0 - float(np.sum(pmf))))
    total = 1 << PRECISION
    freq = np.maximum(1, np.floor(pmf * total)).astype(np.int64)
    # The rounding residue goes to (or comes from) the most probable bin, symbol 0.
    freq[tail] += total - int(freq.sum())
    if freq[tail] < 1:
        raise RuntimeError(f"scale {scale}: cannot quantize the row to {PRECISION} bits")
    return tail, freq


@functools.lru_cache(maxsize=None)
def coding_tables(verify: bool = True) -> CodingTables:
    """Builds (once) the range coder tables of this format version."""
    rows = [_row_frequencies(float(s)) for s in scale_table()]
    width = max(len(freq) for _, freq in rows) + 2
    lookup = np.full([SCALE_COUNT, width], 1 << PRECISION, np.int32)
    lookup[:, 0] = PRECISION
    for i, (_, freq) in enumerate(rows):
        lookup[i, 1] = 0
        lookup[i, 2 : 2 + len(freq)] = np.cumsum(freq)
    tails = np.array([tail for tail, _ in rows], np.int32)
    if verify and tables_digest(lookup) != TABLES_SHA256:
        raise RuntimeError(
            "the range coder tables built on this platform differ from the format's reference tables "
            f"(sha256 {tables_digest(lookup)} != {TABLES_SHA256}); streams would not decode elsewhere"
        )
    return CodingTables(lookup=lookup, tails=tails, frequencies=tuple(freq for _, freq in rows))


def tables_digest(lookup: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(lookup, "<i4").tobytes()).hexdigest()


# -- the model's estimate ------------------------------------------------------------------------
def gaussian_codelength_bits(symbols, scales) -> np.ndarray:
    """App. A's -log2 p(k | sigma) per symbol (float64), floored like model/entropy.py."""
    k = np.abs(np.asarray(symbols, np.float64))
    s = np.maximum(np.asarray(scales, np.float64), SCALE_MIN)
    likelihood = ndtr((0.5 - k) / s) - ndtr((-0.5 - k) / s)
    return -np.log2(np.maximum(likelihood, LIKELIHOOD_MIN))


def estimated_bits(symbols, indices) -> float:
    """The model's codelength of `symbols` with the table scales they are coded with."""
    return float(np.sum(gaussian_codelength_bits(symbols, scale_table()[np.asarray(indices)])))


# -- escapes -------------------------------------------------------------------------------------
def _write_varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (values < 2^28)."""
    out = bytearray()
    for value in values.tolist():
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _read_varints(data: bytes, count: int) -> np.ndarray:
    """Exactly `count` LEB128 values (at most 4 bytes each) filling `data`; CodecError otherwise."""
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if len(ends) != count or (count and ends[-1] != len(raw) - 1) or (not count and len(raw)):
        raise CodecError(f"corrupt substream: {len(ends)} escape values for {count} escaped symbols")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts + 1
    if count and lengths.max() > 4:
        raise CodecError("corrupt substream: escape value longer than 4 bytes")
    values = np.zeros(count, np.int64)
    for j in range(4):
        have = lengths > j
        values[have] |= (raw[starts[have] + j].astype(np.int64) & 0x7F) << (7 * j)
    return values


# -- one substream -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Substream:
    """One independently decodable piece of a codelayer."""

    data: bytes  # the range code
    escapes: bytes  # escaped symbols' values, LEB128, scan order

    @property
    def size(self) -> int:
        return len(self.data) + len(self.escapes)


def encode_substream(symbols: np.ndarray, indices: np.ndarray, tables: Optional[CodingTables] = None) -> Substream:
    """Range-codes flat int symbols with flat int32 table indices."""
    import tensorflow_compression as tfc

    tables = tables or coding_tables()
    symbols = np.clip(np.asarray(symbols, np.int64).ravel(), -SYMBOL_LIMIT, SYMBOL_LIMIT)
    indices = np.asarray(indices, np.int32).ravel()
    tails = tables.tails[indices].astype(np.int64)
    inside = np.abs(symbols) <= tails
    values = np.where(inside, symbols + tails, 2 * tails + 1).astype(np.int32)
    escaped = symbols[~inside]
    overshoot = np.abs(escaped) - tails[~inside] - 1
    escapes = _write_varints(2 * overshoot + (escaped < 0))
    if not symbols.size:
        return Substream(b"", escapes)
    handle = tfc.create_range_encoder([], tables.lookup)
    handle = tfc.entropy_encode_index(handle, indices, values)
    data = tfc.entropy_encode_finalize(handle).numpy()
    return Substream(bytes(data), escapes)


def decode_substream(substream: Substream, indices: np.ndarray, tables: Optional[CodingTables] = None) -> np.ndarray:
    """Inverse of `encode_substream` -> int32 symbols shaped like `indices`; CodecError if corrupt."""
    import tensorflow as tf
    import tensorflow_compression as tfc

    tables = tables or coding_tables()
    indices = np.asarray(indices, np.int32)
    flat = indices.ravel()
    if not flat.size:
        if substream.data or substream.escapes:
            raise CodecError("corrupt substream: data for an empty tile")
        return np.zeros(indices.shape, np.int32)
    try:
        handle = tfc.create_range_decoder(substream.data, tables.lookup)
        handle, values = tfc.entropy_decode_index(handle, flat, tf.constant([flat.size], tf.int32), tf.int32)
        values = values.numpy().astype(np.int64)
    except tf.errors.OpError as e:  # only on internal inconsistency; reported as a stream problem
        raise CodecError(f"corrupt substream: range decoder failed ({e.message.splitlines()[0]})") from None
    tails = tables.tails[flat].astype(np.int64)
    symbols = values - tails
    escaped = values == 2 * tails + 1
    if np.any(values > 2 * tails + 1) or np.any(values < 0):
        raise CodecError("corrupt substream: symbol outside its table")
    codes = _read_varints(substream.escapes, int(escaped.sum()))
    magnitude = tails[escaped] + 1 + (codes >> 1)
    if np.any(magnitude > SYMBOL_LIMIT):
        raise CodecError(f"corrupt substream: escaped symbol beyond the limit {SYMBOL_LIMIT}")
    symbols[escaped] = np.where(codes & 1, -magnitude, magnitude)
    return symbols.astype(np.int32).reshape(indices.shape)


# -- substream layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubstreamLayout:
    """How a codelayer is cut into substreams: `channel_groups` contiguous channel groups x square
    spatial tiles of `tile` cells of the 16x grid (tile / 4 cells of the 64x hyper grid, so a
    q0 tile and its q1 tile cover the same pixels). Order: tile row, tile column, channel group.

    The default is one channel group: the tiles alone give a 1080p codelayer 12 substreams to
    code in parallel, and a second group costs each codelayer of a small frame two more length
    varints and a range-coder flush for no speed (docs/DESIGN.md, codec decisions: 2-3% of the bits at the
    lowest level on the eval clips, and slower on 2 cores). Streams written with more groups
    decode as before: the layout is in the stream header. The encoder's default for a picture
    size is `for_frame`.
    """

    channel_groups: int = 1
    tile: int = 32  # q0 cells (= 512 pixels); a multiple of 4.

    @classmethod
    def for_frame(cls, width: int, height: int) -> "SubstreamLayout":
        """The encoder's default layout for a width x height picture: 512-pixel tiles where a side
        exceeds SINGLE_TILE_MAX_PX (1280x720 and up: 6-12 tiles per codelayer to code in
        parallel), else one tile covering the picture. Each tile costs about 4.5 bytes per coded
        layer (two substreams, q1 and q0: their length varints and range-coder flushes), and a
        picture of at most 1024 px a side range-codes in a few milliseconds on one thread, so
        cutting it buys little speed: on bikes.mp4 (640x272: a 512-px and a 128-px tile before)
        one tile saved 4.8% of the bits at level 0 (docs/DESIGN.md, "Substreams"). The rule
        reads the longest side, not the area: a 1024x1024 picture (1.05 MP) is one tile, a
        1280x720 one (0.92 MP) six."""
        side = max(int(width), int(height))
        if side > SINGLE_TILE_MAX_PX:
            return cls()
        return cls(tile=max(4, 4 * -(-side // TILE_PX_UNIT)))  # whole 64-pixel units (the codec pads to them), in cells

    def per_frame(self, width: int, height: int, codelayers: int) -> int:
        """Substreams a width x height frame of `codelayers` coded layers (I: 1, P: 2) has under
        this layout (at most: with more channel groups than latent channels, fewer)."""
        cells = (-(-int(height) // TILE_PX_UNIT) * 4, -(-int(width) // TILE_PX_UNIT) * 4)
        per_layer = self.count((*cells, self.channel_groups), hyper=False)
        per_layer += self.count((cells[0] // 4, cells[1] // 4, self.channel_groups), hyper=True)
        return codelayers * per_layer

    def __post_init__(self):
        if not 1 <= self.channel_groups <= 255:
            raise ValueError(f"channel_groups must lie in [1, 255], got {self.channel_groups}")
        if not (4 <= self.tile <= 4096 and self.tile % 4 == 0):
            raise ValueError(f"tile must be a multiple of 4 in [4, 4096], got {self.tile}")

    def slices(self, shape: Sequence[int], hyper: bool) -> List[Tuple[slice, slice, slice]]:
        """(rows, cols, channels) of each substream of a [h, w, C] tensor."""
        height, width, channels = shape
        tile = self.tile // 4 if hyper else self.tile
        groups = min(self.channel_groups, channels)
        bounds = np.linspace(0, channels, groups + 1).round().astype(int)
        return [
            (slice(r, min(r + tile, height)), slice(c, min(c + tile, width)), slice(bounds[g], bounds[g + 1]))
            for r in range(0, height, tile)
            for c in range(0, width, tile)
            for g in range(groups)
        ]

    def count(self, shape: Sequence[int], hyper: bool) -> int:
        """len(self.slices(shape, hyper)), without building the list (a header may claim a
        layout of hundreds of thousands of substreams; a frame can hold at most 65535)."""
        height, width, channels = shape
        tile = self.tile // 4 if hyper else self.tile
        return -(-height // tile) * -(-width // tile) * min(self.channel_groups, channels)


class EntropyCoder:
    """Codes [h, w, C] symbol tensors as parallel substreams on a thread pool."""

    def __init__(self, layout: SubstreamLayout = SubstreamLayout(), workers: Optional[int] = None):
        self.layout = layout
        self.tables = coding_tables()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="entropy") if workers != 1 else None

    def _map(self, fn, items):
        if self._pool is None or len(items) < 2:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))

    def encode(self, symbols: np.ndarray, indices: np.ndarray, hyper: bool) -> List[Substream]:
        """symbols, indices [h, w, C] -> substreams in layout order."""
        parts = self.layout.slices(symbols.shape, hyper)
        return self._map(lambda s: encode_substream(symbols[s], indices[s], self.tables), parts)

    def decode(self, substreams: Sequence[Substream], indices: np.ndarray, hyper: bool) -> np.ndarray:
        """Substreams + indices [h, w, C] -> int32 symbols [h, w, C]."""
        parts = self.layout.slices(indices.shape, hyper)
        if len(parts) != len(substreams):
            raise CodecError(f"corrupt frame: {len(substreams)} substreams where the layout has {len(parts)}")
        decoded = self._map(lambda pair: decode_substream(pair[1], indices[pair[0]], self.tables), list(zip(parts, substreams)))
        out = np.zeros(indices.shape, np.int32)
        for part, values in zip(parts, decoded):
            out[part] = values
        return out

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
