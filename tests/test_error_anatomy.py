"""
The error anatomy of tools/analyze_errors.py: each kind on a hand-made image, and true positives
that agree with pycocotools' own matching at IoU 0.5.
"""

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gaussian_retina.evaluation import (
    ERROR_KINDS,
    classify_detections,
    error_anatomy,
    matched_edge_offsets,
)

# Two annotated products side by side on one shelf band (y 100-200), a third further right.
GT = np.array([[0, 100, 100, 200], [100, 100, 200, 200], [300, 100, 400, 200]], np.float32)


def _kinds(boxes, scores):
    kinds, match = classify_detections(boxes, scores, GT)
    return [ERROR_KINDS[k] for k in kinds], match


def test_each_kind_on_a_hand_made_image():
    boxes = [
        [0, 100, 100, 200],  # product 0, exact
        [2, 100, 102, 200],  # product 0 again, lower score
        [50, 100, 150, 200],  # between products 0 and 1: IoU 1/3 with both, both found
        [100, 96, 200, 204],  # product 1
        [300, 150, 400, 250],  # half off product 2, nothing else on it
        [0, 0, 100, 60],  # above the annotated shelf
        [0, 300, 100, 400],  # below it
        [220, 120, 280, 180],  # in the gap between products, inside the band
    ]
    scores = [0.9, 0.8, 0.7, 0.85, 0.6, 0.5, 0.4, 0.3]
    kinds, match = _kinds(boxes, scores)
    assert kinds == [
        "true positive",
        "duplicate",
        "shifted duplicate",
        "true positive",
        "mislocated",
        "background above",
        "background below",
        "background inside",
    ]
    assert match.tolist() == [0, -1, -1, 1, -1, -1, -1, -1]


def test_score_order_decides_which_duplicate_is_the_true_positive():
    kinds, _ = _kinds([[2, 100, 102, 200], [0, 100, 100, 200]], [0.9, 0.95])
    assert kinds == ["duplicate", "true positive"]


def test_empty_inputs():
    kinds, match = classify_detections(np.zeros((0, 4)), np.zeros(0), GT)
    assert len(kinds) == 0 and len(match) == 0
    kinds, _ = classify_detections([[0, 0, 10, 10]], [0.5], np.zeros((0, 4)))
    assert [ERROR_KINDS[k] for k in kinds] == ["background inside"]


def test_edge_offsets_are_relative_to_the_product():
    # Reaches 10 % of the product's height above it, ends on its bottom.
    off = matched_edge_offsets([[0, 90, 100, 200]], GT, np.array([0]))
    np.testing.assert_allclose(off, [[0.0, -0.1, 0.0, 0.0]], atol=1e-6)


def test_anatomy_sums_and_applies_the_score_threshold():
    images = [(np.array([[0, 100, 100, 200], [0, 0, 100, 60]]), np.array([0.9, 0.2]), GT)]
    low, high = error_anatomy(images, 0.1), error_anatomy(images, 0.5)
    assert low["true positive"] == high["true positive"] == 1
    assert low["background above"] == 1 and high["background above"] == 0
    assert low["ground truth"] == 3 and low["missed"] == 2
    assert sum(low[k] for k in ERROR_KINDS) == 2


def test_true_positives_agree_with_pycocotools_at_iou_half():
    rng = np.random.default_rng(0)
    images, gts, dets = [], [], []
    for image_id in range(1, 6):
        xy = rng.uniform(0, 400, (30, 2))
        gt = np.concatenate([xy, xy + rng.uniform(20, 60, (30, 2))], 1)
        jitter = rng.normal(0, 8, (60, 4))
        det = np.concatenate([gt, gt]) + jitter
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 2)
        scores = rng.uniform(0, 1, 60)
        images.append((det, scores, gt))
        for b in gt:
            gts.append(dict(image_id=image_id, bbox=[*b[:2], *(b[2:] - b[:2])], category_id=1))
        for b, s in zip(det, scores):
            dets.append(
                dict(image_id=image_id, bbox=[*b[:2], *(b[2:] - b[:2])], score=s, category_id=1)
            )
    coco = COCO()
    for i, g in enumerate(gts):
        w, h = g["bbox"][2:]
        g.update(id=i + 1, area=float(w * h), iscrowd=0)
    coco.dataset = dict(
        images=[dict(id=i) for i in range(1, 6)], annotations=gts, categories=[dict(id=1)]
    )
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [300]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    coco_tp = sum(int((e["dtMatches"][0] > 0).sum()) for e in ev.evalImgs if e is not None)
    assert error_anatomy(images, 0.0)["true positive"] == coco_tp


