import numpy as np
import torch
from detectron2.structures import Instances

__all__ = ["mosaic"]


def mosaic(parts, min_visible_fraction: float = 0.5, pad_value: int = 128):
    """
    Tiles four mapped training images into one of the first one's size, at their own scale (no
    resize, unlike YOLO's mosaic, whose half-size copies would make small products smaller still).
    A random centre in the middle half of the canvas splits it into four quadrants; each
    quadrant shows a random window of one image, cut to the quadrant.

    Args:
        parts (list[dict]): four outputs of a training mapper, each with "image" (a (3, H, W)
            uint8 tensor) and "instances" (Instances with gt_boxes and gt_classes).
        min_visible_fraction: a box cut by its window is kept when this fraction of its area
            remains, the rule by which the synthetic scenes annotate products cut by the border.
        pad_value: fills a quadrant where its image is smaller than the quadrant.

    Returns:
        dict: the first part's record (file name, image id) with the tiled "image" and the kept
        "instances". Draws its randomness from NumPy's global generator, as Detectron2's
        augmentations do, so a seeded worker repeats it.
    """
    if len(parts) != 4:
        raise ValueError(f"mosaic needs four mapped images, got {len(parts)}")
    first = parts[0]
    height, width = first["image"].shape[-2:]
    cx = int(round(np.random.uniform(0.25, 0.75) * width))
    cy = int(round(np.random.uniform(0.25, 0.75) * height))
    quadrants = [(0, 0, cx, cy), (cx, 0, width, cy), (0, cy, cx, height), (cx, cy, width, height)]

    canvas = torch.full_like(first["image"], pad_value)
    kept = []
    for part, (x0, y0, x1, y1) in zip(parts, quadrants):
        image = part["image"]
        h, w = image.shape[-2:]
        crop_w, crop_h = min(x1 - x0, w), min(y1 - y0, h)
        ox = np.random.randint(0, w - crop_w + 1)
        oy = np.random.randint(0, h - crop_h + 1)
        canvas[:, y0 : y0 + crop_h, x0 : x0 + crop_w] = image[:, oy : oy + crop_h, ox : ox + crop_w]

        instances = part["instances"]
        # Into canvas coordinates, then cut to the pasted window.
        cut = instances.gt_boxes.clone()
        cut.tensor[:, 0::2] = (cut.tensor[:, 0::2] + (x0 - ox)).clamp(x0, x0 + crop_w)
        cut.tensor[:, 1::2] = (cut.tensor[:, 1::2] + (y0 - oy)).clamp(y0, y0 + crop_h)
        area = cut.area()
        keep = (area > 0) & (area >= min_visible_fraction * instances.gt_boxes.area())
        kept.append(
            Instances((height, width), gt_boxes=cut[keep], gt_classes=instances.gt_classes[keep])
        )

    out = {k: v for k, v in first.items() if k not in ("image", "instances")}
    out["image"] = canvas
    out["instances"] = Instances.cat(kept)
    return out
