"""P-frame level offsets: how far a GOP's P-frames are coded from its I-frame's level.

An offset is one number (every P-frame at level + offset) or a pattern of several, cycled over
each GOP's P-frames: the k-th P-frame after an I-frame (k = 1, 2, ...) is coded at
level + offsets[(k - 1) mod n]. A pattern whose last entry is higher than the others is a
hierarchical quality structure: every n-th P-frame is coded better and the frames after it
predict from a better reference, which slows the error propagation along a GOP (the low-delay
"hierarchical quality" of DCVC-DC, Li et al. 2023; the paper itself codes every frame at one
level, Sec. 4.2). runtime.ratecontrol.ConstantLevel applies them; model cards, command lines and
benchmark reports spell them as defined here. TF-free.
"""

from __future__ import annotations

import math
import numbers
from typing import Tuple, Union

LevelOffsets = Tuple[float, ...]

MAX_PATTERN = 64  # entries in a pattern (a GOP of 65 frames); longer ones are refused

FORMAT_HELP = f"a finite number or a comma list of at most {MAX_PATTERN} of them"


def parse_level_offsets(value: Union[float, int, str, list, tuple]) -> LevelOffsets:
    """`value` (a number, a comma list "a,b,c" or a sequence of numbers) as a tuple of finite
    floats; ValueError naming what was wrong otherwise."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"must be {FORMAT_HELP}, got {value!r}") from None
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        values = [value]
    if not 1 <= len(values) <= MAX_PATTERN:
        raise ValueError(f"must be {FORMAT_HELP}, got {len(values)} numbers")
    for number in values:
        if isinstance(number, bool) or not isinstance(number, numbers.Real) or not math.isfinite(number):
            shown = value if isinstance(value, str) else number
            raise ValueError(f"must be {FORMAT_HELP}, got {shown}")
    return tuple(float(n) + 0.0 for n in values)  # + 0.0: -0 reads as 0


def format_level_offsets(offsets: LevelOffsets, signed: bool = False) -> str:
    """"-1" or "-1.25,-1.25,-1.25,-0.25" (signed: "+0.5"), 6 significant digits: what
    parse_level_offsets reads back (and what names the scripts' files)."""
    return ",".join(f"{o:+g}" if signed else f"{o:g}" for o in offsets)


def level_offsets_json(offsets: LevelOffsets) -> Union[float, list]:
    """A number for a single offset (what reports wrote before patterns), else a list."""
    return offsets[0] if len(offsets) == 1 else list(offsets)


def offset_at(offsets: LevelOffsets, position: int) -> float:
    """The offset of the P-frame `position` frames after its GOP's I-frame (1 for the first)."""
    if position < 1:
        raise ValueError(f"a P-frame comes at least 1 frame after its I-frame, got {position}")
    return offsets[(position - 1) % len(offsets)]


def describe_level_offsets(offsets: LevelOffsets) -> str:
    """Words for a note: "1 level below the I-frames", or the pattern."""
    if len(offsets) == 1:
        value = offsets[0]
        return (f"{abs(value):g} level{'s' if abs(value) != 1 else ''} "
                f"{'below' if value < 0 else 'above'} the I-frames")
    return f"at levels {format_level_offsets(offsets)} from the I-frames, cycled over each GOP's P-frames"

