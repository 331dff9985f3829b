"""Count calibration: the threshold that minimises the count MAE, the smallest one on a tie."""

import numpy as np
import pytest

from gaussian_retina.inference.counting import (
    calibrate_threshold,
    count_detections,
    count_errors,
)


def test_count_detections_includes_the_threshold():
    assert count_detections([0.2, 0.3, 0.31, 0.9], 0.3) == 3
    assert count_detections([], 0.5) == 0


def test_a_plateau_of_exact_counts_gives_its_smallest_threshold():
    # Two products, one stray box at 0.2: every threshold in (0.2, 0.9] counts 2.
    scores = [np.array([0.95, 0.9, 0.2])]
    thr, mae = calibrate_threshold(scores, [2], count_detections)
    assert (thr, mae) == (0.21, 0.0)


def test_a_tie_at_a_nonzero_error_gives_the_smallest_threshold():
    # The same two scores, labelled 1 and 2 products: every threshold up to 0.9 is off by 0.5 on
    # average, every threshold above by 1.5. The smallest of the tied candidates wins.
    scores = [np.array([0.9, 0.4]), np.array([0.9, 0.4])]
    thr, mae = calibrate_threshold(scores, [1, 2], count_detections)
    assert (thr, mae) == (0.05, 0.5)
    thr, mae = calibrate_threshold(scores, [1, 2], count_detections, candidates=[0.3, 0.5, 0.95])
    assert (thr, mae) == (0.3, 0.5)
    # Given in any order.
    thr, mae = calibrate_threshold(scores, [1, 2], count_detections, candidates=[0.95, 0.5, 0.3])
    assert (thr, mae) == (0.3, 0.5)


def test_the_lowest_error_wins_over_a_smaller_threshold():
    scores = [np.array([0.8, 0.6, 0.45, 0.1]), np.array([0.7, 0.5, 0.05])]
    # Counts at 0.3: 3 and 2 (MAE 0.5); at 0.55: 2 and 1 (MAE 0); at 0.75: 1 and 0 (MAE 1).
    thr, mae = calibrate_threshold(scores, [2, 1], count_detections, candidates=[0.3, 0.55, 0.75])
    assert (thr, mae) == (0.55, 0.0)
    thr, mae = calibrate_threshold(scores, [2, 1], count_detections)
    assert thr == 0.51 and mae == 0.0  # the default grid: (0.5, 0.6] is exact


def test_calibration_needs_images():
    with pytest.raises(ValueError, match="empty"):
        calibrate_threshold([], [], count_detections)


def test_count_errors():
    errors = count_errors([12, 7, 3], [10, 8, 0])
    assert errors["mae"] == pytest.approx((2 + 1 + 3) / 3)
    assert errors["mean_rel_error"] == pytest.approx((0.2 + 0.125) / 2)  # true 0 left out
