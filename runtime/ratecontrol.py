"""Rate control over ELF-VC's continuous level (Fig. 3, Sec. 3.1 "Level embedding").

One model codes every frame at any level s in [0, L-1]; bits and quality rise with s (the paper
notes the single continuous knob makes quality increase monotonically with bitrate). A
controller picks s per frame from trial encodes, `trial(s) -> TrialResult(level, bits, psnr)`,
which code the frame without committing it (runtime/types.py's `RateController` protocol).

Controllers (the three of Fig. 3 and an average-bitrate one):

- `ConstantLevel(s, p_offset)`: every I-frame at s, every P-frame at s + p_offset (clipped to the
  model's range; the I/P quality ratio of x264's `--ipratio`, in levels), or a pattern of offsets
  cycled over each GOP's P-frames (model/level_offsets.py: hierarchical quality).
- `MaxBits(cap_bpp_i, cap_bpp_p, base_level)`: s = base_level if that frame fits the cap for
  its type, else the highest level below it that fits (the lowest level if none does).
- `MinQuality(min_psnr)`: the lowest level whose PSNR reaches the floor (the highest if none).
- `TargetBitrate(kbps, fps, gop)`: an average bitrate over the clip (a budget model, below).
- `Combined(primary, floor=..., caps=...)`: a primary choice (constant level or target), raised
  to meet the quality floor, then lowered to fit the caps. Caps win over the floor: a frame
  that cannot reach the floor within its cap is coded at the best level that fits.

Searches are bisections with midpoints on a dyadic grid (`LEVEL_STEP`, 1/64 of a level) keeping
the invariant "lo satisfies the condition, hi does not", so they end after at most
2 + ceil(log2((hi - lo) / LEVEL_STEP)) + 1 trials whatever `trial` returns, and the level they return
is one whose trial satisfied the condition whenever any tried level did. Strict monotonicity
is never assumed (an untrained model is not monotone); where it fails the answer is a feasible
level, not necessarily the highest one. Trials are memoised per frame, so a combined
controller never codes the same (frame, level) twice.

Target bitrate: the clip's budget is b = 1000 kbps / fps bits per frame. Over a GOP of G frames
an I-frame is given w_I shares and each P-frame one (w_I = `iframe_weight`, default 4, our
choice: learned codecs spend several times more on I-frames), so the nominal budgets are
    n_I = G b w_I / (w_I + G - 1),     n_P = G b / (w_I + G - 1).
A bucket D (bits written minus nominal budgets, so far) is repaid by the rest of the current GOP
in proportion to the same shares (the GOP-level allocation of MPEG-2 Test Model 5): with R_t the
nominal bits of the frames left in the GOP, this one included, the frame's budget is
n_t - D n_t / R_t, floored at 0. The frame gets the highest level whose trial fits its budget
(the lowest if none fits), and D is updated with what was really written. Debt a GOP cannot
repay (its frames already at the lowest level) carries over, so the clip's average approaches
the target as the clip grows whenever the target is reachable at all. The GOPs are the
encoder's (runtime/types.py's `scheduled_intra`): each starts at an I-frame, and any I-frame
(a scene cut, an R-D frame-type choice) starts a new one, which the controller learns from
`update`. Such an I-frame cuts the GOP before it short: that GOP's nominal budgets are brought
back to b per frame coded (its I-frame had the share of a whole GOP; the difference is debt, or
credit), and the new GOP is budgeted as any other, its I-frame charged n_I. The nominal budgets
of a clip so add up to b per frame however its GOPs fall. With
gop 0 (one I-frame, then only P-frames) the I-frame's budget is w_I b, every frame is charged
against the average b (so the I-frame's extra share is debt too), and debt is repaid over
OPEN_GOP_PERIOD frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

from model.level_offsets import LevelOffsets, offset_at, parse_level_offsets
from runtime.bitstream import header_size
from runtime.types import FrameType, TrialResult

Trial = Callable[[float], TrialResult]

#: Levels are searched on this grid (exact in float32, which the bitstream stores).
LEVEL_STEP = 1.0 / 64.0
#: With gop 0 (a single I-frame), the target-bitrate bucket is repaid over this many frames.
OPEN_GOP_PERIOD = 16


def snap(level: float) -> float:
    """`level` rounded down to the search grid."""
    return math.floor(level / LEVEL_STEP + 1e-9) * LEVEL_STEP


def max_search_trials(lo: float, hi: float) -> int:
    """Trials a bisection over [lo, hi] may take after its two end points: the halvings that
    bring the bracket below LEVEL_STEP, plus one for snapping the midpoints to the grid."""
    span = (hi - lo) / LEVEL_STEP
    return math.ceil(math.log2(span)) + 1 if span > 1 else 0


def _midpoint(lo: float, hi: float) -> Optional[float]:
    """The grid level just below the middle of (lo, hi), or the middle itself when the grid has
    no point inside; None once the bracket is narrower than one grid step."""
    if hi - lo <= LEVEL_STEP:
        return None
    middle = (lo + hi) / 2
    mid = snap(middle)
    return mid if lo < mid < hi else middle


class MemoTrial:
    """`trial` with a per-frame cache (levels snapped to the grid) and a log of what was tried."""

    def __init__(self, trial: Trial):
        self._trial = trial
        self.cache: Dict[float, TrialResult] = {}

    def __call__(self, level: float) -> TrialResult:
        if level not in self.cache:
            self.cache[level] = self._trial(level)
        return self.cache[level]

    @property
    def calls(self) -> int:
        return len(self.cache)


def highest_satisfying(trial: Trial, ok: Callable[[TrialResult], bool], lo: float, hi: float) -> Optional[float]:
    """The highest grid level in [lo, hi] whose trial is `ok`, assuming `ok` holds below some
    level and fails above it. None when `ok(trial(lo))` fails. Bounded: 2 + max_search_trials."""
    return _boundary(trial, ok, lo, hi, highest=True)


def lowest_satisfying(trial: Trial, ok: Callable[[TrialResult], bool], lo: float, hi: float) -> Optional[float]:
    """The lowest grid level in [lo, hi] whose trial is `ok`, assuming `ok` fails below some
    level and holds above it. None when `ok(trial(hi))` fails. Bounded: 2 + max_search_trials."""
    return _boundary(trial, ok, lo, hi, highest=False)


def _boundary(trial: Trial, ok: Callable[[TrialResult], bool], lo: float, hi: float, highest: bool) -> Optional[float]:
    """Bisection for the grid level where `ok` changes: `good` is the end `ok` holds towards
    (hi when searching for the lowest ok level, lo for the highest), `bad` the other."""
    good, bad = (lo, hi) if highest else (hi, lo)
    if ok(trial(bad)):
        return bad
    if not ok(trial(good)):
        return None
    # Invariant: ok at good, not ok at bad.
    for _ in range(max_search_trials(lo, hi)):
        mid = _midpoint(min(good, bad), max(good, bad))
        if mid is None:
            break
        if ok(trial(mid)):
            good = mid
        else:
            bad = mid
    return good


def _check_range(min_level: float, max_level: float) -> None:
    if not (0 <= min_level <= max_level) or not math.isfinite(max_level):
        raise ValueError(f"level range [{min_level}, {max_level}] is not a valid range of levels")


@dataclass
class ConstantLevel:
    """Every I-frame at `level`, every P-frame at `level + offset` clipped to [0, max_level]
    (the paper's R-D curves, Sec. 4.2, use one level for both: p_offset 0). `p_offset` is one
    number or a pattern cycled over each GOP's P-frames: the k-th P-frame after the last I-frame
    gets entry (k - 1) mod n (model/level_offsets.py; the controller learns where the I-frames
    fell from `update`, so a scene cut restarts the pattern as it restarts the GOP). The encoder's
    own I-frame alternatives to a P-frame (the scene-cut check, `--rd_frame_type`) are coded at the
    P-frame's level, so they compete with the P-frame at equal footing; one that wins starts a GOP,
    so it is then coded again at the I-frame level (`intra_level`, runtime/stream.py).

    A negative offset codes P-frames a little coarser than the I-frame they predict from, as
    block codecs do (x264's default I/P quantizer ratio 1.4 is about 3 QP): measured on `base`,
    the saturating top levels cost P-frames more bits than they return (docs/BENCHMARKS.md,
    "P-frame level offset"). A pattern with a higher last entry codes every n-th P-frame better,
    a reference the next ones predict from (docs/BENCHMARKS.md, "Hierarchical quality")."""

    level: float
    p_offset: Union[float, Sequence[float]] = 0.0
    max_level: float = math.inf
    last_intra: int = field(default=0, compare=False)  # the index of the last I-frame coded

    needs_psnr = False  # whether it judges frames by their reconstruction's PSNR

    def __post_init__(self):
        if not (self.level >= 0 and math.isfinite(self.level)):
            raise ValueError(f"level must be a finite number >= 0, got {self.level}")
        try:
            self.p_offsets: LevelOffsets = parse_level_offsets(self.p_offset)
        except ValueError as err:
            raise ValueError(f"the P-frame level offset {err}") from None
        if not self.max_level >= 0:  # NaN too
            raise ValueError(f"max_level must be >= 0, got {self.max_level}")
        if any(self.p_offsets) and math.isinf(self.max_level):
            raise ValueError("a P-frame level offset needs the model's max_level to clip to")

    @property
    def offsets_p_frames(self) -> bool:
        """Whether any P-frame is coded at another level than the I-frames."""
        return any(self.p_offsets)

    def select_level(self, index: int, frame_type: FrameType, num_pixels: int, trial: Trial) -> float:
        if frame_type is FrameType.P and self.offsets_p_frames:
            offset = offset_at(self.p_offsets, max(index - self.last_intra, 1))
            return float(min(max(self.level + offset, 0.0), self.max_level))
        return float(self.level)

    def update(self, index: int, frame_type: FrameType, result: TrialResult) -> None:
        if frame_type is FrameType.I:
            self.last_intra = index


@dataclass
class MaxBits:
    """Per-frame caps in bits per pixel, one per frame type (Fig. 3: 0.081 on I, 0.037 on P):
    the highest level up to `base_level` whose frame fits the cap; the lowest level if even
    that does not fit (the cap is then exceeded: the codec cannot go lower)."""

    cap_bpp_i: Optional[float]
    cap_bpp_p: Optional[float]
    base_level: float
    min_level: float = 0.0

    needs_psnr = False  # whether it judges frames by their reconstruction's PSNR

    def __post_init__(self):
        _check_range(self.min_level, self.base_level)
        for name in ("cap_bpp_i", "cap_bpp_p"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                flag = {"cap_bpp_i": "max_bpp_i", "cap_bpp_p": "max_bpp_p"}[name]  # make_controller's (and the CLI's) name
                raise ValueError(f"{flag} must be a positive number of bits per pixel, got {value:g}")

    def cap_bits(self, frame_type: FrameType, num_pixels: int) -> Optional[float]:
        cap = self.cap_bpp_i if frame_type == FrameType.I else self.cap_bpp_p
        return None if cap is None else cap * num_pixels

    def limit(self, level: float, frame_type: FrameType, num_pixels: int, trial: Trial) -> float:
        """`level`, lowered until the frame fits its cap."""
        cap = self.cap_bits(frame_type, num_pixels)
        if cap is None:
            return level
        found = highest_satisfying(trial, lambda r: r.bits <= cap, self.min_level, level)
        return self.min_level if found is None else found

    def select_level(self, index: int, frame_type: FrameType, num_pixels: int, trial: Trial) -> float:
        return self.limit(self.base_level, frame_type, num_pixels, MemoTrial(trial))

    def update(self, index: int, frame_type: FrameType, result: TrialResult) -> None:
        pass


@dataclass
class MinQuality:
    """A PSNR floor (Fig. 3: 37 dB): the lowest level whose reconstruction reaches `min_psnr`,
    or `max_level` when none does."""

    min_psnr: float
    max_level: float
    min_level: float = 0.0

    needs_psnr = True  # whether it judges frames by their reconstruction's PSNR

    def __post_init__(self):
        _check_range(self.min_level, self.max_level)
        if not (math.isfinite(self.min_psnr) and self.min_psnr > 0):  # 0 dB or below: a floor no frame is under
            raise ValueError(f"min_psnr must be a positive, finite number of dB, got {self.min_psnr:g}")

    def raise_to_floor(self, level: float, trial: Trial) -> float:
        """`level`, raised (up to max_level) until the frame reaches the floor."""
        found = lowest_satisfying(trial, lambda r: r.psnr >= self.min_psnr, level, self.max_level)
        return self.max_level if found is None else found

    def select_level(self, index: int, frame_type: FrameType, num_pixels: int, trial: Trial) -> float:
        return self.raise_to_floor(self.min_level, MemoTrial(trial))

    def update(self, index: int, frame_type: FrameType, result: TrialResult) -> None:
        pass


@dataclass
class TargetBitrate:
    """An average bitrate over the clip: per-frame budgets from a GOP-weighted share of
    `kbps`, corrected by a bucket of the bits written so far (see the module docstring)."""

    kbps: float
    fps: float
    gop: int
    max_level: float
    min_level: float = 0.0
    iframe_weight: float = 4.0
    frames: Optional[int] = None  # the clip's length where known: its last GOP may be shorter
    header_bits: float = 0.0  # written before any frame (the stream header): the bucket starts owing them
    debt: float = field(default=0.0, init=False)  # D: bits written minus nominal budgets.
    last_intra: int = field(default=0, init=False)  # the last I-frame seen by `update`: its GOP's start
    budgets: List[float] = field(default_factory=list, init=False)  # budget given to each frame.

    needs_psnr = False  # whether it judges frames by their reconstruction's PSNR

    def __post_init__(self):
        _check_range(self.min_level, self.max_level)
        if not (self.kbps > 0 and math.isfinite(self.kbps)):
            raise ValueError(f"target bitrate must be a positive number of kbit/s, got {self.kbps}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"frame rate must be positive, got {self.fps}")
        if not self.bits_per_frame < 1e15:  # 1e308 kbps at 25 fps overflowed to inf: NaN budgets, level 0
            raise ValueError(f"target bitrate {self.kbps:g} kbit/s is beyond any stream ({self.bits_per_frame:g} bits a frame)")
        if self.gop < 0:
            raise ValueError(f"GOP length must be >= 0 (0: one I-frame, then P-frames), got {self.gop}")
        if not self.iframe_weight >= 1:
            raise ValueError(f"iframe_weight must be >= 1, got {self.iframe_weight}")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"a clip of {self.frames} frames has nothing to code")
        if not (self.header_bits >= 0 and math.isfinite(self.header_bits)):
            raise ValueError(f"header_bits must be a finite number >= 0, got {self.header_bits}")
        self.debt = float(self.header_bits)

    @property
    def bits_per_frame(self) -> float:
        return 1000.0 * self.kbps / self.fps

    @property
    def period(self) -> int:
        """Frames over which debt is repaid: the GOP, or OPEN_GOP_PERIOD for gop 0."""
        return self.gop if self.gop > 0 else OPEN_GOP_PERIOD

    def gop_start(self, index: int) -> int:
        """The first frame of frame `index`'s GOP as the encoder schedules it: every `gop` frames
        from the last I-frame `update` saw (frame 0 before any), as `scheduled_intra` does."""
        g, last = self.gop, self.last_intra
        if g <= 0:
            return 0
        if index < last:  # asked about the past: the plain schedule
            return index - index % g
        return last + (index - last) // g * g

    def gop_length(self, index: int) -> int:
        """Frames in the GOP of frame `index`: the GOP, or what is left of a clip of known length
        (a 21-frame clip at GOP 16 ends with a GOP of 5, whose I-frame gets 5 frames' share, not 16's)."""
        g = self.gop
        if g <= 1 or self.frames is None:
            return g
        return max(1, min(g, self.frames - self.gop_start(index)))

    def nominal(self, frame_type: FrameType, index: int = 0) -> float:
        """n_I or n_P: the frame's share of its GOP's worth of bits."""
        g, w, b = self.gop_length(index), self.iframe_weight, self.bits_per_frame
        if g == 0:  # one I-frame, then P-frames only: P-frames get the average.
            return w * b if frame_type == FrameType.I else b
        if g == 1:
            return b
        return g * b * (w if frame_type == FrameType.I else 1.0) / (w + g - 1)

    def budget(self, index: int, frame_type: FrameType) -> float:
        """n_t - D n_t / R_t, floored at 0 (R_t: nominal bits left in the GOP, this frame's too)."""
        n = self.nominal(frame_type, index)
        if self.gop > 0:  # frames left to repay over
            after = self.gop_length(index) - 1 - (index - self.gop_start(index))
        else:
            after = self.period - 1 - index % self.period
        if self.gop == 0 and self.frames is not None:  # an open GOP ends with the clip where that is sooner
            after = min(after, self.frames - 1 - index)
        left = n + after * self.nominal(FrameType.P, index)
        return max(0.0, n - self.debt * n / left)

    def select_level(self, index: int, frame_type: FrameType, num_pixels: int, trial: Trial) -> float:
        return self.choose(index, frame_type, MemoTrial(trial))

    def choose(self, index: int, frame_type: FrameType, trial: Trial) -> float:
        budget = self.budget(index, frame_type)
        self.budgets.append(budget)
        found = highest_satisfying(trial, lambda r: r.bits <= budget, self.min_level, self.max_level)
        return self.min_level if found is None else found

    def update(self, index: int, frame_type: FrameType, result: TrialResult) -> None:
        if self.gop == 0:  # an open GOP: the I-frame's extra share is debt, repaid by the P-frames
            self.debt += result.bits - self.bits_per_frame
            return
        if frame_type == FrameType.I and self.gop_start(index) != index:
            self.debt += self.cut_short(index)
        if frame_type == FrameType.I:
            self.last_intra = index  # a GOP starts here, as the encoder counts them
        self.debt += result.bits - self.nominal(frame_type, index)

    def cut_short(self, index: int) -> float:
        """What the GOP holding frame `index` was granted beyond b a frame for its frames before
        `index`, where an unscheduled I-frame at `index` ends it (a scene cut, an R-D frame-type
        choice): its I-frame had a whole GOP's share. Charging the new I-frame a P-frame's slot
        instead left synthetic clips with cuts 1-4% under their target, crediting it without this 3-6%
        over; budgeting GOPs from multiples of `gop` (before the GOPs followed the encoder's) left
        them 5-14% under (tests/test_ratecontrol.py's clips)."""
        start = self.gop_start(index)
        coded = index - start
        granted = self.nominal(FrameType.I, start) + (coded - 1) * self.nominal(FrameType.P, start)
        return granted - coded * self.bits_per_frame

    def cut_budget(self, index: int) -> float:
        """The budget of an unscheduled I-frame at `index` (`intra_level`): the first frame of a
        new GOP, the GOP it cuts short settled (`cut_short`). Changes no state."""
        saved = self.debt, self.last_intra
        try:
            self.debt += self.cut_short(index)
            self.last_intra = index
            return self.budget(index, FrameType.I)
        finally:
            self.debt, self.last_intra = saved


@dataclass
class Combined:
    """primary (ConstantLevel or TargetBitrate) -> raised to `floor` -> lowered to `caps`.

    Caps win: the floor is met only where the cap allows it. With a target bitrate the
    bucket is charged what was really written, so frames the floor made dearer (or the caps
    cheaper) are repaid by later frames.
    """

    primary: object  # ConstantLevel | TargetBitrate
    floor: Optional[MinQuality] = None
    caps: Optional[MaxBits] = None

    @property
    def needs_psnr(self) -> bool:
        return self.floor is not None

    def select_level(self, index: int, frame_type: FrameType, num_pixels: int, trial: Trial) -> float:
        memo = MemoTrial(trial)
        if isinstance(self.primary, TargetBitrate):
            level = self.primary.choose(index, frame_type, memo)
        else:
            level = self.primary.select_level(index, frame_type, num_pixels, memo)
        return self.bound(level, frame_type, num_pixels, memo)

    def bound(self, level: float, frame_type: FrameType, num_pixels: int, memo: Trial) -> float:
        """`level` raised to the floor, then lowered to the caps."""
        if self.floor is not None:
            level = self.floor.raise_to_floor(level, memo)
        if self.caps is not None:
            level = self.caps.limit(level, frame_type, num_pixels, memo)
        return level

    def update(self, index: int, frame_type: FrameType, result: TrialResult) -> None:
        self.primary.update(index, frame_type, result)


def make_controller(
    *,
    max_level: float,
    level: Optional[float] = None,
    max_bpp_i: Optional[float] = None,
    max_bpp_p: Optional[float] = None,
    min_psnr: Optional[float] = None,
    target_kbps: Optional[float] = None,
    fps: Optional[float] = None,
    gop: int = 16,
    p_level_offset: Union[float, Sequence[float]] = 0.0,
    frames: Optional[int] = None,
):
    """The controller a command line asks for. `level` is the primary choice unless a target
    bitrate is given (not both); with caps alone the base level is `level` or the top level;
    with a floor alone, the lowest level. `p_level_offset` (one number or a pattern) moves the
    P-frames of a constant level (ConstantLevel). Raises ValueError naming a bad combination."""
    if level is not None and target_kbps is not None:
        raise ValueError("give either a constant level or a target bitrate, not both")
    try:
        offsets = parse_level_offsets(p_level_offset)
    except ValueError as err:
        raise ValueError(f"the P-frame level offset {err}") from None
    if any(offsets) and (target_kbps is not None or (level is None and max_bpp_i is None and max_bpp_p is None)):
        raise ValueError("a P-frame level offset applies to a constant level (or caps), not to a target bitrate "
                         "or a PSNR floor alone")
    if level is not None and not (0 <= level <= max_level):
        raise ValueError(f"level {level} is outside the model's range [0, {max_level:g}]")
    caps = None
    if max_bpp_i is not None or max_bpp_p is not None:
        caps = MaxBits(max_bpp_i, max_bpp_p, base_level=max_level)
    floor = MinQuality(min_psnr, max_level) if min_psnr is not None else None
    if target_kbps is not None:
        if fps is None:
            raise ValueError("a target bitrate needs the frame rate")
        # The stream's own header counts toward its bitrate.
        primary = TargetBitrate(target_kbps, float(fps), gop, max_level, frames=frames, header_bits=8 * header_size())
    elif level is not None:
        primary = ConstantLevel(level, offsets, max_level)
    elif caps is not None:
        primary = ConstantLevel(max_level, offsets, max_level)
    elif floor is not None:
        return floor
    else:
        raise ValueError("no rate control given: need a level, caps, a PSNR floor or a target bitrate")
    if floor is None and caps is None:
        return primary
    return Combined(primary, floor=floor, caps=caps)


def intra_level(controller, index: int, num_pixels: int, trial: Trial) -> Optional[float]:
    """The level of an I-frame that replaces a P-frame (a scene cut, `--rd_frame_type`) when the
    controller may give I-frames another level than P-frames, else None (keep the P-frame's level).

    Constant levels differ by type through a P-frame offset, or through caps (one for I-frames,
    one for P-frames; a floor alone is the same for both). A target bitrate with GOPs (`gop` > 1)
    gives the I-frame the budget of the first frame of a new GOP (`TargetBitrate.cut_budget`), as
    `update` will charge it; with one I-frame per clip (`gop` 0) it keeps the P-frame's level. The
    new I-frame starts a GOP that its P-frames predict from, so it gets the quality every other
    I-frame gets (x264 codes a scene-cut I-frame at the I-frame quantizer too). `trial` codes the
    frame as an I-frame."""
    combined = isinstance(controller, Combined)
    primary = controller.primary if combined else controller
    if isinstance(primary, TargetBitrate) and primary.gop > 1:
        memo = MemoTrial(trial)
        budget = primary.cut_budget(index)
        found = highest_satisfying(memo, lambda r: r.bits <= budget, primary.min_level, primary.max_level)
        level = primary.min_level if found is None else found
        return controller.bound(level, FrameType.I, num_pixels, memo) if combined else level
    if not (isinstance(primary, ConstantLevel) and (primary.offsets_p_frames or (combined and controller.caps is not None))):
        return None
    return controller.select_level(index, FrameType.I, num_pixels, trial)
