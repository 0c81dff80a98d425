"""The export cache: ONNX exports and TensorRT engines made on demand, keyed by model identity.

    $ELFVC_CACHE (default ~/.cache/elfvc)/
      onnx/<model id>/                 an export folder (manifest.json, onnx/) per model
      tensorrt/<model id>/trt<version>-<gpu>/<subgraph>-<precision>-<key>.engine
      tensorrt/timing-trt<version>-<gpu>.cache

so that `--backend onnx` (and `tensorrt`) work without a separate export step: the first use of a
model exports it (about a minute for the small model on 2 CPU cores) and later uses load it.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Optional, Tuple

from export.manifest import ExportManifest, ManifestError, read_manifest, verify_files

log = logging.getLogger(__name__)


def default_cache_root() -> pathlib.Path:
    """$ELFVC_CACHE, else ~/.cache/elfvc."""
    return pathlib.Path(os.environ.get("ELFVC_CACHE") or pathlib.Path.home() / ".cache" / "elfvc")


def onnx_export_dir(model_id: str, cache_root=None) -> pathlib.Path:
    root = pathlib.Path(cache_root) if cache_root is not None else default_cache_root()
    return root / "onnx" / model_id


def ensure_onnx_export(bundle, cache_root=None) -> Tuple[pathlib.Path, ExportManifest]:
    """The cached ONNX export of `bundle`, exporting it first if there is none (or a broken one)."""
    from export.exporter import EXPORTER_VERSION, ExportOptions, export_bundle, model_id_hex

    model_id = model_id_hex(bundle)
    folder = onnx_export_dir(model_id, cache_root)
    try:
        manifest = read_manifest(folder, model_id)
        if manifest.exporter_version != EXPORTER_VERSION:
            raise ManifestError(f"made by exporter version {manifest.exporter_version}, this is {EXPORTER_VERSION}")
        verify_files(folder, manifest)
        return folder, manifest
    except ManifestError as error:
        if folder.exists():
            log.warning("cached export %s is unusable (%s); exporting again", folder, error)
        else:
            log.warning("no ONNX export of model %s cached; exporting it to %s (once per model)", model_id, folder)
    try:
        manifest = export_bundle(bundle, folder, ExportOptions(saved_model=False), overwrite=folder.exists())
    except OSError as error:
        try:  # another process finished the same export first: use theirs.
            return folder, read_manifest(folder, model_id)
        except ManifestError:
            raise error from None
    return folder, manifest


def resolve_export(bundle, export_dir: Optional[os.PathLike], cache_root=None) -> Tuple[pathlib.Path, ExportManifest]:
    """`export_dir` checked against the bundle's identity, or the cached export."""
    from export.exporter import model_id_hex

    from export.subgraphs import CODING_SUBGRAPHS

    if export_dir is None:
        return ensure_onnx_export(bundle, cache_root)
    folder = pathlib.Path(export_dir)
    manifest = read_manifest(folder, model_id_hex(bundle))
    held = {graph.name for graph in manifest.subgraphs}
    missing = [name for name in CODING_SUBGRAPHS if name not in held]
    if missing:  # said now, not when the codec first needs one of them
        raise ManifestError(f"export {folder} lacks {len(missing)} of the {len(CODING_SUBGRAPHS)} coding subgraphs "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}; made with --subgraphs?): "
                            "a backend needs them all; export without --subgraphs")
    return folder, manifest
