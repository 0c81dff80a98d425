"""The one reading path for R-D results (benchmarks/schema.py): R-D plots as PNG and markdown
tables of the points and of the BD-rates. Every codec goes through the same code.

    python -m benchmarks.plot --results=out/rd/results.json --out_dir=out/rd
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Sequence

from model import clikit  # first: quiets TensorFlow's C++ log

from absl import flags

from benchmarks.schema import ELFVC, METRICS, RDReport, SchemaError, merged_curve

LABELS = {
    "psnr_rgb": "PSNR RGB (dB)",
    "psnr_yuv": "PSNR YUV 6:1:1 (dB)",
    "psnr_y": "PSNR Y (dB)",
    "ms_ssim": "MS-SSIM (RGB)",
    "vmaf": "VMAF",
}
PLOT_METRICS = ("psnr_rgb", "psnr_yuv", "ms_ssim", "vmaf")
STYLE = {"elfvc": ("C3", "o"), "x264": ("C0", "s"), "x265": ("C1", "^"), "svtav1": ("C2", "D")}


def plot_rd(report: RDReport, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """One PNG per clip (rd_<clip>.png): bpp against each metric, one curve per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for clip in report.clips():
        metrics = [m for m in PLOT_METRICS if any(p.metric(m) is not None for p in report.points if p.clip == clip)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for codec in report.codecs():
                pts = merged_curve(report, codec, clip, metric)
                if not pts:
                    continue
                color, marker = STYLE.get(codec, (None, "x"))
                every = [p for p in report.curve(codec, clip) if p.metric(metric) is not None]
                if len(every) > len(pts):  # several models: App. I's hull, and every point faintly
                    ax.scatter([p.bpp for p in every], [p.metric(metric) for p in every], color=color, alpha=0.3, s=10)
                ax.plot([p.bpp for p in pts], [p.metric(metric) for p in pts], marker=marker, color=color,
                        label=codec, linewidth=2 if codec == ELFVC else 1.2, markersize=4)  # fmt: skip
            ax.set_xlabel("bits per pixel")
            ax.set_ylabel(LABELS[metric])
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.suptitle(clip)
        fig.tight_layout()
        path = out_dir / f"rd_{clip}.png"
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        written.append(path)
    return written


def _fmt(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def points_markdown(report: RDReport) -> str:
    """Every point, one row each: codec, clip, setting, bpp, kbps and the metrics."""
    head = "| clip | codec | setting | bytes | bpp | kbps | " + " | ".join(LABELS[m] for m in METRICS) + " |"
    rows = [head, "|" + "---|" * (6 + len(METRICS))]
    for clip in report.clips():
        for codec in report.codecs():
            for p in report.curve(codec, clip):
                vals = [_fmt(p.metric(m), 4 if m == "ms_ssim" else 2) for m in METRICS]
                rows.append(f"| {clip} | {codec} | {p.setting} | {p.bytes} | {p.bpp:.4f} | {p.kbps:.1f} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def bd_markdown(report: RDReport) -> str:
    """BD-rate (%) of each test codec against each anchor: rows (test, anchor, clip), the mean
    over clips in bold, columns metrics. Negative: the test codec needs less rate for the same
    quality."""
    if not report.bd:
        return "(no BD-rates)"
    metrics = [m for m in METRICS if any(b.metric == m for b in report.bd)]
    keys = []
    for b in report.bd:
        if (b.test, b.anchor, b.clip) not in keys:
            keys.append((b.test, b.anchor, b.clip))
    tests = {t: i for i, t in enumerate(dict.fromkeys(b.test for b in report.bd))}
    anchors = {a: i for i, a in enumerate(dict.fromkeys(b.anchor for b in report.bd))}
    keys.sort(key=lambda k: (tests[k[0]], anchors[k[1]], k[2] == "mean", k[2]))
    table = {(b.test, b.anchor, b.clip, b.metric): b for b in report.bd}
    rows = ["| codec | anchor | clip | " + " | ".join(LABELS[m] for m in metrics) + " |", "|" + "---|" * (3 + len(metrics))]
    notes = []
    for test, anchor, clip in keys:
        cells, missing = [], []
        for m in metrics:
            b = table.get((test, anchor, clip, m))
            if b is None:
                cells.append("")
            elif b.value is None:
                cells.append("n/a*")
                missing.append(b)
            else:
                cells.append(f"{b.value:+.1f}%")
        if missing and clip != "mean":  # one note per row: which metrics, and the first reason
            names = ", ".join(b.metric for b in missing)
            notes.append(f"{test} vs {anchor}, {clip} ({names}): {missing[0].metric}: {missing[0].note}")
        name = f"**{clip}**" if clip == "mean" else clip
        rows.append(f"| {test} | {anchor} | {name} | " + " | ".join(cells) + " |")
    if notes:
        rows.append("")
        rows += [f"\\* {n}" for n in notes]
    return "\n".join(rows)


# Own flag registry (not absl's global one): the CLIs of this repository are imported side by
# side in one test process, and several define the same flag names.
PROG = "plot"
FLAGS = flags.FlagValues()
flags.DEFINE_string("results", None, "An R-D results JSON (benchmarks/schema.py).", flag_values=FLAGS)
flags.DEFINE_string("out_dir", None, "Folder for the PNGs (default: beside the results).", flag_values=FLAGS)


def main(argv: Sequence[str]) -> int:
    return clikit.run(PROG, _main, argv, failures=(SchemaError,), tracebacks=True)


def _main(argv: Sequence[str]) -> int:
    clikit.parse_flags(FLAGS, argv, PROG, __doc__)
    if not FLAGS.results:
        raise clikit.UsageError("--results is required")
    report = RDReport.load(FLAGS.results)
    out_dir = pathlib.Path(FLAGS.out_dir or pathlib.Path(FLAGS.results).parent)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise clikit.Failed(f"--out_dir: cannot create {out_dir} ({err.strerror})") from None
    for path in plot_rd(report, out_dir):
        print(path)
    print(bd_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
