"""Bjontegaard delta rate and PSNR [Sec. 4.3, ref. 6], and App. I's convex-hull merge.

BD-rate is the mean difference of log-rate between two R-D curves over the quality interval
both cover, turned back into a ratio: exp(mean(ln R_test - ln R_anchor)) - 1 (negative: the
test codec needs less rate for the same quality). BD-PSNR is the mean quality difference over
the log-rate interval both cover.

Two interpolations are provided:

- "cubic" (the default): Bjontegaard's original VCEG-M33 (2001) method, which the paper cites
  and most learned-codec papers use (e.g. CompressAI's `compute_bd`): a least-squares cubic
  polynomial of ln(rate) in quality, integrated analytically.
- "pchip": the piecewise cubic Hermite interpolation of VCEG-AL22 / the JVET common test
  conditions spreadsheet, integrated exactly (it is piecewise cubic).

A curve of n < 4 points is fitted with a polynomial of degree n - 1 (a line for two points),
which is still exact on the hand-worked cases in tests/test_bdrate.py.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

METHODS = ("cubic", "pchip")


class BDError(ValueError):
    """R-D curves a BD metric cannot be computed on; the message is one line."""


def _curve(rates: Sequence[float], quality: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, np.float64)
    q = np.asarray(quality, np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise BDError(f"{what}: rates and qualities must be 1-D of equal length, got {r.shape} and {q.shape}")
    if r.size < 2:
        raise BDError(f"{what}: needs at least 2 R-D points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))) or np.any(r <= 0):
        raise BDError(f"{what}: rates must be positive and every value finite")
    order = np.argsort(q)
    return np.log(r[order]), q[order]


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """Integral over [lo, hi] of y interpolated as a function of x (x sorted ascending)."""
    if method == "cubic":
        degree = min(3, x.size - 1)
        poly = np.polynomial.Polynomial.fit(x, y, degree)
        anti = poly.integ()
        return float(anti(hi) - anti(lo))
    if method == "pchip":
        if np.any(np.diff(x) <= 0):
            raise BDError("pchip: quality (or rate) values along one curve must be strictly increasing")
        return float(PchipInterpolator(x, y).integrate(lo, hi))
    raise BDError(f"unknown BD method {method!r}; choose one of {', '.join(METHODS)}")


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise BDError(f"{what}: the two curves do not overlap ([{a.min():.4g}, {a.max():.4g}] vs [{b.min():.4g}, {b.max():.4g}])")
    return float(lo), float(hi)


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
    method: str = "cubic",
) -> float:
    """BD-rate of the test curve against the anchor, in percent (-50.0: half the rate)."""
    la, qa = _curve(anchor_rates, anchor_quality, "anchor")
    lt, qt = _curve(test_rates, test_quality, "test")
    lo, hi = _overlap(qa, qt, "bd_rate quality interval")
    mean_diff = (_integral(qt, lt, lo, hi, method) - _integral(qa, la, lo, hi, method)) / (hi - lo)
    return 100.0 * (math.exp(mean_diff) - 1.0)


def bd_quality(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
    method: str = "cubic",
) -> float:
    """BD-PSNR (or BD of any quality metric): mean quality gain of the test curve, same units."""
    la, qa = _curve(anchor_rates, anchor_quality, "anchor")
    lt, qt = _curve(test_rates, test_quality, "test")
    oa, ot = np.argsort(la), np.argsort(lt)
    la, qa, lt, qt = la[oa], qa[oa], lt[ot], qt[ot]
    lo, hi = _overlap(la, lt, "bd_quality rate interval")
    return (_integral(lt, qt, lo, hi, method) - _integral(la, qa, lo, hi, method)) / (hi - lo)


def upper_convex_hull(points: Sequence[tuple[float, float]]) -> list[int]:
    """App. I: indices of the points (rate, quality) that build the upper convex hull.

    Returns indices into `points`, by increasing rate. Only the rising part of the hull is
    kept: a hull point after the best quality costs more rate for less quality, which no
    operating point would choose (and it would make the curve non-monotonic for BD-rate).
    Points exactly on a hull edge (collinear) are dropped: they add nothing to the curve.
    """
    if len(points) == 0:
        return []
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise BDError(f"upper_convex_hull: expected finite (rate, quality) pairs, got shape {pts.shape}")
    # Sort by rate; among equal rates the best quality first so it wins.
    order = sorted(range(len(pts)), key=lambda i: (pts[i, 0], -pts[i, 1]))
    hull: list[int] = []
    for i in order:
        if hull and pts[hull[-1], 0] == pts[i, 0]:
            continue  # same rate, lower (or equal) quality than the one kept.
        while len(hull) >= 2:
            (x1, y1), (x2, y2), (x3, y3) = pts[hull[-2]], pts[hull[-1]], pts[i]
            # Remove the middle point unless it lies strictly above the chord (a right turn).
            if (x2 - x1) * (y3 - y1) - (y2 - y1) * (x3 - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    best = max(range(len(hull)), key=lambda k: pts[hull[k], 1])
    return hull[: best + 1]
