"""
Product counts from one photo's predictions: detections above a calibrated score threshold, and,
for models with a Gaussian branch, the predicted map's peaks or its mass.
"""

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

from ..data.gaussian_target import GaussianMapRenderer

__all__ = [
    "DEFAULT_COUNT_THRESHOLD",
    "DEFAULT_PEAK_THRESHOLD",
    "calibrate_threshold",
    "count_detections",
    "count_map_mass",
    "count_map_peaks",
    "count_errors",
    "template_mean",
]

# The predict command's thresholds when no labelled calibration set is given. Chosen on fold A of
# the 24 tobacco photos (per camera C1..C4, the images at positions 0, 2, 4 of its six sorted by
# name) with the quick start's synthetic-trained model, and checked on fold B
# (results/inference.md). Thresholds calibrated on synthetic_shelves_val do not transfer: a
# synthetic-trained model scores real products lower, and the heights that fit synthetic val
# (0.23 for scores, 0.31 for map peaks) over-count fold B by a third. The map's peaks count best
# on fold A (14 % MAE / mean count against 15 % for detections), so they give a model with a
# Gaussian branch its count; detections at DEFAULT_COUNT_THRESHOLD give the others theirs.
DEFAULT_PEAK_THRESHOLD = 0.57
DEFAULT_COUNT_THRESHOLD = 0.30

# Candidate thresholds searched by calibrate_threshold: detection scores and map heights both
# live in [0, 1]; steps of 0.01 are finer than either is calibrated.
DEFAULT_CANDIDATES = np.round(np.arange(0.05, 0.96, 0.01), 2)


def count_detections(scores, threshold: float) -> int:
    """Detections whose score is >= ``threshold``."""
    return int((np.asarray(scores) >= threshold).sum())


def count_map_peaks(gaussian_map, threshold: float, neighbourhood: int = 3) -> int:
    """
    Local maxima of the map at least ``threshold`` high: one per product centre, since the
    target puts a peak of 1 at each centre.

    Args:
        gaussian_map: (h, w) predicted map.
        neighbourhood: side of the square window a peak is the maximum of. 3: neighbouring
            products' centres are a few map pixels apart at the training scale (products of 5 px
            at stride 2).
    """
    m = np.asarray(gaussian_map, dtype=np.float32)
    if m.size == 0:
        return 0
    local_max = ndimage.maximum_filter(m, size=neighbourhood, mode="constant", cval=-np.inf)
    peaks = (m == local_max) & (m >= threshold)
    # A flat-topped peak (saturated) gives several equal maxima: count connected plateaus once.
    _, n = ndimage.label(peaks, structure=np.ones((3, 3)))
    return int(n)


def template_mean(template_size: int = 120, sigma: float = 40.0) -> float:
    """Mean of the Gaussian template: the mass one box of area A leaves in a map, per A."""
    renderer = GaussianMapRenderer(stride=1, template_size=template_size, sigma=sigma)
    return float(renderer.profile.mean() ** 2)


def count_map_mass(
    gaussian_map, map_stride: float, box_areas, *, template_size: int = 120, sigma: float = 40.0
) -> float:
    """
    The map's mass over one product's mass. A box of area A (image pixels) leaves a mass of
    ``template_mean * A / map_stride**2`` in a "sum" map, so N boxes leave
    ``template_mean * N * mean(A) / map_stride**2``: the count is the map's sum over that, with
    mean(A) taken over the photo's confident detections (the map alone does not say how large
    the products are). The mean, not the median: the relation is exact for the mean (on the
    rendered target maps of the first 20 images of synthetic_shelves_val it gives 70.27 for
    70.25 products; the median of the skewed product sizes gives nearly twice that).

    Args:
        gaussian_map: (h, w) predicted map, negative values counted as 0.
        map_stride: image pixels per map pixel.
        box_areas: areas (image pixels) of the confident detections; empty gives 0.
    """
    areas = np.asarray(box_areas, dtype=np.float64)
    if areas.size == 0:
        return 0.0
    per_product = template_mean(template_size, sigma) * float(areas.mean()) / map_stride**2
    mass = float(np.clip(np.asarray(gaussian_map, dtype=np.float64), 0, None).sum())
    return mass / max(per_product, 1e-12)


def count_errors(predicted: Sequence[float], true: Sequence[float]) -> Dict[str, float]:
    """MAE and mean relative error (|pred - true| / true over images with true > 0)."""
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    err = np.abs(p - t)
    rel = err[t > 0] / t[t > 0]
    return {
        "mae": float(err.mean()) if err.size else float("nan"),
        "mean_rel_error": float(rel.mean()) if rel.size else float("nan"),
    }


def calibrate_threshold(
    values_per_image: Sequence,
    true_counts: Sequence[float],
    counter,
    candidates: Optional[Sequence[float]] = None,
):
    """
    The threshold minimising count MAE over a labelled set.

    Args:
        values_per_image: per image, what ``counter`` counts (scores, or a map).
        true_counts: per image, the number of labelled products.
        counter: ``counter(values, threshold) -> count`` (:func:`count_detections`,
            :func:`count_map_peaks`).
    Returns:
        (threshold, mae): the smallest threshold among those with the lowest MAE.
    """
    if len(values_per_image) == 0:
        raise ValueError("cannot calibrate a count threshold on an empty set")
    candidates = DEFAULT_CANDIDATES if candidates is None else candidates
    true = np.asarray(true_counts, dtype=np.float64)
    best = None
    # Ascending, so that the first of equal MAEs is the smallest threshold, whatever the order given.
    for thr in sorted(candidates):
        pred = np.array([counter(v, float(thr)) for v in values_per_image], dtype=np.float64)
        mae = float(np.abs(pred - true).mean())
        if best is None or mae < best[1] - 1e-12:
            best = (float(thr), mae)
    return best
