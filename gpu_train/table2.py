"""The paper's Table 2 (network time per frame type), timed in PyTorch on a GPU.

    python -m gpu_train.table2 --configs=paper,small [--config_json=CONFIG.json] \\
        [--weights_small=W.npz] [--weights_paper=W.npz] --sizes=cif,vga,720p,1080p \\
        --budget_s=90 --out=table2.json [--device=cuda] [--precision=auto|fp16|fp32] [--level=4] \\
        [--timing_s=1] [--no_graphs] [--no_checks] [--cudnn_benchmark]

Four functions per model, built from gpu_train/net.py's modules (no third copy of the networks)
and chained exactly as runtime/codec.py chains export/subgraphs.py's subgraphs, in ROUND mode:

    i_encode(image)      iframe analysis -> hyper analysis -> k1 = round(z) -> hyper synthesis
                         (mean, sigma) -> k0 = round((y - mean) / Q_w) -> synthesis (the encoder
                         keeps its reconstruction and state as references)
    i_decode(k1, k0)     hyper synthesis -> y_hat = mean + Q_w k0 -> synthesis
    p_encode(target, refs)  predictor -> flow analysis (+ block motion search when the config's
                         motion_search_radius > 0) -> flow codelayer -> flow synthesis with the
                         scale-space warp -> residue analysis -> residue codelayer -> synthesis
    p_decode(symbols, refs) the same without the analyses

Each returns its integer symbols (int32: k1 and k0 of every codelayer), so backends compare.
Symbols are clamped to the range coder's limit as runtime/codec.py does. Range coding itself is
NOT timed (the paper's Table 2 includes it): these are network times.

Precision (the paper's recipe): FP16 networks, the three hyper syntheses in FP32 (with TF32 off,
so FP32 means FP32), on CUDA. Also FP32, deliberately: the scale-space warp's coordinate math
(FP16 has a 1-pixel step above x = 1024, so a 1080p warp would lose every sub-pixel offset),
Q_w and the quantization of the latents. `--precision=fp32` runs everything FP32 (CPU default).

On CUDA the model's kernels and activations are channels_last, and each function is captured
into a CUDA graph per resolution (warm-up on a side stream, static inputs), then timed with CUDA
events over N replays after warm-up. net.py builds two tensors from host data per call (the blur
kernel of `gaussian_blur`, the vectors of `block_motion_search`), which a capture forbids; here
they are cached before capture (`_cached_gaussian_blur`, `FrameNetworks._motion_search`). A
function whose capture fails anyway is timed eagerly and its row says so (`mode`).

Speed does not depend on the weight values (random init unless --weights_*); the block motion
search, present only when the config sets motion_search_radius (the shipped config: 8), costs
(2R + 1)^2 candidate differences per pixel in the P-frame encoder.

`--budget_s` is a hard wall-clock cap from start-up: rows run in order of importance (configs
as given, each largest size first), no function starts whose estimated cost exceeds what is
left, the JSON is rewritten after every row, and a watchdog ends the process WATCHDOG_GRACE_S
after the budget whatever it is doing (exit 0; the JSON then lists the row in progress as
skipped). Any failure in a row (out of memory, a capture, a CUDA error) is recorded in the JSON
and the run goes on to the next row.

The JSON: the run (device, gpu, torch, cuda, cudnn, precision, cuda_graphs, level, batch,
budget_s, elapsed_s, stopped = complete | budget | error | watchdog..., note), `configs` (per
name: source, weights, motion_search_radius, parameters), `rows` (per config x size: width,
height, padded_width, padded_height, dtype, functions = {i_encode, i_decode, p_encode, p_decode:
ms, fps, mode graph | eager, replays, gflop, tflops, graph_error | error}, checks (decoder vs
encoder reconstruction; FP16 vs FP32 symbol agreement), max_memory_gib, wall_s) and `skipped`
(config, size, reason).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import pathlib
import re
import sys
import threading
import time

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)
import traceback
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpu_train import net as gnet
from gpu_train.net import depth_to_space, space_to_depth

PROG = "python -m gpu_train.table2"

#: (width, height) of each size; frames are padded up to FRAME_MULTIPLE like the runtime's.
SIZES = {"cif": (352, 288), "vga": (640, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
FUNCTIONS = ("i_encode", "i_decode", "p_encode", "p_decode")
#: runtime.entropy_coding.SYMBOL_LIMIT (not imported: that module needs TensorFlow).
SYMBOL_LIMIT = 2**20
WARMUP_CALLS = 3
MIN_REPLAYS, MAX_REPLAYS = 3, 2000
#: Longest a function's timed loop runs (seconds); shorter when the budget is tight.
MAX_TIMING_S = 1.0
WATCHDOG_GRACE_S = 5.0
BUDGET_SKIP = "skipped: budget spent"
NOTE = (
    "network time only (range coding excluded); batch 1; timings do not depend on weight values "
    "(random init unless weights are given), except that the P-frame encoder includes the block "
    "motion search when the config's motion_search_radius > 0 ((2R+1)^2 candidates per pixel)"
)


def padded(width: int, height: int) -> Tuple[int, int]:
    from model.config import FRAME_MULTIPLE  # TF-free

    return width + (-width % FRAME_MULTIPLE), height + (-height % FRAME_MULTIPLE)


# -- host-side level math, as runtime/codec.py does it (float64, then float32): model/npmath.py ----
from model import npmath  # noqa: E402  (TF-free)
from model.npmath import level_embedding, quant_width  # noqa: E402,F401  (re-exported)


# -- capture-safe pieces ------------------------------------------------------------------------
_BLUR_CACHE: Dict[tuple, tuple] = {}


def _cached_gaussian_blur(image, sigma: float):
    """net.gaussian_blur with its host-built kernel and border indices cached per
    (sigma, dtype, device, size): the same values, and nothing created from host data once warm."""
    if sigma <= 0.0:
        return image
    c, h, w = image.shape[1], image.shape[2], image.shape[3]
    radius = npmath.gaussian_radius(sigma)
    key = (float(sigma), image.dtype, str(image.device), h, w)
    cached = _BLUR_CACHE.get(key)
    if cached is None:
        xs = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (xs / sigma) ** 2)
        k = (k / k.sum()).to(image.dtype).to(image.device)
        cached = (k, gnet._symmetric_index(h, radius, image.device), gnet._symmetric_index(w, radius, image.device))
        _BLUR_CACHE[key] = cached
    k, rows, cols = cached
    padded_image = image.index_select(2, rows).index_select(3, cols)
    out = F.conv2d(padded_image, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@contextlib.contextmanager
def _capture_safe_blur():
    """net.scale_space_warp with `_cached_gaussian_blur` in place of net.gaussian_blur."""
    original = gnet.gaussian_blur
    gnet.gaussian_blur = _cached_gaussian_blur
    try:
        yield
    finally:
        gnet.gaussian_blur = original


def _upsample_blocks(field, mode: str = "nearest"):
    """net.upsample_blocks without repeat_interleave (which may sync): each 16x16 block constant,
    or bilinear between block centres."""
    if mode != "nearest":
        return gnet.upsample_blocks(field, mode)
    b, c, h, w = field.shape
    block = gnet.MOTION_BLOCK
    return field[:, :, :, None, :, None].expand(b, c, h, block, w, block).reshape(b, c, h * block, w * block)


def channels_last_kernels(module: nn.Module) -> int:
    """Re-lays every net.Conv kernel ([kh, kw, in, out], Keras' layout) so that the permuted view
    net.Conv.forward hands to conv2d is channels_last-contiguous: no weight copy per call.
    Returns the number of kernels changed."""
    count = 0
    for m in module.modules():
        if isinstance(m, gnet.Conv):
            weight = m.kernel.detach().permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
            m.kernel = nn.Parameter(weight.permute(2, 3, 1, 0), requires_grad=False)
            count += 1
    return count


# -- the four frame functions -------------------------------------------------------------------
class FrameNetworks:
    """The codec's per-frame-type network chains (module docstring) for one model and level.

    `model` is a gpu_train.net.ELFVC (float32); `half` runs every network but the hyper
    syntheses in float16 (a float16 copy of the model; the float32 one keeps the hyper
    syntheses). Images are float32 [1, 3, H, W] in [0, 1], H and W multiples of 64."""

    def __init__(self, model, level: float, device, half: bool = False, channels_last: bool = False, fp32_model=None):
        self.c = c = model.c
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.level = float(np.float32(level))
        self.fp32 = (fp32_model if fp32_model is not None else model).eval().requires_grad_(False).to(self.device)
        if half:
            self.net = copy.deepcopy(self.fp32).to(self.dtype)
        else:
            self.net = self.fp32
        if channels_last:
            channels_last_kernels(self.net)
            if self.net is not self.fp32:
                for block in (self.fp32.iframe, self.fp32.flow, self.fp32.residue):
                    channels_last_kernels(block.codelayer.hyper_synthesis)
        self.channels_last = channels_last
        emb = level_embedding(self.level, c["levels"], c["embedding_width"]).astype(np.float32)[None]
        self.emb32 = torch.from_numpy(emb).to(self.device)
        self.emb = self.emb32.to(self.dtype)
        self.quant_widths = {}
        for name in ("iframe", "flow", "residue"):
            block = getattr(self.fp32, name)
            if hasattr(block, "log_quant_width"):
                qw = quant_width(block.log_quant_width.detach().cpu().double().numpy(), self.level)
            else:
                qw = np.ones(c["latent_channels"])
            self.quant_widths[name] = torch.from_numpy(qw.astype(np.float32)).to(self.device)[None, :, None, None]
        self.radius = int(c["motion_search_radius"])
        if self.radius:
            span = range(-self.radius, self.radius + 1)
            vectors = [(float(dx), float(dy)) for dy in span for dx in span]
            norms = torch.tensor([abs(dx) + abs(dy) for dx, dy in vectors], device=self.device)[None, :, None, None]
            penalty = gnet.level_penalty(c, self.emb32)
            self._motion_lengths = (torch.as_tensor(penalty, dtype=torch.float32, device=self.device).reshape(-1, 1, 1, 1) * norms).to(self.dtype)
            self._motion_vectors = torch.tensor(vectors, device=self.device)

    # -- pieces ---------------------------------------------------------------------------------
    def _blocks(self, name):
        return getattr(self.net, name), getattr(self.fp32, name)

    def _quantize(self, name, latent):
        """Codelayer, encoder side: -> (k1, k0 as float, y_hat float32)."""
        block, block32 = self._blocks(name)
        hyper = block.codelayer.hyper_analysis(latent, self.emb)
        z = torch.round(hyper.float()).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT)
        mean, _scale = block32.codelayer.hyper_synthesis(z, self.emb32)
        qw = self.quant_widths[name]
        k = torch.round((latent.float() - mean) / qw).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT)
        return z, k, mean + qw * k

    def _dequantize(self, name, z, k):
        """Codelayer, decoder side: hyper synthesis on k1, then y_hat = mean + Q_w k0 (float32)."""
        _, block32 = self._blocks(name)
        mean, _scale = block32.codelayer.hyper_synthesis(z.float(), self.emb32)
        return mean + self.quant_widths[name] * k.float()

    def _iframe_synthesis(self, latent_hat):
        n = self.net.iframe
        features = n.synthesis(latent_hat.to(self.dtype), self.emb)
        reconstruction = 0.5 + depth_to_space(n.image_head(features), 4).float()
        state = n.state_head(features)
        if not self.c["use_state"]:
            state = torch.zeros_like(state)
        return reconstruction, state

    def _predict(self, previous_flow, previous2, previous):
        if self.net.predictor is None:
            return torch.zeros_like(previous_flow)
        d = self.dtype
        return self.net.predictor(previous_flow.to(d), previous2.to(d), previous.to(d), self.emb, 0, False).float()

    def _motion_search(self, target, reference):
        """net.block_motion_search with its host-built tensors precomputed (capture-safe)."""
        radius, d = self.radius, self.dtype
        target, reference = target.to(d).mean(1, keepdim=True), reference.to(d).mean(1, keepdim=True)
        height, width = target.shape[2:]
        rows = torch.arange(-radius, height + radius, device=target.device).clamp(0, height - 1)
        cols = torch.arange(-radius, width + radius, device=target.device).clamp(0, width - 1)
        padded_ref = reference[:, :, rows][:, :, :, cols]
        span = range(-radius, radius + 1)
        columns = torch.cat([padded_ref[:, :, :, radius + dx : radius + dx + width] for dx in span], 1)
        candidates = torch.cat([columns[:, :, radius + dy : radius + dy + height] for dy in span], 1)
        costs = F.avg_pool2d((target - candidates).abs(), gnet.MOTION_BLOCK) + self._motion_lengths
        return self._motion_vectors[costs.argmin(1)].permute(0, 3, 1, 2)

    def _flow_analysis(self, target, previous, predicted, state):
        n, d = self.net.flow, self.dtype
        x = torch.cat([space_to_depth(target - 0.5, 4), space_to_depth(previous - 0.5, 4), space_to_depth(predicted, 4)], 1)
        x = torch.cat([x.to(d), state.to(d)], 1)
        latent = n.analysis(n.encoder_norm(x, 0, False), self.emb)
        if self.radius:
            latent = torch.cat([self._motion_search(target, previous).to(d), latent[:, 2:]], 1)
        return latent

    def _flow_synthesis(self, latent_hat, previous, predicted, state):
        """FlowBlock.decode, with the block-motion path and the warp in float32."""
        n, c, d = self.net.flow, self.c, self.dtype
        side = torch.cat([space_to_depth(predicted, 4).to(d), state.to(d)], 1)
        h = n.decoder_features(latent_hat.to(d), side, self.emb, 0, False)
        out = depth_to_space(n.flow_head(h), 4).float()
        mask_logits, delta = out[:, :3], c["flow_output_scale"] * out[:, 3:]
        if self.radius:
            block_flow = _upsample_blocks(latent_hat[:, :2].float(), c.get("block_motion_upsample", "nearest"))
            delta = delta + torch.cat([block_flow, torch.zeros_like(block_flow[:, :1])], 1)
        flow = torch.sigmoid(mask_logits) * predicted + delta if c["use_predictor"] else delta
        with _capture_safe_blur():
            compensated = gnet.scale_space_warp(previous.float(), flow, c["scale_space_levels"], c["scale_space_sigma0"])
        new_state = n.state_head(h) if c["use_state"] else state.to(d)
        return flow, compensated, new_state

    def _residue_analysis(self, target, compensated, state):
        n, d = self.net.residue, self.dtype
        x = torch.cat([space_to_depth(target - compensated, 4), space_to_depth(compensated - 0.5, 4)], 1)
        x = torch.cat([x.to(d), state.to(d)], 1)
        return n.analysis(n.encoder_norm(x, 0, False), self.emb)

    def _residue_synthesis(self, latent_hat, compensated, state):
        n, d = self.net.residue, self.dtype
        h = n.decoder_features(latent_hat.to(d), state.to(d), self.emb, 0, False)
        residue = depth_to_space(n.image_head(h), 4).float()
        new_state = n.state_head(h) if self.c["use_state"] else state.to(d)
        return compensated + residue, new_state

    @staticmethod
    def _ints(*tensors):
        return tuple(t.to(torch.int32) for t in tensors)

    # -- the four functions -----------------------------------------------------------------------
    @torch.no_grad()
    def i_encode(self, image):
        """-> (k1, k0, reconstruction float32, state)."""
        latent = self.net.iframe.analysis(space_to_depth(image.to(self.dtype) - 0.5, 4), self.emb)
        z, k, latent_hat = self._quantize("iframe", latent)
        reconstruction, state = self._iframe_synthesis(latent_hat)
        return self._ints(z, k) + (reconstruction, state)

    @torch.no_grad()
    def i_decode(self, z, k):
        """-> (reconstruction float32, state)."""
        return self._iframe_synthesis(self._dequantize("iframe", z, k))

    @torch.no_grad()
    def p_encode(self, target, previous, previous2, previous_flow, state):
        """-> (flow k1, flow k0, residue k1, residue k0, reconstruction, flow, state)."""
        predicted = self._predict(previous_flow, previous2, previous)
        zf, kf, flow_hat = self._quantize("flow", self._flow_analysis(target, previous, predicted, state))
        flow, compensated, state = self._flow_synthesis(flow_hat, previous, predicted, state)
        zr, kr, residue_hat = self._quantize("residue", self._residue_analysis(target, compensated, state))
        reconstruction, state = self._residue_synthesis(residue_hat, compensated, state)
        return self._ints(zf, kf, zr, kr) + (reconstruction, flow, state)

    @torch.no_grad()
    def p_decode(self, zf, kf, zr, kr, previous, previous2, previous_flow, state):
        """-> (reconstruction, flow, state), as runtime.codec.Decoder orders it."""
        predicted = self._predict(previous_flow, previous2, previous)
        flow_hat = self._dequantize("flow", zf, kf)
        residue_hat = self._dequantize("residue", zr, kr)
        flow, compensated, state = self._flow_synthesis(flow_hat, previous, predicted, state)
        reconstruction, state = self._residue_synthesis(residue_hat, compensated, state)
        return reconstruction, flow, state

    # -- a two-frame run (tests, self-checks) ------------------------------------------------------
    def calls(self, frame0, frame1) -> Dict[str, tuple]:
        """{function: (fn, args)} for an I-frame on frame0 and a P-frame on frame1 after it,
        every argument a fresh tensor (static inputs for a capture)."""
        z, k, recon, state = self.i_encode(frame0)
        flow0 = torch.zeros_like(recon)
        zf, kf, zr, kr, *_ = self.p_encode(frame1, recon, recon, flow0, state)
        c = lambda *ts: tuple(t.clone() for t in ts)  # noqa: E731
        return {
            "i_encode": (self.i_encode, c(frame0)),
            "i_decode": (self.i_decode, c(z, k)),
            "p_encode": (self.p_encode, c(frame1, recon, recon, flow0, state)),
            "p_decode": (self.p_decode, c(zf, kf, zr, kr, recon, recon, flow0, state)),
        }

    def two_frames(self, frame0, frame1) -> Dict[str, np.ndarray]:
        """I-frame then P-frame, encoder and decoder: symbols and reconstructions as numpy."""
        z, k, recon_enc_i, state = self.i_encode(frame0)
        recon_dec_i, _ = self.i_decode(z, k)
        flow0 = torch.zeros_like(recon_enc_i)
        zf, kf, zr, kr, recon_enc_p, flow, _ = self.p_encode(frame1, recon_enc_i, recon_enc_i, flow0, state)
        recon_dec_p, flow_dec, _ = self.p_decode(zf, kf, zr, kr, recon_enc_i, recon_enc_i, flow0, state)
        out = dict(
            iframe_z=z, iframe_k=k, flow_z=zf, flow_k=kf, residue_z=zr, residue_k=kr,
            i_recon=recon_enc_i, i_recon_decoded=recon_dec_i, p_recon=recon_enc_p, p_recon_decoded=recon_dec_p,
            p_flow=flow, p_flow_decoded=flow_dec,
        )
        return {key: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for key, v in out.items()}


# -- model construction -----------------------------------------------------------------------------
def build_model(config: dict, weights: Optional[str], seed: int = 0):
    """A float32 gpu_train.net.ELFVC on the CPU: the weights of an .npz, or random init."""
    from gpu_train.weights import load_npz

    torch.manual_seed(seed)
    model = gnet.ELFVC(config)
    if weights:
        load_npz(model, weights)
    return model.eval().requires_grad_(False)


def synthetic_frames(width: int, height: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two float32 [1, 3, H, W] frames in [0, 1]: smooth texture plus noise, the second moved by
    (3, 2) px. Deterministic; content does not change the time of any function here."""
    g = torch.Generator().manual_seed(0)
    y = torch.linspace(0, 1, height + 8)[:, None]
    x = torch.linspace(0, 1, width + 8)[None, :]
    channels = [0.5 + 0.3 * torch.sin(2 * math.pi * (f * x + (f + 1) * y) + f) for f in (3.0, 5.0, 7.0)]
    base = torch.stack(channels)[None] + 0.05 * torch.rand(1, 3, height + 8, width + 8, generator=g)
    base = base.clamp(0, 1)
    frame0 = base[:, :, 4 : 4 + height, 4 : 4 + width]
    frame1 = base[:, :, 2 : 2 + height, 1 : 1 + width]
    return frame0.contiguous().to(device), frame1.contiguous().to(device)


# -- timing -------------------------------------------------------------------------------------------
def _one_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {text}"


def _count_flops(fn, args) -> Optional[float]:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn(*args)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - optional
        return None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_function(fn, args, device, timing_s: float, use_graph: bool, count_flops: bool = True) -> dict:
    """Warm-up, optional CUDA graph capture, then ms per call over N calls (warm-up excluded)."""
    result: dict = {}
    cuda = device.type == "cuda"
    if count_flops:  # an eager call: also the first warm-up
        flops = _count_flops(fn, args)
        if flops:
            result["gflop"] = flops / 1e9
    if cuda:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(*args)
        torch.cuda.current_stream(device).wait_stream(side)
    else:
        for _ in range(WARMUP_CALLS):
            fn(*args)
    _sync(device)

    def call():
        fn(*args)

    run, mode = call, "eager"
    if cuda and use_graph:
        graph = None
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                keep = fn(*args)  # noqa: F841 - the graph's outputs live in its pool
            graph.replay()
            torch.cuda.synchronize(device)
            run, mode = graph.replay, "graph"
        except Exception as e:  # noqa: BLE001 - fall back to eager timing
            result["graph_error"] = _one_line(e)
            try:
                torch.cuda.synchronize(device)
            except Exception:  # noqa: BLE001
                pass
            for _ in range(2):  # re-warm eagerly after a broken capture
                fn(*args)
            _sync(device)
    result["mode"] = mode

    def timed(n: int) -> float:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / n
        t0 = time.perf_counter()
        for _ in range(n):
            run()
        return (time.perf_counter() - t0) * 1e3 / n

    probe = timed(2)
    replays = int(max(MIN_REPLAYS, min(MAX_REPLAYS, timing_s * 1e3 / max(probe, 1e-3))))
    ms = timed(replays)
    result.update(ms=ms, fps=1e3 / ms if ms > 0 else None, replays=replays)
    if result.get("gflop") and ms > 0:
        result["tflops"] = result["gflop"] / ms  # GFLOP / ms = TFLOP/s
    return result


# -- the run ----------------------------------------------------------------------------------------
class Run:
    """The JSON being built, written atomically after every row (and by the watchdog)."""

    def __init__(self, out: pathlib.Path, header: dict):
        self.out = out
        self.data = dict(header, rows=[], skipped=[], stopped="running")
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def write(self):
        with self.lock:
            self.data["elapsed_s"] = round(time.monotonic() - self.t0, 2)
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_name(f".{self.out.name}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=str))
            tmp.replace(self.out)


def _format_row(row: dict) -> str:
    parts = []
    for name in FUNCTIONS:
        f = row["functions"].get(name, {})
        if "ms" in f:
            tf = f" {f['tflops']:.3g} TFLOP/s" if f.get("tflops") else ""
            parts.append(f"{name} {f['ms']:.2f} ms ({f['fps']:.1f} fps, {f['mode']}{tf})")
        else:
            parts.append(f"{name} {f.get('error', 'skipped')}")
    return f"{row['config']} {row['size']} {row['padded_width']}x{row['padded_height']} {row['dtype']}: " + "; ".join(parts)


def measure_row(frames: FrameNetworks, row: dict, device, deadline: float, rows_left: int, use_graphs: bool, check: bool,
                max_timing_s: float = MAX_TIMING_S) -> None:
    """Fills row["functions"] (then, time allowing, the self-checks); records errors, never raises."""
    width, height = row["padded_width"], row["padded_height"]
    functions = row["functions"]
    try:
        frame0, frame1 = synthetic_frames(width, height, device)
        if frames.channels_last:
            frame0 = frame0.contiguous(memory_format=torch.channels_last)
            frame1 = frame1.contiguous(memory_format=torch.channels_last)
        calls = frames.calls(frame0, frame1)  # one eager I-frame and P-frame encode (first calls: slow)
        _sync(device)
        t0 = time.monotonic()
        for name in ("i_encode", "p_encode"):
            calls[name][0](*calls[name][1])
        _sync(device)
        per_call = time.monotonic() - t0  # an upper bound on any one function's eager call
        row["eager_i_plus_p_encode_s"] = round(per_call, 4)
        for index, name in enumerate(FUNCTIONS):
            left = deadline - time.monotonic()
            need = per_call * (WARMUP_CALLS + 2 + 2 + MIN_REPLAYS)  # flop count, warm-up, capture, probe, replays
            if left <= 0 or need > left:
                functions[name] = {"error": f"{BUDGET_SKIP} (needs ~{need:.1f} s, {max(left, 0):.1f} s left)"}
                continue
            # Share what is left among the functions still to time here and in later rows; the
            # warm-up and capture cost about as much again as the timed loop.
            timing_s = max(0.02, min(max_timing_s, 0.4 * left / ((len(FUNCTIONS) - index) + 4 * (rows_left - 1))))
            fn, args = calls[name]
            try:
                functions[name] = time_function(fn, args, device, timing_s, use_graphs)
            except Exception as e:  # noqa: BLE001 - record, go on
                functions[name] = {"error": _one_line(e)}
                _recover(device)
        if check and deadline - time.monotonic() > 6 * per_call:
            try:
                row["checks"] = self_checks(frames, calls)
            except Exception as e:  # noqa: BLE001
                row["checks"] = {"error": _one_line(e)}
                _recover(device)
        elif check:
            row["checks"] = {"skipped": "budget"}
    except Exception as e:  # noqa: BLE001
        row["error"] = _one_line(e)
        _recover(device)
    finally:
        if device.type == "cuda":
            try:
                row["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            except Exception:  # noqa: BLE001
                pass


def self_checks(frames: FrameNetworks, calls: dict) -> dict:
    """Cheap consistency checks on the device: the decoders reproduce the encoders'
    reconstructions, and (for FP16) how many symbols agree with an FP32 run of the same model."""
    out = {}
    with torch.no_grad():
        z, k, recon_i, _ = frames.i_encode(*calls["i_encode"][1])
        dec_i, _ = frames.i_decode(z, k)
        out["i_decode_vs_encode_max_abs"] = float((dec_i - recon_i).abs().max())
        p = frames.p_encode(*calls["p_encode"][1])
        dec_p, _, _ = frames.p_decode(*p[:4], *calls["p_encode"][1][1:])
        out["p_decode_vs_encode_max_abs"] = float((dec_p - p[4]).abs().max())
        if frames.dtype != torch.float32:
            ref = FrameNetworks(frames.fp32, frames.level, frames.device, half=False, channels_last=False)
            z32, k32, recon32, _ = ref.i_encode(*calls["i_encode"][1])
            p32 = ref.p_encode(*calls["p_encode"][1])
            out["fp16_vs_fp32"] = {
                "iframe_k_equal_frac": float((k32 == k).float().mean()),
                "iframe_z_equal_frac": float((z32 == z).float().mean()),
                "flow_k_equal_frac": float((p32[1] == p[1]).float().mean()),
                "residue_k_equal_frac": float((p32[3] == p[3]).float().mean()),
                "i_recon_max_abs": float((recon32 - recon_i).abs().max()),
                "p_recon_max_abs": float((p32[4] - p[4]).abs().max()),
            }
    return out


def _recover(device):
    if device.type == "cuda":
        try:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def _parse_args(argv):
    parser = clikit.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="paper,small", help="comma-separated model.config presets, in order of importance")
    parser.add_argument("--config_json", help="a config.json (e.g. a shipped model's); replaces the preset of its name, or is added")
    parser.add_argument("--weights_small", help=".npz (gpu_train.weights) for the config named small; random init otherwise")
    parser.add_argument("--weights_paper", help=".npz for the config named paper; random init otherwise")
    parser.add_argument("--sizes", default="cif,vga,720p,1080p", help=f"comma-separated, of {', '.join(SIZES)} or WIDTHxHEIGHT")
    parser.add_argument("--budget_s", type=float, default=90.0, help="hard wall-clock cap, from start-up")
    parser.add_argument("--out", required=True, help="the JSON to write")
    parser.add_argument("--device", default="auto", help="cuda, cpu, cuda:N or auto (cuda; an error without a GPU)")
    parser.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto", help="auto: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--level", type=float, default=4.0, help="the level of every frame (does not change the time)")
    parser.add_argument("--timing_s", type=float, default=MAX_TIMING_S, help="longest timed loop per function (seconds)")
    parser.add_argument("--no_graphs", action="store_true", help="time eagerly, without CUDA graphs")
    parser.add_argument("--cudnn_benchmark", action="store_true", help="let cuDNN time its algorithms per shape (costs seconds per row)")
    parser.add_argument("--no_checks", action="store_true", help="skip the per-row self-checks")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def parse_sizes(text: str) -> Dict[str, Tuple[int, int]]:
    """'cif,1080p,128x64' -> {name: (width, height)}, the largest first (the order of importance)."""
    sizes = {}
    for name in (s.strip() for s in text.split(",")):
        if not name:
            continue
        match = re.fullmatch(r"(\d+)x(\d+)", name)
        if name in SIZES:
            sizes[name] = SIZES[name]
        elif match and int(match.group(1)) > 0 and int(match.group(2)) > 0:
            sizes[name] = (int(match.group(1)), int(match.group(2)))
        else:
            raise ValueError(f"unknown size {name!r} in --sizes; valid: {', '.join(SIZES)} or WIDTHxHEIGHT")
    if not sizes:
        raise ValueError("--sizes names no size")
    return dict(sorted(sizes.items(), key=lambda item: -item[1][0] * item[1][1]))


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return 1


def _configs(args) -> List[Tuple[str, dict, str]]:
    """[(name, config dict, source)] in order; ValueError names a bad one."""
    from model.config import ModelConfig, config_names, get_config  # TF-free

    names = [n for n in args.configs.split(",") if n]
    out = []
    for name in names:
        if name not in config_names():
            raise ValueError(f"unknown config {name!r} in --configs; valid: {', '.join(config_names())}")
        out.append([name, get_config(name).to_dict(), "preset"])
    if args.config_json:
        try:
            values = json.loads(pathlib.Path(args.config_json).read_text())
            config = ModelConfig.from_dict(values).to_dict()
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"--config_json: {args.config_json}: {str(e).splitlines()[0]}") from None
        for entry in out:
            if entry[0] == config["name"]:
                entry[1], entry[2] = config, str(args.config_json)
                break
        else:
            out.append([config["name"], config, str(args.config_json)])
    if not out:
        raise ValueError("--configs names no config")
    return [tuple(e) for e in out]


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run(PROG, _main, sys.argv[1:] if argv is None else argv, tracebacks=True)


def _main(argv) -> int:
    started = time.monotonic()
    args = _parse_args(argv)
    if not args.budget_s > 0:
        return _error(f"--budget_s must be positive, got {args.budget_s:g}")
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as e:
        return _error(str(e))
    try:
        configs = _configs(args)
    except ValueError as e:
        return _error(str(e))
    weights = {"small": args.weights_small, "paper": args.weights_paper}
    for name, path in weights.items():
        missing = [p for p in (path or "").split(",") if p and not pathlib.Path(p).exists()]
        if missing:
            return _error(f"--weights_{name}: {missing[0]}: no such file")
    wanted = args.device
    if wanted == "auto":  # a CPU run is asked for by name: at the default sizes it runs minutes for nothing
        if not torch.cuda.is_available():
            return _error("--device=auto: no CUDA GPU here; --device=cpu times the networks on this CPU "
                          "(with small --sizes: a 1080p row takes minutes)")
        wanted = "cuda"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        return _error(f"--device={args.device} but no CUDA GPU is available (torch.cuda.is_available() is false)")
    try:
        device = torch.device(wanted)
    except RuntimeError as e:
        return _error(f"--device={args.device}: {_one_line(e)}")
    cuda = device.type == "cuda"
    if cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    half = args.precision == "fp16" or (args.precision == "auto" and cuda)
    use_graphs = cuda and not args.no_graphs

    deadline = started + args.budget_s
    header = {
        "tool": "gpu_train.table2",
        "argv": list(sys.argv[1:] if argv is None else argv),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "precision": {
            "networks": "float16" if half else "float32",
            "hyper_synthesis": "float32",
            "warp_and_quantization": "float32",
            "tf32": False,
            "channels_last": cuda,
        },
        "cuda_graphs": use_graphs,
        "cudnn_benchmark": bool(cuda and args.cudnn_benchmark),
        "level": args.level,
        "batch": 1,
        "budget_s": args.budget_s,
        "note": NOTE,
        "configs": {},
    }
    run = Run(pathlib.Path(args.out), header)
    run.t0 = started
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    run.write()

    plan = [(name, size) for name, _, _ in configs for size in sizes]

    def finalize(stopped: Optional[str] = None, reason: str = BUDGET_SKIP) -> str:
        """Lists every row not measured as skipped, sets `stopped`, writes the JSON."""
        with run.lock:
            measured = {(r["config"], r["size"]) for r in run.data["rows"]}
            listed = measured | {(x["config"], x["size"]) for x in run.data["skipped"]}
            run.data["skipped"] += [{"config": n, "size": z, "reason": reason} for n, z in plan if (n, z) not in listed]
            if stopped is None:
                cut = any(x["reason"].startswith(BUDGET_SKIP) for x in run.data["skipped"]) or any(
                    f.get("error", "").startswith(BUDGET_SKIP) for r in run.data["rows"] for f in r["functions"].values()
                )
                stopped = "budget" if cut or time.monotonic() >= deadline else "complete" if len(measured) == len(plan) else "error"
            run.data["stopped"] = stopped
        run.write()
        return stopped

    def watchdog():
        # Exit 0: the JSON is consistent (the row in progress is listed as skipped).
        try:
            finalize(f"watchdog: still running {WATCHDOG_GRACE_S:g} s after the budget", "watchdog: budget spent")
        finally:
            print(f"{PROG}: watchdog: budget {args.budget_s:g} s + {WATCHDOG_GRACE_S:g} s spent; JSON with the rows measured in {args.out}", flush=True)
            os._exit(0)

    timer = threading.Timer(max(0.0, deadline + WATCHDOG_GRACE_S - time.monotonic()), watchdog)
    timer.daemon = True
    timer.start()
    print(f"{PROG}: {device} {header['gpu'] or ''} torch {torch.__version__}, "
          f"{'fp16' if half else 'fp32'} networks, {'graphs' if use_graphs else 'eager'}, budget {args.budget_s:g} s", flush=True)

    done = 0
    try:
        for name, config, source in configs:
            rows = [s for n, s in plan if n == name]
            entry = {"source": source, "weights": weights.get(name) or "random init",
                     "motion_search_radius": config.get("motion_search_radius", 0)}
            run.data["configs"][name] = entry
            if time.monotonic() >= deadline:
                break
            try:
                try:
                    model = build_model(config, weights.get(name), args.seed)
                except Exception as e:  # noqa: BLE001 - speed does not depend on the weights
                    if not weights.get(name):
                        raise
                    entry["weights"], entry["weights_error"] = "random init (the weights did not load)", _one_line(e)
                    print(f"{name}: {weights[name]} did not load ({entry['weights_error']}); random init", flush=True)
                    model = build_model(config, None, args.seed)
                entry["parameters"] = int(sum(p.numel() for p in model.parameters()))
                frames = FrameNetworks(model, args.level, device, half=half, channels_last=cuda)
            except Exception as e:  # noqa: BLE001
                entry["error"] = _one_line(e)
                print(f"{name}: cannot build ({entry['error']})", flush=True)
                for size in rows:
                    run.data["skipped"].append({"config": name, "size": size, "reason": entry["error"]})
                    done += 1
                run.write()
                _recover(device)
                continue
            previous = None  # (eager I + P encode seconds, pixels) of this config's last row
            for size in rows:
                if time.monotonic() >= deadline:
                    break
                w, h = sizes[size]
                pw, ph = padded(w, h)
                if previous is not None:  # a row's set-up is ~3 eager I + P encodes
                    estimate = 3 * previous[0] * max(pw * ph / previous[1], 0.25)
                    if estimate > deadline - time.monotonic():
                        with run.lock:
                            run.data["skipped"].append({"config": name, "size": size, "reason": f"{BUDGET_SKIP} (needs ~{estimate:.1f} s)"})
                        done += 1
                        continue
                row = {"config": name, "size": size, "width": w, "height": h, "padded_width": pw, "padded_height": ph,
                       "dtype": "float16" if half else "float32", "functions": {}}
                t_row = time.monotonic()
                measure_row(frames, row, device, deadline, len(plan) - done, use_graphs, not args.no_checks, args.timing_s)
                row["wall_s"] = round(time.monotonic() - t_row, 2)
                if "eager_i_plus_p_encode_s" in row:
                    previous = (row["eager_i_plus_p_encode_s"], pw * ph)
                done += 1
                with run.lock:
                    if run.data["stopped"] != "running":  # the watchdog has written the JSON
                        break
                    run.data["rows"].append(row)
                run.write()
                try:
                    print(_format_row(row) + (f" [error: {row['error']}]" if "error" in row else ""), flush=True)
                except Exception as e:  # noqa: BLE001 - the JSON has the row
                    print(f"{name} {size}: measured ({_one_line(e)} formatting the line)", flush=True)
            del frames, model
            _recover(device)
    except Exception as e:  # noqa: BLE001 - the harness itself: record and stop cleanly
        run.data["error"] = _one_line(e)
        traceback.print_exc()
    timer.cancel()
    stopped = finalize()
    print(f"{PROG}: {len(run.data['rows'])}/{len(plan)} rows in {time.monotonic() - started:.1f} s -> {args.out} ({stopped})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
