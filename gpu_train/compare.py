"""Runs the PyTorch mirror on a case written by tests/test_gpu_train.py and prints the differences.

    python -m gpu_train.compare CASE.npz WEIGHTS.npz CONFIG.json [CASE.npz WEIGHTS.npz CONFIG.json ...]

CASE holds `frames` [B, T, H, W, 3], `levels` [B, T] and Keras' ROUND-mode `reconstructions`
[B, T, H, W, 3] and `bits` [B, T]. Prints one JSON line per case, in order: the largest absolute
reconstruction difference and the largest relative bit difference. Needs only torch and numpy
(several cases in one call pay for torch's import once).
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
    p.add_argument("cases", nargs="+", metavar="CASE.npz WEIGHTS.npz CONFIG.json",
                   help="triples: frames, levels and Keras' reconstructions and bits; the model's weights "
                   "(gpu_train.weights to_npz); the model's config.json")
    args = p.parse_args(argv)
    if len(args.cases) % 3:
        p.error(f"expected CASE.npz WEIGHTS.npz CONFIG.json triples, got {len(args.cases)} paths")
    import torch

    torch.use_deterministic_algorithms(True)
    for i in range(0, len(args.cases), 3):
        print(json.dumps(_compare(*args.cases[i : i + 3])), flush=True)
    return 0


def _compare(case_path: str, weights_path: str, config_path: str) -> dict:
    """The mirror's ROUND-mode GOP on one case against Keras' numbers in it."""
    import torch

    from gpu_train.net import ELFVC
    from gpu_train.weights import load_npz

    with open(config_path) as f:
        model = ELFVC(json.load(f))
    load_npz(model, weights_path)
    case = np.load(case_path)
    frames = torch.from_numpy(case["frames"]).permute(0, 1, 4, 2, 3).contiguous()
    with torch.no_grad():
        out = model.forward_gop(frames, torch.from_numpy(case["levels"]).float(), "round")
    recon = out.reconstructions.permute(0, 1, 3, 4, 2).numpy()
    bits = out.bits.numpy()
    return {
        "recon_max_abs": float(np.abs(recon - case["reconstructions"]).max()),
        "bits_max_rel": float(np.max(np.abs(bits - case["bits"]) / np.maximum(case["bits"], 1.0))),
        "bits_torch": bits.tolist(),
    }


if __name__ == "__main__":
    sys.exit(main())
