"""
Sliced inference for photos larger than the model's training scale: the tile grid, and the merge
of the tiles' detections into one set per photo.

The detector sees each tile through its usual test resize (``INPUT.MIN/MAX_SIZE_TEST``), so a
tile of side ``t`` photo pixels presents its products at ``input_side / t`` of their size in the
photo. The grid is chosen so that a tile holds about as many products as a training image did,
which is what presents them at the training scale when products fill the frame (see
:func:`auto_tile_grid`).
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import batched_nms

__all__ = ["TileGrid", "auto_tile_grid", "fixed_tile_grid", "parse_tiling", "merge_tile_detections"]


@dataclass(frozen=True)
class TileGrid:
    """
    Windows over one photo. ``windows`` holds (x0, y0, x1, y1) in photo pixels; all tiles of a
    grid have the same size (the last row and column are shifted back inside the photo rather
    than cut short), so all present products at the same scale.
    """

    image_size: Tuple[int, int]  # (H, W)
    windows: Tuple[Tuple[int, int, int, int], ...]

    @property
    def num_tiles(self) -> int:
        return len(self.windows)

    @property
    def tile_size(self) -> Tuple[int, int]:
        """(h, w) of every tile."""
        x0, y0, x1, y1 = self.windows[0]
        return y1 - y0, x1 - x0

    def describe(self) -> str:
        h, w = self.tile_size
        rows = len({win[1] for win in self.windows})
        cols = len({win[0] for win in self.windows})
        if self.num_tiles == 1:
            return "off (one pass over the whole photo)"
        return f"{cols}x{rows} tiles of {w}x{h}"


def _starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap``."""
    if tile >= length:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    # Spread the n tiles evenly: the overlap comes out >= the one asked for.
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def fixed_tile_grid(image_size, tile_size, overlap) -> TileGrid:
    """
    Args:
        image_size: (H, W) of the photo.
        tile_size: (h, w) of a tile in photo pixels; clipped to the photo.
        overlap: (oy, ox) pixels shared by neighbouring tiles, at least; a product no larger
            than the overlap lies wholly inside some tile.
    """
    H, W = int(image_size[0]), int(image_size[1])
    th, tw = min(int(tile_size[0]), H), min(int(tile_size[1]), W)
    oy, ox = min(int(overlap[0]), th - 1), min(int(overlap[1]), tw - 1)
    windows = tuple(
        (x, y, x + tw, y + th)
        for y in _starts(H, th, max(oy, 0))
        for x in _starts(W, tw, max(ox, 0))
    )
    return TileGrid((H, W), windows)


def auto_tile_grid(
    image_size,
    *,
    input_size: Tuple[int, int],
    products_per_photo: float,
    products_per_train_image: float,
    min_gain: float = 1.5,
) -> TileGrid:
    """
    The grid that presents a photo's products at about the training scale.

    The rule uses only the photo's size and the training scale. If products roughly fill the
    frame, a product's side is about sqrt(frame area / products); a training image (at
    ``input_size``) held ``products_per_train_image``, so the model learned products of side
    sqrt(input area / products_per_train_image). A photo that holds ``products_per_photo``
    (a prior: dense shelf photos hold 100-300, SKU-110K 147 on average) must then be cut into
    about ``products_per_photo / products_per_train_image`` tiles, each resized to the input
    size. Two limits: a tile is never smaller than the input size (that would upsample the
    photo beyond its native resolution), and tiling is off when it would enlarge products by less
    than ``min_gain`` (a rescaled single pass is then close enough, at a fraction of the cost).

    Neighbouring tiles overlap by the expected product side, so a product of that size lies wholly
    inside some tile.

    Args:
        image_size: (H, W) of the photo.
        input_size: (short, long) side of the model's test input (MIN_SIZE_TEST, MAX_SIZE_TEST).
    """
    H, W = int(image_size[0]), int(image_size[1])
    short_in, long_in = input_size
    # Single pass: the photo is resized to the input size; tiles enlarge products by `gain`.
    gain = math.sqrt(max(products_per_photo, 1e-6) / max(products_per_train_image, 1e-6))
    native_gain = min(min(H, W) / short_in, max(H, W) / long_in)  # no upsampling past 1:1
    gain = min(gain, native_gain)
    if gain < min_gain:
        return TileGrid((H, W), ((0, 0, W, H),))
    # A tile has the photo's aspect ratio, `gain` times smaller, plus the overlap.
    product_side = math.sqrt(H * W / max(products_per_photo, 1.0))
    overlap = int(round(product_side))
    th = min(H, int(math.ceil(H / gain)) + overlap)
    tw = min(W, int(math.ceil(W / gain)) + overlap)
    return fixed_tile_grid((H, W), (th, tw), (overlap, overlap))


def parse_tiling(spec: str):
    """
    "off", "auto", or "WxH" (a tile size in photo pixels, e.g. "1024x768").

    Returns:
        "off", "auto", or (h, w).
    """
    spec = spec.strip().lower()
    if spec in ("off", "auto"):
        return spec
    try:
        w, h = (int(v) for v in spec.split("x"))
    except ValueError:
        raise ValueError(
            f"tiling must be 'off', 'auto' or WxH (e.g. 1024x768), got {spec!r}"
        ) from None
    if w < 32 or h < 32:
        raise ValueError(f"tiles must be at least 32x32 pixels, got {spec!r}")
    return (h, w)


