"""Encoder-side rate-distortion choice of the quantized block motion (no model or bitstream change).

With `config.motion_search_radius > 0` (model/motion.py, our deviation from §2) channels 0-1 of
the flow latent carry each 16x16 block's searched integer vector v, and the decoder adds the
dequantized value mu + Q_w k to its flow (model/codecs.py FlowBlock.decode). Plain rounding,
k = round((v - mu) / Q_w), can miss v by up to Q_w / 2 pixels, and Q_w is the flow table's
(4.08 px at level 0 down to 1.01 px at level 7): at low levels the decoded vector can be 2 px off
the one the search found. The search itself has already traded a vector's length for its bits
(the penalty); the rounding has not.

Here the encoder picks, per block, k_x and k_y each from the two lattice points around
(v - mu) / Q_w, like the motion refinement of a classical encoder: it runs the flow decoder
(flow_synthesis, exactly what the decoder runs) on the four whole-frame combinations
{round, other neighbour}^2 and keeps, in each block, the combination with the least

    cost = SSE(compensated, x_t) over the block + lambda(level) * bits(k_x, k_y)         (eq. 1 units)

with SSE over pixels of the channel-mean squared error of [0, 1] RGB and bits the model's own
codelength of the two symbols (App. A), so that cost is eq. (1)'s D + lambda R summed over the
block's pixels. The compensated frame stands in for the reconstruction: the residue codes what
prediction leaves, so a better prediction is fewer residue bits or a better frame. lambda(level)
is the training's lambda table interpolated geometrically (§4.1: linear in log space), times a
scale. The flow delta network sees all latent channels, so a block's choice also moves its
neighbours' delta a little: the combined choice is decoded once more and kept only if its
whole-frame cost is no larger than plain rounding's, so the refinement never loses on its own
criterion. A decoder sees ordinary symbols: streams stay bit-exact across encoders.

Cost: decoding the four combinations is four more flow_synthesis runs per P-frame (the
round-only one is reused), about 1.7x the encoding time on CPU. So by default the three other
combinations are not decoded but estimated (`ShiftedFlowWarp`): the decoder adds the block motion
to its flow after the delta net (model/codecs.py FlowBlock.decode), so a candidate's flow is
rounding's decoded flow plus the upsampled change Q_w (k - round), and its compensated frame is the
previous reconstruction warped by that flow (model/npmath.ScaleSpaceVolume, the decoder's
scale-space warp in numpy, the blur levels made once per frame). What the estimate leaves out is
the delta net's and the mask's response to the two changed channels; the combined choice is then
decoded for real and judged as above, so the estimate can cost gain but never loses to rounding on
the criterion. `MotionRefinement(decode_candidates=True)` decodes all four instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from model.motion import BLOCK
from model.npmath import ScaledLambda, ScaleSpaceVolume, check_lambda_range, upsample_blocks
from runtime.entropy_coding import SYMBOL_LIMIT, gaussian_codelength_bits, scale_table


@dataclass(frozen=True)
class MotionRefinement(ScaledLambda):
    """Encoder settings of the motion-vector choice (runtime/motion_refine.py)."""

    enabled: bool = True
    # lambda at level 0 and at the top level; None: the model card's, else DEFAULT_LAMBDA_RANGE
    lambda_range: Optional[Tuple[float, float]] = None
    lambda_scale: float = 1.0  # multiplies lambda(level): > 1 favours fewer bits
    # True: the flow decoder runs on all four combinations; False: three are estimated (ShiftedFlowWarp)
    decode_candidates: bool = False

    def __post_init__(self):
        check_lambda_range(self.lambda_range, "motion refinement")
        if not (self.lambda_scale >= 0 and math.isfinite(self.lambda_scale)):
            raise ValueError(f"motion refinement lambda scale must be a finite number >= 0, got {self.lambda_scale}")


def block_sse(target: np.ndarray, prediction: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """[1, H, W, 3] x 2 -> [H / block, W / block] float64: per block, the sum over pixels of the
    channel-mean squared error (eq. 1's D times the block's pixel count)."""
    diff = np.asarray(target, np.float64)[0] - np.asarray(prediction, np.float64)[0]
    per_pixel = np.mean(diff * diff, axis=-1)
    height, width = per_pixel.shape
    if height % block or width % block:
        raise ValueError(f"frame {width}x{height} is not a multiple of the {block}-pixel block")
    return per_pixel.reshape(height // block, block, width // block, block).sum(axis=(1, 3))


def other_neighbour(scaled: np.ndarray, rounded: np.ndarray) -> np.ndarray:
    """The lattice point on the other side of `scaled` from `rounded` (int32, same shape).

    `rounded` = round(scaled); the two lattice points around `scaled` are floor and floor + 1, and
    this returns whichever `rounded` is not. Clamped to the coder's symbol limit.
    """
    low = np.floor(np.asarray(scaled, np.float64))
    other = np.where(rounded == low, low + 1, low)
    return np.clip(other, -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int32)


def motion_bits(symbols: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """[h, w, 2] motion symbols with their scale indices -> [h, w] model codelength in bits."""
    return gaussian_codelength_bits(symbols, scale_table()[np.asarray(indices)]).sum(axis=-1)


def combinations(rounded: np.ndarray, other: np.ndarray) -> Sequence[np.ndarray]:
    """The four [h, w, 2] choices {rounded, other}^2 of (k_x, k_y); the first is plain rounding."""
    out = []
    for take_x in (False, True):
        for take_y in (False, True):
            choice = rounded.copy()
            if take_x:
                choice[..., 0] = other[..., 0]
            if take_y:
                choice[..., 1] = other[..., 1]
            out.append(choice)
    return out


def pick_per_block(costs: np.ndarray, candidates: Sequence[np.ndarray]) -> np.ndarray:
    """costs [K, h, w], candidates K x [h, w, 2] -> [h, w, 2]: each block's least-cost candidate
    (ties to the earlier candidate, i.e. to plain rounding)."""
    best = np.argmin(costs, axis=0)
    stacked = np.stack(candidates)  # [K, h, w, 2]
    rows, cols = np.indices(best.shape)
    return stacked[best, rows, cols]


class ShiftedFlowWarp:
    """A candidate's compensated frame without the flow decoder (module docstring): rounding's
    decoded flow, its two motion channels moved by the upsampled Q_w (k - round), warps the
    previous reconstruction. One per P-frame: the blur levels are made once and shared."""

    def __init__(self, previous: np.ndarray, quant_width: np.ndarray, levels: int, sigma0: float, upsample: str):
        """previous [1, H, W, 3]: the reference the flow decoder warps; quant_width: the flow
        layer's Q_w, [C] or broadcastable [1, 1, 1, C] (channels 0-1 used); levels, sigma0: the
        model's scale space; upsample: its block_motion_upsample."""
        self.volume = ScaleSpaceVolume(np.asarray(previous)[0], levels, sigma0)
        self.motion_width = np.asarray(quant_width, np.float64).reshape(-1)[:2]
        self.upsample = upsample

    def __call__(self, rounded_output: Dict[str, np.ndarray], shift: np.ndarray) -> np.ndarray:
        """rounded_output: the flow decoder's outputs for plain rounding (its "flow" [1, H, W, 3]);
        shift: int [h, w, 2], candidate minus rounding -> the estimated compensated [1, H, W, 3]."""
        flow = np.array(rounded_output["flow"][0], np.float32)
        if np.any(shift):
            flow[..., :2] += upsample_blocks(shift * self.motion_width, self.upsample).astype(np.float32)
        return self.volume.warp(flow)[None]


