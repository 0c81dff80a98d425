"""The command-line kit every entry point uses: one behaviour for every `python -m ...` and `elfvc`.

    from model import clikit   # first: quiets TensorFlow's C++ log before anything imports TF

    FLAGS = flags.FlagValues()                 # module-local absl flags (CLIs share one process in tests)
    clikit.define_model(FLAGS)                 # the common flags, defined once here
    clikit.define_frames(FLAGS, 16)

    def main(argv) -> int:                     # argv[0]: the program
        return clikit.run(PROG, _main, argv)

    def _main(argv):
        clikit.parse_flags(FLAGS, argv, PROG, __doc__)   # --help, bad flags, stray arguments
        ...                                              # raise clikit.UsageError / clikit.Failed

argparse entry points build `clikit.ArgumentParser` instead (same errors, same exit statuses).

What every command does, through `run`:
  * `-h` / `--help` (on every command and subcommand) prints the usage and the flags on stdout
    and exits 0;
  * exit status 0 (done), 1 (failed: bad input, a failing backend, ...), 2 (bad command line),
    130 (interrupted); a closed stdout (`... | head`) stops quietly with 141;
  * every failure ends with exactly one line `PROG: error: ...` on stderr; an unexpected
    exception (a bug) prints its traceback first where the command asks for it (training and
    benchmark tools), or when ELFVC_DEBUG=1 is set;
  * TensorFlow's C++ log (CUDA plugin registration, oneDNN notes) stays quiet unless asked:
    importing this module sets TF_CPP_MIN_LOG_LEVEL=3 unless the environment already sets it
    (`TF_CPP_MIN_LOG_LEVEL=0 python -m ...` shows it). It has to come before TensorFlow's import,
    so entry points import the kit first.

Standard library only (absl is imported where absl flags are used): model/__init__ imports nothing,
so the kit loads in every layer, gpu_train's TF-free environment (.venv-torch) included.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import threading
import traceback
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Type

#: Set before TensorFlow is imported (its C++ logger reads it once); the user's value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141
HELP_ARGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")
QUIET_TF_NOTE = "TensorFlow's C++ log is off; TF_CPP_MIN_LOG_LEVEL=0 shows it. ELFVC_DEBUG=1: tracebacks of internal errors."


class UsageError(Exception):
    """A bad command line: exit status 2."""


class Failed(Exception):
    """The command could not do its job (bad input, a failing backend...): exit status 1."""


class HelpShown(Exception):
    """--help was printed: exit status 0."""


def one_line(text) -> str:
    return " ".join(str(text).split()) or "unknown error"


def error(prog: str, message) -> None:
    """The one error line of a failed command."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)


def note(prog: str, message) -> None:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def wants_help(args: Iterable[str]) -> bool:
    """Whether a help flag comes before any `--` (the arguments after argv[0])."""
    for arg in args:
        if arg == "--":
            return False
        if arg in HELP_ARGS:
            return True
    return False


def run(prog: str, body: Callable[[List[str]], Optional[int]], argv: Sequence[str], *,
        failures: Tuple[Type[BaseException], ...] = (), tracebacks: bool = False) -> int:
    """Runs `body(argv)` and turns what happens into an exit status and at most one error line.

    body returns an exit status (None: 0) or raises: UsageError -> 2, Failed or one of `failures`
    (the command's own error types) -> 1, KeyboardInterrupt -> 130, SIGTERM -> 143, SystemExit -> its code; any
    other exception is a bug: 1, with its traceback when `tracebacks` or ELFVC_DEBUG=1.
    """
    # SIGTERM (kill, timeout, a job scheduler) unwinds like Ctrl-C, so that every `with` and
    # `finally` removes its partial output and stops its ffmpeg; a command that installs its own
    # handler (the trainer's checkpoint-then-stop) replaces this one while it runs.
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(prog, body, argv, failures, tracebacks)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (as Ctrl-C raises KeyboardInterrupt)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _run(prog, body, argv, failures, tracebacks) -> int:
    try:
        status = body(list(argv))
        return EXIT_OK if status is None else int(status)
    except HelpShown:
        return EXIT_OK
    except UsageError as err:
        error(prog, f"{err} (see '{prog} --help')")
        return EXIT_USAGE
    except (Failed,) + tuple(failures) as err:
        error(prog, err)
        return EXIT_FAILED
    except Terminated:
        error(prog, "terminated")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        error(prog, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`... | head`): stop quietly.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        return EXIT_BROKEN_PIPE
    except SystemExit as err:  # sys.exit() inside a command, argparse's --help
        code = err.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_FAILED)
    except Exception as err:  # a bug, not bad input
        debug = bool(os.environ.get("ELFVC_DEBUG"))
        if tracebacks or debug:
            traceback.print_exc()
        hint = "" if tracebacks or debug else " (ELFVC_DEBUG=1 shows the traceback)"
        error(prog, f"internal error: {type(err).__name__}: {err}{hint}")
        return EXIT_FAILED


