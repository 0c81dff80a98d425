"""TensorRT engines for the exported subgraphs (§4: "The graph is converted to FP16, apart from
the subnet decoder where the output probabilities are sensitive to minor perturbations").

    onnx/<subgraph>.onnx --parse (errors logged one per line)--> network
        precision: FP16 builder flag, except the *_hyper_synthesis subgraphs: FP32, TF32 off
                   (integer networks, model/integer_hyper.py: exact only in true FP32)
                   + in FP16 engines the scale-space warp's layers pinned to FP32
                   (`fp32_values`: pixel coordinates need FP32, see DESIGN.md)
        one optimization profile: CIF (352x288 padded to 384x320) .. 1080p (1920x1088)
        timing cache reused across builds (one file per TensorRT version and GPU)
    --> engine, cached under a key of model id, ONNX hash, TensorRT version, GPU and settings

TensorRT 10.x on purpose (setup.py's `gpu` extra pins 10.7): it still has the FP16 builder flag
and per-layer precision constraints. TensorRT 11 builds strongly typed networks only, where the
precision must be written into the ONNX graph itself; moving there means exporting FP16 ONNX
with FP32 islands instead of setting flags here.

Nothing here runs without an NVIDIA GPU, TensorRT and pycuda; `require_tensorrt` /
`require_cuda` say so in one line. `fp32_values` and the cache keys are plain Python and are
tested on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

from export.cache import default_cache_root
from export.manifest import ExportManifest, SubgraphExport, TensorInfo

log = logging.getLogger(__name__)

TENSORRT_MAJOR = 10
#: Padded frame sizes (height, width): CIF 352x288, 720p, 1080p rounded up to multiples of 64.
CIF = (320, 384)
HD720 = (768, 1280)
HD1080 = (1088, 1920)
#: Tensors whose downstream (and upstream up to the last convolution) layers stay FP32 in FP16
#: engines: the warp's image and the flow in pixels, whose coordinates FP16 cannot hold.
FP32_ROOTS = {"flow_synthesis": ("previous", "flow")}
WORKSPACE_BYTES = 4 << 30


class TensorRTUnavailable(ImportError):
    """No usable TensorRT 10.x / pycuda / GPU on this machine (one-line message)."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build a subgraph (one-line message; details logged)."""


