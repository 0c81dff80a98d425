"""`elfvc`: the command-line codec, a thin layer over runtime.stream.

    elfvc encode IN OUT.elfvc|- [--level S | --target_kbps K] [--preset fast|medium|slow] [--max_bpp_i B] [--max_bpp_p B]
                              [--min_psnr DB] [--gop N] [--frames N] [--fps R]
    elfvc decode IN.elfvc|- OUT [--reference SRC]   OUT: .y4m, .mkv/.avi/.mp4/.mov, a folder, or - (y4m to stdout)
    encode, decode: [--max_pixels N]                 picture-size limit (default 8K, runtime/limits.py)
    elfvc info IN.elfvc
    elfvc plot_rc IN OUT.png [--frames N]            Fig. 3: every rate controller on one clip
    elfvc visualize IN OUT.png [--frame T] [--level S]  Fig. 5 P-frame tensors (OUT.png) and
                                                     Fig. 4 bit allocation (OUT_bits.png)
    elfvc models                                     the shipped models, the default first
    common: --model DIR|NAME (default: the shipped default model) --backend tf|onnx|tensorrt --overwrite
            --progress

Inputs are anything runtime/video_io.py reads (y4m, mp4/mkv/avi/..., a folder of PNGs, `-`: y4m on
standard input, as `ffmpeg -i SRC -f yuv4mpegpipe -pix_fmt yuv420p - | elfvc encode - OUT` sends it), any
frame size (the codec pads to its multiple of 64 and crops on decode). Rate control
(runtime/ratecontrol.py, Fig. 3): a constant level, per-frame caps per frame type, a PSNR floor
and a target average bitrate; caps win over the floor. Every failure ends with one line
`elfvc: error: ...` on stderr and a non-zero exit (2: bad command line, 1: bad input or
stream, 130: interrupted, 143: terminated), and leaves no output file behind. Set ELFVC_DEBUG=1 to get the
traceback of an unexpected (internal) error. `elfvc --help` and `elfvc COMMAND --help` print the
flags. (The behaviour every entry point shares is model/clikit.py's.)
"""

from __future__ import annotations

# First: TensorFlow's C++ start-up chatter (CUDA plugin registration) is not for a codec's user;
# real failures still surface as Python exceptions.
from model import clikit

import contextlib
import itertools
import math
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, List, Optional, Sequence

from absl import flags

from model.level_offsets import LevelOffsets, describe_level_offsets, format_level_offsets, parse_level_offsets
from runtime import video_io
from runtime.limits import MAX_PIXELS, SINGLE_TILE_MAX_PX, TILE_PX_MAX, TILE_PX_UNIT, check_picture_size
from runtime.progress import Progress
from runtime.types import DEFAULT_SCENECUT, CodecError

PROG = "elfvc"
COMMANDS = {
    "encode": ("IN OUT", "code a video (y4m, mp4/mkv/avi/..., PNG folder; - : y4m on stdin) into an ELF-VC stream (- : stdout)"),
    "decode": ("IN OUT", "decode a stream (- : from stdin) to OUT: .y4m, lossless .mkv/.avi/.mp4/.mov, a PNG folder, or - (y4m on stdout)"),
    "info": ("IN", "print a stream's header and a per-frame table"),
    "plot_rc": ("IN OUT.png", "plot per-frame bpp and PSNR of a clip under each rate controller (Fig. 3)"),
    "visualize": ("IN OUT.png", "draw a P-frame's intermediate tensors (Fig. 5) and its bit allocation (Fig. 4)"),
    "models": ("", "list the shipped models (--model NAME) with their size, speed and rate range"),
}
_CODING = ("model", "backend", "progress")
#: The flags each command accepts (others given explicitly are an error, not silently ignored).
COMMAND_FLAGS = {
    "encode": {"level", "p_level_offset", "gop", "preset", "scenecut", "rd_frame_type", "max_bpp_i", "max_bpp_p", "min_psnr", "target_kbps", "fps", "frames", "overwrite",
               "motion_refine", "max_pixels", "tile", *_CODING},
    "decode": {"reference", "overwrite", "max_pixels", *_CODING},
    "info": set(),
    "plot_rc": {"level", "p_level_offset", "gop", "scenecut", "rd_frame_type", "max_bpp_i", "max_bpp_p", "min_psnr", "target_kbps", "fps", "frames", "overwrite",
                "motion_refine", *_CODING},
    "visualize": {"level", "frame", "model", "overwrite"},
    "models": set(),
}
#: Names a stream never has: what `decode` writes, and other video and image files (a stream named
#: .webm would be taken for one by every other tool).
_NOT_A_STREAM_NAME = video_io.OUTPUT_SUFFIXES + (
    ".png", ".apng", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
    ".m2ts", ".mts", ".flv", ".wmv", ".3gp", ".ogv", ".mxf", ".yuv", ".h264", ".264", ".h265", ".265", ".hevc", ".ivf",
    ".obu",
)
PLOT_RC_FRAMES = 16


UsageError = clikit.UsageError  # a bad command line: exit status 2


