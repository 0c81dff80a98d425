"""Typed model configurations and the registry of named presets.

The paper (§3.2, Table 3) fixes the backbone widths of the flow and residue codecs: encoders are
three DM-256 blocks at 4x-8x-16x, flow / residue decoders three DM-64 / DM-128 blocks at
16x-8x-4x. Everything its Figure 8 would have told us (codelayer widths, hyperprior widths, state
width, predictor width) is a gap; the values below are our choices and are recorded in
docs/DESIGN.md together with the parameter counts they give.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

#: Frames are padded to a multiple of this: 16x codelayer followed by a 4x hyper codelayer.
FRAME_MULTIPLE = 64


#: Config fields that only set Q_w (its initial values, and whether P-frames have one). They came
#: after the first shipped models: a checkpoint differing only in them still warm-starts
#: (model/checkpoints.py), and the model id hashes them only when set (model/bundle.py).
QUANT_WIDTH_FIELDS = (
    "quant_width_first",
    "quant_width_last",
    "pframe_quant_width",
    "flow_quant_width_first",
    "flow_quant_width_last",
)

#: Config fields that change the computation but no weight (model/motion.py's encoder-side block
#: search and the decoder's block-motion path). A checkpoint differing only in them loads as is,
#: and the model id hashes them only when set, like QUANT_WIDTH_FIELDS.
WEIGHT_FREE_FIELDS = ("motion_search_radius", "motion_search_penalty", "motion_search_penalty_top", "block_motion_upsample")

#: How the decoder spreads each 16x16 block's coded motion over its pixels (model/motion.py,
#: upsample_blocks): "nearest" (block-constant, as trained so far) or "bilinear" (between block
#: centres, as overlapped block motion compensation smooths block codecs' predictions).
BLOCK_MOTION_UPSAMPLES = ("nearest", "bilinear")

#: Default cost per pixel of |dx| + |dy| in model/motion.py's block search (mean |luma difference|,
#: pixels in [0, 1]); here, not in model/motion.py, so TF-free gpu_train/ shares it.
MOTION_SEARCH_PENALTY = 0.002


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one ELF-VC model. Frozen: a config is an identity, not a scratchpad."""

    name: str
    # Level conditioning (§3.1, App. E).
    num_levels: int = 8  # L: levels the model is trained on.
    embedding_dim: int = 8  # L_e: width of the level embedding fed to every network.
    # Backbone widths (§3.2).
    encoder_channels: int = 256  # DM-C width of every encoder (I, flow, residue).
    iframe_decoder_channels: int = 128  # gap: the paper gives no I-frame decoder width.
    flow_decoder_channels: int = 64
    residue_decoder_channels: int = 128
    dm_convs: int = 3  # convolutions per DM block (gap).
    # Codelayers (App. A).
    latent_channels: int = 128  # C of q0 (gap).
    hyper_channels: int = 128  # width of E1 / D1 (gap).
    hyper_latent_channels: int = 64  # C of q1 (gap).
    # Quantization width Q_w (§3.1, App. A): learned per level and channel, stored as its log and
    # initialised geometrically from quant_width_first (level 0, lowest rate) to quant_width_last.
    quant_width_first: float = 1.0
    quant_width_last: float = 1.0
    # Deviation (docs/DESIGN.md): §3.1 gives only the I-frame a per-level Q_w; with
    # this on, the flow and residue codelayers get their own, so the levels separate in rate from
    # the first step instead of only as fast as Adam can teach the level maps.
    pframe_quant_width: bool = False
    # The flow codelayer's own initial spread (None: the one above). Training noise is
    # U(-Q_w/2, Q_w/2) in latent units, so a coarse flow Q_w teaches the flow decoder to ignore
    # its latents; 1, 1 gives the flow the paper's Q_w = 1 at every level (docs/DESIGN.md).
    flow_quant_width_first: Optional[float] = None
    flow_quant_width_last: Optional[float] = None
    # P-frame specifics (§2, §3.3).
    state_channels: int = 64  # state carried at 4x (gap).
    predictor_channels: int = 64  # width of the in-loop flow predictor (gap).
    predictor_blocks: int = 2
    scale_space_levels: int = 5  # blur volume depth: sigma in {0, s0, 2 s0, 4 s0, ...}.
    scale_space_sigma0: float = 1.0
    flow_output_scale: float = 4.0  # flow deltas are decoded in units of this many pixels.
    # Deviation (model/motion.py): > 0 puts an encoder-side block motion search of this radius
    # (pixels) into flow latent channels 0-1 and adds them, upsampled, to the decoded flow.
    # 0 is the paper's flow block.
    motion_search_radius: int = 0
    motion_search_penalty: float = MOTION_SEARCH_PENALTY  # per pixel of |dx| + |dy|, in mean |luma difference|.
    # None: motion_search_penalty at every level. Set: the penalty at the top level, and
    # motion_search_penalty the one at level 0, geometric in between (fractional levels too), so
    # the search weighs a vector's bits like the level's lambda does: dear at low rates, cheap at
    # high ones (model/motion.py, level_penalty).
    motion_search_penalty_top: Optional[float] = None
    # With the block-motion path: how the decoded block vectors become a per-pixel flow
    # (BLOCK_MOTION_UPSAMPLES). A change needs training: the flow decoder's learned correction
    # is fitted to one of them.
    block_motion_upsample: str = "nearest"
    # Channel normalization (App. C).
    norm_freeze_steps: int = 2000
    # Ablations (Table 3).
    use_predictor: bool = True
    use_state: bool = True
    symmetric: bool = False  # decoders as wide as encoders ("DM-Symmetric").
    single_level: bool = False  # one R-D point per model ("Point" bitrate coverage).

    def __post_init__(self):
        levels = 1 if self.single_level else self.num_levels
        if levels < 1 or self.embedding_dim < 1:
            raise ValueError(f"config {self.name!r}: num_levels and embedding_dim must be >= 1")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                if field.name not in ("norm_freeze_steps", *WEIGHT_FREE_FIELDS):
                    raise ValueError(f"config {self.name!r}: {field.name} must be positive, got {value}")
        if self.motion_search_radius < 0 or self.motion_search_radius != int(self.motion_search_radius):
            raise ValueError(f"config {self.name!r}: motion_search_radius must be an integer >= 0, got {self.motion_search_radius}")
        if self.motion_search_penalty < 0:
            raise ValueError(f"config {self.name!r}: motion_search_penalty must be >= 0, got {self.motion_search_penalty}")
        if self.motion_search_penalty_top is not None:
            if self.motion_search_penalty_top <= 0 or self.motion_search_penalty <= 0:
                raise ValueError(
                    f"config {self.name!r}: a motion_search_penalty_top needs motion_search_penalty and "
                    f"motion_search_penalty_top > 0 (they are interpolated geometrically), got "
                    f"{self.motion_search_penalty} and {self.motion_search_penalty_top}"
                )
            if self.levels == 1 or self.embedding_width == 1:  # else level_from_embedding cannot tell levels apart.
                raise ValueError(
                    f"config {self.name!r}: a motion_search_penalty_top needs more than one level and an embedding_dim > 1"
                )
        if self.block_motion_upsample not in BLOCK_MOTION_UPSAMPLES:
            raise ValueError(f"config {self.name!r}: block_motion_upsample must be one of {', '.join(BLOCK_MOTION_UPSAMPLES)}, "
                             f"got {self.block_motion_upsample!r}")
        if self.motion_search_radius and self.latent_channels < 2:
            raise ValueError(f"config {self.name!r}: motion_search_radius needs latent_channels >= 2")
        if (self.flow_quant_width_first is None) != (self.flow_quant_width_last is None):
            raise ValueError(f"config {self.name!r}: set both flow_quant_width_first and flow_quant_width_last, or neither")
        if self.flow_quant_width_first is not None and not self.pframe_quant_width:
            raise ValueError(f"config {self.name!r}: a flow Q_w spread needs pframe_quant_width")

    @property
    def levels(self) -> int:
        """Number of discrete training levels (1 for the single-level ablation)."""
        return 1 if self.single_level else self.num_levels

    @property
    def embedding_width(self) -> int:
        return 1 if self.single_level else self.embedding_dim

    @property
    def max_level(self) -> float:
        return float(self.levels - 1)

    def quant_width_spread(self, block: str = "iframe") -> Tuple[float, float]:
        """Initial (level 0, top level) Q_w of `block` ('iframe' | 'flow' | 'residue')."""
        if block == "flow" and self.flow_quant_width_first is not None:
            return self.flow_quant_width_first, self.flow_quant_width_last
        return self.quant_width_first, self.quant_width_last

    def initial_log_quant_width(self, block: str = "iframe") -> np.ndarray:
        """[levels, latent_channels] float32: log Q_w of `block`, linear in the level from first to last."""
        first, last = (math.log(v) for v in self.quant_width_spread(block))
        rows = np.linspace(first, last, self.levels) if self.levels > 1 else np.array([first])
        return np.repeat(rows[:, None], self.latent_channels, axis=1).astype(np.float32)

    def decoder_width(self, which: str) -> int:
        """Width of the `which` ('iframe' | 'flow' | 'residue') decoder, honouring `symmetric`."""
        if self.symmetric:
            return self.encoder_channels
        return {
            "iframe": self.iframe_decoder_channels,
            "flow": self.flow_decoder_channels,
            "residue": self.residue_decoder_channels,
        }[which]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {', '.join(unknown)}")
        return cls(**values)