def merge_tile_detections(
    boxes: Sequence[torch.Tensor],
    scores: Sequence[torch.Tensor],
    classes: Sequence[torch.Tensor],
    windows: Sequence[Tuple[int, int, int, int]],
    image_size: Tuple[int, int],
    *,
    nms_thresh: float = 0.5,
    max_detections: int = 300,
    edge_margin: float = 2.0,
    fuse_ios: float = 0.6,
    extra: Optional[Sequence[torch.Tensor]] = None,
):
    """
    One set of detections per photo from its tiles' detections.

    1. A box touching an inner edge of its tile (an edge that is not the photo's border) may be
       a product cut by that edge. It is dropped when another tile contains the box's region
       wholly: that tile saw the whole product.
    2. Cut boxes that remain (products larger than the overlap) are fused with the boxes of other
       tiles they overlap by ``fuse_ios`` of the smaller box: with a whole box they are dropped,
       with another cut box both become their union (the product's two halves), at the higher
       score.
    3. NMS over all tiles at ``nms_thresh``, per class, then the ``max_detections`` best: the cap
       applies to the photo, not to each tile.

    Args:
        boxes: per tile, (Ni, 4) XYXY in the tile's pixels.
        scores, classes: per tile, (Ni,).
        windows: per tile, (x0, y0, x1, y1) in photo pixels.
        image_size: (H, W) of the photo.
        extra: optional per-tile (Ni, ...) tensors carried along with the boxes.
    Returns:
        boxes (N, 4) in photo pixels, scores (N,), classes (N,), and extra (N, ...) or None,
        sorted by decreasing score, N <= max_detections.
    """
    H, W = image_size
    all_boxes, all_scores, all_classes, all_tile, all_cut, all_extra = [], [], [], [], [], []
    win = torch.tensor(windows, dtype=torch.float32).reshape(-1, 4)
    for t, (b, s, c) in enumerate(zip(boxes, scores, classes)):
        x0, y0, x1, y1 = windows[t]
        b = b.float() + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        # Which of this tile's edges lie inside the photo (a cut there is the tile's, not real).
        inner = torch.tensor([x0 > 0, y0 > 0, x1 < W, y1 < H])
        near = torch.stack(
            [
                b[:, 0] <= x0 + edge_margin,
                b[:, 1] <= y0 + edge_margin,
                b[:, 2] >= x1 - edge_margin,
                b[:, 3] >= y1 - edge_margin,
            ],
            dim=1,
        )
        cut = (near & inner).any(dim=1)
        all_boxes.append(b)
        all_scores.append(s.float())
        all_classes.append(c)
        all_tile.append(torch.full((len(b),), t, dtype=torch.long))
        all_cut.append(cut)
        if extra is not None:
            all_extra.append(extra[t])
    b = torch.cat(all_boxes) if all_boxes else torch.zeros(0, 4)
    s = torch.cat(all_scores) if all_scores else torch.zeros(0)
    c = torch.cat(all_classes) if all_classes else torch.zeros(0, dtype=torch.long)
    tile = torch.cat(all_tile) if all_tile else torch.zeros(0, dtype=torch.long)
    cut = torch.cat(all_cut) if all_cut else torch.zeros(0, dtype=torch.bool)
    ex = torch.cat(all_extra) if all_extra else None

    keep = torch.ones(len(b), dtype=torch.bool)
    if len(windows) > 1 and cut.any():
        # 1. Seen whole elsewhere: another tile's window contains the box (a margin's slack).
        cb = b[cut]
        inside = (
            (cb[:, None, 0] >= win[None, :, 0] - edge_margin)
            & (cb[:, None, 1] >= win[None, :, 1] - edge_margin)
            & (cb[:, None, 2] <= win[None, :, 2] + edge_margin)
            & (cb[:, None, 3] <= win[None, :, 3] + edge_margin)
        )
        inside[torch.arange(len(cb)), tile[cut]] = False
        cut_idx = torch.nonzero(cut).flatten()
        keep[cut_idx[inside.any(dim=1)]] = False

        # 2. Cut boxes no tile holds whole: fuse with what other tiles saw of the same product.
        # Overlaps are measured once, on the tiles' own boxes (a union made here is not
        # matched again: a product spans at most a few tiles).
        b, s, cut = b.clone(), s.clone(), cut.clone()
        rest = cut_idx[~inside.any(dim=1)]
        if len(rest):
            ios = _ios(b[rest], b).numpy()
            other = ((tile[rest, None] != tile[None, :]) & (c[rest, None] == c[None, :])).numpy()
            ios[~other] = 0.0
            keep_np = keep.numpy()  # shares memory with keep
            for r, i in enumerate(rest.tolist()):
                if not keep_np[i]:
                    continue
                cand = np.where(keep_np, ios[r], 0.0)
                j = int(cand.argmax())
                if cand[j] < fuse_ios:
                    continue
                if not cut[j]:
                    keep_np[i] = False  # the other tile has the whole product
                else:
                    b[j, :2] = torch.minimum(b[i, :2], b[j, :2])
                    b[j, 2:] = torch.maximum(b[i, 2:], b[j, 2:])
                    s[j] = torch.maximum(s[i], s[j])
                    cut[j] = False  # the union is the whole product now
                    keep_np[i] = False

    b, s, c = b[keep], s[keep], c[keep]
    ex = ex[keep] if ex is not None else None
    b[:, 0::2] = b[:, 0::2].clamp(0, W)
    b[:, 1::2] = b[:, 1::2].clamp(0, H)
    # 3. Duplicates between overlapping tiles; one tile's own duplicates went in its own NMS.
    order = batched_nms(b, s, c, nms_thresh)[:max_detections]
    return b[order], s[order], c[order], (ex[order] if ex is not None else None)


def _ios(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Na, Nb) intersection over the smaller of the two boxes' areas."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    smaller = torch.minimum(area_a[:, None], area_b[None, :]).clamp(min=1e-6)
    return inter / smaller
