"""
Gaussian Soft-NMS (Bodla et al., "Soft-NMS: Improving Object Detection With One Line of Code",
ICCV 2017). Instead of dropping every candidate that overlaps a kept box by more than a
threshold, each kept box lowers the others' scores by exp(-IoU^2 / sigma). A near-copy of a kept
box falls far below it but stays in the ranking, so a second, tighter hypothesis can still match
the object at a high IoU threshold, while a neighbouring product, which barely overlaps, keeps
its score.
"""

import numpy as np
import torch

__all__ = ["soft_nms"]


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    sigma: float,
    score_thresh: float,
    max_detections: int,
):
    """
    Args:
        boxes: (N, 4) XYXY; scores: (N,); classes: (N,) integer labels. Boxes of different
            classes never lower each other's scores.
        sigma: the Gaussian's width; smaller is closer to hard NMS.
        score_thresh: stop once the best remaining (decayed) score is below this.
        max_detections: at most this many boxes.
    Returns:
        (keep, kept_scores): indices into ``boxes`` in the order they were kept (highest decayed
        score first) and their decayed scores, on the input's device.
    """
    if len(boxes) == 0:
        return boxes.new_zeros(0, dtype=torch.long), scores[:0]
    # As batched_nms: boxes of each class moved apart so that classes never overlap.
    shifted = boxes + (classes.to(boxes) * (boxes.max() + 1))[:, None]
    # The rounds run in NumPy on the CPU: each is a dozen operations on N numbers, for which a
    # torch call's own overhead (or a kernel launch) would cost more than the arithmetic.
    x1, y1, x2, y2 = shifted.detach().double().cpu().numpy().T
    area = (x2 - x1) * (y2 - y1)
    remaining = scores.detach().double().cpu().numpy().copy()
    keep, kept_scores = [], []
    for _ in range(min(max_detections, len(remaining))):
        best = int(remaining.argmax())
        if remaining[best] < score_thresh:
            break
        keep.append(best)
        kept_scores.append(remaining[best])
        w = np.clip(np.minimum(x2, x2[best]) - np.maximum(x1, x1[best]), 0, None)
        h = np.clip(np.minimum(y2, y2[best]) - np.maximum(y1, y1[best]), 0, None)
        inter = w * h
        # Two empty boxes at one point have no union: no overlap (0 / tiny), not 0 / 0.
        iou = inter / np.maximum(area + area[best] - inter, np.finfo(np.float64).tiny)
        remaining *= np.exp(-iou * iou / sigma)
        remaining[best] = -1.0  # kept: below every score left, never chosen again
    return (
        torch.as_tensor(keep, dtype=torch.long, device=boxes.device),
        torch.as_tensor(kept_scores, dtype=scores.dtype, device=scores.device),
    )
