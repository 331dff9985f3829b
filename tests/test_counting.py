"""
Counting: detections above a threshold, the map's peaks and mass against rendered target maps,
the error summary, and the calibration that picks the threshold minimising the count MAE (the
smallest one on a tie).
"""

import numpy as np
import pytest

from gaussian_retina.data import GaussianMapRenderer
from gaussian_retina.inference.counting import (
    calibrate_threshold,
    count_detections,
    count_errors,
    count_map_mass,
    count_map_peaks,
    template_mean,
)

# Three products apart from each other, on a 200 x 300 photo.
BOXES = np.array([[10.0, 20.0, 60.0, 100.0], [120.0, 30.0, 170.0, 110.0], [200.0, 100.0, 280.0, 190.0]])


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


def test_map_peaks_count_each_rendered_product_once():
    target = GaussianMapRenderer(stride=2)(BOXES, (200, 300))
    assert count_map_peaks(target, 0.5) == 3
    assert count_map_peaks(target, 1.01) == 0  # each peak is 1 high
    assert count_map_peaks(np.zeros((0, 0)), 0.5) == 0


def test_map_peaks_plateaus_and_neighbourhood():
    m = np.zeros((12, 12), np.float32)
    m[5, 5] = m[6, 6] = 1.0  # one flat top touching diagonally: one product
    assert count_map_peaks(m, 0.5) == 1
    m = np.zeros((12, 12), np.float32)
    m[5, 3], m[5, 4], m[5, 5] = 0.9, 0.6, 0.8  # two maxima two pixels apart
    assert count_map_peaks(m, 0.5) == 2
    assert count_map_peaks(m, 0.5, neighbourhood=5) == 1  # one window covers both
    assert count_map_peaks(m, 0.85) == 1


def test_template_mean_is_one_boxs_mass_per_pixel():
    box = np.array([[0.0, 0.0, 90.0, 60.0]])
    rendered = GaussianMapRenderer(stride=1)(box, (60, 90))
    assert template_mean() == pytest.approx(rendered.sum() / (90 * 60), rel=0.02)
    narrow = GaussianMapRenderer(stride=1, sigma=20.0)(box, (60, 90))
    assert template_mean(sigma=20.0) == pytest.approx(narrow.sum() / (90 * 60), rel=0.02)
    assert template_mean(sigma=20.0) < 0.7 * template_mean()
    # Only sigma relative to the template's side matters: half the side and half the sigma.
    assert template_mean(template_size=60, sigma=20.0) == pytest.approx(template_mean(), rel=0.02)
    assert template_mean(template_size=60) > 1.3 * template_mean()


def test_map_mass_counts_the_products_of_a_rendered_map():
    target = GaussianMapRenderer(stride=2)(BOXES, (200, 300))
    areas = (BOXES[:, 2] - BOXES[:, 0]) * (BOXES[:, 3] - BOXES[:, 1])
    # Exact for boxes of one size, close for these three.
    assert count_map_mass(target, 2.0, areas) == pytest.approx(3.0, rel=0.1)
    same = np.array([[10.0, 20.0, 60.0, 100.0], [120.0, 20.0, 170.0, 100.0]])
    two = GaussianMapRenderer(stride=2)(same, (200, 300))
    assert count_map_mass(two, 2.0, [4000.0, 4000.0]) == pytest.approx(2.0, rel=0.03)
    # Half the stride, four times the map pixels per product; negative values weigh nothing.
    fine = GaussianMapRenderer(stride=1)(same, (200, 300))
    assert count_map_mass(fine - 0.001 * (fine == 0), 1.0, [4000.0]) == pytest.approx(2.0, rel=0.03)
    assert count_map_mass(two, 2.0, []) == 0.0


def test_count_errors():
    out = count_errors([3, 5, 2], [4, 5, 0])
    assert out["mae"] == pytest.approx(1.0)  # (1 + 0 + 2) / 3
    assert out["mean_rel_error"] == pytest.approx(0.125)  # (1/4 + 0/5) / 2: no product, no ratio
    empty = count_errors([], [])
    assert np.isnan(empty["mae"]) and np.isnan(empty["mean_rel_error"])


def test_map_peaks_at_the_border_at_the_threshold_and_on_a_one_pixel_map():
    m = np.zeros((6, 8), np.float32)
    m[0, 3] = 0.9  # on the map's edge: outside counts as lower
    m[4, 6] = 0.5  # exactly the threshold
    assert count_map_peaks(m, 0.5) == 2
    assert count_map_peaks(np.array([[0.9]]), 0.5) == 1


def test_map_mass_of_small_products_and_another_template():
    # One product of 1 pixel at stride 1 leaves template_mean in the map.
    m = np.zeros((4, 4))
    m[1, 1] = template_mean()
    assert count_map_mass(m, 1.0, [1.0]) == pytest.approx(1.0)
    box = np.array([[0.0, 0.0, 60.0, 90.0]])
    narrow = GaussianMapRenderer(stride=1, sigma=20.0)(box, (90, 60))
    assert count_map_mass(narrow, 1.0, [5400.0], sigma=20.0) == pytest.approx(1.0, rel=0.02)


def test_relative_error_counts_photos_of_one_product():
    assert count_errors([2], [1])["mean_rel_error"] == pytest.approx(1.0)
