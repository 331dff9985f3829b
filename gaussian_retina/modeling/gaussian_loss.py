import torch
from torch import Tensor

__all__ = ["gaussian_map_loss"]


def gaussian_map_loss(
    pred: Tensor,
    target: Tensor,
    *,
    pos_thresh: float = 0.5,
    neg_thresh: float = 0.1,
    neg_ratio: float = 3.0,
    min_negatives: int = 256,
    normalize: str,
) -> Tensor:
    """
    The paper's eq. 3: mean squared error over positive pixels and mined hard negatives.

    Every positive pixel (target >= pos_thresh) counts. Per image, the negatives
    (0 <= target <= neg_thresh) with the largest squared error are kept, ``neg_ratio`` per
    positive and at least ``min_negatives``, so that an image without objects still teaches the map
    to stay flat. Pixels between the thresholds are ignored, and so are pixels whose target is
    negative: the padding added when batching marks itself with -1.

    The paper's eq. 3 does not say over what the mean is taken; ``normalize`` picks the reading:

    * ``"batch"``: one mean over every pixel selected anywhere in the batch. Negatives then weigh
      about ``neg_ratio`` times the positives, and images with more objects weigh more.
    * ``"image"``: per image, the mean over its positives plus the mean over its mined
      negatives, then the mean over the images (CRAFT's reading, which the paper follows):
      positives and negatives weigh the same, and so does every image.

    Neither depends on the image size. The loss is computed in float32 whatever the autocast
    dtype: squared errors of a map in [0, 1] and the ranking of the negatives lose too much in
    half precision.

    Args:
        pred, target: (N, H, W) or (N, 1, H, W) maps of the same shape.
        normalize: "batch" or "image", see above.
    Returns:
        a scalar float32 tensor; 0 (with a gradient path) when nothing is selected.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if normalize not in ("batch", "image"):
        raise ValueError(f"normalize must be 'batch' or 'image', got {normalize!r}")
    pred = pred.reshape(pred.shape[0], -1).float()
    target = target.reshape(target.shape[0], -1).float()
    sq_err = (pred - target) ** 2

    pos = target >= pos_thresh
    neg = (target >= 0) & (target <= neg_thresh)
    num_pos = pos.sum(dim=1)
    num_neg = torch.minimum(
        torch.clamp(torch.ceil(num_pos * neg_ratio).long(), min=min_negatives), neg.sum(dim=1)
    )
    # Rank the negatives of each image by error, hardest first, and keep the first num_neg.
    neg_err = torch.where(neg, sq_err.detach(), torch.full_like(sq_err, -1.0))
    k = int(num_neg.max())
    selected = pos.clone()
    if k > 0:
        hardest = neg_err.topk(k, dim=1).indices
        take = torch.arange(k, device=pred.device)[None, :] < num_neg[:, None]
        selected.scatter_(1, hardest, take | selected.gather(1, hardest))
    if normalize == "image":
        mined = selected & ~pos
        num_mined = mined.sum(dim=1)
        per_image = (sq_err * pos).sum(dim=1) / num_pos.clamp(min=1) + (sq_err * mined).sum(
            dim=1
        ) / num_mined.clamp(min=1)
        has_pixels = (num_pos + num_mined) > 0
        if not has_pixels.any():
            return pred.sum() * 0.0
        return per_image[has_pixels].mean()
    count = selected.sum()
    if count == 0:
        return pred.sum() * 0.0
    return sq_err[selected].sum() / count
