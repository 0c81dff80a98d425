"""What an untrusted stream or input may make the codec allocate (docs/HOSTILE_STREAMS.md).

A stream header states the picture size, and everything the decoder allocates scales with it: a
323-byte stream with valid CRCs claiming 4096x4096 decoded to a 25 MB picture using 2.8 GB
(2.6 GiB), one claiming 20000x20000 crashed the decoder. Decoders of record cap what a stream may make them
allocate (ffmpeg's `max_pixels`, dav1d's frame size limit); so does this one, and the video
readers the encoder takes its frames from (runtime/video_io.py) share the same limit.

    MAX_PIXELS = 8192 x 4352 = 35,651,584 pixels of the padded picture

covers 8K: 7680x4320 (8K UHD) and 8192x4320 (8K DCI) both pad to at most 8192x4352, the codec's
multiple of 64. The limit counts the padded picture (what the networks run on), not width x
height: the fuzzer found that a 1x65536 stream (65,536 pixels) pads to 64x65536 and allocates
as much as a 2048x2048 one (4.2M pixels, 3 GB). Callers raise it with `max_pixels=` (Decoder, decode_video, open_video) or
`elfvc decode|encode --max_pixels=N`.

Before anything is allocated the decoder also estimates the memory of decoding the stream
(`decoder_memory_bytes`) and refuses a stream that would need more than this machine's physical
memory, whatever the limit (raising the limit can then not get the process killed for memory).
The estimate is set above every peak `python -m benchmarks.decoder_memory` measured (the TF
backend on CPU, the decoding process's peak resident set over a 4-frame I, P, I, P stream;
docs/HOSTILE_STREAMS.md, section 2):

    measured peak, GiB   2048x1024   1024x2048   2048x2048   4096x2048
    base                 2.76        2.35        3.67        6.04
    small                2.99        -           3.31        -
    estimate: RUNTIME_BYTES (2 GiB: TF, the model, first-call allocations) +
              596 + (flow_decoder + residue_decoder + state + predictor channels) / 4 bytes per
              padded pixel = 640 (base), 620 (small), 676 (paper)

(2048x1024 with `small`: 2.99 GiB measured, 3.21 estimated; 4096x2048 with `base`: 6.04 and
7.00), so the default limit means about 22.8 GB of frame buffers (25.0 GB with the runtime) for
the default model: an 8K stream decodes on a machine with 32 GB, not on a laptop; the limit
exists to refuse absurd pictures with one line instead of swapping or crashing.
"""

from __future__ import annotations

import os
from typing import Optional

from runtime.types import CodecError

#: Default picture-size limit (pixels of the picture padded to a multiple of 64): 8K, see above.
MAX_PIXELS = 8192 * 4352
#: Substream tiles (runtime.entropy_coding.SubstreamLayout): the encoder codes a picture whose
#: sides are at most SINGLE_TILE_MAX_PX as one tile per coded layer; a tile's side in pixels is a
#: multiple of TILE_PX_UNIT (4 cells of the 16x grid, one of the 64x hyper grid) up to TILE_PX_MAX.
SINGLE_TILE_MAX_PX = 1024
TILE_PX_UNIT = 64
TILE_PX_MAX = 4096 * 16
#: The frame multiple of the codec (model.config.FRAME_MULTIPLE; repeated here so that the video
#: readers need not import the model package).
_MULTIPLE = 64
#: Process overhead of a decoder besides the frame buffers: TensorFlow and the model (0.48-0.52
#: GiB of RSS before the first frame, benchmarks/decoder_memory.py) and what the first frames'
#: calls keep allocated (the measured peaks need about 1.4 GiB above the per-pixel figure).
RUNTIME_BYTES = 2 << 30
#: Bytes per padded pixel that do not depend on the model's widths (pixel-space tensors: the
#: scale-space volume, the warp, the references).
_BASE_BYTES_PER_PIXEL = 596
#: flow decoder + residue decoder + state + predictor channels of the default model (`base`),
#: for callers without a model (the video readers).
_DEFAULT_CHANNELS = 32 + 80 + 32 + 32


def padded_pixels(width: int, height: int) -> int:
    return (width + (-width % _MULTIPLE)) * (height + (-height % _MULTIPLE))


def bytes_per_pixel(config=None) -> float:
    """Decoder working memory per padded pixel (see the module docstring); `config` a
    model.config.ModelConfig, None for the default model's widths."""
    if config is None:
        channels = _DEFAULT_CHANNELS
    else:
        channels = config.flow_decoder_channels + config.residue_decoder_channels + config.state_channels
        channels += config.predictor_channels if getattr(config, "use_predictor", True) else 0
    return _BASE_BYTES_PER_PIXEL + channels / 4


def decoder_memory_bytes(width: int, height: int, config=None) -> int:
    """Estimated peak memory of decoding a width x height stream (frame buffers + runtime)."""
    return int(padded_pixels(width, height) * bytes_per_pixel(config)) + RUNTIME_BYTES


def physical_memory_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB"


def check_max_pixels(max_pixels) -> int:
    """A usable limit (an int >= 1); CodecError otherwise."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise CodecError(f"max_pixels must be a whole number >= 1, got {max_pixels!r}")
    return max_pixels


def check_picture_size(width: int, height: int, max_pixels: int = MAX_PIXELS, *, what: str = "the stream",
                       config=None, memory: bool = True) -> int:  # fmt: skip
    """CodecError (one line) unless a width x height picture, padded to the codec's multiple of
    64, is within `max_pixels` and, with `memory`, decoding it fits this machine's physical
    memory. Returns the memory estimate."""
    max_pixels = check_max_pixels(max_pixels)
    if width < 1 or height < 1:
        raise CodecError(f"{what}: bad picture size {width}x{height}")
    pixels = padded_pixels(width, height)
    estimate = decoder_memory_bytes(width, height, config)
    if pixels > max_pixels:
        padded = f"{width + (-width % _MULTIPLE)}x{height + (-height % _MULTIPLE)}"
        size = f"{width}x{height}" + ("" if padded == f"{width}x{height}" else f", padded {padded}")
        raise CodecError(
            f"{what}: picture {size} ({pixels:,} pixels) exceeds the limit of {max_pixels:,} pixels "
            f"(decoding would need about {gigabytes(estimate)} of memory); raise it with --max_pixels if intended"
        )
    if memory:
        physical = physical_memory_bytes()
        if physical is not None and estimate > physical:
            raise CodecError(
                f"{what}: picture {width}x{height} needs about {gigabytes(estimate)} of memory to decode, "
                f"this machine has {gigabytes(physical)}"
            )
    return estimate
