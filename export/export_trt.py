"""export_trt: cut a model into its coding subgraphs and write them as a SavedModel, as ONNX and,
where TensorRT and a GPU are present, as TensorRT engines (§4; DESIGN.md "Deployment").

    python -m export.export_trt --out_dir=exports/base                  # the default (shipped) model, base
    python -m export.export_trt --model=runs/x/export --out_dir=exports/x --tensorrt=on

Writes OUT_DIR/manifest.json, OUT_DIR/saved_model/ (one signature per subgraph) and
OUT_DIR/onnx/<subgraph>.onnx, each ONNX checked against TensorFlow in ONNX Runtime at
--check_sizes (relative error as defined in export/parity.py, at most --tolerance; the integer
hyper syntheses bit for bit). OUT_DIR appears only when everything passed.

--tensorrt=auto|on|off: build FP16 engines (the hyper syntheses FP32) with one optimization
profile --min_size..--max_size (WIDTHxHEIGHT of the padded frame, multiples of 64; default CIF
384x320 to 1080p 1920x1088) into the engine cache (--cache_dir, default $ELFVC_CACHE or
~/.cache/elfvc), reusing a timing cache; `auto` builds only when TensorRT 10.x, pycuda and a GPU
are present, `on` fails without them. --verify_engines compares every engine with ONNX Runtime.
"""

from __future__ import annotations

from model import clikit  # first: quiets TensorFlow's C++ log

import json
import logging
import pathlib
import sys
from typing import Optional, Sequence, Tuple

from absl import flags

PROG = "export_trt"


UsageError = clikit.UsageError  # a bad command line: exit status 2


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    clikit.define_model(fv)
    clikit.define_out_dir(fv, None, "Export folder to create.")
    flags.DEFINE_boolean("overwrite", False, "Replace --out_dir if it exists.", flag_values=fv)
    flags.DEFINE_list("subgraphs", [], "Export only these subgraphs (default: all).", flag_values=fv)
    flags.DEFINE_integer("opset", 17, "ONNX opset.", lower_bound=13, flag_values=fv)
    flags.DEFINE_list("check_sizes", ["128x64", "256x192"], "WIDTHxHEIGHT of the ONNX-vs-TF checks (multiples of 64).", flag_values=fv)
    flags.DEFINE_float("tolerance", 1e-4, "Largest relative error max|onnx-tf|/max|tf| per output.", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_boolean("saved_model", True, "Also write the SavedModel.", flag_values=fv)
    flags.DEFINE_enum("warp", "gridsample", ["gridsample", "gather"], "ONNX lowering of the scale-space warp.", flag_values=fv)
    flags.DEFINE_enum("tensorrt", "auto", ["auto", "on", "off"], "Build TensorRT engines.", flag_values=fv)
    flags.DEFINE_string("min_size", "384x320", "Smallest padded frame of the engine profile, WIDTHxHEIGHT.", flag_values=fv)
    flags.DEFINE_string("opt_size", "1280x768", "Padded frame the engine profile is tuned for.", flag_values=fv)
    flags.DEFINE_string("max_size", "1920x1088", "Largest padded frame of the engine profile.", flag_values=fv)
    flags.DEFINE_integer("max_batch", 1, "Largest batch of the engine profile.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("cache_dir", None, "Engine cache root (default $ELFVC_CACHE or ~/.cache/elfvc).", flag_values=fv)
    flags.DEFINE_boolean("rebuild", False, "Rebuild engines even when cached.", flag_values=fv)
    flags.DEFINE_boolean("verify_engines", True, "Compare each engine with ONNX Runtime after building.", flag_values=fv)
    flags.DEFINE_boolean("verbose", False, "Log every check.", flag_values=fv)
    return fv


def parse_size(text: str, flag: str) -> Tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width), multiples of 64."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--{flag} {text!r} is not WIDTHxHEIGHT") from None
    if width <= 0 or height <= 0 or width % 64 or height % 64:
        raise UsageError(f"--{flag} {text}: width and height must be positive multiples of 64")
    return height, width


