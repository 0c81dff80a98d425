"""Small types shared by the codec core (runtime/codec.py, runtime/stream.py), the rate
controllers (runtime/ratecontrol.py) and the CLI (runtime/cli.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from model.errors import CodecError  # noqa: F401 - the runtime's public name for it


class FrameType(enum.IntEnum):
    I = 0  # noqa: E741 - the codec's name for a keyframe.
    P = 1


@dataclass(frozen=True)
class TrialResult:
    """What coding one frame at one level gives (from a trial or from the committed encode)."""

    level: float
    bits: int  # actual coded bits of the frame unit, headers included.
    psnr: float  # RGB PSNR of the reconstruction against the source frame, dB.


def scheduled_intra(index: int, last_intra: Optional[int], gop: int) -> bool:
    """Whether the GOP schedule puts an I-frame at frame `index`, given the index of the last
    I-frame (None: none yet) and the GOP (0: only the first frame). Any other I-frame in a stream
    is the encoder's own choice (the scene-cut check, `rd_frame_type`), and the GOP counts from it:
    the encoder (runtime/stream.py) and the target-bitrate controller (runtime/ratecontrol.py)
    both follow this rule."""
    return last_intra is None or (gop > 0 and index - last_intra >= gop)


class RateController(Protocol):
    """Chooses a continuous level per frame (Fig. 3).

    The stream encoder calls `select_level` for every frame, before coding it; `trial(level)`
    codes the frame at `level` without committing anything (references untouched) and may be
    called several times. After the frame is committed, the encoder calls `update` with what
    was really written.
    """

    def select_level(
        self, index: int, frame_type: FrameType, num_pixels: int, trial: Callable[[float], TrialResult]
    ) -> float: ...

    def update(self, index: int, frame_type: FrameType, result: TrialResult) -> None: ...


#: A P-frame that costs more than this multiple of the last I-frame's bits is coded again as an
#: I-frame, which replaces it when it is no larger and no worse in PSNR (a scene cut, or a P-frame
#: loop that has drifted). At 1.0 ordinary content rarely even tries (its P-frames cost a fraction
#: of an I-frame); 0 turns the check off.
DEFAULT_SCENECUT = 1.0