_PRESETS = {
    # §3.2 widths; gaps filled as documented above.
    "paper": ModelConfig(name="paper"),
    # Sized to train on a 2-core CPU: same topology, about 1/5 of the widths.
    "small": ModelConfig(
        name="small",
        encoder_channels=48,
        iframe_decoder_channels=32,
        flow_decoder_channels=24,
        residue_decoder_channels=32,
        latent_channels=32,
        hyper_channels=32,
        hyper_latent_channels=16,
        state_channels=16,
        predictor_channels=24,
        predictor_blocks=1,
    ),
    # Sized for quality: the 32-channel latent of `small` caps the
    # I-frame near 25.7 dB on street (the best linear 32-number code of a 16x16x3 block), so the
    # latent is 4x wider and the I-frame / residue decoders 3x / 2.5x; the encoder is as wide as
    # the size budget allows (7.4M parameters: an FP32 checkpoint under 30 MB). docs/DESIGN.md
    # records the measurements behind each width.
    "base": ModelConfig(
        name="base",
        encoder_channels=80,
        iframe_decoder_channels=96,
        flow_decoder_channels=32,
        residue_decoder_channels=80,
        latent_channels=128,
        hyper_channels=48,
        hyper_latent_channels=32,
        state_channels=32,
        predictor_channels=32,
        predictor_blocks=1,
        quant_width_first=64.0,
        quant_width_last=1.4,
        pframe_quant_width=True,
        flow_quant_width_first=4.0,
        flow_quant_width_last=1.0,
        motion_search_radius=8,
        motion_search_penalty=0.01,
    ),
}

