"""BD-rate between saved R-D runs: every curve against one reference curve, clip by clip and on
average, from the results.json files that bench_rd and bench_image write. Codes nothing: seconds.

A curve is one anchor (x264, x265, svtav1, jpeg, ...) or one model of this codec, named by its
bench_rd label (`--models=LABEL=PATH`; a folder's name without one, `default` for the default
model). Unlike bench_rd, which merges several models into one `elfvc` curve (App. I's upper
convex hull), every model stays its own curve here. Curves from several files join, so a new
model's run is compared with an earlier run's model and anchors without coding them again:

    python -m benchmarks.bd_compare out/rd_old/results.json out/rd_new/results.json \\
        --reference=s46007          # new vs s46007, x264 vs s46007, ...
    python -m benchmarks.bd_compare out/rd_old/results.json out/rd_new/results.json  # vs x264

A curve that two files both hold on one clip must have the same points there (an anchor run
twice on the same clip does); otherwise name the files, LABEL=FILE, and that file's curves are
called LABEL/NAME. The mean is over the clips every curve of the row has a BD-rate on; a row
without one on some clip says so.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Iterable, Sequence

from model import clikit  # first: quiets TensorFlow's C++ log

from absl import flags

from benchmarks.bdrate import METHODS
from benchmarks.plot import LABELS
from benchmarks.schema import ELFVC, METRICS, BDEntry, RDPoint, RDReport, SchemaError, bd_entry

PROG = "bd_compare"
MAX_FILES = 32


class CompareError(ValueError):
    """Results that cannot be compared as asked; the message is one line."""


def curve_name(point: RDPoint) -> str:
    """An anchor's curve is its codec; this codec's, the model's bench_rd label (the text of the
    point's `model` before ": "), or `elfvc` where the point names no model."""
    if point.codec != ELFVC:
        return point.codec
    label, sep, _ = point.model.partition(": ")
    return label if sep and label else ELFVC


def _key(p: RDPoint) -> tuple:
    return (p.setting, p.bytes, p.frames, p.width, p.height, tuple(sorted((k, v) for k, v in p.metrics.items())))


def join_curves(reports: Iterable[tuple[str, str, RDReport]]) -> dict[str, dict[str, list[RDPoint]]]:
    """{curve: {clip: points by increasing bpp}} over (file label, file name, report) triples; a
    file label prefixes that file's curve names ("" keeps them)."""
    curves: dict[str, dict[str, list[RDPoint]]] = {}
    source: dict[tuple[str, str], str] = {}
    for label, name, report in reports:
        mine: dict[tuple[str, str], list[RDPoint]] = {}
        for p in report.points:
            curve = f"{label}/{curve_name(p)}" if label else curve_name(p)
            mine.setdefault((curve, p.clip), []).append(p)
        for (curve, clip), points in mine.items():
            points = sorted(points, key=lambda p: p.bpp)
            held = curves.setdefault(curve, {}).get(clip)
            if held is None:
                curves[curve][clip] = points
                source[curve, clip] = name
            elif sorted(map(_key, held)) != sorted(map(_key, points)):
                raise CompareError(f"curve {curve} on {clip} differs between {source[curve, clip]} and {name}; "
                                   "label the files (LABEL=FILE) to keep both")  # fmt: skip
    return curves


def compare(curves: dict[str, dict[str, list[RDPoint]]], reference: str, tests: Sequence[str],
            metrics: Sequence[str], method: str) -> list[BDEntry]:  # fmt: skip
    """BD-rate of each test curve against the reference under each metric, per clip the two share
    and "mean" (over those clips, if every one has a value)."""
    entries = []
    for test in tests:
        clips = sorted(set(curves[test]) & set(curves[reference]))
        for metric in metrics:
            values = []
            for clip in clips:
                ours = [p for p in curves[test][clip] if p.metric(metric) is not None]
                theirs = [p for p in curves[reference][clip] if p.metric(metric) is not None]
                if not ours or not theirs:
                    continue
                entries.append(bd_entry(test, reference, clip, metric, ours, theirs, method))
                values.append(entries[-1].value)
            if values and all(v is not None for v in values):
                entries.append(BDEntry(test, reference, "mean", metric, sum(values) / len(values)))
            elif values:
                entries.append(BDEntry(test, reference, "mean", metric, None, "not every clip has a BD-rate"))
    return entries


