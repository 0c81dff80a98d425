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

`--by_setting` prints, instead of BD-rates, each setting (level, CRF) that a test curve shares
with the reference, clip by clip: its bpp against the reference's, the change in each metric and the
number of I-frames in each (the scene-cut test shows there). Two or three levels are enough to
see a model's low levels fail along long GOPs, where a BD-rate needs a whole sweep
(`LEVELS=0,1,2,3 SETS=bikes48 scripts/ship_check.sh RUN`).

A curve that two files both hold on one clip must have the same points there (an anchor run
twice on the same clip does); otherwise name the files, LABEL=FILE, and that file's curves are
called LABEL/NAME. Clips are the reference's; the mean is over all of them, so a row without a
BD-rate on one of them (no points there, other frames or size, no overlap) has none, and says why.
A bench_image set's averaged curve (clip "kodak") gets its own column and stays out of the mean,
which is then the mean of the per-image BD-rates, as bench_image reports it.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Iterable, Sequence

from model import clikit  # first: quiets TensorFlow's C++ log

from absl import flags

from benchmarks.bdrate import METHODS
from benchmarks.plot import LABELS
from benchmarks.schema import ELFVC, METRICS, BDEntry, RDPoint, RDReport, SchemaError, bd_entry, mean_entry

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


def _shape(points: Sequence[RDPoint]) -> set:
    return {(p.frames, p.width, p.height) for p in points}


def set_curves(reports: Iterable[tuple[str, str, RDReport]]) -> set[str]:
    """The clips that are a bench_image set's averaged curve (its meta's set name): aggregates
    of the other clips, not clips of their own."""
    return {r.meta["set"]["name"] for _, _, r in reports if isinstance(r.meta.get("set"), dict) and "name" in r.meta["set"]}


def compare(curves: dict[str, dict[str, list[RDPoint]]], reference: str, tests: Sequence[str],
            metrics: Sequence[str], method: str, aggregates: Iterable[str] = ()) -> list[BDEntry]:  # fmt: skip
    """BD-rate of each test curve against the reference under each metric, on every clip of the
    reference, and "mean" over them (`aggregates`, a set's averaged curve, left out): a value
    only where every clip has one. A clip the test curve lacks, coded over other frames or at
    another size, or without the metric, gets no value and a note saying why."""
    aggregates = set(aggregates)
    entries = []
    for test in tests:
        for metric in metrics:
            values = []
            for clip in sorted(curves[reference]):
                theirs = curves[reference][clip]
                ours = curves[test].get(clip, [])
                if not ours:
                    note = "no points on this clip"
                elif _shape(ours) != _shape(theirs):
                    (f, w, h), (rf, rw, rh) = min(_shape(ours)), min(_shape(theirs))
                    note = f"other frames: {f} of {w}x{h} against {reference}'s {rf} of {rw}x{rh}"
                else:
                    ours = [p for p in ours if p.metric(metric) is not None]
                    theirs = [p for p in theirs if p.metric(metric) is not None]
                    note = "" if ours and theirs else f"no {metric} values (measured with --novmaf?)" if metric == "vmaf" \
                        else f"no {metric} values"  # fmt: skip
                entry = BDEntry(test, reference, clip, metric, None, note) if note else \
                    bd_entry(test, reference, clip, metric, ours, theirs, method)  # fmt: skip
                entries.append(entry)
                if clip not in aggregates:
                    values.append(entry.value)
            if values:
                entries.append(mean_entry(test, reference, metric, values))
    return entries


def holding_curve(paths: Iterable[os.PathLike], name: str, model_id: str = "") -> str:
    """The first of `paths` (results.json files; missing ones passed over) that holds the curve
    `name` on every clip it codes; with `model_id`, only a curve of that model (its points name
    the model's id, as bench_rd writes `id 0123abcd4567`). "" when none does: what lets a new
    measurement reuse a model's curve from any earlier run that coded it."""
    for path in paths:
        if not pathlib.Path(path).is_file():
            continue
        points = [p for p in RDReport.load(path).points if curve_name(p) == name]
        if points and all(not model_id or f"id {model_id[:12]}" in p.model for p in points):
            return str(path)
    return ""


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


