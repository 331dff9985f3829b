"""
Overlay figures of a photo's predictions: boxes drawn with Detectron2's Visualizer and, for models
with a Gaussian branch, the predicted map beside them.
"""

import io
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from detectron2.utils.visualizer import Visualizer
from PIL import Image

__all__ = ["ShelfVisualizer", "draw_overlay", "save_png"]

RED = (1.0, 0.0, 0.0)


class ShelfVisualizer(Visualizer):
    """
    Detectron2's Visualizer with thin opaque outlines and no labels: a shelf holds hundreds of
    touching boxes, which the default half-transparent, size-scaled outlines turn into a smear.
    """

    def __init__(self, img_rgb, line_width=1.2):
        super().__init__(img_rgb, metadata=None, scale=1.0)
        self._default_font_size = 4 * line_width * 72 / self.output.dpi

    def draw_box(self, box_coord, alpha=0.5, edge_color="g", line_style="-"):
        return super().draw_box(box_coord, 0.9, edge_color, line_style)


def draw_overlay(
    image_rgb: np.ndarray, boxes, gaussian_map: Optional[np.ndarray] = None, max_side: int = 1024
) -> np.ndarray:
    """
    Args:
        image_rgb: (H, W, 3) uint8 photo.
        boxes: (N, 4) XYXY in the photo's pixels.
        gaussian_map: a map covering the whole photo (any stride), or None.
        max_side: the figure's photo is downscaled to this long side (drawing 8 MP photos at
            full size is slow and the boxes would be invisible at screen size).
    Returns:
        (h, w or 2w + gap, 3) uint8 RGB: the boxes, then the map over the photo if given.
    """
    H, W = image_rgb.shape[:2]
    f = min(1.0, max_side / max(H, W))
    small = cv2.resize(
        image_rgb, (max(1, round(W * f)), max(1, round(H * f))), interpolation=cv2.INTER_AREA
    )
    vis = ShelfVisualizer(small)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * f
    if len(boxes):
        vis.overlay_instances(boxes=boxes, assigned_colors=[RED] * len(boxes))
    panels = [vis.output.get_image()]
    if gaussian_map is not None:
        h, w = small.shape[:2]
        m = cv2.resize(np.asarray(gaussian_map, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        m = np.clip(m, 0.0, 1.0)  # 1 = a product's centre in the training targets
        colors = cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        weight = 0.7 * np.sqrt(m)[..., None]  # sqrt: the Gaussian's flanks stay visible
        panels.append((0.6 * small * (1 - weight) + colors * weight).clip(0, 255).astype(np.uint8))
    if len(panels) == 1:
        return panels[0]
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1]])


def save_png(image_rgb: np.ndarray, path, max_bytes: int = 1_000_000) -> int:
    """
    Saves RGB as PNG (creating its folder), reduced to a 256-colour palette above ``max_bytes``
    (photographs compress badly in PNG), which keeps figures small enough to commit. Returns the
    file's size in bytes.
    """
    image = Image.fromarray(image_rgb)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    if buf.tell() > max_bytes:
        buf = io.BytesIO()
        image.quantize(256, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(buf.getvalue())
    return buf.tell()
