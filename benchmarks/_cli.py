"""What the benchmark CLIs share: each keeps its own absl FlagValues (the repository's CLIs are
imported side by side in one test process and reuse flag names), parsed in `main(argv)`."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from absl import flags


def parse_argv(flag_values: flags.FlagValues, argv: Sequence[str]) -> Optional[int]:
    """Parses argv (argv[0]: the program) into `flag_values`, from the defaults every time.

    Returns None on success, or the exit status 2 after printing one line for bad flags or
    stray positional arguments.
    """
    flag_values.unparse_flags()
    try:
        rest = flag_values(list(argv) if argv else ["prog"])
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(rest) > 1:
        print(f"error: unexpected arguments {' '.join(rest[1:])}", file=sys.stderr)
        return 2
    return None
