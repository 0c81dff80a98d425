"""BD-rate / BD-PSNR on curves worked out by hand, and App. I's convex-hull merge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.bdrate import BDError, bd_quality, bd_rate, upper_convex_hull

RATES = [0.05, 0.1, 0.2, 0.4]
# A typical log-shaped curve; not a polynomial of ln(rate), so the fit is not trivially exact.
PSNR = [30.0, 33.1, 35.9, 38.3]


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_identical_curves_give_zero(method):
    assert bd_rate(RATES, PSNR, RATES, PSNR, method) == pytest.approx(0.0, abs=1e-9)
    assert bd_quality(RATES, PSNR, RATES, PSNR, method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_same_quality_at_half_the_rate_gives_minus_fifty(method):
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, PSNR, half, PSNR, method) == pytest.approx(-50.0, abs=1e-9)
    # And the anchor's view of it: twice the rate is +100 %.
    assert bd_rate(half, PSNR, RATES, PSNR, method) == pytest.approx(100.0, abs=1e-9)


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_saving_growing_linearly_with_quality(method):
    """Anchor: log10 R = (Q - 30) / 10. Test: log10 R lower by 0.01 (Q - 30), Q in [30, 40].

    The mean log10 difference over [30, 40] is -0.01 * 5 = -0.05, so BD-rate =
    10^-0.05 - 1 = -10.87 %. Both curves are linear in Q, which both methods fit exactly.
    """
    q = np.array([30.0, 32.5, 35.0, 37.5, 40.0])
    anchor = 10 ** ((q - 30) / 10)
    test = 10 ** ((q - 30) / 10 - 0.01 * (q - 30))
    assert bd_rate(anchor, q, test, q, method) == pytest.approx(100 * (10**-0.05 - 1), abs=1e-9)


def test_bd_psnr_of_a_constant_quality_shift():
    shifted = [p + 1.25 for p in PSNR]
    assert bd_quality(RATES, PSNR, RATES, shifted) == pytest.approx(1.25, abs=1e-9)


def test_only_the_overlap_counts():
    """The test curve covers only Q in [35, 40] of the anchor's [30, 40]:
    ln R_test = ln R_anchor + ln 0.8 + c (Q - 35)^3. Over the overlap the mean of c (Q - 35)^3
    is c * 5^3 / 4, so BD-rate = 0.8 exp(31.25 c) - 1; integrating over the anchor's whole range
    (extrapolating the test curve) would give 0.8 exp(0) - 1 = -20 % instead."""
    c = 0.002
    q = np.linspace(30, 40, 7)
    anchor = 10 ** ((q - 30) / 10)
    qt = np.linspace(35, 40, 4)
    test = 0.8 * 10 ** ((qt - 30) / 10) * np.exp(c * (qt - 35) ** 3)
    expected = 100 * (0.8 * math.exp(c * 125 / 4) - 1)  # -14.84 %
    assert bd_rate(anchor, q, test, qt) == pytest.approx(expected, abs=1e-9)


def test_two_point_curves_are_linear():
    """With two points per curve (the tiny end-to-end run), the fit is a line in ln(rate)."""
    value = bd_rate([1.0, 4.0], [30.0, 36.0], [0.5, 2.0], [30.0, 36.0])
    assert value == pytest.approx(-50.0, abs=1e-9)


def test_errors_are_clear():
    with pytest.raises(BDError, match="do not overlap"):
        bd_rate([0.1, 0.2], [30, 31], [0.1, 0.2], [35, 36])
    with pytest.raises(BDError, match="at least 2"):
        bd_rate([0.1], [30], [0.1, 0.2], [30, 31])
    with pytest.raises(BDError, match="positive"):
        bd_rate([0.0, 0.2], [30, 31], [0.1, 0.2], [30, 31])
    with pytest.raises(BDError, match="unknown BD method"):
        bd_rate(RATES, PSNR, RATES, PSNR, "akima")
    assert not math.isnan(bd_rate(RATES, PSNR, RATES, PSNR))


def test_upper_convex_hull_hand_case():
    """Two models' points (App. I). Worked by hand:

    model A: (0.1, 30) (0.2, 34) (0.4, 36) (0.8, 37)
    model B: (0.2, 33) (0.4, 37) (0.8, 40) (1.6, 41) (2.0, 40.5)
    (0.2, 33) is below (0.2, 34); (0.4, 36) is below (0.4, 37); (0.8, 37) below (0.8, 40);
    (0.2, 34) lies above the chord (0.1, 30)-(0.4, 37) (32.33 at 0.2), so it stays;
    (2.0, 40.5) comes after the best quality and is dropped.
    """
    a = [(0.1, 30), (0.2, 34), (0.4, 36), (0.8, 37)]
    b = [(0.2, 33), (0.4, 37), (0.8, 40), (1.6, 41), (2.0, 40.5)]
    points = a + b
    hull = upper_convex_hull(points)
    assert [points[i] for i in hull] == [(0.1, 30), (0.2, 34), (0.4, 37), (0.8, 40), (1.6, 41)]


def test_upper_convex_hull_drops_concave_and_collinear_points():
    points = [(1, 10), (2, 11), (3, 14), (4, 15), (5, 16)]
    # (2, 11) is under the chord (1,10)-(3,14); (4, 15) is on the chord (3,14)-(5,16).
    assert upper_convex_hull(points) == [0, 2, 4]
    assert upper_convex_hull([]) == []
    assert upper_convex_hull([(1.0, 2.0)]) == [0]
