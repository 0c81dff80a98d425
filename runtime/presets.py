"""Encoder presets: one knob that trades encoding time for bits, as x264's `--preset`.

Each preset is a named set of encoder-side choices. None changes the bitstream or the decoder:
every preset's stream decodes bit-exactly with the plain decoder of the same model, on every
backend (tests/test_presets.py). Measured per preset (docs/BENCHMARKS.md "Encoder presets"; this
2-core CPU): all-intra (GOP 1, `scripts/presets.sh`) fast 0.0% BD-rate against medium at 2.2x its
encode speed, slow (= veryslow there) -10.5% (street), -14.0% (bedroom), -21.0% (bikes.mp4) at 1/55
of it; with the card's GOP 16 (`scripts/presets_gop16.sh`) slow -9.6% (street) and -3.4% (bedroom)
at 3.1x medium's encoding time, veryslow -15.6% / -15.5% at 38x; there `fast` only turns the
scene-cut check off.

- `fast`: with GOP 1 (every frame an I-frame: `--gop 1`) the encoder does not
  run the synthesis transform: no later frame references a frame, so only the PSNR the encoder
  reports needs the reconstruction (it reports "n/a"; decode with --reference to measure).
  The bits are identical to `medium`'s. The scene-cut check (trial I-frame codings of costly
  P-frames) is off. Not with a PSNR floor (--min_psnr needs reconstructions).
- `medium` (default): the codec as trained; the scene-cut check on (runtime/stream.py).
- `slow`: each I-frame's latent is searched by gradient steps on rate + lambda x distortion
  through the decoder (runtime/latent_opt.py; kept only where its real cost is lower), and the
  P-frames' block motion is chosen by rate and distortion (runtime/motion_refine.py). One search
  a GOP: at GOP 16 the better I-frame pays through every P-frame that references it.
- `veryslow`: `slow`, plus the same search on every P-frame's residue latent, and every P-frame
  also coded as an I-frame, the one of lower MSE + lambda x bpp kept (runtime/stream.py `rd_cost`;
  the scene-cut rule is then moot). (Until session 30 this was `slow`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

from runtime.latent_opt import LatentOptimization
from runtime.types import DEFAULT_SCENECUT

if TYPE_CHECKING:
    from runtime.motion_refine import MotionRefinement  # imports the range coder (TensorFlow)


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # one line for --help: what it costs and what it buys
    latent_steps: int = 0  # latent search steps (0: off)
    latent_residues: bool = True  # the latent search on P-frame residues too (else I-frames only)
    motion_refine: bool = False
    skip_unreferenced_synthesis: bool = False  # GOP 1 only: no encoder-side reconstruction
    scenecut: Optional[float] = None  # None: the caller's (DEFAULT_SCENECUT unless given)
    rd_frame_type: bool = False  # every P-frame also coded as an I-frame, the lower D + lambda R kept

    def latent_optimization(self) -> Optional[LatentOptimization]:
        return LatentOptimization(steps=self.latent_steps, residues=self.latent_residues) if self.latent_steps else None

    def motion_refinement(self) -> Optional["MotionRefinement"]:
        from runtime.motion_refine import MotionRefinement

        return MotionRefinement() if self.motion_refine else None


PRESETS: Dict[str, Preset] = {
    "fast": Preset(
        "fast",
        "2.2x medium's encoding speed for the same bits with GOP 1 (no encoder-side reconstruction, "
        "so no encoder PSNR); scene-cut check off",
        skip_unreferenced_synthesis=True,
        scenecut=0.0,
    ),
    "medium": Preset("medium", "the default: the codec as trained, scene-cut check on"),
    "slow": Preset(
        "slow",
        "3-10% fewer bits than medium at GOP 16 for ~3x its encoding time (10-21% all-intra at ~1/55 of its "
        "speed): each I-frame's latent searched by 50 gradient steps, R-D motion choice on P-frames",
        latent_steps=50,
        latent_residues=False,
        motion_refine=True,
    ),
    "veryslow": Preset(
        "veryslow",
        "~15% fewer bits than medium at GOP 16 for ~40x its encoding time: slow, plus each P-frame's residue "
        "latent searched and each P-frame also tried as an I-frame (R-D choice)",
        latent_steps=50,
        motion_refine=True,
        rd_frame_type=True,
    ),
}
DEFAULT_PRESET = "medium"


def get_preset(name) -> Preset:
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def default_scenecut(preset: Preset) -> float:
    return DEFAULT_SCENECUT if preset.scenecut is None else preset.scenecut