def define_flags() -> flags.FlagValues:
    """A fresh set of the CLI's flags (one per call: no process-wide flag state)."""
    fv = flags.FlagValues()
    clikit.define_level(fv, None, "Constant level in [0, L-1] (continuous; default: the middle "
                        "of the model's range, or the top when only caps are given).")
    flags.DEFINE_string("p_level_offset", None, "With a constant level (or caps): code P-frames this many levels "
                        "from the I-frames, clipped to the model's range (negative: coarser P-frames, as x264's --ipratio "
                        "does; 0: every frame at the level). A comma list is cycled over each GOP's P-frames, e.g. "
                        "-1.5,-1.5,-1.5,-0.5 codes every 4th P-frame better (hierarchical quality). Default: with a "
                        "constant level, the model card's where it gives one; else (and with caps alone) 0.", flag_values=fv)
    clikit.define_gop(fv, 16, "Frames per group of pictures (an I-frame, then P-frames; 0: one I-frame, then only "
                      "P-frames). Without this flag: the model card's GOP where it gives one (base and small: 16; "
                      "`elfvc models` lists them), else 16.")
    from runtime.presets import DEFAULT_PRESET, PRESETS

    flags.DEFINE_enum("preset", DEFAULT_PRESET, list(PRESETS), "Encoder preset, trading encoding time for bits; the "
                      "stream decodes the same way whichever is used. " + " ".join(f"{p.name}: {p.summary}." for p in PRESETS.values()),
                      flag_values=fv)
    flags.DEFINE_float("scenecut", DEFAULT_SCENECUT, "A P-frame costing more than this multiple of the last I-frame "
                       "is tried as an I-frame at its level, kept if no larger and no worse in PSNR (then coded at the I-frames' "
                       "level, which --p_level_offset may set apart); the next GOP counts from it "
                       "(0: off; default: the preset's, fast 0, else this).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_boolean("rd_frame_type", False, "Code every P-frame as an I-frame too and keep the one of lower "
                         "MSE + lambda(level) x bpp (the training loss): worth it where the model's P-frames lose to its "
                         "I-frames on some content; doubles the P-frames' encoding time (default: the preset's, on in veryslow).",
                         flag_values=fv)
    flags.DEFINE_boolean("motion_refine", False, "Choose each 16x16 block's coded motion by rate and distortion "
                         "(runtime/motion_refine.py; models with the motion search): slower encoding, a few % fewer bits "
                         "at equal quality; any decoder reads the stream (default: the preset's, on in slow and veryslow).", flag_values=fv)
    flags.DEFINE_integer("tile", None, "Cut each coded layer into square tiles of this many pixels a side (a multiple "
                         f"of {TILE_PX_UNIT} up to {TILE_PX_MAX}), each range-coded on its own, so decoders can code them "
                         "in parallel; each tile costs about 4.5 bytes per coded layer. Default: one tile for pictures "
                         f"up to {SINGLE_TILE_MAX_PX} pixels a side, else 512.", flag_values=fv)
    flags.DEFINE_float("max_bpp_i", None, "Cap on each I-frame, bits per pixel.", flag_values=fv)
    flags.DEFINE_float("max_bpp_p", None, "Cap on each P-frame, bits per pixel.", flag_values=fv)
    flags.DEFINE_float("min_psnr", None, "Quality floor: each frame's RGB PSNR in dB (caps win over it).", flag_values=fv)
    flags.DEFINE_float("target_kbps", None, "Target average bitrate over the clip, kbit/s.", flag_values=fv)
    flags.DEFINE_string("fps", None, "Frame rate of the input, e.g. 25 or 30000/1001 (default: the "
                        "input's; 25 for a PNG folder).", flag_values=fv)
    clikit.define_frames(fv, None, f"Code at most this many frames (plot_rc: default {PLOT_RC_FRAMES}).")
    flags.DEFINE_integer("frame", 2, "visualize: the P-frame to draw (>= 1; frame 0 is the I-frame).", flag_values=fv)
    clikit.define_model(fv)
    clikit.define_backend(fv)
    flags.DEFINE_string("reference", None, "decode: the source video, to report the PSNR of the decoded frames.", flag_values=fv)
    flags.DEFINE_integer("max_pixels", MAX_PIXELS, "Refuse pictures larger than this many pixels (padded to the codec's multiple of 64; "
                         "the default covers 8K, 8192x4352, about 21 GB to decode with the shipped model; "
                         "docs/HOSTILE_STREAMS.md).", lower_bound=1, flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace OUT if it exists (never the input).", flag_values=fv)
    flags.DEFINE_boolean("progress", None, "Show a progress bar (default: when stderr is a terminal).", flag_values=fv)
    return fv


def usage(fv: Optional[flags.FlagValues] = None) -> str:
    lines = [f"usage: {PROG} COMMAND ARGS [--flags]   ({PROG} COMMAND --help: one command's flags; {PROG} --version)", "", "commands:"]
    lines += [f"  {name + ' ' + args:<20} {text}" for name, (args, text) in COMMANDS.items()]
    fv = fv or define_flags()
    lines += ["", "flags:"]
    for name in sorted(fv):
        flag = fv[name]
        users = [c for c, allowed in COMMAND_FLAGS.items() if name in allowed]
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        lines.append(f"  --{name}: {flag.help}{default} [{', '.join(users)}]")
    return "\n".join(lines + ["", clikit.QUIET_TF_NOTE])


def command_usage(command: str) -> str:
    """`elfvc COMMAND --help`: the command's arguments and only the flags it takes."""
    args, text = COMMANDS[command]
    fv = define_flags()
    own = flags.FlagValues()
    for name in sorted(COMMAND_FLAGS[command]):
        own[name] = fv[name]
    return clikit.help_text(f"{PROG} {command}", text, own, args)


one_line = clikit.one_line


def _error(message: str) -> None:
    clikit.error(PROG, message)


def _note(message: str) -> None:
    clikit.note(PROG, message)


# --------------------------------------------------------------------------------------------
# Entry points.


def main(argv: Sequence[str]) -> int:
    """Runs one command line (argv[0] is the program name); returns the exit status: 0, 1 (bad
    input or stream), 2 (bad command line), 130 (interrupted), 141 (stdout closed early, as in
    `elfvc info x | head`). A bug, not bad input, is one line unless ELFVC_DEBUG=1."""
    return clikit.run(PROG, _dispatch, argv, failures=(CodecError,))


def run() -> None:
    """The `elfvc` console script."""
    sys.exit(main(sys.argv))


def _dispatch(argv: List[str]) -> int:
    args = argv[1:]
    if not args or args[0] in ("-h", "--help", "help", "--helpfull"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "--version":
        print(version_line())
        return 0
    command = args[0]
    if command not in COMMANDS:
        raise UsageError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    if clikit.wants_help(args[1:]):
        print(command_usage(command))
        return 0
    fv = define_flags()
    try:
        rest = fv([PROG] + args[1:])[1:]
    except flags.Error as err:
        raise UsageError(str(err)) from None
    from runtime.backends.base import backend_names

    if fv.backend not in backend_names():
        raise UsageError(f"unknown backend {fv.backend!r}; valid backends: {', '.join(backend_names())}")
    given = {name for name in fv if fv[name].present}
    stray = sorted(given - COMMAND_FLAGS[command])
    if stray:
        raise UsageError(f"{command} does not take --{', --'.join(stray)}")
    expected = COMMANDS[command][0].split()
    if len(rest) != len(expected):
        takes = " ".join(expected) if expected else "no arguments"
        raise UsageError(f"{command} takes {takes}, got {len(rest)} argument{'' if len(rest) == 1 else 's'}")
    # Where `-` is a pipe: encode's IN (y4m) and OUT (the stream), decode's IN (the stream) and OUT
    # (y4m), info's IN (the stream).
    pipes = {"encode": (0, 1), "decode": (0, 1), "info": (0,)}
    if any(arg == video_io.STDIO and i not in pipes.get(command, ()) for i, arg in enumerate(rest)):
        raise UsageError("'-' is standard input or output for encode's IN and OUT, decode's IN and OUT and info's IN; "
                         "name a file here")
    handlers = {"encode": encode, "decode": decode, "info": info, "plot_rc": plot_rc, "visualize": visualize,
                "models": models}
    try:
        if command in ("decode", "info") and rest[0] == video_io.STDIO:
            return _from_stdin(handlers[command], fv, rest)
        return handlers[command](fv, *rest)
    except BrokenPipeError:
        raise  # `elfvc info x | head`: clikit stops quietly
    except OSError as err:  # the machine's, not a bug: a full disk, a folder made read-only mid-job
        raise CodecError(f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)) from None


# --------------------------------------------------------------------------------------------
# Shared pieces.


def parse_fps(text: Optional[str]) -> Optional[Fraction]:
    if text is None:
        return None
    try:
        fps = Fraction(text.replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--fps {text!r} is not a frame rate (e.g. 25 or 30000/1001)") from None
    try:
        return video_io.check_rate(fps, "--fps", text)
    except CodecError as err:
        raise UsageError(str(err)) from None


def load_model(fv: flags.FlagValues, command: str):
    """The bundle --model names, or the shipped one (saying so plainly if it is untrained); for a
    command that takes --gop and was not given one, the model card's GOP."""
    import tensorflow as tf

    from model.bundle import default_bundle, load_bundle

    tf.get_logger().setLevel("ERROR")  # tf.function retracing notices on new frame sizes

    if fv.model:
        bundle = load_bundle(fv.model)  # a folder or a shipped model's name
    else:
        bundle = default_bundle()
    for note in bundle.notes:
        _note(f"note: {one_line(note)}")
    if "gop" in COMMAND_FLAGS[command] and not fv["gop"].present and bundle.gop is not None and bundle.gop != fv.gop:
        fv.gop = bundle.gop  # the model card's recommendation; an explicit --gop wins
        _note(f"note: GOP {bundle.gop}{' (every frame an I-frame)' if bundle.gop == 1 else ''}, as {bundle.source}'s "
              "model card recommends; --gop overrides")
    if fv.motion_refine and not bundle.config.motion_search_radius:
        _note("note: --motion_refine does nothing for this model (it has no block motion search)")
    if not bundle.trained and not any("UNTRAINED" in note for note in bundle.notes):
        _note(f"note: using an UNTRAINED model ({bundle.source}): its quality and bitrate mean nothing")
    return bundle


def open_backend(fv: flags.FlagValues, bundle):
    from runtime.backends import BACKENDS, get_backend

    if fv.backend not in BACKENDS:  # the only command-line mistake; a damaged export is not one.
        raise UsageError(f"unknown backend {fv.backend!r}; valid backends: {', '.join(BACKENDS)}")
    try:
        return get_backend(fv.backend, bundle)
    except ValueError as err:  # e.g. export.manifest.ManifestError: an export that fails its hashes
        raise CodecError(str(err)) from None
    except ImportError as err:
        raise CodecError(f"backend {fv.backend!r} is not available here: {err}") from None


def layout_from_flags(fv: flags.FlagValues):
    """--tile (pixels) as a SubstreamLayout; None without the flag (the encoder's default for the
    picture size, SubstreamLayout.for_frame)."""
    from runtime.entropy_coding import SubstreamLayout

    if fv.tile is None:
        return None
    if not (fv.tile % TILE_PX_UNIT == 0 and TILE_PX_UNIT <= fv.tile <= TILE_PX_MAX):
        raise UsageError(f"--tile must be a multiple of {TILE_PX_UNIT} in [{TILE_PX_UNIT}, {TILE_PX_MAX}] pixels, got {fv.tile}")
    return SubstreamLayout(tile=fv.tile // 16)


def p_level_offset_flag(fv: flags.FlagValues) -> Optional[LevelOffsets]:
    """--p_level_offset parsed (None where not given); UsageError naming a bad value."""
    if fv.p_level_offset is None:
        return None
    try:
        return parse_level_offsets(fv.p_level_offset)
    except ValueError as err:
        raise UsageError(f"--p_level_offset {err}") from None


def controller_from_flags(fv: flags.FlagValues, max_level: Optional[float], fps: Fraction, bundle=None,
                          frames: Optional[int] = None):
    """The rate controller the flags ask for. With max_level None, only checks the flags (before
    the model is loaded, so a bad command line fails at once). The model card's P-frame level
    offset (`bundle.p_level_offset`) applies where no --p_level_offset is given and the frames
    have a constant level (--level or the default one; not caps alone, which keep their meaning,
    the highest level under the cap, nor a target bitrate or a PSNR floor alone)."""
    from runtime.ratecontrol import make_controller

    checking = max_level is None
    if max_level is None:
        if fv.level is not None and not (math.isfinite(fv.level) and fv.level >= 0):  # the top: once the model is loaded
            raise UsageError(f"--level must be a number from 0 to the model's top level (7 for the shipped models), "
                             f"got {fv.level:g}")
        max_level = sys.float_info.max
    level = fv.level
    if level is None and fv.target_kbps is None and fv.max_bpp_i is None and fv.max_bpp_p is None and fv.min_psnr is None:
        level = max_level / 2
    if not math.isfinite(fv.scenecut):  # the bound took nan and inf
        raise UsageError(f"--scenecut must be a finite number >= 0 (0: off), got {fv.scenecut:g}")
    given = p_level_offset_flag(fv)
    card_p_offset = bundle.p_level_offset if bundle is not None else (0.0,)
    p_offset = given if given is not None else (card_p_offset if level is not None else (0.0,))
    if given is None and any(p_offset) and fv.gop != 1:
        _note(f"note: P-frames {describe_level_offsets(p_offset)}, as {bundle.source}'s model card recommends; "
              "--p_level_offset=0 turns it off")
    if not checking and fv.gop is not None and 1 < fv.gop <= len(p_offset):  # a pattern longer than a GOP's P-frames
        _note(f"note: the P-frame level pattern has {len(p_offset)} entries, but a GOP of {fv.gop} has {fv.gop - 1} "
              f"P-frame{'s' if fv.gop > 2 else ''}: the entries after the first {fv.gop - 1} are never used")
    try:
        return make_controller(
            max_level=max_level, level=level, max_bpp_i=fv.max_bpp_i, max_bpp_p=fv.max_bpp_p,
            min_psnr=fv.min_psnr, target_kbps=fv.target_kbps, fps=float(fps), gop=fv.gop, p_level_offset=p_offset,
            frames=frames,
        )  # fmt: skip
    except ValueError as err:
        message = str(err).replace("a P-frame level offset", "--p_level_offset", 1)
        raise UsageError(re.sub(r"^(max_bpp_[ip]|min_psnr) ", r"--\1 ", message)) from None


def limited(frames: Iterable, count: Optional[int]) -> Iterator:
    """The first `count` frames (all when None), never reading one more from the source."""
    return iter(frames) if count is None else itertools.islice(frames, count)


def make_progress(fv: flags.FlagValues, label: str, total: Optional[int]) -> Progress:
    return Progress(label, total, enabled=fv.progress)


@dataclass(frozen=True)
class FrameStat:
    """One coded frame as the CLI reports it."""

    index: int
    frame_type: str  # "I" | "P"
    level: float
    bits: int
    psnr: Optional[float]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def version_line() -> str:
    """`elfvc --version`: the package's version and the bitstream format it writes."""
    from importlib import metadata

    from runtime.bitstream import FORMAT_VERSION

    try:
        version = metadata.version("elfvc")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        version = "(not installed)"
    return f"elfvc {version}, bitstream format version {FORMAT_VERSION}"


def summary_line(verb: str, frames: int, width: int, height: int, fps: Fraction, total_bits: int,
                 psnr: Optional[float], seconds: float, where: str) -> str:  # fmt: skip
    """`encoded 8 frames (640x272, 25 fps) -> out.elfvc: 0.1234 bpp, 156.2 kbps, PSNR 31.20 dB, 2.3 fps`"""
    bpp = total_bits / (frames * width * height)
    kbps = total_bits / frames * float(fps) / 1000.0
    quality = "PSNR n/a" if psnr is None else f"PSNR {psnr:.2f} dB"
    speed = frames / seconds if seconds > 0 else float("inf")
    return (f"{verb} {plural(frames, 'frame')} ({width}x{height}, {float(fps):.4g} fps) {where}: {bpp:.4f} bpp, "
            f"{kbps:.1f} kbps, {quality}, {speed:.2f} fps")  # fmt: skip


def mean_psnr(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of per-frame PSNRs (the sequence convention of runtime/metrics.py); None if unknown."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------------------------
# Commands.


def encode(fv: flags.FlagValues, src: str, out: str) -> int:
    if out != video_io.STDIO:
        return _encode_to_file(fv, src, out)
    # The stream to standard output: coded into a temporary file (its header's frame count is
    # written last), then copied out whole; the summary goes to stderr.
    with tempfile.TemporaryDirectory(prefix="elfvc_") as tmp:
        path = os.path.join(tmp, "stream.elfvc")
        status = _encode_to_file(fv, src, path, summary=sys.stderr, shown=out)
        with open(path, "rb") as stream:
            shutil.copyfileobj(stream, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return status


def _encode_to_file(fv: flags.FlagValues, src: str, out: str, summary=None, shown: Optional[str] = None) -> int:
    """`encode` into the file `out`; its summary line to `summary` (default stdout), naming the
    output `shown` (default `out`)."""
    out_path = video_io.check_output(out, overwrite=fv.overwrite, inputs=[src])
    if out_path.is_dir():
        raise CodecError(f"{out} is a folder; an ELF-VC stream is one file")
    if out_path.suffix.lower() in _NOT_A_STREAM_NAME:
        raise UsageError(f"{out}: an ELF-VC stream is not a {out_path.suffix} file; name it e.g. {out_path.stem}.elfvc")
    with video_io.open_video(src, parse_fps(fv.fps), max_pixels=fv.max_pixels) as reader:
        src_info = reader.info
        for note in reader.notes:
            _note(f"note: {note}")
        if reader.known_problem is not None and (fv.frames is None or fv.frames > reader.known_problem[0]):
            whole, problem = reader.known_problem  # said now, not after coding the frames before it
            raise CodecError(f"{problem}; --frames {whole} codes the whole frame{'s' if whole > 1 else ''} before it")
        controller_from_flags(fv, None, src_info.fps)
        layout = layout_from_flags(fv)
        bundle = load_model(fv, "encode")
        def up_to_frames(count: Optional[int]) -> Optional[int]:
            return count if fv.frames is None else fv.frames if count is None else min(count, fv.frames)

        # The rate controller takes the exact count (y4m, PNGs; a container's duration is an
        # estimate), the progress bar the estimate too.
        controller = controller_from_flags(fv, bundle.config.max_level, src_info.fps, bundle,
                                           frames=up_to_frames(src_info.num_frames))
        total = up_to_frames(src_info.expected_frames)
        with open_backend(fv, bundle) as backend, make_progress(fv, "encode", total) as bar:
            stats, seconds = _encode(limited(reader, fv.frames), out_path, src_info.fps, fv.gop, controller,
                                     backend, bundle, bar, fv, src, layout)  # fmt: skip
    total_bits = 8 * out_path.stat().st_size
    line = summary_line("encoded", len(stats), src_info.width, src_info.height, src_info.fps, total_bits,
                        mean_psnr([s.psnr for s in stats]), seconds, f"-> {shown or out}")  # fmt: skip
    print(line, file=summary or sys.stdout)
    for note in unmet_notes(fv, stats, src_info.width * src_info.height, src_info.fps, total_bits, bundle.config.max_level):
        _note(note)
    return 0


def unmet_notes(fv, stats: Sequence["FrameStat"], pixels: int, fps: Fraction, total_bits: int, top: float) -> List[str]:
    """A note for each rate-control goal the clip did not meet (as x264 warns of a VBV underflow):
    caps that level 0 still exceeds, a PSNR floor the top level (or a cap) kept frames under, a
    target bitrate missed by more than 10% (and why, where the flags say: the model's range,
    caps below the target's budgets, a floor above them)."""
    notes = []
    for kind, cap, flag in (("I", fv.max_bpp_i, "--max_bpp_i"), ("P", fv.max_bpp_p, "--max_bpp_p")):
        typed = [s for s in stats if s.frame_type == kind]
        over = [s for s in typed if cap is not None and s.bits > cap * pixels]
        if over:
            least = min(over, key=lambda s: s.bits)
            notes.append(f"{flag} {cap:g} not met on {len(over)} of {plural(len(typed), kind + '-frame')} (the least of "
                         f"them, at level {least.level:g}: {least.bits / pixels:.4f} bpp)")
    if fv.min_psnr is not None:
        below = [s for s in stats if s.psnr is not None and s.psnr < fv.min_psnr - 0.005]
        if below:
            why = "the top level" if all(s.level >= top for s in below) else "a cap or the top level"
            notes.append(f"--min_psnr {fv.min_psnr:g} dB not met on {len(below)} of {plural(len(stats), 'frame')} ({why} "
                         f"kept them under; the best of them {max(s.psnr for s in below):.2f} dB)")
    if fv.target_kbps is not None and stats:
        kbps = total_bits / len(stats) * float(fps) / 1000.0
        if abs(kbps / fv.target_kbps - 1) > 0.1:
            why = (": every frame at level 0, the least this model spends on this clip" if kbps > fv.target_kbps
                   and all(s.level <= 0 for s in stats) else ": every frame at the top level" if kbps < fv.target_kbps
                   and all(s.level >= top for s in stats) else "")  # fmt: skip
            if not why and kbps < fv.target_kbps and (fv.max_bpp_i is not None or fv.max_bpp_p is not None):
                why = ": the caps (--max_bpp_i / --max_bpp_p) win over the target"
            elif not why and kbps > fv.target_kbps and fv.min_psnr is not None:
                why = f": the --min_psnr {fv.min_psnr:g} dB floor raised frames above their budgets"
            notes.append(f"the clip came out at {kbps:.1f} kbps against --target_kbps {fv.target_kbps:g}{why}")
    return [f"note: {n}" for n in notes]


def _from_stdin(handler, fv: flags.FlagValues, rest: List[str]) -> int:
    """Runs `decode` or `info` on a stream read whole from standard input (a reader needs its
    size: the header announces a frame count checked against the end)."""
    with tempfile.TemporaryDirectory(prefix="elfvc_") as tmp:
        path = os.path.join(tmp, "stdin.elfvc")
        with open(path, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f)
        try:
            return handler(fv, path, *rest[1:], **({"shown": "<stdin>"} if handler is info else {}))
        except CodecError as err:  # named as the user gave it
            raise CodecError(str(err).replace(path, "<stdin>")) from None


def decode(fv: flags.FlagValues, src: str, out: str) -> int:
    from runtime.metrics import psnr_rgb
    from runtime.stream import decode_video, inspect

    kind = video_io.output_kind(out)
    out_path = video_io.check_output(out, overwrite=fv.overwrite, inputs=[src] + ([fv.reference] if fv.reference else []))
    stream = inspect(src)
    width, height, fps, count = _stream_geometry(stream)
    check_picture_size(width, height, fv.max_pixels, what=src)  # before the model loads; the decoder checks again
    psnrs: List[float] = []
    with contextlib.ExitStack() as stack:
        reference = None
        if fv.reference:
            reference = iter(stack.enter_context(video_io.open_video(fv.reference)))
        bundle = load_model(fv, "decode")
        start = time.perf_counter()
        backend = stack.enter_context(open_backend(fv, bundle))
        bar = stack.enter_context(make_progress(fv, "decode", count))
        writer = stack.enter_context(video_io.open_writer(out_path, width, height, fps, kind))

        def sink(frame):
            writer.write(frame)
            if reference is not None:
                ref = next(reference, None)
                if ref is None:
                    raise CodecError(f"--reference {fv.reference} has fewer frames than the stream")
                if ref.shape != frame.shape:
                    raise CodecError(f"--reference {fv.reference} is {ref.shape[1]}x{ref.shape[0]}, the stream {width}x{height}")
                psnrs.append(float(psnr_rgb(ref[None], frame[None])[0]))
            bar.update()

        decode_video(src, sink, backend, bundle, max_pixels=fv.max_pixels)
    seconds = time.perf_counter() - start
    if kind == "png" and fps != video_io.DEFAULT_PNG_FPS:
        _note(f"note: a folder of PNGs keeps no frame rate; the stream's is {fps} fps (to encode the frames again: --fps {fps})")
    total_bits = 8 * pathlib.Path(src).stat().st_size
    print(summary_line("decoded", writer.frames, width, height, fps, total_bits, mean_psnr(psnrs), seconds, f"-> {out}"),
          file=sys.stderr if out == video_io.STDIO else sys.stdout)  # the frames own standard output
    return 0


def models(fv: flags.FlagValues) -> int:
    """Lists runtime/checkpoints/: name, config, parameters, recommended GOP, speed and rate range
    from each folder's config.json and model_card.json (no model is built)."""
    import json

    from model.bundle import CONFIG_FILE, DEFAULT_DIR, card_p_level_offset, read_card, shipped_models

    shipped = shipped_models()
    if not shipped:
        print("no trained model is shipped: encode and decode use an UNTRAINED small model")
        return 0
    for name, folder in shipped:
        config = json.loads((folder / CONFIG_FILE).read_text())
        card = read_card(folder)
        params = card.get("parameters")
        head = f"{name}{' (default)' if folder == DEFAULT_DIR else ''}: config {config.get('name', '?')}"
        if params:
            head += f", {params / 1e6:.1f}M parameters"
        if card.get("gop") is not None:
            head += f", GOP {card['gop']}"
        offsets = card_p_level_offset(card)
        if any(offsets):
            head += f", P-frames {format_level_offsets(offsets, signed=True)} levels from the I-frames" + (
                " (cycled over each GOP's P-frames)" if len(offsets) > 1 else "")
        if card.get("model_id"):
            head += f", model id {card['model_id']}"
        print(head)
        for key in ("description", "speed", "rate_range", "quality"):
            if card.get(key):
                print(f"    {key.replace('_', ' ')}: {card[key]}")
    return 0


def info(fv: flags.FlagValues, src: str, shown: Optional[str] = None) -> int:
    """`shown`: the name to print for `src` (a stream read from standard input: <stdin>)."""
    from runtime.stream import inspect

    stream = inspect(src)
    for line in describe_stream(src, stream, shown):
        print(line)
    return 0


def plot_rc(fv: flags.FlagValues, src: str, out: str) -> int:
    out_path = video_io.check_output(out, overwrite=fv.overwrite, inputs=[src])
    if out_path.suffix.lower() != ".png":
        raise UsageError(f"{out}: plot_rc writes a .png")
    p_level_offset_flag(fv)
    frames, src_info = video_io.read_video(src, fv.frames or PLOT_RC_FRAMES, parse_fps(fv.fps))
    bundle = load_model(fv, "plot_rc")
    runs = _rate_control_runs(fv, frames, src_info, bundle)
    tmp = video_io.temp_name(out_path)
    try:
        _draw_rc_plot(runs, src, src_info, tmp)
        video_io.commit(tmp, out_path)
    finally:
        video_io.discard(tmp)
    width = max([28] + [len(run.name) for run in runs])  # a pattern's name is longer
    for run in runs:
        print(run.describe(width))
    print(f"wrote {out}")
    return 0


def visualize(fv: flags.FlagValues, src: str, out: str) -> int:
    """Fig. 5 (P-frame intermediates) to OUT.png and Fig. 4 (bit allocation at the lowest and
    highest level) to OUT_bits.png, for frame --frame of IN (runtime/visualize.py)."""
    from runtime.visualize import visualize_bit_allocation, visualize_pframe

    out_path = video_io.check_output(out, overwrite=fv.overwrite, inputs=[src])
    if out_path.suffix.lower() != ".png":
        raise UsageError(f"{out}: visualize writes a .png")
    bits_path = video_io.check_output(out_path.with_name(out_path.stem + "_bits.png"), overwrite=fv.overwrite, inputs=[src])
    if fv.frame < 1:
        raise UsageError(f"--frame must be >= 1 (frame 0 is the I-frame), got {fv.frame}")
    frames, _ = video_io.read_video(src, fv.frame + 1)
    if len(frames) <= fv.frame:
        raise CodecError(f"{src} has {plural(len(frames), 'frame')}; --frame {fv.frame} is past its end")
    bundle = load_model(fv, "visualize")
    top = bundle.config.max_level
    level = top / 2 if fv.level is None else fv.level
    if not 0 <= level <= top:
        raise UsageError(f"--level must lie in [0, {top:g}], got {level:g}")
    stats = visualize_pframe(bundle.model, frames, level, fv.frame, str(out_path))
    per_level = visualize_bit_allocation(bundle.model, frames, [0.0, top], fv.frame, str(bits_path))
    print(f"frame {fv.frame}, level {level:g}: {stats['bpp']:.4f} bpp (model estimate), PSNR {stats['psnr']:.2f} dB")
    print("bit allocation: " + ", ".join(f"level {s['level']:g} {s['bpp']:.4f} bpp" for s in per_level))
    print(f"wrote {out_path} and {bits_path}")
    return 0


# --------------------------------------------------------------------------------------------
# Adapters over runtime.stream: everything that knows its field names is here.


def _encode(frames, out_path, fps, gop, controller, backend, bundle, bar, fv, src=None, layout=None) -> tuple:
    """Codes `frames` into `out_path` with the preset, scene-cut and motion flags of `fv` (a flag
    left unset defers to the preset); returns ([FrameStat], seconds)."""
    from runtime.motion_refine import MotionRefinement
    from runtime.stream import encode_video

    def progress(index, encoded):
        bar.update(index + 1, note=f"{encoded.frame_type.name} level {encoded.level:.3f}")

    summary = encode_video(frames, out_path, fps=fps, gop=gop, controller=controller, backend=backend,
                           bundle=bundle, progress=progress, input_path=src, layout=layout,
                           scenecut=fv.scenecut if fv["scenecut"].present else None,
                           motion_refinement=MotionRefinement(enabled=fv.motion_refine) if fv["motion_refine"].present else None,
                           rd_frame_type=fv.rd_frame_type if fv["rd_frame_type"].present else None,
                           preset=fv.preset)  # fmt: skip
    return _frame_stats(summary), summary.seconds


def _frame_stats(summary) -> List[FrameStat]:
    stats = []
    for index, frame in enumerate(summary.frames):
        frame_type = getattr(frame, "frame_type", None)
        stats.append(FrameStat(index, getattr(frame_type, "name", str(frame_type)), float(frame.level),
                               int(frame.bits), getattr(frame, "psnr", None)))  # fmt: skip
    return stats


def _stream_geometry(stream) -> tuple:
    return stream.width, stream.height, Fraction(stream.fps), getattr(stream, "num_frames", None)


def describe_stream(path: str, stream, shown: Optional[str] = None) -> List[str]:
    width, height, fps, count = _stream_geometry(stream)
    size = pathlib.Path(path).stat().st_size
    frames = list(stream.frames)
    lines = [
        f"file      {shown or path} ({size} bytes)",
        f"format    version {stream.version}, model {stream.model_id}",
        f"video     {width}x{height}, {fps} fps ({float(fps):.3f}), {count} frames, GOP {stream.gop}",
    ]
    tile, groups = getattr(stream, "tile", None), getattr(stream, "channel_groups", None)
    if tile is not None and groups is not None:
        tiles = f"{16 * tile}-pixel tiles" if 16 * tile < max(width, height) else f"one tile ({16 * tile} px)"
        lines.append(f"layout    {tiles}, {groups} channel group{'s' if groups != 1 else ''} per coded layer")
    if frames:
        seconds = len(frames) / float(fps)
        lines.append(f"rate      {8 * size / (len(frames) * width * height):.4f} bpp, {8 * size / seconds / 1000:.1f} kbps")
    lines.append(f"{'frame':>5} {'type':>4} {'level':>8} {'bytes':>8} {'bpp':>8} {'substreams':>10}")
    for index, frame in enumerate(frames):
        ftype = getattr(frame.frame_type, "name", frame.frame_type)
        nbytes = frame.num_bytes
        lines.append(f"{index:>5} {ftype:>4} {frame.level:>8.4f} {nbytes:>8} {8 * nbytes / (width * height):>8.4f} "
                     f"{len(frame.substreams):>10}")  # fmt: skip
    return lines


# --------------------------------------------------------------------------------------------
# plot_rc: Fig. 3.


@dataclass
class RcRun:
    name: str
    stats: List[FrameStat]
    fps: Fraction
    pixels: int
    cap_i: Optional[float] = None
    cap_p: Optional[float] = None
    floor: Optional[float] = None

    @property
    def bpp(self) -> List[float]:
        return [s.bits / self.pixels for s in self.stats]

    @property
    def psnr(self) -> List[float]:
        return [s.psnr for s in self.stats]

    def describe(self, width: int = 28) -> str:
        bpp, psnr = self.bpp, self.psnr
        kbps = sum(s.bits for s in self.stats) / len(self.stats) * float(self.fps) / 1000
        return (f"{self.name:<{width}} mean {sum(bpp) / len(bpp):.4f} bpp (max {max(bpp):.4f}), {kbps:.1f} kbps, "
                f"PSNR mean {sum(psnr) / len(psnr):.2f} dB (min {min(psnr):.2f})")  # fmt: skip


def _rate_control_runs(fv, frames, src_info, bundle) -> List[RcRun]:
    """Codes the clip under each controller. Unset thresholds come from the constant-level run:
    caps at 3/4 of its mean I and P bpp, the floor at its mean PSNR, the target at 3/4 of its
    bitrate, so every controller has something to do."""
    from runtime.ratecontrol import ConstantLevel, MaxBits, MinQuality, TargetBitrate

    top = bundle.config.max_level
    level = fv.level if fv.level is not None else top / 2
    if not 0 <= level <= top:
        raise UsageError(f"--level {level} is outside the model's range [0, {top:g}]")
    pixels = src_info.width * src_info.height
    runs: List[RcRun] = []
    with open_backend(fv, bundle) as backend, tempfile.TemporaryDirectory() as tmp:

        def code(name, controller, **marks):
            with make_progress(fv, name, len(frames)) as bar:
                stats, _ = _encode(iter(frames), pathlib.Path(tmp) / "clip.elfvc", src_info.fps, fv.gop,
                                   controller, backend, bundle, bar, fv)  # fmt: skip
            runs.append(RcRun(name, stats, src_info.fps, pixels, **marks))
            return runs[-1]

        given = p_level_offset_flag(fv)
        p_offset = given if given is not None else bundle.p_level_offset
        name = f"constant level {level:g}" + (f" (P {format_level_offsets(p_offset, signed=True)})" if any(p_offset) and fv.gop != 1 else "")
        base = code(name, ConstantLevel(level, p_offset, top))

        def mean(values):
            return sum(values) / len(values) if values else None

        i_bpp = mean([b for b, s in zip(base.bpp, base.stats) if s.frame_type == "I"])
        p_bpp = mean([b for b, s in zip(base.bpp, base.stats) if s.frame_type == "P"])
        cap_i = fv.max_bpp_i if fv.max_bpp_i is not None else (0.75 * i_bpp if i_bpp else None)
        cap_p = fv.max_bpp_p if fv.max_bpp_p is not None else (0.75 * p_bpp if p_bpp else None)
        floor = fv.min_psnr if fv.min_psnr is not None else mean(base.psnr)
        base_kbps = sum(s.bits for s in base.stats) / len(base.stats) * float(src_info.fps) / 1000
        target = fv.target_kbps if fv.target_kbps is not None else 0.75 * base_kbps
        caps_name = "max bpp (" + ", ".join(f"{t} {c:.3g}" for t, c in (("I", cap_i), ("P", cap_p)) if c) + ")"
        code(caps_name, MaxBits(cap_i, cap_p, base_level=top), cap_i=cap_i, cap_p=cap_p)
        code(f"min PSNR {floor:.2f} dB", MinQuality(floor, top), floor=floor)
        code(f"target {target:.1f} kbps", TargetBitrate(target, float(src_info.fps), fv.gop, top, frames=len(frames)))
    return runs


def _draw_rc_plot(runs: List[RcRun], src: str, src_info, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bpp, ax_psnr) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for run in runs:
        x = [s.index for s in run.stats]
        (line,) = ax_bpp.plot(x, run.bpp, marker=".", label=run.name)
        ax_psnr.plot(x, run.psnr, marker=".", color=line.get_color(), label=run.name)
        for cap, style in ((run.cap_i, ":"), (run.cap_p, "--")):
            if cap:
                ax_bpp.axhline(cap, color=line.get_color(), linestyle=style, linewidth=0.8)
        if run.floor is not None and math.isfinite(run.floor):
            ax_psnr.axhline(run.floor, color=line.get_color(), linestyle="--", linewidth=0.8)
    ax_bpp.set_ylabel("bits per pixel")
    ax_psnr.set_ylabel("PSNR (dB, RGB)")
    ax_psnr.set_xlabel("frame")
    ax_bpp.set_title(f"Rate control on {pathlib.Path(src).name} ({src_info.width}x{src_info.height}); "
                     "dotted: I cap, dashed: P cap / PSNR floor", fontsize=9)  # fmt: skip
    ax_bpp.legend(fontsize=8)
    for ax in (ax_bpp, ax_psnr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    run()
