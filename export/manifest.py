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
import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A missing, unreadable or inconsistent export manifest (one-line message)."""


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a subgraph. `stride`: spatial downsampling vs the padded frame
    (0 = no spatial dims); `channels`: the last dimension."""

    name: str  # the subgraph's name (export/subgraphs.py).
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
    exact: bool  # an integer network: every backend must reproduce TF bit for bit.
    max_relative_error: Dict[str, float]  # ONNX Runtime vs TF per output, worst over check sizes.

    def input(self, name: str) -> TensorInfo:
        for info in self.inputs:
            if info.name == name:
                return info
        raise KeyError(name)

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Tuple[int, int, int]]:
        """Validates named inputs against this subgraph; returns them as contiguous float32 keyed
        by ONNX name, and the (batch, height, width) of the padded frame they describe.

        Raises ValueError (one line) on missing/unexpected names, non-numeric dtypes, wrong ranks
        or channels, or spatial sizes that do not describe one frame of multiples of 64.
        """
        expected = [info.name for info in self.inputs]
        if sorted(inputs) != sorted(expected):
            raise ValueError(f"{self.name}: inputs {sorted(inputs)} != expected {sorted(expected)}")
        feeds, batch, frame = {}, None, None
        for info in self.inputs:
            value = np.asarray(inputs[info.name])
            if value.dtype.kind not in "fiu":
                raise ValueError(f"{self.name}.{info.name}: dtype {value.dtype} is not numeric")
            rank = 2 if info.stride == 0 else 4
            if value.ndim != rank or value.shape[-1] != info.channels:
                want = "[batch, channels]" if rank == 2 else "[batch, height, width, channels]"
                raise ValueError(
                    f"{self.name}.{info.name}: shape {value.shape} is not {want} with {info.channels} channels"
                )
            if batch is not None and value.shape[0] != batch:
                raise ValueError(f"{self.name}.{info.name}: batch {value.shape[0]} != {batch} of the other inputs")
            batch = value.shape[0]
            if rank == 4:
                size = (value.shape[1] * info.stride, value.shape[2] * info.stride)
                if frame is not None and size != frame:
                    raise ValueError(
                        f"{self.name}.{info.name}: {value.shape[1:3]} at stride {info.stride} is frame "
                        f"{size[0]}x{size[1]}, the other inputs say {frame[0]}x{frame[1]}"
                    )
                frame = size
            feeds[info.onnx_name] = np.ascontiguousarray(value, np.float32)
        if frame is None or frame[0] % 64 or frame[1] % 64 or min(frame) <= 0:
            raise ValueError(f"{self.name}: frame size {frame} is not a positive multiple of 64")
        return feeds, (batch, frame[0], frame[1])


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
    exporter_version: int  # export/exporter.py's EXPORTER_VERSION: which lowering made the files.
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


def verify_files(folder, manifest: ExportManifest) -> None:
    """Checks every ONNX file of `manifest` is in `folder` with its recorded SHA-256."""
    for graph in manifest.subgraphs:
        path = pathlib.Path(folder) / graph.onnx_file
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as error:
            raise ManifestError(f"cannot read {path}: {error.strerror or error}") from None
        if digest != graph.sha256:
            raise ManifestError(f"{path} does not match its manifest's SHA-256: the export is damaged; re-export it")


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
