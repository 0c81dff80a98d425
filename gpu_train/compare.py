"""Runs the PyTorch mirror on a case written by tests/test_gpu_train.py and prints the differences.

    python -m gpu_train.compare CASE.npz WEIGHTS.npz CONFIG.json

CASE holds `frames` [B, T, H, W, 3], `levels` [B, T] and Keras' ROUND-mode `reconstructions`
[B, T, H, W, 3] and `bits` [B, T]. Prints one JSON line: the largest absolute reconstruction
difference and the largest relative bit difference. Needs only torch and numpy.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from model import clikit  # --help, one error line, exit statuses (model/clikit.py)

PROG = "python -m gpu_train.compare"


def main(argv=None) -> int:
    """argv: the arguments after the program (default: sys.argv[1:]); returns the exit status."""
    return clikit.run(PROG, _main, sys.argv[1:] if argv is None else argv, failures=(OSError,), tracebacks=True)


def _main(argv) -> int:
    p = clikit.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("case", metavar="CASE.npz", help="frames, levels and Keras' reconstructions and bits")
    p.add_argument("weights", metavar="WEIGHTS.npz", help="the model's weights (gpu_train.weights to_npz)")
    p.add_argument("config", metavar="CONFIG.json", help="the model's config.json")
    args = p.parse_args(argv)
    import torch

    from gpu_train.net import ELFVC
    from gpu_train.weights import load_npz

    case_path, weights_path, config_path = args.case, args.weights, args.config
    torch.use_deterministic_algorithms(True)
    with open(config_path) as f:
        model = ELFVC(json.load(f))
    load_npz(model, weights_path)
    case = np.load(case_path)
    frames = torch.from_numpy(case["frames"]).permute(0, 1, 4, 2, 3).contiguous()
    with torch.no_grad():
        out = model.forward_gop(frames, torch.from_numpy(case["levels"]).float(), "round")
    recon = out.reconstructions.permute(0, 1, 3, 4, 2).numpy()
    bits = out.bits.numpy()
    result = {
        "recon_max_abs": float(np.abs(recon - case["reconstructions"]).max()),
        "bits_max_rel": float(np.max(np.abs(bits - case["bits"]) / np.maximum(case["bits"], 1.0))),
        "bits_torch": bits.tolist(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
