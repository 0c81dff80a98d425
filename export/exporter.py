"""Cuts a model bundle into its subgraphs and writes them as a SavedModel and as ONNX (§4, "The
graph is converted to FP16, apart from the subnet decoder"; the FP16/FP32 split itself happens
in export/tensorrt_build.py).

    bundle --coding subgraph functions--> for each subgraph:
        tf2onnx (opset 17) -> onnx/<name>.onnx
        ONNX Runtime vs TensorFlow on random inputs at two sizes -> fail above the tolerance
    -> saved_model/ (one signature per subgraph) + manifest.json

The folder is written under a temporary name next to the destination and renamed into place
only when every subgraph converted and passed its check, so a failed export never leaves a
half-written folder that a backend could pick up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import shutil
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from export.manifest import ExportManifest, SubgraphExport, TensorInfo, write_manifest
from export.onnx_export import OPSET, convert, onnx_output_name
from export.parity import (
    CHECK_SIZES,
    TOLERANCE,
    OutputError,
    input_stride,
    output_strides,
    relative_error,
    sample_inputs,
)
from export.warp_onnx import replace_warp

log = logging.getLogger(__name__)

#: Bumped whenever the ONNX the exporter writes changes (a lowering, a naming rule): the export
#: cache (export/cache.py) re-exports models exported by another version. 3: the motion search's
#: block costs one row of shifts at a time, the warp's levels sampled in one gather (model/motion.py,
#: model/warp.py).
EXPORTER_VERSION = 3
WARPS = ("gridsample", "gather")
RELATIVE_ERROR = "max|onnx - tf| / max|tf| per output (absolute when the reference is all zeros)"


class ExportError(RuntimeError):
    """The export cannot be done or did not pass its check (one-line message)."""


@dataclass(frozen=True)
class ExportOptions:
    opset: int = OPSET
    check_sizes: Tuple[Tuple[int, int], ...] = CHECK_SIZES  # (height, width), multiples of 64.
    tolerance: float = TOLERANCE  # on the relative error defined in export/parity.py.
    seed: int = 0
    saved_model: bool = True
    # "gridsample": lower the scale-space warp to ONNX GridSample (export/warp_onnx.py);
    # "gather": keep tf2onnx's literal translation of model/warp.py.
    warp: str = "gridsample"
    subgraphs: Optional[Tuple[str, ...]] = None  # None: all the model has.

    def __post_init__(self):
        for height, width in self.check_sizes:
            if height <= 0 or width <= 0 or height % 64 or width % 64:
                raise ValueError(f"check size {height}x{width} must be positive multiples of 64")
        if not self.check_sizes:
            raise ValueError("need at least one check size")
        if self.warp not in WARPS:
            raise ValueError(f"unknown warp lowering {self.warp!r}; valid: {', '.join(WARPS)}")


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "tensorflow": tf.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def model_id_hex(bundle) -> str:
    """The bundle's model identity as hex (model/bundle.py: 16 bytes)."""
    model_id = bundle.model_id
    return model_id.hex() if isinstance(model_id, (bytes, bytearray)) else str(model_id)


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference(function, signature, feeds) -> Dict[str, np.ndarray]:
    result = function(*[feeds[spec.name] for spec in signature])
    return {name: value.numpy() for name, value in result.items()}