def setting_rows(curves: dict[str, dict[str, list[RDPoint]]], reference: str, tests: Sequence[str],
                 metrics: Sequence[str]) -> list[dict]:  # fmt: skip
    """Each (test, clip, setting) the test curve shares with the reference on the same frames and
    size: {"test", "clip", "setting", "bpp", "ref_bpp", "bpp_change" (fraction), METRIC: the test's
    value minus the reference's (None where either lacks it), "i_frames", "ref_i_frames" (None for
    an anchor)}, by clip, then by the reference's bpp."""
    rows = []
    for test in tests:
        for clip in sorted(curves[reference]):
            theirs = {(p.setting, p.frames, p.width, p.height): p for p in curves[reference][clip]}
            for ours in curves[test].get(clip, []):
                ref = theirs.get((ours.setting, ours.frames, ours.width, ours.height))
                if ref is None:
                    continue
                row = {"test": test, "clip": clip, "setting": ours.setting, "bpp": ours.bpp, "ref_bpp": ref.bpp,
                       "bpp_change": ours.bpp / ref.bpp - 1.0 if ref.bpp > 0 else None,
                       "i_frames": ours.frame_types.count("I") if ours.frame_types else None,
                       "ref_i_frames": ref.frame_types.count("I") if ref.frame_types else None}  # fmt: skip
                for metric in metrics:
                    a, b = ours.metric(metric), ref.metric(metric)
                    row[metric] = None if a is None or b is None else a - b
                rows.append(row)
    return sorted(rows, key=lambda r: (r["test"], r["clip"], r["ref_bpp"]))


def setting_table(rows: Sequence[dict], reference: str, metrics: Sequence[str]) -> str:
    """A markdown table of setting_rows: one line per (test, clip, setting)."""
    if not rows:
        return f"no setting is shared with {reference} on the same clip, frames and size"
    head = ["curve", "clip", "setting", "bpp", f"bpp vs {reference}"] + [f"{LABELS[m]} change" for m in metrics] \
        + ["I-frames (ref)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for r in rows:
        change = "" if r["bpp_change"] is None else f"{100 * r['bpp_change']:+.1f}%"
        deltas = ["" if r[m] is None else f"{r[m]:+.4f}" if m in ("ms_ssim",) else f"{r[m]:+.2f}" for m in metrics]
        frames = "" if r["i_frames"] is None else f"{r['i_frames']} ({'' if r['ref_i_frames'] is None else r['ref_i_frames']})"
        lines.append("| " + " | ".join([r["test"], r["clip"], r["setting"], f"{r['bpp']:.4f}", change, *deltas, frames])
                     + " |")  # fmt: skip
    return "\n".join(lines)


FLAGS = flags.FlagValues()
flags.DEFINE_string("reference", "x264", "The curve every other one is compared against: an anchor's name or a "
                    "model's label (LABEL/NAME for a labelled file).", flag_values=FLAGS)  # fmt: skip
flags.DEFINE_list("curves", [], "Only these curves (default: every curve but the reference).", flag_values=FLAGS)
flags.DEFINE_list("metrics", ["psnr_rgb", "ms_ssim"], f"Quality metrics, of {', '.join(METRICS)}.", flag_values=FLAGS)
flags.DEFINE_enum("bd_method", "cubic", list(METHODS), "BD-rate interpolation.", flag_values=FLAGS)
flags.DEFINE_bool("by_setting", False, "Instead of BD-rates, each setting a curve shares with the reference: bpp, "
                  "metric changes and I-frame counts.", flag_values=FLAGS)  # fmt: skip


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
        if not sep or pathlib.Path(arg).is_file():  # a path with "=" in it is a path
            label, name = "", arg
        elif not label or "/" in label:
            raise clikit.UsageError(f"{arg}: a file's label must be non-empty and without '/'")
        if not pathlib.Path(name).is_file():
            raise clikit.Failed(f"{name}: no such file")
        reports.append((label, name, RDReport.load(name)))
    curves = join_curves(reports)
    if FLAGS.reference not in curves:
        held = f"the files hold {', '.join(sorted(curves))}" if curves else "the files hold no R-D points"
        raise clikit.Failed(f"--reference {FLAGS.reference}: no such curve; {held}")
    missing = [c for c in FLAGS.curves if c not in curves]
    if missing:
        raise clikit.Failed(f"--curves: no curve {', '.join(missing)}; the files hold {', '.join(sorted(curves))}")
    tests = [c for c in (FLAGS.curves or sorted(curves)) if c != FLAGS.reference]
    if not tests:
        raise clikit.Failed("nothing to compare: " + ("--curves names only the reference" if FLAGS.curves
                            else "the files hold only the reference curve"))  # fmt: skip
    if FLAGS.by_setting:
        print(setting_table(setting_rows(curves, FLAGS.reference, tests, FLAGS.metrics), FLAGS.reference, FLAGS.metrics))
        return 0
    entries = compare(curves, FLAGS.reference, tests, FLAGS.metrics, FLAGS.bd_method, set_curves(reports))
    print("\n\n".join(t for t in (table(entries, m) for m in FLAGS.metrics) if t))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
