"""python -m runtime.bundle {pin|info|compact}: the command line of the model bundle.

The bundle itself (loading a model folder, pinning its integer hyper synthesis, the compact FP16
form, the shipped models) is model/bundle.py, which export/ and runtime/ both use.
"""

from __future__ import annotations

if __name__ == "__main__":  # the CLI kit before TensorFlow loads (quiet C++ log)
    from model import clikit  # noqa: F401

import pathlib
import sys
from typing import List, Sequence

from model.bundle import INTEGER_HYPER_FILE, load_bundle, pin_integer_hyper, write_compact
from model.errors import CodecError

BUNDLE_PROG = "python -m runtime.bundle"


def main(argv: Sequence[str]) -> int:
    """python -m runtime.bundle {pin|info|compact} DIR (argv[0]: the program); returns the exit status."""
    from model import clikit

    return clikit.run(BUNDLE_PROG, _main, list(argv)[1:], failures=(CodecError,), tracebacks=True)


def _main(args: List[str]) -> int:
    from model import clikit

    parser = clikit.ArgumentParser(prog=BUNDLE_PROG, description="Pin, describe or compact a model folder.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{pin,info,compact}")
    pin = commands.add_parser("pin", help="calibrate the integer hyper synthesis and write it into MODEL_DIR")
    pin.add_argument("model_dir", metavar="MODEL_DIR")
    info = commands.add_parser("info", help="print the folder's config and model id")
    info.add_argument("model_dir", metavar="MODEL_DIR")
    compact = commands.add_parser("compact", help="write MODEL_DIR's weights as FP16 kernels into a new OUT_DIR, pinned")
    compact.add_argument("model_dir", metavar="MODEL_DIR")
    compact.add_argument("out_dir", metavar="OUT_DIR")
    args = parser.parse_args(args)
    if args.command == "compact":
        target = write_compact(args.model_dir, args.out_dir)
        size = sum(f.stat().st_size for f in target.iterdir())
        print(f"wrote {target} ({size / 2**20:.1f} MiB); model id {load_bundle(target).model_id_hex}")
    elif args.command == "pin":
        model_id = pin_integer_hyper(args.model_dir)
        print(f"wrote {pathlib.Path(args.model_dir) / INTEGER_HYPER_FILE}; model id {model_id.hex()}")
    else:
        bundle = load_bundle(args.model_dir)
        for note in bundle.notes:
            print(f"NOTE: {note}")
        print(f"{bundle.source}: config {bundle.config.name}, model id {bundle.model_id_hex}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