def export_subgraph(
    name: str, function, bundle, folder: pathlib.Path, options: ExportOptions, exact: bool = False
) -> SubgraphExport:
    """Converts one subgraph to `folder`/onnx/<name>.onnx and checks it against TensorFlow:
    within `options.tolerance`, or bit for bit when `exact` (the integer hyper syntheses)."""
    import tensorflow as tf

    from export.ort import create_session
    from export.subgraphs import CODING_SUBGRAPHS

    if name not in CODING_SUBGRAPHS:
        raise ExportError(f"{name!r} is not in export/subgraphs.CODING_SUBGRAPHS")
    table = CODING_SUBGRAPHS[name]
    signature = list(function.input_signature)
    input_names = [spec.name for spec in signature]
    rng = np.random.default_rng(options.seed)
    config = bundle.config

    def embed(levels):
        return bundle.model.embed(tf.constant(levels)).numpy()

    strides = {spec.name: input_stride(name, spec.name) for spec in signature}
    described = [(spec.name, strides[spec.name], int(spec.shape[-1])) for spec in signature]
    cases = []  # (height, width, feeds, reference); batch 1 at the first size, 2 after.
    for i, (height, width) in enumerate(options.check_sizes):
        feeds = sample_inputs(described, embed, config.max_level, height, width, 1 if i == 0 else 2, rng)
        cases.append((height, width, feeds, _reference(function, signature, feeds)))
    reference0 = cases[0][3]
    outputs = [out for out in table.outputs if out in reference0] + sorted(set(reference0) - set(table.outputs))
    out_strides = output_strides(reference0, cases[0][0])
    strides.update({onnx_output_name(out, input_names): out_strides[out] for out in outputs})

    try:
        model = convert(function, signature, outputs, strides, options.opset)
        if options.warp == "gridsample" and "compensated" in outputs:
            model = replace_warp(model, config.scale_space_levels, config.scale_space_sigma0)
    except Exception as error:  # tf2onnx raises anything; report it on one line.
        raise ExportError(f"{name}: ONNX conversion failed: {type(error).__name__}: {error}") from error
    path = folder / "onnx" / f"{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save(model, str(path))

    session = create_session(path)
    errors = []
    for height, width, feeds, reference in cases:
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for out in outputs:
            actual = got[onnx_output_name(out, input_names)]
            errors.append(
                OutputError(
                    out, height, width, relative_error(actual, reference[out]),
                    float(np.max(np.abs(actual.astype(np.float64) - reference[out]))),
                )
            )
    worst = {out: max(e.relative for e in errors if e.output == out) for out in outputs}
    tolerance = 0.0 if exact else options.tolerance
    for error in errors:
        log.info("%s.%s at %dx%d: relative error %.3g", name, error.output, error.width, error.height, error.relative)
        if not error.relative <= tolerance:  # also catches NaN
            raise ExportError(
                f"{name}: output {error.output!r} differs from TensorFlow by relative error "
                f"{error.relative:.3g} > {tolerance:g} at {error.width}x{error.height}"
                + (" (an integer network must match exactly)" if exact else "")
            )
    return SubgraphExport(
        name=name,
        onnx_file=str(path.relative_to(folder)),
        sha256=_sha256(path),
        inputs=tuple(
            TensorInfo(spec.name, spec.name, strides[spec.name], int(spec.shape[-1])) for spec in signature
        ),
        outputs=tuple(
            TensorInfo(out, onnx_output_name(out, input_names), out_strides[out], int(reference0[out].shape[-1]))
            for out in outputs
        ),
        encoder_only=table.encoder_only,
        hyper_synthesis=table.hyper_synthesis,
        exact=exact,
        max_relative_error=worst,
    )


def _save_saved_model(bundle, functions: Mapping[str, Callable], folder: pathlib.Path) -> None:
    import tensorflow as tf

    # Only what the functions use: their concrete functions and the variables they capture.
    signatures = {name: fn.get_concrete_function() for name, fn in functions.items()}
    captured = {id(v): v for concrete in signatures.values() for v in concrete.variables}
    module = tf.Module()
    module.variables_used = list(captured.values())
    module.functions = dict(functions)
    tf.saved_model.save(module, str(folder), signatures=signatures)


def export_bundle(
    bundle,
    out_dir,
    options: ExportOptions = ExportOptions(),
    functions: Optional[Mapping[str, Callable]] = None,
    exact: Optional[Iterable[str]] = None,
    overwrite: bool = False,
) -> ExportManifest:
    """Exports every subgraph of `bundle` (a runtime.bundle.ModelBundle: config, model,
    integer_hyper, model_id) into `out_dir`; returns the manifest written there.

    `functions` defaults to the coding subgraphs (export.subgraphs.coding_subgraph_functions),
    whose three hyper syntheses are integer networks and must match TensorFlow exactly; with
    other `functions`, `exact` names the subgraphs that must. Raises ExportError when `out_dir`
    exists (unless `overwrite`), a conversion fails or a check exceeds its tolerance.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists (pass overwrite to replace it)")
    from export.subgraphs import CODING_SUBGRAPHS, coding_subgraph_functions

    if functions is None:
        functions = coding_subgraph_functions(bundle)
        exact = [name for name in functions if CODING_SUBGRAPHS[name].hyper_synthesis]
    functions = dict(functions)
    exact = set(exact or ())
    names = list(options.subgraphs) if options.subgraphs else list(functions)
    unknown = sorted(set(names) - set(functions))
    if unknown:
        raise ExportError(f"unknown subgraphs {unknown}; this model has {', '.join(functions)}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        exports = []
        for name in names:
            log.info("exporting %s", name)
            exports.append(export_subgraph(name, functions[name], bundle, partial, options, name in exact))
        if options.saved_model:
            _save_saved_model(bundle, {n: functions[n] for n in names}, partial / "saved_model")
        manifest = ExportManifest(
            model_id=model_id_hex(bundle),
            config_name=bundle.config.name,
            opset=options.opset,
            tolerance=options.tolerance,
            relative_error=RELATIVE_ERROR,
            check_sizes=tuple(tuple(s) for s in options.check_sizes),
            versions=_versions(),
            saved_model="saved_model" if options.saved_model else "",
            subgraphs=tuple(exports),
            exporter_version=EXPORTER_VERSION,
        )
        write_manifest(manifest, partial)
        _replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _replace(new: pathlib.Path, target: pathlib.Path) -> None:
    """Renames `new` to `target`, moving an existing `target` aside first (same filesystem)."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)
