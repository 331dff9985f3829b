"""
Anchor matching for dense ground truth. Detectron2's ``RetinaNet.label_anchors`` builds the full
IoU matrix between an image's G ground-truth boxes and all R anchors, and ``pairwise_iou`` holds
three (G, R, 2) float32 intermediates at once: at 800x1333 (R = 201,600 on P3-P7) that is about
4.8 MB per box, 1.5 GB for 300 boxes and 4.8 GB for 1,000 (results/speed_and_memory.md; Detectron2
issues #932, #1241, #3750). Here the matrix is taken over chunks of anchors, with the same result.
"""

from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import RetinaNet
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import Tensor

__all__ = ["match_anchors", "ChunkedMatchingRetinaNet"]


@torch.no_grad()
def match_anchors(
    matcher: Matcher, gt_boxes: Boxes, anchors: Boxes, max_pairs: Optional[int] = 1 << 22
) -> Tuple[Tensor, Tensor]:
    """
    ``matcher(pairwise_iou(gt_boxes, anchors))``, bit for bit (low-quality matches and ties
    included), with at most ``max_pairs`` IoUs alive at a time.

    Args:
        matcher: Detectron2's Matcher.
        gt_boxes: G boxes; anchors: R boxes.
        max_pairs: IoUs per chunk of anchors (``None``: one chunk, Detectron2's own path).
    Returns:
        matches (R,) int64 and match_labels (R,) int8, as :meth:`Matcher.__call__`.
    """
    num_gt, num_anchors = len(gt_boxes), len(anchors)
    chunk = num_anchors if max_pairs is None else max(1, max_pairs // max(num_gt, 1))
    if num_gt == 0 or chunk >= num_anchors:
        return matcher(pairwise_iou(gt_boxes, anchors))

    starts = range(0, num_anchors, chunk)
    matched_vals, matches, chunk_max = [], [], []
    for s in starts:
        iou = pairwise_iou(gt_boxes, anchors[s : s + chunk])
        vals, idxs = iou.max(dim=0)  # every anchor sees all G boxes: same argmax as the full max
        matched_vals.append(vals)
        matches.append(idxs)
        chunk_max.append(iou.max(dim=1).values)
    matched_vals, matches = torch.cat(matched_vals), torch.cat(matches)
    # The thresholds only look at each anchor's best IoU: a 1 x R matrix of those gives the
    # labels through Detectron2's own code; the low-quality matches need every box's best anchor
    # over all chunks, so they are done below.
    thresholds_only = Matcher(matcher.thresholds[1:-1], matcher.labels, False)
    _, match_labels = thresholds_only(matched_vals[None])
    if matcher.allow_low_quality_matches:
        chunk_max = torch.stack(chunk_max)  # (num chunks, G)
        highest = chunk_max.max(dim=0).values
        # As Matcher.set_low_quality_matches_: every anchor that is some box's best (ties
        # included) becomes positive. Only chunks holding a box's best are computed again.
        for c, s in enumerate(starts):
            gts = (chunk_max[c] == highest).nonzero().squeeze(1)
            if len(gts):
                iou = pairwise_iou(gt_boxes[gts], anchors[s : s + chunk])
                best = (iou == highest[gts, None]).any(dim=0)
                match_labels[s : s + chunk][best] = 1
    return matches, match_labels


class ChunkedMatchingRetinaNet(RetinaNet):
    """
    :class:`RetinaNet` whose ``label_anchors`` uses :func:`match_anchors`: the same labels and
    matched boxes with bounded memory on images with hundreds or thousands of objects. The base of
    :class:`GaussianRetinaNet` and :class:`SoftIoURetinaNet`.
    """

    @configurable
    def __init__(self, *, max_iou_pairs: Optional[int] = 1 << 22, **kwargs):
        """
        Args:
            max_iou_pairs: ``max_pairs`` of :func:`match_anchors`; 4M pairs keep the matching's
                transient memory near 100 MB. ``None``: Detectron2's full matrix.
            kwargs: see :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        self.max_iou_pairs = max_iou_pairs

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """As :meth:`RetinaNet.label_anchors`."""
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for gt in gt_instances:
            if len(gt) == 0:
                # RetinaNet's own branch for an image without objects: all background.
                labels, boxes = super().label_anchors([anchors], [gt])
                gt_labels += labels
                matched_gt_boxes += boxes
                continue
            matched_idxs, anchor_labels = match_anchors(
                self.anchor_matcher, gt.gt_boxes, anchors, self.max_iou_pairs
            )
            labels = gt.gt_classes[matched_idxs]
            labels[anchor_labels == 0] = self.num_classes
            labels[anchor_labels == -1] = -1
            gt_labels.append(labels)
            matched_gt_boxes.append(gt.gt_boxes.tensor[matched_idxs])
        return gt_labels, matched_gt_boxes
