"""The export manifest: what export/export_trt.py wrote, and how well it matched TensorFlow.

One JSON file, `manifest.json`, at the top of an export folder:

    export_dir/
      manifest.json            this file (ExportManifest)
      saved_model/             one SavedModel, one signature per subgraph
      onnx/<subgraph>.onnx     one ONNX model per subgraph (opset 17, dynamic batch/height/width)

The runtime's ONNX and TensorRT backends read it to find each subgraph's file and the ONNX
names of its inputs and outputs, and refuse an export whose `model_id` is not the bundle's.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A missing, unreadable or inconsistent export manifest (one-line message)."""


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a subgraph. `stride`: spatial downsampling vs the padded frame
    (0 = no spatial dims); `channels`: the last dimension."""

    name: str  # the subgraph's name (runtime/subgraphs.py).
    onnx_name: str  # the name in the ONNX graph and the TensorRT engine.
    stride: int
    channels: int


@dataclass(frozen=True)
class SubgraphExport:
    name: str
    onnx_file: str  # relative to the export folder.
    sha256: str  # of the ONNX file.
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    encoder_only: bool
    hyper_synthesis: bool  # built FP32 (TF32 off) in TensorRT: it feeds the range coder.
    max_relative_error: Dict[str, float]  # ONNX Runtime vs TF per output, worst over check sizes.

    def input(self, name: str) -> TensorInfo:
        for info in self.inputs:
            if info.name == name:
                return info
        raise KeyError(name)


@dataclass(frozen=True)
class ExportManifest:
    model_id: str
    config_name: str
    opset: int
    tolerance: float
    relative_error: str  # the definition of the error in max_relative_error.
    check_sizes: Tuple[Tuple[int, int], ...]  # (height, width) of the parity checks.
    versions: Dict[str, str]  # tensorflow, tf2onnx, onnx, onnxruntime.
    saved_model: str  # folder, relative to the export folder.
    subgraphs: Tuple[SubgraphExport, ...]
    format_version: int = FORMAT_VERSION

    def subgraph(self, name: str) -> SubgraphExport:
        for graph in self.subgraphs:
            if graph.name == name:
                return graph
        raise ManifestError(f"export has no subgraph {name!r}; it has {', '.join(self.names())}")

    def names(self):
        return [graph.name for graph in self.subgraphs]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ExportManifest":
        try:
            data = json.loads(text)
            if data.get("format_version") != FORMAT_VERSION:
                raise ManifestError(
                    f"unsupported export manifest version {data.get('format_version')!r} (expected {FORMAT_VERSION})"
                )
            graphs = []
            for graph in data.pop("subgraphs"):
                graph["inputs"] = tuple(TensorInfo(**t) for t in graph["inputs"])
                graph["outputs"] = tuple(TensorInfo(**t) for t in graph["outputs"])
                graphs.append(SubgraphExport(**graph))
            data["check_sizes"] = tuple(tuple(size) for size in data["check_sizes"])
            return cls(subgraphs=tuple(graphs), **data)
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ManifestError(f"malformed export manifest: {type(error).__name__}: {error}") from None


def write_manifest(manifest: ExportManifest, folder: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(folder) / MANIFEST
    path.write_text(manifest.to_json())
    return path


def read_manifest(folder, model_id: Optional[str] = None) -> ExportManifest:
    """Reads `folder`/manifest.json; with `model_id`, also checks it is that model's export."""
    path = pathlib.Path(folder) / MANIFEST
    try:
        text = path.read_text()
    except OSError as error:
        raise ManifestError(f"no export manifest at {path}: {error.strerror or error}") from None
    manifest = ExportManifest.from_json(text)
    if model_id is not None and manifest.model_id != model_id:
        raise ManifestError(
            f"export {folder} is of model {manifest.model_id}, not of the bundle's model {model_id}; re-export it"
        )
    return manifest
