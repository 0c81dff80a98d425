"""The `onnx` backend: the coding subgraphs in ONNX Runtime on the CPU.

    OnnxBackend(bundle)                      the cached export of the bundle's model, exported
                                             on first use (export/cache.py), so `--backend onnx`
                                             just works
    OnnxBackend(bundle, export_dir=DIR)      an export made by export/export_trt.py; refused if
                                             its model id is not the bundle's

One InferenceSession per subgraph, created on first use (a decoder never loads the encoder-only
subgraphs), with export/ort.py's settings. Inputs are checked by name, dtype and shape against
the export manifest before they reach ONNX Runtime.

The hyper syntheses are integer networks (model/integer_hyper.py): their outputs, which index
the range coder's tables, are bit-identical to the TF backend's; the exporter checks exactly
that for every export, and tests/test_backends.py on real frames.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Dict, Optional

import numpy as np

from runtime.backends.base import Backend


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(
        self,
        bundle,
        export_dir: Optional[str] = None,
        threads: Optional[int] = None,
        spinning: bool = False,
        cache_root: Optional[str] = None,
    ):
        """
        Args:
          bundle: runtime.bundle.ModelBundle.
          export_dir: an export folder (manifest.json + onnx/); default: the cache's.
          threads: intra-op threads per session (default: the CPUs this process may use; see
            export/ort.py).
          spinning: ONNX Runtime's busy-waiting between ops (see export/ort.py).
          cache_root: where the export cache lives (default $ELFVC_CACHE or ~/.cache/elfvc).
        """
        from export.cache import resolve_export

        self.export_dir, self.manifest = resolve_export(bundle, export_dir, cache_root)
        self.model_id = bundle.model_id
        self._threads = threads
        self._spinning = spinning
        self._sessions: Dict[str, object] = {}
        self._outputs = {graph.name: [o.onnx_name for o in graph.outputs] for graph in self.manifest.subgraphs}

    def _session(self, subgraph: str):
        session = self._sessions.get(subgraph)
        if session is None:
            from export.manifest import ManifestError
            from export.ort import create_session

            graph = self.manifest.subgraph(subgraph)
            path = pathlib.Path(self.export_dir) / graph.onnx_file
            try:
                data = path.read_bytes()
            except OSError as error:
                raise ManifestError(f"cannot read {path}: {error.strerror or error}") from None
            if hashlib.sha256(data).hexdigest() != graph.sha256:
                raise ManifestError(f"{path} does not match its manifest's sha256: the export is damaged; re-export it")
            session = self._sessions[subgraph] = create_session(data, self._threads, self._spinning)
        return session

    def run(self, subgraph: str, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        self.ensure_open(subgraph)
        if subgraph not in self._outputs:
            raise ValueError(f"unknown subgraph {subgraph!r}; valid: {', '.join(self._outputs)}")
        graph = self.manifest.subgraph(subgraph)
        feeds, _ = graph.check_inputs(inputs)
        values = self._session(subgraph).run(self._outputs[subgraph], feeds)
        return {info.name: value for info, value in zip(graph.outputs, values)}

    def close(self) -> None:
        self.closed = True
        self._sessions.clear()