def exit_with(prog: str, body: Callable[[List[str]], Optional[int]], **kwargs) -> None:
    """`if __name__ == "__main__": clikit.exit_with(PROG, main)`: run() on sys.argv, then exit."""
    sys.exit(run(prog, body, sys.argv, **kwargs))


# --------------------------------------------------------------------------------------------
# absl flags (module-local FlagValues).


def flags_help(flag_values) -> str:
    """One entry per flag: `--name: help` with its choices, default and bounds."""
    lines = []
    for name in sorted(flag_values):
        flag = flag_values[name]
        if flag.name != name:  # a short alias
            continue
        label = f"--[no]{name}" if flag.boolean else f"--{name}"
        text = one_line(flag.help) if flag.help else ""
        choices = getattr(flag.parser, "enum_values", None)  # absl puts them in the help already
        extras = []
        if flag.default is not None:
            extras.append(f"default: {flag.default_as_str}")
        syntactic = flag.parser.syntactic_help if hasattr(flag.parser, "syntactic_help") else ""
        if syntactic and not choices and syntactic not in ("a string", "a boolean value", "a comma separated list"):
            extras.append(syntactic)
        lines.append(f"  {label}: {text}" + (f" ({'; '.join(extras)})" if extras else ""))
    return "\n".join(lines)


def help_text(prog: str, doc: Optional[str], flag_values=None, args: str = "") -> str:
    """usage line, the command's description (its docstring) and its flags."""
    parts = [f"usage: {prog}{' ' + args if args else ''} [--flag=value ...]"]
    if doc and doc.strip():
        parts += ["", doc.strip("\n")]
    if flag_values is not None and len(list(flag_values)):
        parts += ["", "flags:", flags_help(flag_values)]
    parts += ["", QUIET_TF_NOTE]
    return "\n".join(parts)


def parse_flags(flag_values, argv: Sequence[str], prog: str, doc: Optional[str] = None, *,
                args: str = "", max_args: int = 0) -> List[str]:
    """Parses argv (argv[0]: the program) into `flag_values`, from the defaults every call.

    Returns the positional arguments (at most `max_args`; `args` names them in the usage line).
    `--help` prints help_text and raises HelpShown; a bad flag or a stray argument raises UsageError.
    """
    from absl import flags

    argv = list(argv) or [prog]
    if wants_help(argv[1:]):
        print(help_text(prog, doc, flag_values, args))
        raise HelpShown()
    flag_values.unparse_flags()
    try:
        rest = flag_values([prog] + argv[1:])[1:]
    except flags.Error as err:
        raise UsageError(str(err)) from None
    if len(rest) > max_args:
        raise UsageError(f"unexpected arguments {' '.join(rest[max_args:])}")
    return rest


# The common flags, defined once (the help can be narrowed per command).


def define_model(fv, help: Optional[str] = None) -> None:
    from absl import flags

    flags.DEFINE_string("model", None, help or "Model folder (config.json + weights) or a shipped model's name (default: the shipped default model).",
                        flag_values=fv)


def define_backend(fv, default: str = "tf", help: Optional[str] = None) -> None:
    from absl import flags

    flags.DEFINE_string("backend", default, help or "Inference backend: tf, onnx (ONNX Runtime on every available CPU, at most OMP_NUM_THREADS) or tensorrt.", flag_values=fv)


def define_frames(fv, default: Optional[int], help: Optional[str] = None, lower_bound: Optional[int] = 1) -> None:
    from absl import flags

    flags.DEFINE_integer("frames", default, help or "Frames of the clip to code.", lower_bound=lower_bound,
                         flag_values=fv)


def define_level(fv, default: Optional[float], help: Optional[str] = None) -> None:
    from absl import flags

    flags.DEFINE_float("level", default, help or "Constant level in [0, L-1] (continuous; 0 = the lowest rate).",
                       flag_values=fv)


def define_gop(fv, default: int = 16, help: Optional[str] = None) -> None:
    from absl import flags

    flags.DEFINE_integer("gop", default, help or "Frames per group of pictures (an I-frame, then P-frames; 0: one "
                         "I-frame, then only P-frames).", lower_bound=0, upper_bound=65535, flag_values=fv)


def define_config(fv, default: Optional[str], help: Optional[str] = None) -> None:
    from absl import flags

    flags.DEFINE_string("config", default, help or "Model config preset (model/config.py).", flag_values=fv)


def define_out_dir(fv, default: Optional[str], help: Optional[str] = None) -> None:
    from absl import flags

    flags.DEFINE_string("out_dir", default, help or "Where the results go.", flag_values=fv)


# --------------------------------------------------------------------------------------------
# argparse (gpu_train/ runs without absl).


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help where it has a default worth saying (not None,
    not a store_true's False) and the help does not already speak of its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        silent = action.default is None or action.default is False or action.default in ("", argparse.SUPPRESS)
        if silent or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the kit's errors: a bad command line raises UsageError (one line, exit 2
    through `run`) instead of printing the usage and exiting; subparsers inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epilog", QUIET_TF_NOTE)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(message)
