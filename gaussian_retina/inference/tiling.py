"""
Sliced inference for photos larger than the model's training scale: the tile grid, and the merge
of the tiles' detections into one set per photo.

The detector sees each tile through its usual test resize (``INPUT.MIN/MAX_SIZE_TEST``), so a
tile of side ``t`` photo pixels presents its products at ``input_side / t`` of their size in the
photo. The automatic grid is chosen from the photo itself: from the size of the products a
single pass found, against the training scale (see :func:`auto_tile_grid`).
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from detectron2.structures import Boxes, pairwise_iou
from torchvision.ops import batched_nms

__all__ = [
    "TileGrid",
    "auto_tile_grid",
    "fixed_tile_grid",
    "merge_tile_detections",
    "parse_tiling",
    "single_pass_scale",
]


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


def single_pass_scale(image_size, input_size) -> float:
    """Input pixels per photo pixel when the whole photo goes through the test resize."""
    H, W = image_size
    short_in, long_in = input_size
    return min(short_in / min(H, W), long_in / max(H, W))


def auto_tile_grid(
    image_size,
    *,
    input_size: Tuple[int, int],
    product_side: Optional[float],
    train_product_side: float,
    min_gain: float = 1.5,
) -> TileGrid:
    """
    The grid that presents a photo's products at about the training scale.

    ``product_side`` is how large the photo's products are, in photo pixels: the median side of
    what a single pass detected (the probe, see :class:`ShelfPredictor`). A single pass shows
    them at ``product_side * scale`` input pixels (:func:`single_pass_scale`); the model learned
    products of ``train_product_side`` input pixels; tiles ``gain`` times smaller than the photo
    enlarge them by ``gain`` = the ratio of the two. Two limits: a tile is never smaller than
    the input size (that would upsample the photo beyond its native resolution), and tiling is
    off when it would enlarge products by less than ``min_gain`` (the single pass is then close
    enough, at a fraction of the cost). Neighbouring tiles overlap by 1.5 product sides, so most
    products lie wholly inside some tile; the merge rebuilds the others from their pieces.

    Args:
        image_size: (H, W) of the photo.
        input_size: (short, long) side of the model's test input (MIN_SIZE_TEST, MAX_SIZE_TEST).
        product_side: None (nothing detected) gives one pass.
        train_product_side: median product side of the training images, in input pixels.
    """
    H, W = int(image_size[0]), int(image_size[1])
    single = TileGrid((H, W), ((0, 0, W, H),))
    if not product_side or product_side <= 0:
        return single
    scale = single_pass_scale((H, W), input_size)
    gain = min(train_product_side / (product_side * scale), 1.0 / scale)
    if gain < min_gain:
        return single
    overlap = int(round(1.5 * product_side))
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
    max_detections: Optional[int] = 300,
    edge_margin: Union[float, Sequence[float]] = 2.0,
    seam_iou: float = 0.5,
    extra: Optional[Sequence[torch.Tensor]] = None,
):
    """
    One set of detections per photo from its tiles' detections.

    1. A box within ``edge_margin`` of an inner edge of its tile (an edge that is not the
       photo's border) may be a product cut by that edge: it is a *piece*.
    2. Boxes of different tiles are the same product when they agree where both tiles look:
       clipped to the two windows' common region, their IoU is at least ``seam_iou``. Only
       pairs with a piece in them are tested. Same-product groups (linked through any chain of
       such pairs: a product at a tile corner is seen by four tiles) become one box: a box that
       some tile saw whole stands for the group and the pieces go; a group of pieces only (a
       product larger than the overlap, which no tile holds whole) becomes the union of its
       pieces at their best score.
    3. NMS over all tiles at ``nms_thresh``, per class, then the ``max_detections`` best: the
       cap applies to the photo, not to each tile.

    Whether another tile *could* see the whole product is never used: only what the tiles
    detected removes a box, so a product cut by one tile and missed by the other is kept as its
    piece rather than lost.

    Args:
        boxes: per tile, (Ni, 4) XYXY in the tile's pixels.
        scores, classes: per tile, (Ni,).
        windows: per tile, (x0, y0, x1, y1) in photo pixels.
        image_size: (H, W) of the photo.
        edge_margin: photo pixels, one value or one per tile. A tile read at ``f`` photo pixels
            per input pixel should get a couple of input pixels, ``2 * f``: the detector's box
            edges are only as precise as its input.
        extra: optional per-tile (Ni, ...) tensors carried along with the boxes (a fused group
            carries its best-scored piece's).
        max_detections: None keeps every detection.
    Returns:
        boxes (N, 4) in photo pixels, scores (N,), classes (N,), and extra (N, ...) or None,
        sorted by decreasing score, N <= max_detections.
    """
    H, W = image_size
    margins = (
        [float(edge_margin)] * len(windows)
        if isinstance(edge_margin, (int, float))
        else [float(m) for m in edge_margin]
    )
    b, tile, cut = _boxes_in_photo(boxes, windows, margins, image_size)
    s = torch.cat([x.float() for x in scores]) if len(scores) else torch.zeros(0)
    c = torch.cat(list(classes)) if len(classes) else torch.zeros(0, dtype=torch.long)
    ex = torch.cat(list(extra)) if extra is not None and len(extra) else None

    keep = torch.ones(len(b), dtype=torch.bool)
    if len(windows) > 1 and cut.any():
        win = torch.tensor(windows, dtype=torch.float32).reshape(-1, 4)
        groups = _same_product_groups(b, c, tile, cut, win, seam_iou)
        b, keep = _one_box_per_product(b, s, cut, groups)

    b, s, c = b[keep], s[keep], c[keep]
    ex = ex[keep] if ex is not None else None
    b[:, 0::2] = b[:, 0::2].clamp(0, W)
    b[:, 1::2] = b[:, 1::2].clamp(0, H)
    # 3. Duplicates between overlapping tiles; one tile's own duplicates went in its own NMS
    # (so a single pass keeps what the model gave, in the order of its scores).
    if len(windows) > 1:
        order = batched_nms(b, s, c, nms_thresh)
    else:
        order = torch.argsort(s, descending=True, stable=True)
    if max_detections is not None:
        order = order[:max_detections]
    return b[order], s[order], c[order], (ex[order] if ex is not None else None)


def _boxes_in_photo(boxes, windows, margins, image_size):
    """
    Step 1 of :func:`merge_tile_detections`: every tile's boxes in photo pixels (N, 4), the tile
    of each (N,), and whether each is a piece (N,): within its tile's margin of an edge of the
    tile that lies inside the photo.
    """
    H, W = image_size
    all_boxes, all_tile, all_cut = [], [], []
    for t, b in enumerate(boxes):
        x0, y0, x1, y1 = windows[t]
        b = b.float().reshape(-1, 4) + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        m = margins[t]
        # Which of this tile's edges lie inside the photo (a cut there is the tile's, not real).
        inner = torch.tensor([x0 > 0, y0 > 0, x1 < W, y1 < H])
        near = torch.stack(
            [b[:, 0] <= x0 + m, b[:, 1] <= y0 + m, b[:, 2] >= x1 - m, b[:, 3] >= y1 - m], dim=1
        )
        all_boxes.append(b)
        all_tile.append(torch.full((len(b),), t, dtype=torch.long))
        all_cut.append((near & inner).any(dim=1))
    if not all_boxes:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool)
    return torch.cat(all_boxes), torch.cat(all_tile), torch.cat(all_cut)


def _one_box_per_product(boxes, scores, cut, groups):
    """
    Step 2 of :func:`merge_tile_detections`: for each same-product group, the boxes some tile
    saw whole stand for it (NMS later picks one), or, for a group of pieces only, the best
    piece grown to the union of the group. Returns the boxes (a copy) and which to keep.
    """
    boxes = boxes.clone()
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for members in groups:
        members = torch.tensor(members)
        whole = members[~cut[members]]
        keep[members] = False
        if len(whole):
            keep[whole] = True
            continue
        best = members[scores[members].argmax()]
        boxes[best, :2] = boxes[members, :2].min(dim=0).values
        boxes[best, 2:] = boxes[members, 2:].max(dim=0).values
        keep[best] = True
    return boxes, keep


def _same_product_groups(boxes, classes, tile, cut, windows, seam_iou) -> List[List[int]]:
    """
    Groups (lists of indices into ``boxes``, two members or more) of boxes that are one product
    seen by several tiles: pairs of boxes of two overlapping tiles, at least one a piece
    (``cut``), of the same class, whose IoU inside the two windows' common region is >=
    ``seam_iou``, joined transitively. Only boxes reaching into a common region are compared,
    tile pair by tile pair, so the cost grows with the boxes along the seams.
    """
    parent = list(range(len(boxes)))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    linked = set()
    for a in range(len(windows)):
        for b in range(a + 1, len(windows)):
            common = torch.cat(
                [torch.maximum(windows[a, :2], windows[b, :2]), torch.minimum(windows[a, 2:], windows[b, 2:])]
            )
            if (common[2:] <= common[:2]).any():
                continue  # the tiles do not overlap
            seen = _clip_to(boxes, common.expand(len(boxes), 4))
            inside = (seen[:, 2:] > seen[:, :2]).all(dim=1)
            ia = torch.nonzero(inside & (tile == a)).flatten()
            ib = torch.nonzero(inside & (tile == b)).flatten()
            if len(ia) == 0 or len(ib) == 0 or not (cut[ia].any() or cut[ib].any()):
                continue
            same = pairwise_iou(Boxes(seen[ia]), Boxes(seen[ib])) >= seam_iou
            same &= cut[ia, None] | cut[None, ib]
            same &= classes[ia, None] == classes[None, ib]
            for i, j in torch.nonzero(same).tolist():
                i, j = int(ia[i]), int(ib[j])
                linked.update((i, j))
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    groups = {}
    for k in linked:
        groups.setdefault(root(k), []).append(k)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _clip_to(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes cut to (N, 4) regions (an empty intersection gives an empty box)."""
    lt = torch.maximum(boxes[:, :2], regions[:, :2])
    rb = torch.maximum(torch.minimum(boxes[:, 2:], regions[:, 2:]), lt)
    return torch.cat([lt, rb], dim=1)