#: Table 3's ablations as named overrides, applied with `get_config("small", ablation=...)`.
ABLATIONS = {
    "none": {},
    "no_predictor": {"use_predictor": False},
    "no_state": {"use_state": False},
    "symmetric": {"symmetric": True},
    "single_level": {"single_level": True},
}


def config_names() -> list[str]:
    return sorted(_PRESETS)


def get_config(name: str, ablation: str = "none", **overrides) -> ModelConfig:
    """Returns the named preset, with an optional Table 3 ablation and field overrides."""
    if name not in _PRESETS:
        raise ValueError(f"unknown config {name!r}; valid configs: {', '.join(config_names())}")
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; valid ablations: {', '.join(sorted(ABLATIONS))}")
    changes = dict(ABLATIONS[ablation])
    changes.update(overrides)
    if ablation != "none":
        changes.setdefault("name", f"{name}-{ablation.replace('_', '-')}")
    return dataclasses.replace(_PRESETS[name], **changes)


#: §4.1's lambda ranges (largest first: level 0 is the lowest rate); model/losses.py re-exports.
LAMBDA_RANGES = {
    "low": (10 ** -1.7, 10 ** -3.7),
    "high": (10 ** -3.0, 10 ** -5.0),
}


def parse_positive_pair(text: str, flag: str, expected: str, what: str) -> Tuple[float, float]:
    """'FIRST,LAST' -> two positive finite numbers; ValueError naming `flag`, what it `expected`
    and `what` the numbers are."""
    try:
        first, last = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}={text!r}: expected {expected}") from None
    if not (first > 0 and last > 0 and math.isfinite(first) and math.isfinite(last)):
        raise ValueError(f"{flag}={text!r}: {what} must be positive and finite")
    return first, last


def parse_lambda_range(text: str) -> Tuple[float, float]:
    """--lambda_range of both trainers: a name of LAMBDA_RANGES or FIRST,LAST; ValueError otherwise."""
    if text in LAMBDA_RANGES:
        return LAMBDA_RANGES[text]
    return parse_positive_pair(text, "--lambda_range", "low, high or FIRST,LAST", "lambdas")
