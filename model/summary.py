"""Prints the parameter counts of a config's encoder and decoder halves (compare Table 3).

    python -m model.summary --config=paper [--ablation=no_predictor]
"""

from __future__ import annotations

import json
import sys

from model import clikit  # first: quiets TensorFlow's C++ log
from absl import flags

from model.config import ABLATIONS, config_names, get_config

PROG = "summary"
# Own flag registry: importable beside other binaries (model.train) in one process.
FLAGS = flags.FlagValues()
clikit.define_config(FLAGS, "paper", f"Named config: {', '.join(config_names())}.")
flags.DEFINE_enum("ablation", "none", sorted(ABLATIONS), "Table 3 ablation to apply.", flag_values=FLAGS)
flags.DEFINE_bool("json", False, "Print JSON instead of text.", flag_values=FLAGS)


def summarize(config_name: str, ablation: str = "none") -> dict:
    from model.elfvc import ELFVC, parameter_counts

    config = get_config(config_name, ablation)
    counts = parameter_counts(ELFVC(config).build_weights())
    return {"config": config.name, **counts}


def main(argv) -> int:
    return clikit.run(PROG, _main, argv)


def _main(argv) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    try:
        counts = summarize(FLAGS.config, FLAGS.ablation)
    except ValueError as err:
        raise clikit.UsageError(err) from None
    if FLAGS.json:
        print(json.dumps(counts))
    else:
        print(
            f"{counts['config']}: encoder {counts['encoder'] / 1e6:.2f}M "
            f"(analysis-only {counts['encoder_only'] / 1e6:.2f}M + decoder half), "
            f"decoder {counts['decoder'] / 1e6:.2f}M  [paper Table 3: 38M / 11M]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
