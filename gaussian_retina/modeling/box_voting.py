"""
Box voting (Gidaris & Komodakis, "Object detection via a multi-region & semantic
segmentation-aware CNN model", ICCV 2015): after NMS, each kept box becomes the score-weighted
mean of the candidates of its class that overlap it enough. On shelves, products stand edge to
edge and many anchors see each one; their regressions err independently, so their mean is
tighter than the best-scoring one alone, while NMS's choice of which boxes to keep is unchanged.
"""

import torch
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["vote_boxes"]


def vote_boxes(
    kept_boxes: torch.Tensor,
    kept_classes: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_thresh: float,
) -> torch.Tensor:
    """
    Args:
        kept_boxes, kept_classes: (K, 4) XYXY and (K,) of the boxes NMS kept.
        boxes, scores, classes: (N, 4), (N,), (N,) of the candidates NMS chose from; the kept
            boxes are among them, so each kept box votes for itself.
        iou_thresh: a candidate votes for a kept box of its class that it overlaps by at least
            this IoU.
    Returns:
        (K, 4) the voted boxes, in the order of ``kept_boxes``.
    """
    if len(kept_boxes) == 0:
        return kept_boxes
    iou = pairwise_iou(Boxes(kept_boxes), Boxes(boxes))
    votes = (iou >= iou_thresh) & (kept_classes[:, None] == classes[None, :])
    weights = votes.to(boxes.dtype) * scores[None, :].to(boxes.dtype)
    total = weights.sum(dim=1, keepdim=True)
    # A kept box with no voter (only when its IoU with itself is below the threshold, for an
    # empty box) stays as it is.
    voted = (weights @ boxes) / total.clamp(min=1e-12)
    return torch.where(total > 0, voted, kept_boxes)