@dataclass(frozen=True)
class RefinementResult:
    """What `refine` chose, and its cost against plain rounding's (eq. 1 units, whole frame)."""

    symbols: np.ndarray  # int32 [h, w, C]: the flow layer's symbols, channels 0-1 possibly changed
    flow: Dict[str, np.ndarray]  # the flow decoder's outputs for `symbols`
    cost: float  # sum over blocks of SSE + lambda * motion bits for `symbols`
    rounded_cost: float  # the same for plain rounding (cost <= rounded_cost always)
    changed_blocks: int  # blocks whose (k_x, k_y) differ from plain rounding


def refine(
    symbols: np.ndarray,
    scaled: np.ndarray,
    indices: np.ndarray,
    decode: Callable[[np.ndarray], Dict[str, np.ndarray]],
    target: np.ndarray,
    rd_lambda: float,
    estimate: Optional[Callable[[Dict[str, np.ndarray], np.ndarray], np.ndarray]] = None,
) -> RefinementResult:
    """The per-block choice of the two motion symbols (module docstring).

    symbols: int32 [h, w, C], plain rounding of `scaled` (float [h, w, C], (y - mu) / Q_w);
    indices: int32 [h, w, C] their scale indices; decode(symbols) -> the flow decoder's outputs
    (a dict with "compensated" [1, H, W, 3]), exactly what the decoder will run; target: x_t
    [1, H, W, 3] in [0, 1], H and W multiples of BLOCK matching the latent grid.
    estimate(rounding's outputs, candidate - rounding [h, w, 2]) -> compensated [1, H, W, 3]: when
    given (a ShiftedFlowWarp), the three other combinations are estimated instead of decoded.
    """
    rounded = symbols[..., :2]
    candidates = combinations(rounded, other_neighbour(scaled[..., :2], rounded))
    outputs, costs = [], []
    for motion in candidates:
        if estimate is not None and outputs:
            compensated = estimate(outputs[0], motion - rounded)
        else:
            trial = symbols.copy()
            trial[..., :2] = motion
            outputs.append(decode(trial))
            compensated = outputs[-1]["compensated"]
        costs.append(block_sse(target, compensated) + rd_lambda * motion_bits(motion, indices[..., :2]))
    costs = np.stack(costs)
    rounded_cost = float(np.sum(costs[0]))
    motion = pick_per_block(costs, candidates)
    changed = int(np.count_nonzero(np.any(motion != rounded, axis=-1)))
    if changed == 0:
        return RefinementResult(symbols, outputs[0], rounded_cost, rounded_cost, 0)
    chosen = symbols.copy()
    chosen[..., :2] = motion
    out = decode(chosen)
    cost = float(np.sum(block_sse(target, out["compensated"]) + rd_lambda * motion_bits(motion, indices[..., :2])))
    if cost > rounded_cost:  # the neighbours' interaction through the delta net undid the gain
        return RefinementResult(symbols, outputs[0], rounded_cost, rounded_cost, 0)
    return RefinementResult(chosen, out, cost, rounded_cost, changed)