def test_anatomy_over_images_counts_every_box_and_takes_the_median_offsets():
    gt_a = np.array([[0, 0, 100, 100], [200, 0, 300, 100]], np.float64)
    gt_b = np.array([[0, 0, 50, 200]], np.float64)
    # True positives with edge offsets (left, top, right, bottom) over the product's size:
    #   a0: (0.05, 0, 0, 0); a1: (0, -0.1, 0, 0); b0: (0, 0, 0.1, 0.05).
    det_a = np.array([[5, 0, 100, 100], [200, -10, 300, 100]], np.float64)
    det_b = np.array([[0, 0, 55, 210], [0, 500, 50, 600]], np.float64)
    scores_b = np.array([0.5, 0.5])  # the second is a background box below, kept at 0.5
    counts = error_anatomy([(det_a, np.array([0.9, 0.8]), gt_a), (det_b, scores_b, gt_b)], 0.5)
    assert counts["ground truth"] == 3 and counts["true positive"] == 3 and counts["missed"] == 0
    assert counts["background below"] == 1
    np.testing.assert_allclose(counts["median edge offsets"], (0.0, 0.0, 0.0, 0.0), atol=1e-6)
    # Two true positives only: the medians are their means.
    counts = error_anatomy([(det_a, np.array([0.9, 0.8]), gt_a)], 0.5)
    assert len(counts["median edge offsets"]) == 4
    np.testing.assert_allclose(counts["median edge offsets"], (0.025, -0.05, 0.0, 0.0), atol=1e-6)
    # No detection at all: offsets of zero, and every product missed.
    counts = error_anatomy([(np.zeros((0, 4)), np.zeros(0), gt_a)], 0.5)
    assert counts["median edge offsets"] == (0.0, 0.0, 0.0, 0.0)
    assert counts["missed"] == 2 and counts["ground truth"] == 2


def test_edge_offsets_per_true_positive():
    gt = np.array([[0, 0, 100, 200], [300, 0, 400, 100]])
    det = np.array([[310, 10, 390, 100], [-10, 0, 100, 220], [900, 900, 950, 950]])
    offsets = matched_edge_offsets(det, gt, np.array([1, 0, -1]))
    np.testing.assert_allclose(offsets, [[0.1, 0.1, -0.1, 0.0], [-0.1, 0.0, 0.0, 0.1]], atol=1e-6)
    assert matched_edge_offsets(det, gt, np.array([-1, -1, -1])).shape == (0, 4)


def test_iou_thresholds_are_inclusive_as_in_coco():
    boxes = [
        [0, 100, 100, 300],  # product 0 at IoU exactly 0.5: a true positive
        [0, 0, 100, 200],  # product 0 again at IoU 0.5: a duplicate
        [300, 100, 325, 200],  # product 2 at IoU exactly 0.25, nothing else on it
    ]
    kinds, match = _kinds(boxes, [0.9, 0.8, 0.7])
    assert kinds == ["true positive", "duplicate", "mislocated"] and match.tolist() == [0, -1, -1]
    kinds, _ = classify_detections(boxes, [0.9, 0.8, 0.7], GT, background_iou=0.25)
    assert ERROR_KINDS[kinds[2]] == "mislocated"
    kinds, _ = classify_detections(boxes, [0.9, 0.8, 0.7], GT, background_iou=0.26)
    assert ERROR_KINDS[kinds[2]] == "background inside"


def test_background_is_placed_by_its_centre_against_the_annotated_span():
    # Products span y 100-200; boxes in the gap between products (x 220-280) touch none.
    boxes = [
        [220, 40, 280, 160],  # centre on the top of the span: inside
        [220, 140, 280, 260],  # centre on its bottom: inside
        [220, 70, 280, 160],  # top above the span, centre inside it
        [220, 20, 280, 170],  # centre above
        [220, 150, 280, 270],  # centre below
    ]
    kinds, _ = _kinds(boxes, [0.5] * 5)
    assert kinds == ["background inside"] * 3 + ["background above", "background below"]
    # The span is the products' own vertical extent, whatever their horizontal one.
    low = np.array([[0, 300, 100, 400]], np.float32)
    kinds, _ = classify_detections([[220, 150, 280, 250]], [0.5], low)
    assert ERROR_KINDS[kinds[0]] == "background above"


def test_anatomy_of_no_images_and_offsets_of_a_sub_pixel_product():
    counts = error_anatomy([], 0.5)
    assert counts["ground truth"] == counts["missed"] == 0
    assert counts["median edge offsets"] == (0.0, 0.0, 0.0, 0.0)
    off = matched_edge_offsets([[0.1, 0.0, 0.6, 0.5]], [[0.0, 0.0, 0.5, 0.5]], np.array([0]))
    np.testing.assert_allclose(off, [[0.2, 0.0, 0.2, 0.0]], atol=1e-6)
