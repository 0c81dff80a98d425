"""The range coder's time per frame on this CPU, for a config, frame size, rate and thread count.

The networks of Table 2 can run on a GPU (gpu_train/table2.py), the range coder runs on whatever
CPU serves it. This times the real coder (runtime.entropy_coding.EntropyCoder: tfc's range
coder, the codec's substream layout, `threads` workers) on the symbol tensors one frame carries:

    I-frame: q0 [H/16, W/16, latent_channels] + q1 [H/64, W/64, hyper_latent_channels]
    P-frame: the same twice (flow and residue codelayers)

at the frame size padded as the codec pads it. The symbols are drawn from the coder's own
zero-mean Gaussians with one scale chosen so that the frame costs `bpp` bits per pixel (the
paper's Table 2 is at 0.2 bpp), with the hyper symbols at the smallest scale: the coder's work
is per symbol and per coded bit, which this matches; a trained model's mixture of scales is not
reproduced (the difference is recorded in the timing note).

    python -m benchmarks.range_coder_speed --config=paper --size=1080p --bpp=0.2 --threads=1,2
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)

from benchmarks.bench_fps import SIZES  # Table 2's rows
from model.config import FRAME_MULTIPLE


@dataclass(frozen=True)
class RangeCoderTime:
    config: str
    size: str
    threads: int
    bpp: float  # achieved by the drawn symbols (model codelength, per pixel of the unpadded frame)
    encode_i_ms: float
    decode_i_ms: float
    encode_p_ms: float
    decode_p_ms: float
    substreams_i: int


def _padded(n: int) -> int:
    return -(-n // FRAME_MULTIPLE) * FRAME_MULTIPLE


def frame_symbols(latent_channels: int, hyper_channels: int, width: int, height: int, bpp: float, rng):
    """(q0 symbols, q0 indices, q1 symbols, q1 indices, achieved bits) of one codelayer whose q0
    costs about `bpp` bits per pixel in all (q0 and q1 together)."""
    from runtime.entropy_coding import SCALE_COUNT, estimated_bits, scale_table

    h, w = _padded(height), _padded(width)
    q0_shape, q1_shape = (h // 16, w // 16, latent_channels), (h // 64, w // 64, hyper_channels)
    target = bpp * width * height
    q1_idx = np.zeros(q1_shape, np.int32)
    q1 = np.zeros(q1_shape, np.int32)
    scales = scale_table()
    hyper_bits = estimated_bits(q1, q1_idx)
    previous = None
    for index in range(SCALE_COUNT):  # bits grow with the scale: stop at the first past the target
        sample = np.rint(rng.normal(0.0, scales[index], size=q0_shape)).astype(np.int32)
        idx = np.full(q0_shape, index, np.int32)
        bits = estimated_bits(sample, idx) + hyper_bits
        if bits >= target and previous is not None:
            # Mix this scale and the one below it, symbol by symbol, to land on the target.
            low_sample, low_bits = previous
            take = rng.random(q0_shape) < (target - low_bits) / (bits - low_bits)
            sample = np.where(take, sample, low_sample)
            idx = np.where(take, idx, index - 1).astype(np.int32)
            bits = estimated_bits(sample, idx) + hyper_bits
            break
        if bits >= target:
            break
        previous = (sample, bits)
    if bits < 0.9 * target:  # the largest scale's symbols cost less: say so instead of timing another rate
        raise ValueError(f"--bpp {bpp:g} is beyond this layout: its largest scale codes {bits / (width * height):.2f} bpp")
    return sample, idx, q1, q1_idx, bits


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def time_range_coder(config_name: str, latent_channels: int, hyper_channels: int, size: str, bpp: float,
                     threads: int, repeats: int = 3, seed: int = 0) -> RangeCoderTime:
    """Median encode and decode times of one I-frame's and one P-frame's symbols."""
    from runtime.entropy_coding import EntropyCoder

    width, height = SIZES[size]
    rng = np.random.default_rng(seed)
    # A P-frame has two codelayers sharing the frame's bits.
    i_parts = frame_symbols(latent_channels, hyper_channels, width, height, bpp, rng)
    p_parts = [frame_symbols(latent_channels, hyper_channels, width, height, bpp / 2, rng) for _ in range(2)]
    coder = EntropyCoder(workers=threads)
    try:
        def encode(parts):
            return [(coder.encode(q0, i0, False), coder.encode(q1, i1, True)) for q0, i0, q1, i1, _ in parts]

        def decode(parts, coded):
            for (q0, i0, q1, i1, _), (s0, s1) in zip(parts, coded):
                coder.decode(s1, i1, True)
                coder.decode(s0, i0, False)

        coded_i, coded_p = encode([i_parts]), encode(p_parts)
        for (q0, i0, q1, i1, _), (s0, s1) in zip([i_parts] + p_parts, coded_i + coded_p):
            if not np.array_equal(coder.decode(s0, i0, False), q0):
                raise RuntimeError("the range coder did not round-trip the drawn symbols")
        return RangeCoderTime(
            config=config_name, size=size, threads=threads, bpp=i_parts[4] / (width * height),
            encode_i_ms=_median_ms(lambda: encode([i_parts]), repeats),
            decode_i_ms=_median_ms(lambda: decode([i_parts], coded_i), repeats),
            encode_p_ms=_median_ms(lambda: encode(p_parts), repeats),
            decode_p_ms=_median_ms(lambda: decode(p_parts, coded_p), repeats),
            substreams_i=len(coded_i[0][0]) + len(coded_i[0][1]),
        )
    finally:
        coder.close()


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run("python -m benchmarks.range_coder_speed", _main, sys.argv[1:] if argv is None else argv, tracebacks=True,
                      failures=(ValueError,))


def _main(argv) -> int:
    from model.config import config_names, get_config

    p = clikit.ArgumentParser(prog="python -m benchmarks.range_coder_speed", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="paper", help=f"one of {', '.join(config_names())}")
    p.add_argument("--size", default="1080p", choices=list(SIZES))
    p.add_argument("--bpp", type=float, default=0.2)
    p.add_argument("--threads", default="1,2", help="comma list of worker counts")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    try:
        config = get_config(args.config)
        threads = [int(t) for t in args.threads.split(",")]
        if args.bpp <= 0 or args.repeats < 1 or min(threads) < 1:
            raise ValueError("--bpp must be positive, --repeats and every --threads >= 1")
    except ValueError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    for t in threads:
        r = time_range_coder(config.name, config.latent_channels, config.hyper_latent_channels, args.size, args.bpp, t, args.repeats)
        print(f"{r.config} {r.size} {r.bpp:.3f} bpp, {t} thread(s), {r.substreams_i} substreams per codelayer pair: "
              f"I enc {r.encode_i_ms:.1f} ms / dec {r.decode_i_ms:.1f} ms, P enc {r.encode_p_ms:.1f} ms / dec {r.decode_p_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
