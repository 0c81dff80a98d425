"""The decoder's peak memory per padded pixel, measured, against runtime/limits.py's estimate.

runtime.limits.decoder_memory_bytes refuses a stream before anything is allocated when decoding
it would not fit in this machine's memory; its per-pixel figure comes from this measurement. For
each size a 4-frame stream (I, P, I, P) of a moving synthetic picture is encoded, then decoded
in a fresh process (so that memory the encoder freed is not reused) that records its resident
set before the first frame and the peak growth (Linux VmHWM, reset through
/proc/self/clear_refs) of decoding each frame; the second I- and P-frame are reported (the first
pair's growth includes each subgraph's first-call allocations):

    python -m benchmarks.decoder_memory --model=base --sizes=1024x1024,2048x1024,2048x2048

Per frame type: peak growth / padded pixels, beside the estimate's bytes per pixel
(runtime.limits.bytes_per_pixel of the model's config); then the process's peak resident set
over the stream beside the whole estimate the decoder checks before decoding
(runtime.limits.decoder_memory_bytes: frame buffers + RUNTIME_BYTES). Linux only (procfs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)


@dataclass(frozen=True)
class DecoderMemory:
    width: int
    height: int
    padded_pixels: int
    rss_before_mib: float  # the decoder process (TF, the model) before its first frame
    i_bytes_per_pixel: float  # peak RSS growth decoding the second I-frame, per padded pixel
    p_bytes_per_pixel: float  # the same for the P-frame after it
    estimate_bytes_per_pixel: float
    peak_gib: float  # the decoding process's peak resident set over the stream
    estimate_gib: float  # runtime.limits.decoder_memory_bytes: what the decoder checks against


def synthetic_frames(width: int, height: int, count: int = 2):
    """A smooth picture with texture, moving 3 px a frame: real I- and P-frame work."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(5)
    scene = np.stack([(xx * 0.7) % 256, (yy * 0.9) % 256, ((xx + yy) * 0.3) % 256], -1)
    scene = (scene + rng.integers(0, 24, scene.shape)).clip(0, 255).astype(np.uint8)
    return [np.roll(scene, 3 * t, axis=1) for t in range(count)]


def encode(bundle, backend, width: int, height: int, path: str, level: float = 4.0) -> None:
    from runtime.ratecontrol import ConstantLevel
    from runtime.stream import encode_video

    encode_video(synthetic_frames(width, height, 4), path, fps=25, gop=2, controller=ConstantLevel(level),
                 backend=backend, bundle=bundle, scenecut=0)  # fmt: skip


def measure_decode(model: str, path: str) -> dict:
    """In this process (a fresh one): RSS before the first frame, peak growth of each frame."""
    from model.bundle import load_bundle, resolve_model
    from runtime.backends import get_backend
    from runtime.codec import Decoder
    from runtime.entropy_coding import SubstreamLayout
    from runtime.fuzz import peak_rss_mb, reset_peak, rss_mb
    from runtime.stream import frame_units, open_stream

    bundle = load_bundle(resolve_model(model))
    backend = get_backend("tf", bundle)
    reader, header, f = open_stream(path)
    with f:
        units = [unit for _, unit in frame_units(reader, header)]
    layout = SubstreamLayout(header.channel_groups, header.tile)
    growth, peak = [], 0
    with Decoder(bundle, backend, header.width, header.height, layout) as decoder:
        before = rss_mb()
        for unit in units:
            reset_peak()
            start = rss_mb()
            decoder.decode_frame(unit)
            peak = max(peak, peak_rss_mb())
            growth.append((peak_rss_mb() - start) * 2**20)
    return {"rss_before_mib": before, "growth_bytes": growth, "peak_mib": peak}


def measure(model: str, width: int, height: int) -> DecoderMemory:
    from model.bundle import load_bundle, resolve_model
    from runtime.backends import get_backend
    from runtime.limits import bytes_per_pixel, decoder_memory_bytes, padded_pixels

    bundle = load_bundle(resolve_model(model))
    config = bundle.config
    with tempfile.TemporaryDirectory(prefix="decoder_memory_") as tmp:
        path = os.path.join(tmp, "clip.elfvc")
        encode(bundle, get_backend("tf", bundle), width, height, path)
        child = subprocess.run([sys.executable, "-m", "benchmarks.decoder_memory", f"--model={model}", f"--decode={path}"],
                               capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if child.returncode != 0:
            raise RuntimeError(f"the decoding process failed: {child.stderr.strip().splitlines()[-1:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
    pixels = padded_pixels(width, height)
    i_growth, p_growth = result["growth_bytes"][2:4]
    return DecoderMemory(width, height, pixels, result["rss_before_mib"], i_growth / pixels, p_growth / pixels,
                         bytes_per_pixel(config), result["peak_mib"] / 1024,
                         decoder_memory_bytes(width, height, config) / 2**30)  # fmt: skip


def parse_sizes(text: str) -> list:
    sizes = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ValueError(f"--sizes: {part!r} is not WIDTHxHEIGHT") from None
        if w < 1 or h < 1:
            raise ValueError(f"--sizes: {part!r} has a side below 1")
        sizes.append((w, h))
    return sizes


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run("python -m benchmarks.decoder_memory", _main, sys.argv[1:] if argv is None else argv,
                      tracebacks=True, failures=(ValueError, OSError, RuntimeError))


def _main(argv) -> int:
    p = clikit.ArgumentParser(prog="python -m benchmarks.decoder_memory", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="base", help="a shipped model's name or a model folder (default: base)")
    p.add_argument("--sizes", default="1024x1024,2048x1024,2048x2048", help="comma list of WIDTHxHEIGHT")
    p.add_argument("--decode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.decode:  # the fresh decoding process of `measure`
        print(json.dumps(measure_decode(args.model, args.decode)))
        return 0
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    if not os.path.exists("/proc/self/clear_refs"):
        raise OSError("this needs Linux's /proc/self/clear_refs to reset the peak resident set")
    print("size         padded px   RSS before  I bytes/px  P bytes/px  estimate bytes/px  peak GiB  estimate GiB")
    for width, height in sizes:
        r = measure(args.model, width, height)
        print(f"{width}x{height:<9d} {r.padded_pixels:>10d}  {r.rss_before_mib:7.0f} MiB  {r.i_bytes_per_pixel:10.0f}  "
              f"{r.p_bytes_per_pixel:10.0f}  {r.estimate_bytes_per_pixel:17.0f}  {r.peak_gib:8.2f}  {r.estimate_gib:12.2f}",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