def require_tensorrt():
    """Imports tensorrt, checking it is 10.x."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(
            f"TensorRT is not installed ({error}); on a machine with an NVIDIA GPU run "
            "`.venv/bin/pip install -e '.[gpu]'` (tensorrt-cu12 10.x and pycuda)"
        ) from None
    major = int(trt.__version__.split(".")[0])
    if major != TENSORRT_MAJOR:
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} found; this exporter needs {TENSORRT_MAJOR}.x (FP16 builder flag and "
            "per-layer precision; TensorRT 11 wants the precision inside the ONNX), see setup.py's gpu extra"
        )
    return trt


def require_cuda(device: int = 0):
    """Imports pycuda.driver and checks a CUDA device is present; returns (cuda, device)."""
    try:
        import pycuda.driver as cuda
    except ImportError as error:
        raise TensorRTUnavailable(
            f"pycuda is not installed ({error}); run `.venv/bin/pip install -e '.[gpu]'`"
        ) from None
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as error:  # pycuda raises its own LogicError/RuntimeError types.
        raise TensorRTUnavailable(f"CUDA is not usable here: {error}") from None
    if count <= device:
        raise TensorRTUnavailable(f"no CUDA device {device} (found {count})")
    return cuda, cuda.Device(device)


def gpu_slug(name: str, compute_capability: Tuple[int, int]) -> str:
    """'NVIDIA H100 80GB HBM3', (9, 0) -> 'nvidia-h100-80gb-hbm3-sm90' (a cache folder name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{slug}-sm{compute_capability[0]}{compute_capability[1]}"


# -- profiles and precision ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineProfile:
    """One optimization profile, in padded frame sizes (height, width), multiples of 64."""

    min_size: Tuple[int, int] = CIF
    opt_size: Tuple[int, int] = HD720
    max_size: Tuple[int, int] = HD1080
    max_batch: int = 1

    def __post_init__(self):
        for size in (self.min_size, self.opt_size, self.max_size):
            if len(size) != 2 or any(s <= 0 or s % 64 for s in size):
                raise ValueError(f"profile size {size} must be (height, width), positive multiples of 64")
        for axis in (0, 1):
            if not self.min_size[axis] <= self.opt_size[axis] <= self.max_size[axis]:
                raise ValueError(f"profile sizes must satisfy min <= opt <= max, got {self}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")

    def shapes(self, info: TensorInfo):
        """(min, opt, max) shapes of one input."""
        def shape(batch, size):
            if info.stride == 0:
                return (batch, info.channels)
            return (batch, size[0] // info.stride, size[1] // info.stride, info.channels)

        return shape(1, self.min_size), shape(1, self.opt_size), shape(self.max_batch, self.max_size)

    def admits(self, height: int, width: int, batch: int = 1) -> bool:
        return (
            self.min_size[0] <= height <= self.max_size[0]
            and self.min_size[1] <= width <= self.max_size[1]
            and 1 <= batch <= self.max_batch
        )


def precision_for(graph: SubgraphExport) -> str:
    """'fp32' for the hyper syntheses (their outputs index the range coder), else 'fp16'."""
    return "fp32" if graph.hyper_synthesis else "fp16"


def fp32_values(model, roots: Sequence[str]) -> Tuple[Set[str], Set[str]]:
    """(value names, node names) to keep FP32 in an FP16 engine of ONNX `model`.

    Everything computed from a root (forward closure), and the nodes between a root and the
    convolutions that feed it (backward, stopping at Conv: the flow head runs FP16, the
    elementwise ops turning its output into the flow in pixels run FP32).
    """
    graph = model.graph
    consumers: Dict[str, list] = {}
    producers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node
    values: Set[str] = set()
    nodes: Set[str] = set()
    stack = list(roots)
    while stack:  # forward
        value = stack.pop()
        for node in consumers.get(value, ()):
            if node.name not in nodes:
                nodes.add(node.name)
                values.update(node.output)
                stack.extend(node.output)
    stack = list(roots)
    seen = set()
    while stack:  # backward to the last convolution
        node = producers.get(stack.pop())
        if node is None or node.name in seen or node.op_type == "Conv":
            continue
        seen.add(node.name)
        nodes.add(node.name)
        values.update(node.output)
        stack.extend(node.input)
    return values, nodes


# -- cache keys ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    model_id: str
    subgraph: str
    onnx_sha256: str
    precision: str
    profile: EngineProfile
    tensorrt_version: str
    gpu: str  # gpu_slug

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def path(self, cache_root: pathlib.Path) -> pathlib.Path:
        folder = pathlib.Path(cache_root) / "tensorrt" / self.model_id / f"trt{self.tensorrt_version}-{self.gpu}"
        return folder / f"{self.subgraph}-{self.precision}-{self.digest()}.engine"


def timing_cache_path(cache_root, tensorrt_version: str, gpu: str) -> pathlib.Path:
    """One timing cache per TensorRT version and GPU, shared by every model and subgraph."""
    return pathlib.Path(cache_root) / "tensorrt" / f"timing-trt{tensorrt_version}-{gpu}.cache"


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


# -- building --------------------------------------------------------------------------------------
def make_logger(trt):
    """A trt.ILogger forwarding TensorRT's messages to Python logging, one per line."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.ERROR,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
    }

    class Forward(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            log.log(levels.get(severity, logging.DEBUG), "TensorRT: %s", msg)

    return Forward()


def _parse(trt, builder, logger, onnx_path: pathlib.Path):
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            try:
                line = f"node {error.node_name()!r} ({error.node_operator()}): {error.desc()}"
            except AttributeError:
                line = str(error).replace("\n", " ")
            log.error("%s: parse error %d: %s", onnx_path.name, i + 1, line)
            errors.append(line)
        raise EngineBuildError(
            f"TensorRT cannot parse {onnx_path} ({len(errors)} errors, each logged); first: "
            f"{errors[0] if errors else 'unknown'}"
        )
    return network, parser


def _pin_fp32(trt, network, values: Set[str], nodes: Set[str]) -> int:
    """Sets FP32 precision and output types on the float layers of `values` / `nodes`."""
    pinned = 0
    float_types = (trt.float32, trt.float16)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        named = layer.name in nodes or any(layer.name.startswith(f"{node}_") for node in nodes)
        if not (named or any(t.name in values for t in outputs)):
            continue
        if not any(t.dtype in float_types for t in outputs):
            continue  # shape and index arithmetic: not a precision question.
        layer.precision = trt.float32
        for j, tensor in enumerate(outputs):
            if tensor.dtype in float_types:
                layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def build_engine(
    onnx_path: pathlib.Path,
    graph: SubgraphExport,
    profile: EngineProfile,
    timing_cache: pathlib.Path,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> bytes:
    """Parses and builds one subgraph's engine; returns the serialized engine."""
    import onnx

    trt = require_tensorrt()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    # TF32 off everywhere: FP32 layers (the integer hyper syntheses, the warp) stay true FP32.
    config.clear_flag(trt.BuilderFlag.TF32)
    precision = precision_for(graph)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        roots = FP32_ROOTS.get(graph.name)
        if roots:
            values, nodes = fp32_values(onnx.load(str(onnx_path), load_external_data=False), roots)
            pinned = _pin_fp32(trt, network, values, nodes)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            log.info("%s: %d layers pinned to FP32", graph.name, pinned)
    opt = builder.create_optimization_profile()
    for info in graph.inputs:
        opt.set_shape(info.onnx_name, *profile.shapes(info))
    config.add_optimization_profile(opt)
    cache_bytes = timing_cache.read_bytes() if timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {graph.name} ({precision}); see the TensorRT errors logged")
    write_atomic(timing_cache, bytes(memoryview(cache.serialize())))
    return bytes(memoryview(serialized))


@dataclass(frozen=True)
class EngineRecord:
    subgraph: str
    path: str
    precision: str
    cached: bool  # found in the engine cache (no build).
    build_seconds: float


def ensure_engines(
    export_dir,
    manifest: ExportManifest,
    cache_root=None,
    profile: EngineProfile = EngineProfile(),
    names: Optional[Iterable[str]] = None,
    rebuild: bool = False,
) -> Dict[str, EngineRecord]:
    """The engine of each subgraph, from the cache or built now (and cached)."""
    trt = require_tensorrt()
    _cuda, device = require_cuda()
    gpu = gpu_slug(device.name(), device.compute_capability())
    cache_root = pathlib.Path(cache_root) if cache_root is not None else default_cache_root()
    timing = timing_cache_path(cache_root, trt.__version__, gpu)
    records = {}
    for name in names or manifest.names():
        graph = manifest.subgraph(name)
        key = EngineKey(
            manifest.model_id, name, graph.sha256, precision_for(graph), profile, trt.__version__, gpu
        )
        path = key.path(cache_root)
        if path.exists() and not rebuild:
            records[name] = EngineRecord(name, str(path), key.precision, True, 0.0)
            continue
        start = time.perf_counter()
        log.info("building %s engine for %s", key.precision, name)
        data = build_engine(pathlib.Path(export_dir) / graph.onnx_file, graph, profile, timing)
        write_atomic(path, data)
        records[name] = EngineRecord(name, str(path), key.precision, False, time.perf_counter() - start)
    return records


#: Largest relative error (export/parity.py's definition) accepted from an FP16 engine against
#: ONNX Runtime FP32 on random inputs; a broken engine is off by O(1).
FP16_TOLERANCE = 5e-2


def verify_engine(engine_path, export_dir, graph: SubgraphExport, profile: EngineProfile, seed: int = 0) -> Dict[str, float]:
    """Runs one engine and ONNX Runtime on the same random inputs at the profile's smallest and
    tuned sizes; returns the worst relative error per output. Raises EngineBuildError if an
    exact (integer) subgraph differs at all, or an FP16 one by more than FP16_TOLERANCE."""
    import numpy as np

    from export.ort import create_session
    from export.parity import interpolated_one_hot, relative_error, sample_inputs
    from export.tensorrt_runner import EngineRunner

    trt = require_tensorrt()
    cuda, device = require_cuda()
    session = create_session(pathlib.Path(export_dir) / graph.onnx_file)
    described = [(i.onnx_name, i.stride, i.channels) for i in graph.inputs]
    width = next(i.channels for i in graph.inputs if i.stride == 0)
    rng = np.random.default_rng(seed)
    context = device.retain_primary_context()
    context.push()
    runner = stream = None
    try:
        stream = cuda.Stream()
        runner = EngineRunner(trt, cuda, trt.Runtime(make_logger(trt)), pathlib.Path(engine_path).read_bytes(),
                              stream, graph.name)
        worst: Dict[str, float] = {}
        for height, w in (profile.min_size, profile.opt_size):
            feeds = sample_inputs(described, lambda l: interpolated_one_hot(l, width), width - 1, height, w, 1, rng)
            got = runner.infer(feeds)
            want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
            for info in graph.outputs:
                error = relative_error(got[info.onnx_name], want[info.onnx_name])
                worst[info.name] = max(worst.get(info.name, 0.0), error)
    finally:
        if runner is not None:
            runner.close()
        del runner, stream  # CUDA objects go while their context is current.
        cuda.Context.pop()
        context.detach()
    limit = 0.0 if graph.exact else FP16_TOLERANCE if precision_for(graph) == "fp16" else 1e-4
    for output, error in worst.items():
        if not error <= limit:
            raise EngineBuildError(
                f"{graph.name} engine: output {output!r} differs from ONNX Runtime by relative error {error:.3g} > {limit:g}"
                + (" (an integer network must match exactly: is TF32 or a Winograd tactic in use?)" if graph.exact else "")
            )
    return worst
