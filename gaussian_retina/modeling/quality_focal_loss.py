"""
Quality focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020): the classification target
of a positive anchor is the IoU of its own predicted box with its object, not 1. A detection's
score then ranks how well it is placed as well as whether it is an object, which is what NMS,
box voting and AP at IoU 0.75 reward.
"""

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou

__all__ = ["quality_focal_loss", "iou_quality_targets"]


def quality_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, beta: float = 2.0
) -> torch.Tensor:
    """
    Summed QFL: binary cross-entropy against soft targets in [0, 1], weighted by
    ``|sigmoid(logit) - target| ** beta`` so well-scored anchors, as in the focal loss, weigh
    little. With 0/1 targets it is the focal loss without alpha.
    """
    logits, targets = logits.float(), targets.float()
    modulator = (logits.sigmoid() - targets).abs().pow(beta)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * modulator).sum()


@torch.no_grad()
def iou_quality_targets(
    box2box_transform, anchors, pred_anchor_deltas, gt_boxes, gt_labels, num_classes
):
    """
    (N, R, K) classification targets: for a positive anchor, the IoU of the box it predicts with
    its matched box, in its object's class; 0 everywhere else.

    Args:
        anchors: list[Boxes] per level; pred_anchor_deltas: list[(N, R_l, 4)];
        gt_boxes: (N, R, 4) matched boxes; gt_labels: (N, R), ``num_classes`` for background and
            -1 for ignored anchors (as :meth:`RetinaNet.label_anchors` gives them).
    """
    pos = (gt_labels >= 0) & (gt_labels != num_classes)
    anchors = Boxes.cat(anchors).tensor
    deltas = cat(pred_anchor_deltas, dim=1).float()
    pred = box2box_transform.apply_deltas(
        deltas[pos], anchors[None].expand(len(gt_labels), -1, -1)[pos]
    )
    iou = matched_pairwise_iou(Boxes(pred), Boxes(gt_boxes[pos].float()))
    targets = deltas.new_zeros((*gt_labels.shape, num_classes))
    targets[pos, gt_labels[pos]] = iou.clamp(min=0.0)
    return targets