def main(argv: Sequence[str]) -> int:
    """Runs one command line (argv[0] is the program); returns the exit status."""
    from export.exporter import ExportError
    from export.manifest import ManifestError
    from export.tensorrt_build import EngineBuildError, TensorRTUnavailable
    from model.errors import CodecError

    failures = (ExportError, ManifestError, EngineBuildError, TensorRTUnavailable, CodecError, OSError)
    return clikit.run(PROG, _run, argv, failures=failures)


def _run(argv) -> int:
    fv = define_flags()
    clikit.parse_flags(fv, argv, PROG, __doc__)
    if not fv.out_dir:
        raise UsageError("--out_dir is required")
    logging.basicConfig(level=logging.INFO if fv.verbose else logging.WARNING, format=f"{PROG}: %(message)s")
    from export.exporter import ExportOptions, export_bundle
    from export.tensorrt_build import EngineProfile

    check_sizes = tuple(parse_size(s, "check_sizes") for s in fv.check_sizes)
    if not check_sizes:
        raise UsageError("--check_sizes needs at least one size")
    try:
        profile = EngineProfile(
            parse_size(fv.min_size, "min_size"), parse_size(fv.opt_size, "opt_size"),
            parse_size(fv.max_size, "max_size"), fv.max_batch,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    out_dir = pathlib.Path(fv.out_dir)
    if out_dir.exists() and not fv.overwrite:
        raise UsageError(f"--out_dir {out_dir} exists (pass --overwrite to replace it)")
    if fv.tensorrt == "on":
        _check_tensorrt()  # fail before the (long) export, not after.
    bundle = load_bundle_for_cli(fv.model)
    options = ExportOptions(
        opset=fv.opset, check_sizes=check_sizes, tolerance=fv.tolerance, saved_model=fv.saved_model,
        warp=fv.warp, subgraphs=tuple(fv.subgraphs) or None,
    )
    manifest = export_bundle(bundle, out_dir, options, overwrite=fv.overwrite)
    worst = max((e for g in manifest.subgraphs for e in g.max_relative_error.values()), default=0.0)
    print(f"{PROG}: wrote {out_dir} ({len(manifest.subgraphs)} subgraphs, model {manifest.model_id}, "
          f"worst ONNX-vs-TF relative error {worst:.2g})")
    if fv.tensorrt == "off":
        return 0
    if fv.tensorrt == "auto":
        try:
            _check_tensorrt()
        except ImportError as err:
            print(f"{PROG}: no TensorRT engines: {' '.join(str(err).split())}")
            return 0
    return _build_engines(fv, out_dir, manifest, profile)


def _check_tensorrt() -> None:
    from export.tensorrt_build import require_cuda, require_tensorrt

    require_tensorrt()
    require_cuda()


def load_bundle_for_cli(model: Optional[str], prog: str = PROG):
    """The bundle --model names, or the shipped one; its notes (untrained, unpinned) on stderr."""
    from model.bundle import default_bundle, load_bundle

    if model:
        from model.bundle import resolve_model
        from model.errors import CodecError

        try:
            folder = resolve_model(model)  # a folder or a shipped model's name
        except CodecError as e:
            raise UsageError(f"--model: {e}") from None
        bundle = load_bundle(folder)
    else:
        bundle = default_bundle()
    for note in bundle.notes:
        print(f"{prog}: note: {' '.join(note.split())}", file=sys.stderr)
    return bundle


def _build_engines(fv, out_dir: pathlib.Path, manifest, profile) -> int:
    from export.tensorrt_build import ensure_engines, verify_engine, write_atomic

    records = ensure_engines(out_dir, manifest, fv.cache_dir, profile, rebuild=fv.rebuild)
    report = {}
    for name, record in records.items():
        line = f"{name}: {record.precision} engine {'cached' if record.cached else f'built in {record.build_seconds:.1f} s'}"
        entry = {"engine": record.path, "precision": record.precision, "build_seconds": record.build_seconds}
        if fv.verify_engines:
            errors = verify_engine(record.path, out_dir, manifest.subgraph(name), profile)
            entry["relative_error_vs_onnxruntime"] = errors
            line += ", vs ONNX Runtime " + ", ".join(f"{k} {v:.2g}" for k, v in errors.items())
        report[name] = entry
        print(f"{PROG}: {line}")
    write_atomic(out_dir / "engines.json", (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
