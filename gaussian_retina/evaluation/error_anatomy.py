"""
Where a detector's errors come from, in the simplest form of TIDE's sorting (Bolya et al., ECCV
2020): the detections above a score are matched to the ground truth greedily by score at IoU 0.5,
as COCO's evaluation matches them, and each detection left unmatched is called

* ``duplicate``: IoU >= 0.5 with a ground-truth box that a higher score already took;
* ``shifted duplicate``: best IoU in [0.1, 0.5) with a box that is matched all the same, so a
  second, misplaced box on a found product (NMS at 0.5 lets it through);
* ``mislocated``: best IoU in [0.1, 0.5) with a box that nothing matches, so the only box on that
  product is too far off;
* ``background``: best IoU < 0.1, split by where its centre lies against the vertical span of the
  image's annotated boxes (``above``, ``below``, ``inside``), since shelf photos often leave the top
  and bottom shelves unannotated and a detector is then charged for packs it found there.
"""

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["ERROR_KINDS", "classify_detections", "error_anatomy", "matched_edge_offsets"]

ERROR_KINDS = (
    "true positive",
    "duplicate",
    "shifted duplicate",
    "mislocated",
    "background above",
    "background below",
    "background inside",
)


def _iou(boxes, gt_boxes) -> np.ndarray:
    return box_iou(
        torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
        torch.as_tensor(np.asarray(gt_boxes, np.float32).reshape(-1, 4)),
    ).numpy()


def classify_detections(
    boxes, scores, gt_boxes, iou_thresh: float = 0.5, background_iou: float = 0.1
) -> Tuple[np.ndarray, np.ndarray]:
    """
    Args:
        boxes, scores: one image's detections, (N, 4) XYXY and (N,).
        gt_boxes: its ground truth, (M, 4) XYXY.
    Returns:
        kinds: (N,) indices into :data:`ERROR_KINDS`, in the detections' order;
        match: (N,) index of the ground-truth box a true positive took, -1 for the others.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    kinds, match = np.zeros(n, np.int64), np.full(n, -1, np.int64)
    if n == 0:
        return kinds, match
    if len(gt_boxes) == 0:
        kinds[:] = ERROR_KINDS.index("background inside")
        return kinds, match
    iou = _iou(boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    for i in order:
        free = np.where(taken, -1.0, iou[i])
        j = int(free.argmax())
        if free[j] >= iou_thresh:
            taken[j], match[i] = True, j
    y_top, y_bottom = gt_boxes[:, 1].min(), gt_boxes[:, 3].max()
    for i in np.flatnonzero(match < 0):
        j = int(iou[i].argmax())
        if iou[i, j] >= iou_thresh:
            kind = "duplicate"
        elif iou[i, j] >= background_iou:
            kind = "shifted duplicate" if taken[j] else "mislocated"
        else:
            cy = (boxes[i, 1] + boxes[i, 3]) / 2
            kind = (
                "background above"
                if cy < y_top
                else "background below" if cy > y_bottom else "background inside"
            )
        kinds[i] = ERROR_KINDS.index(kind)
    return kinds, match


def matched_edge_offsets(boxes, gt_boxes, match) -> np.ndarray:
    """
    Edge offsets of the true positives, (K, 4): left, top, right, bottom, each the detection's
    edge minus the ground truth's, over the ground truth's width (left, right) or height (top,
    bottom). Negative top: the box reaches above the product.
    """
    tp = np.flatnonzero(np.asarray(match) >= 0)
    d = np.asarray(boxes, np.float32).reshape(-1, 4)[tp]
    g = np.asarray(gt_boxes, np.float32).reshape(-1, 4)[np.asarray(match)[tp]]
    size = np.stack([g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]] * 2, axis=1)
    return (d - g) / np.maximum(size, 1e-6)


def error_anatomy(
    images: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], score_thresh: float
) -> Dict[str, object]:
    """
    Sums :func:`classify_detections` over images.

    Args:
        images: per image, (detection boxes, scores, ground-truth boxes).
        score_thresh: detections below it are left out.
    Returns:
        the count of each of :data:`ERROR_KINDS`, "ground truth" (boxes in all), "missed" (ground
        truth without a true positive), and "median edge offsets" (left, top, right, bottom) of
        the true positives, from :func:`matched_edge_offsets`.
    """
    counts = dict.fromkeys(ERROR_KINDS, 0)
    counts["ground truth"] = 0
    offsets = []
    for boxes, scores, gt in images:
        keep = np.asarray(scores) >= score_thresh
        b, s = np.asarray(boxes).reshape(-1, 4)[keep], np.asarray(scores)[keep]
        kinds, match = classify_detections(b, s, gt)
        for k in kinds:
            counts[ERROR_KINDS[k]] += 1
        counts["ground truth"] += len(gt)
        offsets.append(matched_edge_offsets(b, gt, match))
    counts["missed"] = counts["ground truth"] - counts["true positive"]
    offsets = np.concatenate(offsets) if offsets else np.zeros((0, 4))
    counts["median edge offsets"] = (
        tuple(float(x) for x in np.median(offsets, axis=0)) if len(offsets) else (0.0,) * 4
    )
    return counts