def table(entries: Sequence[BDEntry], metric: str) -> str:
    """A markdown table of one metric: a row per test curve, a column per clip, then the mean."""
    rows_of = [e for e in entries if e.metric == metric]
    clips = sorted({e.clip for e in rows_of if e.clip != "mean"})
    if not rows_of:
        return ""
    cols = clips + ["mean"]
    cells = {(e.test, e.clip): e for e in rows_of}
    lines = [f"BD-rate against {rows_of[0].anchor}, {LABELS[metric]} (negative: fewer bits)", "",
             "| curve | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]  # fmt: skip
    notes = []
    for test in dict.fromkeys(e.test for e in rows_of):
        row = []
        for clip in cols:
            e = cells.get((test, clip))
            if e is None:
                row.append("")
            elif e.value is None:
                row.append("n/a*")
                if clip != "mean":
                    notes.append(f"\\* {test}, {clip}: {e.note}")
            else:
                row.append(f"{e.value:+.1f}%")
        lines.append(f"| {test} | " + " | ".join(row) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


FLAGS = flags.FlagValues()
flags.DEFINE_string("reference", "x264", "The curve every other one is compared against: an anchor's name or a "
                    "model's label (LABEL/NAME for a labelled file).", flag_values=FLAGS)  # fmt: skip
flags.DEFINE_list("curves", [], "Only these curves (default: every curve but the reference).", flag_values=FLAGS)
flags.DEFINE_list("metrics", ["psnr_rgb", "ms_ssim"], f"Quality metrics, of {', '.join(METRICS)}.", flag_values=FLAGS)
flags.DEFINE_enum("bd_method", "cubic", list(METHODS), "BD-rate interpolation.", flag_values=FLAGS)


def main(argv: Sequence[str]) -> int:
    return clikit.run(PROG, _main, argv, failures=(SchemaError, CompareError), tracebacks=True)


def _main(argv: Sequence[str]) -> int:
    files = clikit.parse_flags(FLAGS, argv, PROG, __doc__, args="[LABEL=]RESULTS.json ...", max_args=MAX_FILES)
    if not files:
        raise clikit.UsageError("give at least one results.json (bench_rd or bench_image writes it)")
    unknown = [m for m in FLAGS.metrics if m not in METRICS]
    if unknown or not FLAGS.metrics:
        raise clikit.UsageError(f"--metrics: unknown {','.join(unknown) or '(none given)'}; choose of {', '.join(METRICS)}")
    reports = []
    for arg in files:
        label, sep, name = arg.partition("=")
        if not sep:
            label, name = "", arg
        elif not label or "/" in label:
            raise clikit.UsageError(f"{arg}: a file's label must be non-empty and without '/'")
        if not pathlib.Path(name).is_file():
            raise clikit.Failed(f"{name}: no such file")
        reports.append((label, name, RDReport.load(name)))
    curves = join_curves(reports)
    if FLAGS.reference not in curves:
        raise clikit.Failed(f"--reference {FLAGS.reference}: no such curve; the files hold {', '.join(sorted(curves))}")
    missing = [c for c in FLAGS.curves if c not in curves]
    if missing:
        raise clikit.Failed(f"--curves: no curve {', '.join(missing)}; the files hold {', '.join(sorted(curves))}")
    tests = [c for c in (FLAGS.curves or sorted(curves)) if c != FLAGS.reference]
    if not tests:
        raise clikit.Failed("nothing to compare: the files hold only the reference curve")
    entries = compare(curves, FLAGS.reference, tests, FLAGS.metrics, FLAGS.bd_method)
    if not entries:
        raise clikit.Failed(f"no clip has both {FLAGS.reference} and another curve")
    print("\n\n".join(t for t in (table(entries, m) for m in FLAGS.metrics) if t))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
